"""HTTP details shared by routes: CORS and OPTIONS as the original's Echo, Go header names, bodies,
long JSON arrays."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codeactions.db.listing import Page
from codeactions.errors import BadRequest, HeadersTooLarge, PayloadTooLarge, error_response

ALLOW_METHODS = "GET,HEAD,PUT,PATCH,POST,DELETE"
# Headers a browser script may read from our answers (pagination and rate limits).
EXPOSE_HEADERS = (
    "Link,X-Total-Count,RateLimit-Limit,RateLimit-Remaining,RateLimit-Reset,X-RateLimit-Limit,"
    "X-RateLimit-Remaining,X-RateLimit-Reset,Retry-After,X-Run-Id"
)


class HeaderLimit:
    """Requests whose headers (names and values) add up to more than `max_bytes` get 431."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            size = sum(len(name) + len(value) for name, value in scope["headers"])
            if size > self.max_bytes:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1009})
                    return
                error = HeadersTooLarge(
                    f"request headers are too large: {size} bytes, at most {self.max_bytes}"
                )
                response = error_response(
                    scope["method"], error.status_code, error.message, {"connection": "close"}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class CorsMiddleware:
    """Every OPTIONS request is answered 204 here and never reaches a route (so never runs code).

    Allowed origins (or any, with `*`) get the CORS headers; every other answer gets `Vary: Origin`.
    Plain ASGI rather than BaseHTTPMiddleware: a client going away must not cancel a run.
    """

    def __init__(self, app: ASGIApp, *, origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.any_origin = "*" in self.origins

    def _allowed(self, origin: str) -> str | None:
        if not origin:
            return None
        if self.any_origin:
            return "*"
        return origin if origin in self.origins else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        allowed = self._allowed(origin)
        if scope["method"] == "OPTIONS":
            await self._preflight(scope, send, allowed)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"vary", b"Origin"))
                if allowed:
                    headers.append((b"access-control-allow-origin", allowed.encode("latin-1")))
                    headers.append((b"access-control-expose-headers", EXPOSE_HEADERS.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, scope: Scope, send: Send, allowed: str | None) -> None:
        headers: list[tuple[bytes, bytes]] = [
            (b"vary", b"Origin"),
            (b"vary", b"Access-Control-Request-Method"),
            (b"vary", b"Access-Control-Request-Headers"),
        ]
        if allowed:
            headers.append((b"access-control-allow-origin", allowed.encode("latin-1")))
            headers.append((b"access-control-allow-methods", ALLOW_METHODS.encode()))
            requested = _header(scope, b"access-control-request-headers")
            if requested:
                headers.append((b"access-control-allow-headers", requested.encode("latin-1")))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


# Bytes Go's textproto accepts in a header name (RFC 7230 tchar).
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def canonical_header_key(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey: `x-api-key` -> `X-Api-Key`; odd names unchanged."""
    if not name or any(c not in _TOKEN for c in name):
        return name
    out = []
    upper = True
    for c in name:
        if upper and "a" <= c <= "z":
            c = c.upper()
        elif not upper and "A" <= c <= "Z":
            c = c.lower()
        out.append(c)
        upper = c == "-"
    return "".join(out)


def canonical_headers(headers: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Headers given by name (a run request's), under their Go names, same names' values joined."""
    canonical: dict[str, list[str]] = {}
    for name, values in headers.items():
        canonical.setdefault(canonical_header_key(name), []).extend(values)
    return canonical


def validation_problems(error: ValidationError, whole: str) -> str:
    """What a Pydantic model refused, one `field: reason` per problem (the first five); `whole`
    names the value itself when the problem is with all of it."""
    return "; ".join(
        f"{'.'.join(str(p) for p in problem['loc']) or whole}: {problem['msg']}"
        for problem in error.errors()[:5]
    )


def request_headers(request: Request) -> dict[str, list[str]]:
    """Every header under its Go name, with all its values; `Host` left out, as Go did."""
    headers: dict[str, list[str]] = {}
    for raw_name, raw_value in request.headers.raw:
        name = canonical_header_key(raw_name.decode("latin-1"))
        if name == "Host":
            continue
        headers.setdefault(name, []).append(raw_value.decode("latin-1"))
    return headers


def first_query_values(request: Request) -> dict[str, str]:
    """Each query parameter's first value, as the original's `c.QueryParam`."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        params.setdefault(name, value)
    return params


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it grows past `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdecimal() and int(declared) > limit:
        raise PayloadTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes, *, expected: str = "JSON") -> Any:
    """A JSON document sent by a caller; anything else is a 400 `invalid body: expected ...`.

    Nesting deeper than the parser's stack (`[[[[...`) raises RecursionError, which is not a
    ValueError: left alone, it would be a 500.
    """
    try:
        return json.loads(raw)
    except RecursionError:
        raise BadRequest("invalid body: JSON nested too deeply") from None
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadRequest(f"invalid body: expected {expected}") from None


T = TypeVar("T")


def json_array(
    first: list[T],
    rest: AsyncGenerator[list[T], None] | None,
    render: Callable[[T], Any],
    *,
    headers: dict[str, str],
) -> Response:
    """A JSON array of `first` and then of each chunk of `rest`, written as the chunks are read.

    Items are encoded as JSONResponse encodes them: the bytes are those of the whole array
    answered at once, which is what happens (with a Content-Length) when there is no `rest`.
    """
    if rest is None:
        return JSONResponse([render(item) for item in first], headers=headers)
    return StreamingResponse(
        _array_chunks(first, rest, render), media_type="application/json", headers=headers
    )


async def _array_chunks(
    chunk: list[T], rest: AsyncGenerator[list[T], None], render: Callable[[T], Any]
) -> AsyncIterator[bytes]:
    try:
        opening = b"["
        while chunk:
            data = opening + b",".join(_json_bytes(render(item)) for item in chunk)
            chunk = []  # not kept while the client reads, nor while the next chunk is read
            yield data
            opening = b","
            chunk = await anext(rest, [])
        yield b"]"
    finally:
        await rest.aclose()


def _json_bytes(value: Any) -> bytes:
    # JSONResponse.render's encoding.
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def page_headers(request: Request, page: Page[Any]) -> dict[str, str]:
    """`X-Total-Count`, and a `Link` to the next page when there is one, for a paged list."""
    headers = {"X-Total-Count": str(page.total)}
    if page.has_next:
        next_url = request.url.include_query_params(page=page.page + 1, page_size=page.page_size)
        headers["Link"] = f'<{next_url}>; rel="next"'
    return headers
