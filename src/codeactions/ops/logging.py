"""Structured logs, request ids, the access log and Sentry."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codeactions.config import ServerSettings

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
request_id_var: ContextVar[str] = ContextVar("request_id", default="")

# Pass as `extra=USER_FAILURE` when logging something a user's code did (an exception in `Run`,
# a timeout): such records never become Sentry events, whatever their level.
USER_FAILURE = {"user_failure": True}

access_log = logging.getLogger("codeactions.access")

# LogRecord attributes that are not "extras" a caller added.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
    "color_message",  # uvicorn's terminal variant of the message
}


class RequestIdFilter(logging.Filter):
    """Stamps every record with the current request's id (empty outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, then any extras."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "") or request_id_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                body[key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            body["stack"] = self.formatStack(record.stack_info)
        return json.dumps(body, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, extras appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {
            k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")
        }
        rid = getattr(record, "request_id", "")
        if rid:
            extras["request_id"] = rid
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


_HANDLER_MARK = "_codeactions_handler"


def configure_logging(settings: ServerSettings) -> None:
    """Send every log line (uvicorn's included) to stdout, as JSON when `log_json`.

    Idempotent: replaces only the handler it installed before, so test runners keep theirs.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter() if settings.log_json else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # uvicorn installs its own text handlers; route its lines through ours instead.
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Our access line replaces uvicorn's, which would log query strings (they may hold tokens).
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
    # httpx logs every outgoing URL at info, query strings (tokens) included.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))


def sane_request_id(value: str) -> str | None:
    """The caller's id when it is short and plain (it ends up in logs), else None."""
    return value if _SANE_ID.fullmatch(value) else None


class RequestContextMiddleware:
    """Gives each request an id (the caller's `X-Request-Id` when sane), returns it in the
    response header, and writes one access log line. The query string is never logged: it may
    carry secrets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for key, value in scope.get("headers") or ():
            if key == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = sane_request_id(incoming) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "request",
                extra={
                    "method": scope.get("method", ""),
                    "path": scope.get("path", ""),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )
            request_id_var.reset(token)


def sentry_before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Drop events caused by users' code or by callers' mistakes; keep the service's own faults."""
    record = hint.get("log_record")
    if record is not None and getattr(record, "user_failure", False):
        return None
    if (event.get("extra") or {}).get("user_failure"):
        return None
    exc_info = hint.get("exc_info")
    if exc_info:
        from codeactions.errors import AppError

        exc = exc_info[1]
        if isinstance(exc, AppError) and exc.status_code < 500:
            return None
    return event


def init_sentry(settings: ServerSettings) -> bool:
    """Report the service's errors to Sentry when a DSN is set; True when enabled."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.fastapi import FastApiIntegration
    from sentry_sdk.integrations.starlette import StarletteIntegration

    from codeactions import __version__

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.environment,
        release=f"codeactions@{__version__}",
        integrations=[StarletteIntegration(), FastApiIntegration()],
        before_send=sentry_before_send,  # type: ignore[arg-type]
        send_default_pii=False,  # request headers and bodies may hold users' secrets
    )
    return True
