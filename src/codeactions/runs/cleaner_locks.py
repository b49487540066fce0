"""Locks that let one replica at a time clean: in-process, a PostgreSQL advisory lock, or Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(
    "codeactions.runs.cleaner"
)  # the cleaner's own log: operators follow one name

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
