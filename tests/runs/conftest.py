"""Fixtures for run tests: apps with a fake runner, codes and members written straight to the DB."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from codeactions.auth.principals import Principal
from codeactions.config import Settings
from codeactions.db.models import Code, CodeRun, UserPermission, utcnow
from codeactions.db.session import SESSIONMAKER
from codeactions.errors import Unauthorized
from codeactions.main import create_app
from codeactions.runner.base import Language, RunnerStatus, RunOutcome, RunRequest
from codeactions.runner.disabled import DisabledRunner
from codeactions.runs.service import EXECUTOR

Behaviour = Callable[[RunRequest], Awaitable[RunOutcome]]


async def _ok(request: RunRequest) -> RunOutcome:
    return RunOutcome(ok=True, result="ok", status_code=200, content_type="text")


@dataclass
class FakeRunner:
    """Stands in for the sandbox: records every request and answers with `behaviour`."""

    behaviour: Behaviour = _ok
    calls: list[RunRequest] = field(default_factory=list)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def run(self, request: RunRequest) -> RunOutcome:
        self.calls.append(request)
        return await self.behaviour(request)

    async def check(self, language: Language, source: str) -> None:
        return None

    def status(self) -> RunnerStatus:
        return {**DisabledRunner().status(), "isolation": "fake"}


class FakeVerifier:
    """OIDC stand-in: a token names a user."""

    def __init__(self, users: dict[str, Principal]) -> None:
        self.users = users

    async def principal(self, token: str) -> Principal:
        if token not in self.users:
            raise Unauthorized("invalid token")
        return self.users[token]


PROJECT = "11111111-1111-1111-1111-111111111111"
OTHER_PROJECT = "22222222-2222-2222-2222-222222222222"
USERS = {
    "viewer-token": Principal(kind="user", email="viewer@example.com"),
    "contributor-token": Principal(kind="user", email="contributor@example.com"),
    "outsider-token": Principal(kind="user", email="outsider@example.com"),
    "internal-token": Principal(kind="internal"),
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    runner: FakeRunner

    async def add_code(
        self,
        *,
        language: str = "python",
        type: str = "endpoint",
        project_uuid: str = PROJECT,
        mongo_object_id: str | None = None,
        timeout_seconds: int = 60,
        source: str = "def Run(engine):\n    engine.result.set('ok')\n",
    ) -> Code:
        code = Code(
            id=uuid.uuid4(),
            name="test code",
            type=type,
            source=source,
            language=language,
            project_uuid=project_uuid,
            mongo_object_id=mongo_object_id,
            timeout=timeout_seconds,
        )
        async with self.app.state.parts[SESSIONMAKER]() as session, session.begin():
            session.add(code)
        return code

    async def add_run(
        self,
        *,
        code_id: uuid.UUID | None,
        created_at: datetime | None = None,
        status: str = "completed",
        code_mongo_id: str | None = None,
    ) -> CodeRun:
        stamp = created_at or utcnow()
        run = CodeRun(
            id=uuid.uuid4(),
            code_id=code_id,
            code_mongo_id=code_mongo_id,
            status=status,
            result="done",
            extra={"status_code": 200, "content_type": "text"},
            params={},
            body="",
            headers={},
            created_at=stamp,
            updated_at=stamp,
        )
        async with self.app.state.parts[SESSIONMAKER]() as session, session.begin():
            session.add(run)
        return run

    async def get_run(self, run_id: str, *, settle: bool = True) -> CodeRun | None:
        """The stored run, once runs still being recorded (answered already) are done."""
        if settle:
            await self.settle()
        async with self.app.state.parts[SESSIONMAKER]() as session:
            run: CodeRun | None = await session.get(CodeRun, uuid.UUID(run_id))
            return run

    async def grant(self, email: str, role: int, project_uuid: str = PROJECT) -> None:
        async with self.app.state.parts[SESSIONMAKER]() as session, session.begin():
            session.add(UserPermission(project_uuid=project_uuid, email=email, role=role))

    async def settle(self) -> None:
        """Wait for runs still being recorded in the background."""
        current = asyncio.current_task()
        tasks = [t for t in self.app.state.parts[EXECUTOR].tasks if t is not current]
        if tasks:
            await asyncio.wait(tasks, timeout=10)


@asynccontextmanager
async def served(api: Api) -> AsyncIterator[str]:
    """The test app behind a real HTTP server (its lifespan is already running): host:port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(api.app, port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "the server did not start"
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


StartApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def start_api(make_settings: Callable[..., Settings]) -> AsyncIterator[StartApi]:
    """Start an app built from `make_settings(**groups)` with a fake runner and fake OIDC;
    `parts` go to `create_app` too (a test's fakes: a sessionmaker, a secret vault...)."""
    async with AsyncExitStack() as stack:

        async def start(
            *, real_runner: bool = False, parts: dict[str, Any] | None = None, **groups: Any
        ) -> Api:
            runner = FakeRunner()
            fakes: dict[str, Any] = {"oidc": FakeVerifier(USERS)}
            if not real_runner:
                fakes["runner"] = runner
            app = create_app(make_settings(**groups), **{**fakes, **(parts or {})})
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://test")
            )
            return Api(app, client, runner)

        yield start


@pytest.fixture
async def api(start_api: StartApi) -> Api:
    return await start_api()
