"""Test fixtures: apps built from explicit Settings, on SQLite and on the local PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from codeactions.config import (
    AuthSettings,
    DatabaseSettings,
    RunnerSettings,
    Settings,
    SpoolSettings,
)
from codeactions.db.migrate import upgrade
from codeactions.db.session import create_engine, create_sessionmaker
from codeactions.main import create_app
from tests.codes.support import FakeOidc

ADMIN_TOKEN = "test-admin-token"
PG_ADMIN_URL = os.environ.get(
    "CODEACTIONS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_SERVICES = os.environ.get("CODEACTIONS_TEST_REQUIRE_SERVICES") == "1"
# Apps built from bare Settings() with PostgreSQL would spool into the working directory.
os.environ.setdefault("CODEACTIONS_SPOOL_DIR", tempfile.mkdtemp(prefix="codeactions-test-spool-"))
TABLES = ("codes", "coderuns", "codelogs", "codelibs", "user_permissions", "projects", "secrets")


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need(condition: bool, message: str) -> None:
    """Skip the test (or, at a module's top, the module) when this machine lacks a part it needs
    (a service, Node, Go, the runtime interpreter, seccomp), unless CI asked for every part
    (CODEACTIONS_TEST_REQUIRE_SERVICES=1): then fail, so a green CI never hides a test that did
    not run. As a mark: `pytest.mark.requires(condition, message)`."""
    if condition:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (CODEACTIONS_TEST_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(f"{message}, skipping", allow_module_level=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """`need` for every `requires` mark of a test (its own, its module's, its parameter's),
    before its fixtures start anything."""
    for mark in item.iter_markers("requires"):
        need(*mark.args, **mark.kwargs)


def need_service(name: str, host: str, port: int) -> None:
    need(reachable(host, port), f"{name} not reachable on {host}:{port}")


# What the sandbox runner's tests need of the machine (`make deps` installs all of it).
RUNNER_DEFAULTS = RunnerSettings()
needs_runtime = pytest.mark.requires(
    os.path.exists(RUNNER_DEFAULTS.python),
    f"no runtime interpreter at {RUNNER_DEFAULTS.python} (make deps installs it)",
)
needs_node = pytest.mark.requires(
    os.access(RUNNER_DEFAULTS.node, os.X_OK), f"{RUNNER_DEFAULTS.node} is not installed"
)
needs_go = pytest.mark.requires(
    os.access(RUNNER_DEFAULTS.go, os.X_OK), f"{RUNNER_DEFAULTS.go} is not installed"
)


async def _reset(url: str) -> None:
    engine = create_async_engine(DatabaseSettings(url=url).async_url)
    async with engine.begin() as conn:
        for table in TABLES:
            await conn.execute(text(f"DELETE FROM {table}"))
    await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    asyncio.run(upgrade(DatabaseSettings(url=url)))
    return url


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    need_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"codeactions_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = DatabaseSettings(url=PG_ADMIN_URL).async_url

    async def run(sql: str) -> None:
        engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(sql))
        await engine.dispose()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(upgrade(DatabaseSettings(url=url)))
    yield url
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once per database backend, on an emptied database."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    asyncio.run(_reset(url))
    return url


@pytest.fixture
def make_settings(database_url: str, tmp_path: Any) -> Callable[..., Settings]:
    def make(**groups: Any) -> Settings:
        groups.setdefault("database", DatabaseSettings(url=database_url))
        groups.setdefault("auth", AuthSettings(token=ADMIN_TOKEN))
        groups.setdefault("spool", SpoolSettings(dir=str(tmp_path / "spool")))
        # The sandbox runner costs a supervisor per app: tests that execute code turn it on.
        groups.setdefault(
            "runner", RunnerSettings(enabled=False, work_dir=str(tmp_path / "runner"))
        )
        return Settings(**groups)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def app_parts(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Parts `app` hands to `create_app` instead of those its lifespan builds: a fake OIDC
    verifier, off (every token refused, as without OIDC) until `enable_users` turns it on. A test
    hands more with `@pytest.mark.parametrize("app_parts", [{"runner": FakeRunner}],
    indirect=True)`: each value is called for a fresh part."""
    given: dict[str, Callable[[], Any]] = getattr(request, "param", {})
    return {"oidc": FakeOidc(), **{name: make() for name, make in given.items()}}


@pytest.fixture
async def app(settings: Settings, app_parts: dict[str, Any]) -> AsyncIterator[FastAPI]:
    application = create_app(settings, **app_parts)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


ADMIN = {"Authorization": f"Token {ADMIN_TOKEN}"}


class Sessions:
    """A sessionmaker for `create_app(sessionmaker=...)`: sessions of the real database until a
    test sets `failing` (the database going away), then whatever `failing` does."""

    def __init__(self, database: DatabaseSettings) -> None:
        self.engine = create_engine(database)
        self.working = create_sessionmaker(self.engine)
        self.failing: Callable[[], Any] | None = None

    def __call__(self) -> Any:
        return (self.failing or self.working)()

    async def close(self) -> None:
        await self.engine.dispose()


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[Sessions]:
    """`Sessions` of the test's database."""
    made = Sessions(DatabaseSettings(url=database_url))
    yield made
    await made.close()
