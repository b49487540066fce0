"""How the service serves the built console: the page for every /console path, hashed assets
cached for good and gzipped on request, nothing outside the assets folder, and a clear answer
when the console was never built."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from codeactions.console import router as console_router


@pytest.fixture
def dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in build: a page and one asset, in place of the real dist folder."""
    folder = tmp_path / "dist"
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_text("<!doctype html><title>console</title>")
    (folder / "assets" / "index-abc123.js").write_text("console.log('x');" * 200)
    (tmp_path / "secret.txt").write_text("outside")
    monkeypatch.setattr(console_router, "DIST", folder)
    console_router._asset.cache_clear()
    yield folder
    console_router._asset.cache_clear()


async def test_every_console_path_answers_the_page_uncached(
    client: httpx.AsyncClient, dist: Path
) -> None:
    for path in ("/console", "/console/", "/console/projects/p/codes/c"):
        answer = await client.get(path)
        assert answer.status_code == 200
        assert answer.text.startswith("<!doctype html>")
        assert answer.headers["cache-control"] == "no-cache"
        assert "default-src 'self'" in answer.headers["content-security-policy"]


async def test_an_asset_is_cached_for_good_and_gzipped_when_asked(
    client: httpx.AsyncClient, dist: Path
) -> None:
    plain = await client.get("/console/assets/index-abc123.js", headers={"Accept-Encoding": ""})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "immutable" in plain.headers["cache-control"]
    assert "content-encoding" not in plain.headers
    packed = await client.get(
        "/console/assets/index-abc123.js", headers={"Accept-Encoding": "gzip"}
    )
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(plain.content) / 10
    assert packed.content == plain.content  # as httpx unpacked it


async def test_an_unknown_asset_is_404(client: httpx.AsyncClient, dist: Path) -> None:
    answer = await client.get("/console/assets/missing.js")
    assert answer.status_code == 404


@pytest.mark.parametrize(
    "name", ["..", "%2e%2e%2fsecret.txt", "..%2Fsecret.txt", "..%5Csecret.txt"]
)
async def test_no_asset_path_reaches_outside_the_assets(
    client: httpx.AsyncClient, dist: Path, name: str
) -> None:
    answer = await client.get(f"/console/assets/{name}")
    assert "outside" not in answer.text
    assert answer.status_code == 404 or answer.text.startswith("<!doctype html>")


async def test_an_unbuilt_console_says_how_to_build_it(
    client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_router, "DIST", tmp_path / "never-built")
    answer = await client.get("/console/projects/p")
    assert answer.status_code == 503
    assert "make run" in answer.text


async def test_the_console_is_not_in_the_api_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith("/console")]
