"""GET /codelib: the Python libraries user code can import."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from codeactions.config import RunnerSettings, Settings
from codeactions.db.models import CodeLib
from codeactions.db.session import SESSIONMAKER
from tests.codes.support import VIEWER, as_user, enable_users
from tests.conftest import ADMIN, needs_runtime


def _fake_runtime(root: Path, packages: dict[str, str]) -> str:
    site = root / "lib" / "python3.11" / "site-packages"
    for name, version in packages.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (root / "bin").mkdir(parents=True)
    return str(root / "bin" / "python")


@pytest.fixture
def settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    python = _fake_runtime(
        tmp_path / "runtime", {"requests": "2.32.3", "Flask": "3.1.0", "zeep-client": "1.0"}
    )
    return make_settings(runner=RunnerSettings(enabled=False, python=python))


async def test_lists_installed_libraries_and_codelibs_sorted_by_name(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    async with app.state.parts[SESSIONMAKER]() as session, session.begin():
        session.add_all(
            [
                CodeLib(name="beautifulsoup4", language="python"),
                CodeLib(name="requests", language="python"),
            ]
        )
    response = await client.get("/codelib", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == [
        {"name": "beautifulsoup4", "language": "python", "version": ""},
        {"name": "Flask", "language": "python", "version": "3.1.0"},
        {"name": "requests", "language": "python", "version": "2.32.3"},
        {"name": "zeep-client", "language": "python", "version": "1.0"},
    ]


async def test_codelib_needs_credentials(client: httpx.AsyncClient) -> None:
    assert (await client.get("/codelib")).status_code == 401


async def test_any_user_can_list_libraries(client: httpx.AsyncClient, app: FastAPI) -> None:
    await enable_users(app)
    response = await client.get("/codelib", headers=as_user(VIEWER))
    assert response.status_code == 200


@needs_runtime
def test_the_real_runtime_lists_its_preinstalled_libraries() -> None:
    from codeactions.libs.service import installed_distributions

    python = RunnerSettings().python
    names = {name.lower() for name, _ in installed_distributions(python).values()}
    assert {"requests", "boto3"} <= names
