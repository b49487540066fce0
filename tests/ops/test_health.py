"""GET /health: what is configured is checked, each within its timeout, answers cached per app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from codeactions.config import (
    DatabaseSettings,
    HealthSettings,
    RabbitSettings,
    RateLimitSettings,
    RunnerSettings,
    Settings,
)
from codeactions.db.session import SESSIONMAKER
from codeactions.logs.store import LOG_STORE
from codeactions.main import create_app
from codeactions.ops.health import Health, standard_checks
from codeactions.parts import SETTINGS
from codeactions.projects.consumers import CONSUMERS
from codeactions.ratelimit.base import LIMITER
from codeactions.runner.wire import LANGUAGES, Language, LanguageStatus, RunnerStatus
from codeactions.runs.journal import JOURNAL
from tests.conftest import Sessions, need_service

DEAD_PG = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1


def settings_for(tmp_path: Path, **groups: Any) -> Settings:
    groups.setdefault("database", DatabaseSettings(url=f"sqlite:///{tmp_path / 'h.db'}"))
    groups.setdefault("runner", RunnerSettings(enabled=False, work_dir=str(tmp_path / "runner")))
    groups.setdefault("health", HealthSettings(cache_seconds=0, timeout_seconds=2))
    return Settings(**groups)


async def started(settings: Settings, **parts: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, **parts)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def test_health_is_healthy_with_the_default_parts(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert set(body) >= {"status", "timestamp", "uptime", "services"}
    # Only what is configured is checked: no Redis, RabbitMQ or S3 here; the outcome journal's
    # backlog is always reported.
    assert set(body["services"]) == {"database", "journal"}
    assert body["services"]["journal"]["message"] == "ok (0 outcomes spooled)"
    database = body["services"]["database"]
    assert database["status"] == "healthy"
    assert isinstance(database["latency"], int)


async def test_database_down_is_503_with_the_failing_dependency(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, database=DatabaseSettings(url=DEAD_PG, connect_timeout=2))
    async for client in started(settings):
        response = await client.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unhealthy"
        assert body["services"]["database"]["status"] == "unhealthy"
        assert body["services"]["database"]["message"]
        # Liveness does not depend on the database.
        assert (await client.get("/healthz")).status_code == 200


async def test_redis_down_is_reported_with_the_limiter_mode(tmp_path: Path) -> None:
    limiter = RateLimitSettings(redis_url="redis://127.0.0.1:1/0", fail_open=False)
    async for client in started(settings_for(tmp_path, ratelimit=limiter)):
        response = await client.get("/health")
        assert response.status_code == 503
        redis = response.json()["services"]["redis"]
        assert redis["status"] == "unhealthy"
        assert "fail-closed" in redis["message"]
        assert response.json()["services"]["database"]["status"] == "healthy"


async def test_redis_up_is_healthy(tmp_path: Path) -> None:
    need_service("Redis", "127.0.0.1", 6379)
    limiter = RateLimitSettings(redis_url="redis://127.0.0.1:6379/15")
    async for client in started(settings_for(tmp_path, ratelimit=limiter)):
        response = await client.get("/health")
        assert response.status_code == 200
        assert "fail-open" in response.json()["services"]["redis"]["message"]


async def test_rabbitmq_unreachable_is_reported_and_the_api_still_serves(tmp_path: Path) -> None:
    rabbit = RabbitSettings(url="amqp://guest:guest@127.0.0.1:1/", reconnect_seconds=0.2)
    async for client in started(settings_for(tmp_path, rabbitmq=rabbit)):
        response = await client.get("/health")
        assert response.status_code == 503
        assert response.json()["services"]["rabbitmq"]["status"] == "unhealthy"
        assert (await client.get("/healthz")).status_code == 200


async def test_a_hanging_dependency_answers_within_the_timeout(tmp_path: Path) -> None:
    limiter = RateLimitSettings(redis_url="redis://127.0.0.1:1/0")
    health = HealthSettings(cache_seconds=0, timeout_seconds=0.3)

    class Hanging:
        async def ping(self) -> None:
            await asyncio.sleep(30)

        async def close(self) -> None: ...

    settings = settings_for(tmp_path, ratelimit=limiter, health=health)
    async for client in started(settings, limiter=Hanging()):
        loop = asyncio.get_running_loop()
        began = loop.time()
        response = await client.get("/health")
        assert loop.time() - began < 2
        assert response.status_code == 503
        assert "no answer within" in response.json()["services"]["redis"]["message"]


@pytest.mark.parametrize("cache_seconds, expected", [(60, 200), (0, 503)])
async def test_the_answer_is_cached_for_the_configured_time(
    tmp_path: Path, cache_seconds: float, expected: int
) -> None:
    health = HealthSettings(cache_seconds=cache_seconds, timeout_seconds=2)
    settings = settings_for(tmp_path, health=health)
    sessions = Sessions(settings.database)
    async for client in started(settings, sessionmaker=sessions):
        first = await client.get("/health")
        assert first.status_code == 200

        class Broken:
            async def __aenter__(self) -> Any:
                raise ConnectionError("database went away")

            async def __aexit__(self, *exc: object) -> None: ...

        sessions.failing = lambda: Broken()
        second = await client.get("/health")
        assert second.status_code == expected
        if expected == 200:
            assert second.json()["timestamp"] == first.json()["timestamp"]
    await sessions.close()


async def test_each_app_has_its_own_cache(tmp_path: Path) -> None:
    health = HealthSettings(cache_seconds=60, timeout_seconds=2)
    bad = settings_for(
        tmp_path, health=health, database=DatabaseSettings(url=DEAD_PG, connect_timeout=2)
    )
    async for broken in started(bad):
        assert (await broken.get("/health")).status_code == 503
        async for fine in started(settings_for(tmp_path, health=health)):
            assert (await fine.get("/health")).status_code == 200


def runner_status(ok: bool, error: str = "", **broken: str) -> RunnerStatus:
    """A runner's status whose languages are ready but for those in `broken` (name: why)."""
    languages: dict[Language, LanguageStatus] = {
        name: {
            "ready": name not in broken,
            "error": broken.get(name, ""),
            "failures": 4 if name in broken else 0,
            "retry_in": 1.5 if name in broken else 0.0,
        }
        for name in LANGUAGES
    }
    return RunnerStatus(
        ok=ok,
        error=error,
        isolation="full",
        network="off",
        cgroups="v2",
        slots=1,
        busy=0,
        queued=0,
        node_spares=0,
        warnings=[],
        restarts=0,
        supervisor_pid=None,
        languages=languages,
    )


