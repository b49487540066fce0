"""The documentation page renders every route in a real browser, with no network but the service."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.requires(
    os.path.exists(CHROMIUM), "Debian's chromium is not installed (make test installs it)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    folder = tmp_path_factory.mktemp("docs")
    env = {
        **os.environ,
        "CODEACTIONS_DATABASE_URL": f"sqlite:///{folder / 'db.sqlite'}",
        "CODEACTIONS_RUNNER_ENABLED": "false",
        "CODEACTIONS_CLEANER_ENABLED": "false",
    }
    cli = Path(sys.executable).with_name("codeactions")
    process = subprocess.Popen(
        [str(cli), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_docs_page_lists_the_routes_without_leaving_the_service(service: str) -> None:
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            page.on(
                "request",
                lambda request: (
                    None if request.url.startswith(service) else outside.append(request.url)
                ),
            )
            page.goto(f"{service}/docs")
            page.get_by_text("/action/endpoint/{code_id}").first.wait_for(timeout=20_000)
            text = page.inner_text("body")
        finally:
            browser.close()
    for path in ("/code", "/coderun", "/codelog", "/run/{code_id}", "/projects", "/health"):
        assert path in text
    assert outside == []
