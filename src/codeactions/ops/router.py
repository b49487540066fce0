"""Health routes."""

from __future__ import annotations

import platform
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from codeactions import __version__

router = APIRouter(tags=["health"])


def _liveness(request: Request) -> dict[str, Any]:
    started = getattr(request.app.state, "started_at", time.time())
    return {
        "status": "ok",
        "timestamp": datetime.now(UTC).isoformat(),
        "uptime": int((time.time() - started) * 1e9),
        "version": f"codeactions {__version__} (python {platform.python_version()})",
    }


@router.get("/", summary="Liveness")
async def root(request: Request) -> dict[str, Any]:
    return _liveness(request)


@router.get("/healthz", summary="Liveness")
async def healthz(request: Request) -> dict[str, Any]:
    return _liveness(request)


@router.get("/health", summary="Dependencies' health (503 when one is down)")
async def health(request: Request) -> JSONResponse:
    started = time.perf_counter()
    try:
        async with request.app.state.sessionmaker() as session:
            await session.execute(text("SELECT 1"))
        db: dict[str, object] = {"status": "healthy", "message": "ok"}
    except Exception as exc:
        db = {"status": "unhealthy", "message": type(exc).__name__}
    db["latency"] = int((time.perf_counter() - started) * 1e9)
    healthy = db["status"] == "healthy"
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "timestamp": datetime.now(UTC).isoformat(),
        "services": {"database": db},
    }
    return JSONResponse(body, status_code=200 if healthy else 503)
