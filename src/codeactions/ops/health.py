"""Dependency health: every configured part checked concurrently, each within a timeout, cached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.config import Settings
from codeactions.parts import Part
from codeactions.runner.wire import RunnerStatus

Check = Callable[[], Awaitable[str]]  # returns a short message; raises when unhealthy


# What each check needs of a part, and no more: ops knows none of the domains.
class Pinged(Protocol):
    async def ping(self) -> None: ...


class SpoolingStore(Protocol):
    async def ping(self) -> None: ...

    def spool_status(self) -> dict[str, Any] | None: ...


class ConnectionStatus(Protocol):
    def status(self) -> tuple[bool, str]: ...


class RunnerHealth(Protocol):
    def status(self) -> RunnerStatus: ...


class HealthReport:
    def __init__(self, body: dict[str, Any], healthy: bool) -> None:
        self.body = body
        self.healthy = healthy


class Health:
    """The `/health` answer of one app, cached for `health.cache_seconds` (per app, not global)."""

    def __init__(self, settings: Settings, checks: Mapping[str, Check], started_at: float) -> None:
        self.settings = settings
        self.checks = dict(checks)
        self.started_at = started_at  # time.time() when the app's lifespan began
        self._cached: HealthReport | None = None
        self._cached_at = 0.0
        self._lock = asyncio.Lock()

    async def report(self) -> HealthReport:
        cache = self.settings.health.cache_seconds
        if self._cached and time.monotonic() - self._cached_at < cache:
            return self._cached
        async with self._lock:  # one round of checks at a time, however many callers
            if self._cached and time.monotonic() - self._cached_at < cache:
                return self._cached
            report = await self._check()
            self._cached, self._cached_at = report, time.monotonic()
            return report

    async def _check(self) -> HealthReport:
        checks = self.checks
        results = await asyncio.gather(*(self._run(check) for check in checks.values()))
        checked = dict(zip(checks, results, strict=True))
        healthy = all(s["status"] == "healthy" for s in checked.values())
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "timestamp": datetime.now(UTC).isoformat(),
            "uptime": int((time.time() - self.started_at) * 1e9),
            "services": checked,
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


HEALTH: Part[Health] = Part("health")


def standard_checks(
    settings: Settings,
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    journal_status: Callable[[], dict[str, Any]],
    limiter: Pinged,
    consumers: ConnectionStatus | None,
    log_store: SpoolingStore,
    runner: RunnerHealth,
) -> dict[str, Check]:
    """The checks of every configured part: the database and the outcome journal always, Redis,
    RabbitMQ, S3 and the runner when `settings` turn them on."""
    checks: dict[str, Check] = {
        "database": lambda: _database(sessionmaker),
        "journal": lambda: _spooled(journal_status(), "outcomes"),
    }
    if settings.ratelimit.redis_url:
        mode = "fail-open" if settings.ratelimit.fail_open else "fail-closed"

        async def redis() -> str:
            try:
                await limiter.ping()
            except Exception as exc:
                raise RuntimeError(f"{_describe(exc)} (rate limiter {mode})") from exc
            return f"ok (rate limiter {mode})"

        checks["redis"] = redis
    if settings.rabbitmq.url:
        checks["rabbitmq"] = lambda: _rabbitmq(consumers)
    if settings.logs.s3_enabled:

        async def s3() -> str:
            await log_store.ping()
            spool = log_store.spool_status()
            if spool is None:  # a store that keeps no spool (a test's stand-in)
                return "ok"
            return await _spooled(spool, "log batches")

        checks["s3"] = s3
    if settings.runner.enabled:
        checks["runner"] = lambda: _runner(runner)
    return checks


async def _database(sessionmaker: async_sessionmaker[AsyncSession]) -> str:
    async with sessionmaker() as session:
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


async def _rabbitmq(consumers: ConnectionStatus | None) -> str:
    # The consumers' own connection: no new connection per check (the original dialled one).
    if consumers is None:
        raise RuntimeError("consumers not started")
    connected, message = consumers.status()
    if not connected:
        raise RuntimeError(message)
    return str(message)


async def _runner(runner: RunnerHealth) -> str:
    ok, word = runner_health(runner.status())
    if not ok:
        raise RuntimeError(word)
    return word


def runner_health(status: RunnerStatus) -> tuple[bool, str]:
    """Unhealthy when the supervisor is down or any language cannot run: the word names each
    language that cannot, and why; the others keep serving."""
    ready = [name for name, language in status["languages"].items() if language["ready"]]
    if not status["ok"]:
        detail = status["error"] or "runner not ready"
        return False, detail + (f"; {', '.join(ready)} ready" if ready else "")
    return True, f"ok ({', '.join(ready) or 'no language'} ready; isolation: {status['isolation']})"


def _describe(exc: BaseException) -> str:
    # One line, bounded: long enough for the runner's, which names each language that cannot run.
    text_ = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text_}" if text_ else type(exc).__name__
