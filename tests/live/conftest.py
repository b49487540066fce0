"""Fixtures for the live channel: the test app behind a real server, and a WebSocket client."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from codeactions.config import LiveSettings
from tests.conftest import ADMIN_TOKEN
from tests.runs.conftest import Api, StartApi, served
from tests.runs.conftest import start_api as start_api  # the fixture, for this folder

# Frames a test waits for at most this long.
WAIT = 10.0


@dataclass
class Socket:
    """A /web client: requests by pkg_id, frames kept by req_id as they arrive."""

    ws: ClientConnection
    frames: list[dict[str, Any]] = field(default_factory=list)
    _cursor: dict[str, int] = field(default_factory=dict)

    async def send(self, pkg_id: Any, data: Any = None, req_id: str | None = None) -> str:
        req_id = req_id or uuid.uuid4().hex
        frame: dict[str, Any] = {"pkg_id": pkg_id, "req_id": req_id}
        if data is not None:
            frame["data"] = data
        await self.ws.send(json.dumps(frame))
        return req_id

    async def next(self, req_id: str, wait: float = WAIT) -> dict[str, Any]:
        """The next frame of `req_id` not yet returned."""
        start = self._cursor.get(req_id, 0)
        async with asyncio.timeout(wait):
            while True:
                mine = [f for f in self.frames if f["req_id"] == req_id]
                if len(mine) > start:
                    self._cursor[req_id] = start + 1
                    return mine[start]
                self.frames.append(json.loads(await self.ws.recv()))

    async def request(self, pkg_id: int, data: Any = None) -> dict[str, Any]:
        return await self.next(await self.send(pkg_id, data))

    async def events_until(self, req_id: str, last: str = "run") -> list[dict[str, Any]]:
        """The events of `req_id` up to and including the first `last` (or `lagged`) event."""
        events = []
        while True:
            frame = await self.next(req_id)
            assert frame["status_code"] == 0, frame
            events.append(frame["data"])
            if frame["data"].get("event") in (last, "lagged"):
                return events


@dataclass
class Live:
    api: Api
    host: str

    @asynccontextmanager
    async def socket(self, token: str | None = ADMIN_TOKEN) -> AsyncIterator[Socket]:
        url = f"ws://{self.host}/web" + (f"?token={token}" if token is not None else "")
        async with connect(url, max_size=None) as ws:
            yield Socket(ws)


StartLive = Callable[..., Awaitable[Live]]


@pytest.fixture
async def start_live(start_api: StartApi) -> AsyncIterator[StartLive]:
    """`start_api(**kwargs)` behind a real server; `live=LiveSettings(...)` by default."""
    async with AsyncExitStack() as stack:

        async def start(**kwargs: Any) -> Live:
            kwargs.setdefault("live", LiveSettings())
            api = await start_api(**kwargs)
            host = await stack.enter_async_context(served(api))
            return Live(api, host)

        yield start


@pytest.fixture
async def live(start_live: StartLive) -> Live:
    return await start_live()
