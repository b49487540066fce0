"""Domain errors and the one handler that renders them as the original's `{"message": ...}` bodies."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class AppError(Exception):
    """An expected failure with the HTTP status and message the caller sees."""

    status_code = 400
    message = "Bad Request"

    def __init__(
        self, message: str | None = None, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.headers = headers


class BadRequest(AppError):
    status_code = 400


class Unauthorized(AppError):
    status_code = 401
    message = "invalid token"


class Forbidden(AppError):
    status_code = 403
    message = "have'nt permission to access this resource"


class NotFound(AppError):
    status_code = 404
    message = "Not Found"


class CodeNotFound(NotFound):
    message = "code not found"


class RunNotFound(NotFound):
    message = "coderun not found"


class LogNotFound(NotFound):
    message = "log not found"


class ProjectNotFound(NotFound):
    message = "project not found"


class PermissionNotFound(NotFound):
    message = "permission not found"


class SecretNotFound(NotFound):
    message = "secret not found"


class SecretNameTaken(AppError):
    status_code = 409

    def __init__(self, name: str) -> None:
        super().__init__(f"secret with name '{name}' already exists in this project")


class PayloadTooLarge(AppError):
    status_code = 413
    message = "request body is too large"


class RunTimedOut(AppError):
    status_code = 408
    message = "timeout: request context timeout limit exceeded"


class RunFailed(AppError):
    """The code ran and failed: the caller gets a short message with the run id, no traceback."""

    status_code = 500

    def __init__(self, message: str, *, status_code: int = 500) -> None:
        super().__init__(message)
        self.status_code = status_code


class RateLimited(AppError):
    status_code = 429
    message = "Too Many Requests"


class QueueFull(AppError):
    status_code = 503
    message = "workerpool queue is full"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class TooManyWaiting(AppError):
    """The run's project or code already has as many runs waiting for a slot as it may."""

    status_code = 429

    def __init__(self, of: str) -> None:
        super().__init__(f"too many runs of this {of} waiting", headers={"Retry-After": "1"})


# How long a caller is asked to wait after a 503 for an outage.
RETRY_AFTER = {"Retry-After": "5"}


class Unavailable(AppError):
    """A dependency (database, Redis, S3, the runner) cannot serve now: retry later."""

    status_code = 503
    message = "Service Unavailable"

    def __init__(
        self, message: str | None = None, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, headers={**RETRY_AFTER, **(headers or {})})


class HeadersTooLarge(AppError):
    status_code = 431
    message = "request headers are too large"


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says a dependency is down, frozen or refusing (not that a request is bad)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout

    from codeactions.db import errors as db_errors

    if db_errors.is_database_error(exc):
        return db_errors.is_temporary(exc)
    if isinstance(exc, RedisConnectionError | RedisTimeout | BotoCoreError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return int(status) >= 500
    return isinstance(exc, OSError | TimeoutError)


class ErrorBoundary:
    """Every exception a route lets escape is answered here: 503 with Retry-After for a dependency
    outage, 500 otherwise. Starlette's last-resort handler answers too but then re-raises, and the
    server drops the connection: a keep-alive client would see its next request reset."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            if started:
                raise  # half an answer is out: only closing the connection can say it failed
            if is_outage(exc):
                log.warning(
                    "dependency unavailable on %s %s: %s: %s",
                    scope["method"],
                    scope["path"],
                    type(exc).__name__,
                    str(exc)[:300],
                )
                status, message, headers = 503, Unavailable.message, RETRY_AFTER
            else:
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                status, message, headers = 500, "Internal Server Error", None
            response = error_response(scope["method"], status, message, headers)
            await response(scope, receive, send)


def error_body(message: str) -> dict[str, str]:
    return {"message": message}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg")))
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> Response:
        return _json(request, exc.status_code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return _json(request, 400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        texts = {404: "Not Found", 405: "Method Not Allowed"}
        message = exc.detail if isinstance(exc.detail, str) else texts.get(exc.status_code, "error")
        if exc.status_code in texts and message in ("Not Found", "Method Not Allowed"):
            message = texts[exc.status_code]
        return _json(request, exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _json(request, 500, "Internal Server Error")


def _json(
    request: Request, status: int, message: str, headers: dict[str, Any] | None = None
) -> Response:
    return error_response(request.method, status, message, headers)


def error_response(
    method: str, status: int, message: str, headers: dict[str, Any] | None = None
) -> Response:
    """The `{"message": ...}` answer every error gets (its headers only, for HEAD)."""
    response = JSONResponse(error_body(message), status_code=status, headers=headers)
    if method == "HEAD":
        # The headers a GET would get (JSON type and length, as documented), without the body.
        response.body = b""
    return response
