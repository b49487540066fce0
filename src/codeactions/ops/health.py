"""Dependency health: every configured part checked concurrently, each within a timeout, cached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text

from codeactions.config import Settings
from codeactions.runner.wire import RunnerStatus

Check = Callable[[], Awaitable[str]]  # returns a short message; raises when unhealthy


class HealthReport:
    def __init__(self, body: dict[str, Any], healthy: bool) -> None:
        self.body = body
        self.healthy = healthy


class Health:
    """The `/health` answer of one app, cached for `health.cache_seconds` (per app, not global)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cached: HealthReport | None = None
        self._cached_at = 0.0
        self._lock = asyncio.Lock()

    async def report(self, app: FastAPI) -> HealthReport:
        cache = self.settings.health.cache_seconds
        if self._cached and time.monotonic() - self._cached_at < cache:
            return self._cached
        async with self._lock:  # one round of checks at a time, however many callers
            if self._cached and time.monotonic() - self._cached_at < cache:
                return self._cached
            report = await self._check(app)
            self._cached, self._cached_at = report, time.monotonic()
            return report

    async def _check(self, app: FastAPI) -> HealthReport:
        checks = self._checks(app)
        results = await asyncio.gather(*(self._run(check) for check in checks.values()))
        services = dict(zip(checks, results, strict=True))
        healthy = all(s["status"] == "healthy" for s in services.values())
        started = getattr(app.state, "started_at", time.time())
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "timestamp": datetime.now(UTC).isoformat(),
            "uptime": int((time.time() - started) * 1e9),
            "services": services,
        }
        return HealthReport(body, healthy)

    async def _run(self, check: Check) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            message = await asyncio.wait_for(check(), self.settings.health.timeout_seconds)
            status = "healthy"
        except TimeoutError:
            status, message = (
                "unhealthy",
                f"no answer within {self.settings.health.timeout_seconds:g}s",
            )
        except Exception as exc:
            # The exception's type and text, never a traceback: /health is public.
            status, message = "unhealthy", _describe(exc)
        return {
            "status": status,
            "message": message,
            "latency": int((time.perf_counter() - started) * 1e9),  # ns, as the original
            "timestamp": datetime.now(UTC).isoformat(),
        }

    def _checks(self, app: FastAPI) -> dict[str, Check]:
        settings = self.settings
        state = app.state
        checks: dict[str, Check] = {"database": lambda: _database(app)}
        if getattr(state, "journal", None) is not None:
            checks["journal"] = lambda: _spooled(state.journal.consumer.status(), "outcomes")
        if settings.ratelimit.redis_url:
            mode = "fail-open" if settings.ratelimit.fail_open else "fail-closed"

            async def redis() -> str:
                try:
                    await state.limiter.ping()
                except Exception as exc:
                    raise RuntimeError(f"{_describe(exc)} (rate limiter {mode})") from exc
                return f"ok (rate limiter {mode})"

            checks["redis"] = redis
        if settings.rabbitmq.url:
            checks["rabbitmq"] = lambda: _rabbitmq(app)
        if settings.logs.s3_enabled:

            async def s3() -> str:
                await state.log_store.ping()
                return await _spooled(state.log_store.status(), "log batches")

            checks["s3"] = s3
        if settings.runner.enabled and getattr(state, "runner", None) is not None:
            checks["runner"] = lambda: _runner(app)
        return checks


async def _database(app: FastAPI) -> str:
    async with app.state.sessionmaker() as session:
        await session.execute(text("SELECT 1"))
    return "ok"


async def _spooled(status: dict[str, Any], what: str) -> str:
    """A spool's backlog: records kept on local disk until their destination takes them."""
    backlog = int(status.get("backlog", 0))
    if status.get("failing_for_seconds"):
        raise RuntimeError(
            f"{backlog} {what} spooled, writing them fails for "
            f"{status['failing_for_seconds']}s: {status.get('last_error', '')}"
        )
    return f"ok ({backlog} {what} spooled)"


async def _rabbitmq(app: FastAPI) -> str:
    # The consumers' own connection: no new connection per check (the original dialled one).
    consumers = getattr(app.state, "consumers", None)
    if consumers is None:
        raise RuntimeError("consumers not started")
    connected, message = consumers.status()
    if not connected:
        raise RuntimeError(message)
    return str(message)


async def _runner(app: FastAPI) -> str:
    """Unhealthy when the supervisor is down or any language cannot run: the message names each
    language that cannot, and why; the others keep serving."""
    status: RunnerStatus = app.state.runner.status()
    ready = [name for name, language in status["languages"].items() if language["ready"]]
    if not status["ok"]:
        detail = status["error"] or "runner not ready"
        raise RuntimeError(detail + (f"; {', '.join(ready)} ready" if ready else ""))
    return f"ok ({', '.join(ready) or 'no language'} ready; isolation: {status['isolation']})"


def _describe(exc: BaseException) -> str:
    # One line, bounded: long enough for the runner's, which names each language that cannot run.
    text_ = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text_}" if text_ else type(exc).__name__
