"""One /web connection: its frames out (one at a time), and the subscriptions it follows, each a
task sending its events until it ends, is stopped, or the connection closes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from codeactions.auth.principals import Principal
from codeactions.errors import AppError
from codeactions.events.bus import Event
from codeactions.live.schemas import Status
from codeactions.ops.metrics import Metrics

log = logging.getLogger(__name__)


def status_of(error: AppError) -> Status:
    """The frame status of a failure the HTTP API would answer with `error.status_code`."""
    code = error.status_code
    if code == 404:
        return Status.NOT_FOUND
    if code in (401, 403):
        return Status.DENIED
    if code in (400, 409, 413, 422):
        return Status.INVALID
    return Status.ERROR


def frame(
    pkg_id: int,
    req_id: str,
    status: Status,
    data: Any = None,
    *,
    msg: str | None = None,
    meta: dict[str, int] | None = None,
) -> dict[str, Any]:
    answer: dict[str, Any] = {"pkg_id": pkg_id, "req_id": req_id, "status_code": int(status)}
    if msg is not None:
        answer["msg"] = msg
    answer["data"] = {} if data is None else data
    if meta is not None:
        answer["meta"] = meta
    return answer


# The JSON of the events fanned out just now: one event goes to many followers, encoded once.
# Keyed by identity, with the event kept so that its id is not reused while it is here.
_ENCODED: dict[int, tuple[Event, str]] = {}
_ENCODED_MAX = 1024


def _event_json(event: Event) -> str:
    known = _ENCODED.get(id(event))
    if known is not None and known[0] is event:
        return known[1]
    text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    if len(_ENCODED) >= _ENCODED_MAX:
        del _ENCODED[next(iter(_ENCODED))]
    _ENCODED[id(event)] = (event, text)
    return text


def event_frame(pkg_id: int, req_id: str, event: Event) -> str:
    """The frame of an event of the subscription `req_id` (as `frame` would encode it)."""
    return (
        f'{{"pkg_id":{pkg_id},"req_id":{json.dumps(req_id, ensure_ascii=False)},'
        f'"status_code":0,"data":{_event_json(event)}}}'
    )


class Connection:
    def __init__(self, websocket: WebSocket, principal: Principal, metrics: Metrics) -> None:
        self.websocket = websocket
        self.principal = principal
        self.metrics = metrics
        self._send_lock = asyncio.Lock()
        self._follows: dict[str, asyncio.Task[None]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()  # requests being answered

    async def send(self, message: dict[str, Any] | str) -> None:
        """Send one frame (or its JSON); a connection already gone drops it (its reader ends
        the rest)."""
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        if isinstance(message, str):
            text = message
        else:
            text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        async with self._send_lock:
            with contextlib.suppress(Exception):
                await self.websocket.send_text(text)

    def is_following(self, req_id: str) -> bool:
        return req_id in self._follows

    def follow(self, pkg_id: int, req_id: str, events: AsyncIterator[Event]) -> None:
        """Send `events` as frames of the request `req_id` until they end."""
        task = asyncio.create_task(self._forward(pkg_id, req_id, events), name=f"follow-{req_id}")
        self._follows[req_id] = task

        def ended(_: asyncio.Task[None]) -> None:
            if self._follows.get(req_id) is task:
                del self._follows[req_id]

        task.add_done_callback(ended)

    async def _forward(self, pkg_id: int, req_id: str, events: AsyncIterator[Event]) -> None:
        try:
            async for event in events:
                await self.send(event_frame(pkg_id, req_id, event))
                self.metrics.ws_events.inc()
                if event.get("event") == "lagged":
                    self.metrics.ws_lagged.inc()
        except AppError as exc:
            await self.send(frame(pkg_id, req_id, status_of(exc), msg=exc.message))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("following request %s failed", req_id)
            await self.send(frame(pkg_id, req_id, Status.ERROR, msg="Internal error"))
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    def unfollow(self, req_id: str) -> bool:
        task = self._follows.pop(req_id, None)
        if task is None:
            return False
        task.cancel()
        return True

    async def close(self) -> None:
        tasks = [*self._follows.values(), *self.tasks]
        self._follows.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
