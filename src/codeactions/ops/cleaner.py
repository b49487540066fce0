"""Retention: delete runs and logs past the retention period, daily, on one replica at a time.

Once a day at `cleaner.schedule_time` (UTC, hour and minute). A replica that starts after that
time waits for the next day rather than catching up: a restart or deploy in business hours must
not set off a large delete, and a day's delay only keeps data one day longer (`codeactions clean`
runs a pass by hand). Replicas race for a lock; the one that gets it cleans, the others skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from codeactions.config import Settings
from codeactions.db.models import CodeRun
from codeactions.logs.store import LogStore

log = logging.getLogger(__name__)

PG_LOCK_KEY = 0x636F646561637473  # "codeacts": one advisory lock id for the cleaner
REDIS_LOCK_KEY = "codeactions:cleaner"
REDIS_LOCK_TTL = 60.0  # seconds; refreshed every third of it while the clean runs
PG_KEEPALIVE = 20.0  # seconds between checks that the lock's connection is still alive

_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass
class Held:
    """A lock this replica holds; `lost` is set if it stops being sure it still does."""

    lost: asyncio.Event = field(default_factory=asyncio.Event)


class CleanerLock(Protocol):
    def hold(self) -> AbstractAsyncContextManager[Held | None]:
        """Try once to take the lock: yields None at once when another holder has it."""
        ...


@asynccontextmanager
async def _refreshing(
    held: Held, every: float, refresh: Callable[[], Awaitable[bool]]
) -> AsyncIterator[None]:
    """Run `refresh` every `every` seconds while the body runs; a failed refresh sets `lost`."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                still_ours = await refresh()
            except Exception as exc:
                log.warning("cleaner lock refresh failed: %s", exc)
                still_ours = False
            if not still_ours:
                held.lost.set()
                return

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class LocalLock:
    """One cleaner at a time in this process: SQLite has a single machine."""

    # One lock per event loop: an asyncio.Lock must not be awaited from another loop.
    _locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
        weakref.WeakKeyDictionary()
    )

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[Held | None]:
        lock = self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        if lock.locked():
            yield None
            return
        async with lock:
            yield Held()


class PostgresLock:
    """A session advisory lock on a connection of its own, held for the whole clean.

    It lives exactly as long as that connection: nothing to refresh, and a crashed replica's lock
    goes with its connection. The keepalive only notices a dropped connection (lock gone).
    """

    def __init__(self, engine: AsyncEngine, keepalive: float = PG_KEEPALIVE) -> None:
        self._engine = engine
        self._keepalive = keepalive

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[Held | None]:
        async with self._engine.connect() as conn:
            got = await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
            await conn.commit()  # no transaction left open on the lock's connection
            if not got:
                yield None
                return
            held = Held()

            async def alive() -> bool:
                await conn.execute(text("SELECT 1"))
                await conn.commit()
                return True

            try:
                async with _refreshing(held, self._keepalive, alive):
                    yield held
            finally:
                with contextlib.suppress(Exception):
                    await conn.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": PG_LOCK_KEY}
                    )
                    await conn.commit()


class RedisLock:
    """SET NX PX with a random token, refreshed while held, released by compare-and-delete."""

    def __init__(self, redis: Any, key: str = REDIS_LOCK_KEY, ttl: float = REDIS_LOCK_TTL) -> None:
        self._redis = redis
        self._key = key
        self._ttl_ms = int(ttl * 1000)
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[Held | None]:
        token = uuid.uuid4().hex
        if not await self._redis.set(self._key, token, nx=True, px=self._ttl_ms):
            yield None
            return
        held = Held()

        async def refresh() -> bool:
            return bool(await self._refresh(keys=[self._key], args=[token, self._ttl_ms]))

        try:
            async with _refreshing(held, self._ttl_ms / 3000, refresh):
                yield held
        finally:
            with contextlib.suppress(Exception):
                await self._release(keys=[self._key], args=[token])


@dataclass(frozen=True)
class CleanResult:
    before: datetime
    runs: int
    logs: int
    complete: bool = True  # False when the lock was lost and the pass stopped early


async def delete_runs_older(
    sessionmaker: async_sessionmaker[AsyncSession], before: datetime, limit: int
) -> int:
    """Delete up to `limit` of the oldest runs created before `before`; return how many went."""
    async with sessionmaker() as session, session.begin():
        oldest = (
            select(CodeRun.id)
            .where(CodeRun.created_at < before)
            .order_by(CodeRun.created_at)
            .limit(limit)
        )
        result = await session.execute(
            delete(CodeRun)
            .where(CodeRun.id.in_(oldest))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


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
            "runs": lambda: delete_runs_older(self._sessionmaker, before, size),
            "logs": lambda: self._log_store.delete_older(before, size),
        }
        for name, step in steps.items():
            while not held.lost.is_set():
                deleted = await step()
                counts[name] += deleted
                if deleted < size:
                    break
        return CleanResult(before, counts["runs"], counts["logs"], not held.lost.is_set())

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


async def start_cleaner(app: Any, settings: Settings, stack: AsyncExitStack) -> None:
    """Wire the daily cleaner into the app's lifespan (`app.state.cleaner`)."""
    cleaner = await build_cleaner(
        settings,
        engine=app.state.engine,
        sessionmaker=app.state.sessionmaker,
        log_store=app.state.log_store,
        stack=stack,
    )
    app.state.cleaner = cleaner
    task = asyncio.create_task(cleaner.run_daily(), name="retention-cleaner")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)


async def clean_now(settings: Settings) -> CleanResult | None:
    """One pass for the `codeactions clean` command, with its own engine and log store."""
    from codeactions.db.session import create_engine, create_sessionmaker
    from codeactions.logs.store import build_log_store
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
