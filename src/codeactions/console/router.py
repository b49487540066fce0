"""Serves the built console: its hashed assets (cached for good, gzipped when the browser takes
it) and its page for every /console path, so a deep link opens the page it names."""

from __future__ import annotations

import functools
import gzip
import mimetypes
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

# Written by `make` (vite build of console/); absent in a checkout that was never built.
DIST = Path(__file__).with_name("dist")

router = APIRouter(include_in_schema=False)

# The console loads nothing from elsewhere; CodeMirror sets styles inline.
_SECURITY = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_NOT_BUILT = (
    "<!doctype html><title>Console not built</title><h1>The console is not built</h1>"
    "<p>Run <code>make run</code> (or <code>make console</code>) in the checkout: it builds the "
    "console from <code>console/</code> into <code>src/codeactions/console/dist</code>.</p>"
)
_COMPRESSIBLE = (".js", ".css", ".html", ".svg", ".json", ".map")


@functools.cache
def _asset(name: str) -> tuple[bytes, bytes | None, str] | None:
    """An asset's bytes, their gzip (for text), and media type; None when there is no such file.
    Assets are content-hashed by the build, so what is read once stays right."""
    root = (DIST / "assets").resolve()
    path = (root / name).resolve()
    if path.parent != root or not path.is_file():
        return None
    data = path.read_bytes()
    packed = gzip.compress(data, 6, mtime=0) if path.suffix in _COMPRESSIBLE else None
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return data, packed, media


@router.get("/console/assets/{name}")
async def console_asset(name: str, request: Request) -> Response:
    found = _asset(name)
    if found is None:
        return Response("no such asset\n", status_code=404, media_type="text/plain")
    data, packed, media = found
    headers = {"Cache-Control": "public, max-age=31536000, immutable", "Vary": "Accept-Encoding"}
    if packed is not None and "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        data = packed
    return Response(data, media_type=media, headers={**headers, **_SECURITY})


@router.get("/console")
@router.get("/console/{path:path}")
async def console_page(path: str = "") -> Response:
    index = DIST / "index.html"
    if not index.is_file():
        return HTMLResponse(_NOT_BUILT, status_code=503, headers={"Retry-After": "60"})
    return HTMLResponse(index.read_bytes(), headers={"Cache-Control": "no-cache", **_SECURITY})
