"""Retention: delete runs and logs past the retention period, daily, on one replica at a time.

Once a day at `cleaner.schedule_time` (UTC, hour and minute). A replica that starts after that
time waits for the next day rather than catching up: a restart or deploy in business hours must
not set off a large delete, and a day's delay only keeps data one day longer (`codeactions clean`
runs a pass by hand). Replicas race for a lock; the one that gets it cleans, the others skip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from codeactions.config import Settings
from codeactions.logs.store import LogStore
from codeactions.parts import Part
from codeactions.runs.cleaner_locks import CleanerLock, Held, LocalLock, PostgresLock, RedisLock
from codeactions.runs.repository import delete_runs_older

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CleanResult:
    before: datetime
    runs: int
    logs: int
    complete: bool = True  # False when the lock was lost and the pass stopped early


def next_run_at(now: datetime, at: time) -> datetime:
    """The first `at` (UTC hour and minute) strictly after `now`."""
    now = now.astimezone(UTC)
    candidate = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    return candidate if candidate > now else candidate + timedelta(days=1)


class RetentionCleaner:
    def __init__(
        self,
        settings: Settings,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        log_store: LogStore,
        lock: CleanerLock,
    ) -> None:
        self.settings = settings.cleaner
        self._sessionmaker = sessionmaker
        self._log_store = log_store
        self._lock = lock

    async def run_once(self, now: datetime | None = None) -> CleanResult | None:
        """One pass under the lock; None when another replica holds it."""
        async with self._lock.hold() as held:
            if held is None:
                log.info("cleaner lock held elsewhere, skipping this pass")
                return None
            result = await self._clean(held, now or datetime.now(UTC))
            log.info(
                "cleaner deleted %d runs and %d logs created before %s%s",
                result.runs,
                result.logs,
                result.before.isoformat(),
                "" if result.complete else " (stopped: lock lost)",
            )
            return result

    async def _clean(self, held: Held, now: datetime) -> CleanResult:
        # retention_days >= 1 is enforced by the settings: never a cutoff of "now".
        before = now - timedelta(days=self.settings.retention_days)
        size = self.settings.batch_size
        counts = {"runs": 0, "logs": 0}
        steps: dict[str, Callable[[], Awaitable[int]]] = {
            "runs": lambda: self._delete_runs(before, size),
            "logs": lambda: self._log_store.delete_older(before, size),
        }
        for name, step in steps.items():
            while not held.lost.is_set():
                deleted = await step()
                counts[name] += deleted
                if deleted < size:
                    break
        return CleanResult(before, counts["runs"], counts["logs"], not held.lost.is_set())

    async def _delete_runs(self, before: datetime, limit: int) -> int:
        async with self._sessionmaker() as session, session.begin():
            return await delete_runs_older(session, before, limit)

    async def run_daily(self) -> None:
        """Sleep until each day's schedule time, then clean; errors wait for the next day."""
        while True:
            target = next_run_at(datetime.now(UTC), self.settings.schedule_time)
            await _sleep_until(target)
            try:
                await self.run_once()
            except Exception:
                log.exception("cleaner pass failed")


async def _sleep_until(target: datetime) -> None:
    # Short sleeps toward the target: a suspended or stepped clock cannot make it miss a day.
    while True:
        left = (target - datetime.now(UTC)).total_seconds()
        if left <= 0:
            return
        await asyncio.sleep(min(left, 600))


async def build_cleaner(
    settings: Settings,
    *,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    log_store: LogStore,
    stack: AsyncExitStack,
) -> RetentionCleaner:
    """The cleaner with the lock matching the deployment; clients it opens close with `stack`."""
    lock: CleanerLock
    if not settings.database.is_sqlite:
        lock = PostgresLock(engine)
    elif settings.ratelimit.redis_url:
        from codeactions.ratelimit.redis import connect

        redis = connect(settings.ratelimit.redis_url)
        stack.push_async_callback(redis.aclose)  # type: ignore[attr-defined]
        lock = RedisLock(redis)
    else:
        lock = LocalLock()
    return RetentionCleaner(settings, sessionmaker=sessionmaker, log_store=log_store, lock=lock)


async def clean_now(settings: Settings) -> CleanResult | None:
    """One pass for the `codeactions clean` command, with its own engine and log store."""
    from codeactions.db.session import create_engine, create_sessionmaker
    from codeactions.logs.factory import build_log_store
    from codeactions.spool import spool_root

    async with AsyncExitStack() as stack:
        engine = create_engine(settings.database)
        stack.push_async_callback(engine.dispose)
        sessionmaker = create_sessionmaker(engine)
        log_store = build_log_store(
            settings.logs,
            sessionmaker,
            spools=spool_root(settings.spool, settings.database),
            spool=settings.spool,
        )
        stack.push_async_callback(log_store.close)
        cleaner = await build_cleaner(
            settings, engine=engine, sessionmaker=sessionmaker, log_store=log_store, stack=stack
        )
        return await cleaner.run_once()


# None when the retention cleaner is off.
CLEANER: Part[RetentionCleaner | None] = Part("cleaner")
