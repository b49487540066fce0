"""Liveness, dependency health and Prometheus metrics routes (all public)."""

from __future__ import annotations

import platform
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from codeactions import __version__
from codeactions.ops.health import Health
from codeactions.ops.metrics import CONTENT_TYPE, Metrics

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


@router.get(
    "/health",
    summary="Health of every configured dependency (503 when one is down)",
    responses={503: {"description": "A dependency is unhealthy"}},
)
async def health(request: Request) -> JSONResponse:
    state = request.app.state
    checker: Health | None = getattr(state, "health", None)
    if checker is None:
        checker = state.health = Health(state.settings)
    report = await checker.report(request.app)
    return JSONResponse(report.body, status_code=200 if report.healthy else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    recorded: Metrics = request.app.state.metrics
    return Response(recorded.exposition(), headers={"Content-Type": CONTENT_TYPE})
