"""Liveness, dependency health, Prometheus metrics and deployment facts routes (all public)."""

from __future__ import annotations

import platform
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from codeactions import __version__
from codeactions.codes.schemas import CODE_TYPES, LANGUAGES
from codeactions.ops.health import HEALTH, Health
from codeactions.ops.metrics import CONTENT_TYPE, MetricsDep
from codeactions.ops.schemas import InfoOut, RateLimitOut
from codeactions.parts import SettingsDep, part

router = APIRouter(tags=["health"])

HealthDep = Annotated[Health, Depends(part(HEALTH))]


def _liveness(health: Health) -> dict[str, Any]:
    return {
        "status": "ok",
        "timestamp": datetime.now(UTC).isoformat(),
        "uptime": int((time.time() - health.started_at) * 1e9),
        "version": f"codeactions {__version__} (python {platform.python_version()})",
    }


@router.get("/", summary="Liveness")
async def root(health: HealthDep) -> dict[str, Any]:
    return _liveness(health)


@router.get("/healthz", summary="Liveness")
async def healthz(health: HealthDep) -> dict[str, Any]:
    return _liveness(health)


@router.get(
    "/health",
    summary="Health of every configured dependency (503 when one is down)",
    responses={503: {"description": "A dependency is unhealthy"}},
)
async def health(checked: HealthDep) -> JSONResponse:
    report = await checked.report()
    return JSONResponse(report.body, status_code=200 if report.healthy else 503)


@router.get(
    "/info",
    summary="Public facts about this deployment: version, login, limits, languages",
    tags=["info"],
)
async def info(settings: SettingsDep) -> InfoOut:
    return InfoOut(
        version=__version__,
        login=settings.auth.login_enabled,
        rate_limit=RateLimitOut(
            max_requests=settings.ratelimit.max_requests,
            window_seconds=settings.ratelimit.window_seconds,
        ),
        languages=list(LANGUAGES),
        code_types=list(CODE_TYPES),
        max_source_bytes=settings.code.max_source_bytes,
        default_timeout=settings.code.default_timeout,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(recorded: MetricsDep) -> Response:
    return Response(recorded.exposition(), headers={"Content-Type": CONTENT_TYPE})