async def test_the_runner_is_checked_when_enabled(app: FastAPI, tmp_path: Path) -> None:
    class StubRunner:
        def __init__(self, status: RunnerStatus) -> None:
            self._status = status

        def status(self) -> RunnerStatus:
            return self._status

    settings = app.state.parts[SETTINGS].model_copy(
        update={"runner": RunnerSettings(enabled=True, work_dir=str(tmp_path))}
    )
    node = "Node.js cannot start: Error: Cannot find module '/x/engine.js'"
    gone = "the runner supervisor is not running (it is restarted)"
    for status, expected, says in (
        (runner_status(True), "healthy", "ok (python, javascript, go ready; isolation: full)"),
        (
            runner_status(False, f"javascript cannot run: {node}", javascript=node),
            "unhealthy",
            f"RuntimeError: javascript cannot run: {node}; python, go ready",
        ),
        (
            runner_status(False, gone, **dict.fromkeys(LANGUAGES, gone)),
            "unhealthy",
            f"RuntimeError: {gone}",
        ),
    ):
        parts = app.state.parts
        checks = standard_checks(
            settings,
            sessionmaker=parts[SESSIONMAKER],
            journal_status=parts[JOURNAL].consumer.status,
            limiter=parts[LIMITER],
            consumers=parts[CONSUMERS],
            log_store=parts[LOG_STORE],
            runner=StubRunner(status),
        )
        report = await Health(settings, checks, started_at=0.0).report()
        runner = report.body["services"]["runner"]
        assert (runner["status"], runner["message"]) == (expected, says)
        assert report.healthy == (expected == "healthy")
