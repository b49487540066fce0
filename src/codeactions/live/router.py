"""The live channel's routes: the WebSocket `/web`, its schema, and a run's Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from codeactions.auth.dependencies import (
    VERIFIER,
    CurrentPrincipal,
    principal_of_token,
    token_of_header,
)
from codeactions.auth.principals import Principal
from codeactions.errors import AppError
from codeactions.events.bus import Event
from codeactions.http import validation_problems
from codeactions.live.connection import Connection, frame, status_of
from codeactions.live.follow import RunFollower
from codeactions.live.limits import CONNECTION_REFRESH_INTERVAL, LIVE_LIMITS, LiveLimits
from codeactions.live.packages import FOLLOWING, LIVE, PACKAGES, LiveDep, Package, Services
from codeactions.live.schemas import Answer, Request, Status
from codeactions.ops.docs import error_responses
from codeactions.parts import SETTINGS, parts_of

log = logging.getLogger(__name__)

router = APIRouter(tags=["live"])

POLICY_VIOLATION = 1008
RATE_LIMITED = "Rate limit exceeded"


def principal_key(principal: Principal) -> str:
    return f"{principal.kind}:{principal.email}"


@router.websocket("/web")
async def web(websocket: WebSocket) -> None:
    """`ws://host/web?token=<token>`: frames `{pkg_id, req_id, data}` answered by package."""
    # Accepted first, then closed with 1008 when refused: browsers see the code only so.
    await websocket.accept()
    parts = parts_of(websocket.app)
    token = websocket.query_params.get("token") or token_of_header(
        websocket.headers.get("authorization", "")
    )
    try:
        if not token:
            raise AppError("missing token")
        principal = await principal_of_token(parts[SETTINGS].auth, parts[VERIFIER], token)
    except AppError as exc:
        await websocket.close(POLICY_VIOLATION, reason=exc.message[:120])
        return
    services = parts[LIVE]
    limits = parts[LIVE_LIMITS]
    key, connection_id = principal_key(principal), uuid.uuid4().hex
    if not await limits.connections.acquire(key, connection_id):
        await websocket.close(POLICY_VIOLATION, reason="too many connections")
        return
    connection = Connection(websocket, principal, services.metrics)
    services.metrics.ws_connections.inc()
    refresher = asyncio.create_task(_keep_counted(limits, key, connection_id))
    try:
        await _serve(connection, services, limits, key)
    finally:
        refresher.cancel()
        await connection.close()
        await asyncio.gather(refresher, return_exceptions=True)
        await limits.connections.release(key, connection_id)
        services.metrics.ws_connections.dec()


async def _keep_counted(limits: LiveLimits, key: str, connection_id: str) -> None:
    while True:
        await asyncio.sleep(CONNECTION_REFRESH_INTERVAL)
        await limits.connections.refresh(key, connection_id)


async def _serve(connection: Connection, services: Services, limits: LiveLimits, key: str) -> None:
    websocket = connection.websocket
    while True:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        raw = message.get("text")
        if raw is None:
            raw = (message.get("bytes") or b"").decode("utf-8", "replace")
        if not await limits.messages.hit(key):
            pkg_id, req_id = _ids(raw)
            await _answer(connection, pkg_id, req_id, Status.ERROR, msg=RATE_LIMITED)
            continue
        try:
            request = _request(raw)
        except ValueError as exc:
            pkg_id, req_id = _ids(raw)
            await _answer(connection, pkg_id, req_id, Status.INVALID, msg=str(exc))
            continue
        task = asyncio.create_task(_handle(connection, services, request))
        connection.tasks.add(task)
        task.add_done_callback(connection.tasks.discard)


def _ids(raw: str) -> tuple[int, str]:
    """The pkg_id and req_id of a frame, as far as they can be read (0 and "" otherwise)."""
    try:
        document = json.loads(raw)
    except ValueError:
        return 0, ""
    if not isinstance(document, dict):
        return 0, ""
    pkg_id, req_id = document.get("pkg_id"), document.get("req_id")
    return (
        pkg_id if isinstance(pkg_id, int) and not isinstance(pkg_id, bool) else 0,
        req_id if isinstance(req_id, str) else "",
    )


def _request(raw: str) -> Request:
    try:
        document = json.loads(raw)
    except ValueError:
        raise ValueError("the frame is not JSON") from None
    if not isinstance(document, dict):
        raise ValueError("the frame is not a JSON object")
    pkg_id, req_id = document.get("pkg_id"), document.get("req_id")
    if not isinstance(pkg_id, int) or isinstance(pkg_id, bool):
        raise ValueError("pkg_id: an integer is required")
    if not isinstance(req_id, str):
        raise ValueError("req_id: a string is required")
    data = document.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError("data: a JSON object is required")
    return Request(pkg_id=pkg_id, req_id=req_id, data=data)


async def _handle(connection: Connection, services: Services, request: Request) -> None:
    pkg_id, req_id = request.pkg_id, request.req_id
    package = PACKAGES.get(pkg_id)
    if package is None:
        await _answer(connection, pkg_id, req_id, Status.INVALID, msg=f"unknown pkg_id {pkg_id}")
        return
    try:
        data = package.data.model_validate(request.data)
    except ValidationError as exc:
        await _answer(
            connection, pkg_id, req_id, Status.INVALID, msg=validation_problems(exc, "data")
        )
        return
    if pkg_id in FOLLOWING and connection.is_following(req_id):
        message = f"req_id {req_id} is already following; stop it (pkg 10) or use another"
        await _answer(connection, pkg_id, req_id, Status.INVALID, msg=message)
        return
    try:
        reply = await package.handle(services, connection, req_id, data)
    except AppError as exc:
        await _answer(connection, pkg_id, req_id, status_of(exc), msg=exc.message)
        return
    except Exception:
        log.exception("pkg %s failed", pkg_id)
        await _answer(connection, pkg_id, req_id, Status.ERROR, msg="Internal error")
        return
    await _answer(connection, pkg_id, req_id, Status.OK, reply.data, meta=reply.meta)
    if reply.events is not None:
        connection.follow(pkg_id, req_id, reply.events)


async def _answer(
    connection: Connection,
    pkg_id: int,
    req_id: str,
    status: Status,
    data: Any = None,
    *,
    msg: str | None = None,
    meta: dict[str, int] | None = None,
) -> None:
    connection.metrics.ws_frame(pkg_id=pkg_id, status_code=int(status))
    await connection.send(frame(pkg_id, req_id, status, data, msg=msg, meta=meta))


# --- documentation ------------------------------------------------------------------------

EVENTS = {
    "log": "{event, seq, run_id, type, content, created_at}: a line of the run (seq from 1)",
    "run": "{event, run}: the run's record, once it has ended; the last event of pkg 5 and 8",
    "lagged": "{event, run_id, resume_after_seq}: the follower fell behind; follow again (pkg 8) "
    "with after_seq = resume_after_seq. For a project (pkg 9): {event, project_uuid}",
    "code.saved": "{event, code}: a code of the followed project was created or updated",
    "code.deleted": "{event, code}: a code of the followed project was deleted",
    "run.started": "{event, run}: a run of one of the project's codes started",
    "run.finished": "{event, run}: a run of one of the project's codes ended",
}


def _package_doc(package: Package) -> dict[str, Any]:
    return {
        "name": package.name,
        "role": package.role,
        "data": package.data.model_json_schema(),
        "answer": package.answer,
    }


def schema_document() -> dict[str, Any]:
    return {
        "url": "ws://<host>/web?token=<token> (a JWT or the static token); a missing or bad "
        "token, or too many connections of one principal, is accepted then closed with 1008",
        "request": Request.model_json_schema(),
        "answer": Answer.model_json_schema(),
        "status_codes": {
            "0": "OK",
            "1": "error (the service failed, or `Rate limit exceeded`)",
            "2": "invalid data (not JSON, no pkg_id/req_id, or data against the package's schema)",
            "3": "permission denied (the project role the package needs)",
            "4": "not found",
        },
        "packages": {str(pkg_id): _package_doc(package) for pkg_id, package in PACKAGES.items()},
        "events": EVENTS,
    }


@router.get("/web/schema", summary="The /web WebSocket's frames, packages and events")
async def web_schema() -> JSONResponse:
    return JSONResponse(schema_document())


# --- Server-Sent Events -------------------------------------------------------------------


# One event of the stream, as a client's parser reads it.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "A log line's seq"},
        "data": {"type": "string", "description": "The event, JSON (as on /web)"},
    },
}


def _sse(event: Event) -> str:
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    if event.get("event") == "log":
        return f"id: {event['seq']}\ndata: {data}\n\n"
    return f"data: {data}\n\n"


@router.get(
    "/coderun/{id}/events",
    summary="A run's events as Server-Sent Events (Viewers of its code's project)",
    tags=["runs"],
    response_class=StreamingResponse,
    description="Its stored lines, its lines as they are written, then the run: `data:` is the "
    "event (as on /web), `id:` a line's seq; `Last-Event-ID` resumes after it. The stream ends "
    "after the `run` event.",
    responses={
        200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}},
        **error_responses(401, (404, "No run with this id in the caller's projects"), 503),
    },
)
async def run_events(
    principal: CurrentPrincipal,
    id: str,
    services: LiveDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    follower = await RunFollower.open(services.sources, principal, id, after)
    metrics = services.metrics

    async def stream() -> AsyncIterator[str]:
        try:
            async for event in follower.events():
                metrics.ws_events.inc()
                if event.get("event") == "lagged":
                    metrics.ws_lagged.inc()
                yield _sse(event)
        finally:
            follower.close()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
