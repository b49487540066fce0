"""Limits on the live channel per principal: open WebSocket connections and messages per window."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from codeactions.parts import Part
from codeactions.ratelimit.redis import FAIL_OPEN_WARNING_EVERY, SLIDING_WINDOW, connect

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 5
DEFAULT_MESSAGE_LIMIT = 600
DEFAULT_MESSAGE_WINDOW = 60.0
# A counted connection whose replica stopped refreshing it (crashed, partitioned) stops counting
# after CONNECTION_TTL seconds; a live one refreshes every CONNECTION_REFRESH_INTERVAL, which leaves
# room for two missed refreshes before its place is given away.
CONNECTION_TTL = 60.0
CONNECTION_REFRESH_INTERVAL = 20.0
DEFAULT_KEY_PREFIX = "live"


class ConnectionLimiter(Protocol):
    async def acquire(self, principal_key: str, connection_id: str) -> bool:
        """Count the connection and answer True, or answer False (nothing counted) at the limit."""
        ...

    async def refresh(self, principal_key: str, connection_id: str) -> None:
        """Keep an open connection counted (every CONNECTION_REFRESH_INTERVAL seconds)."""
        ...

    async def release(self, principal_key: str, connection_id: str) -> None:
        """Stop counting the connection (it closed)."""
        ...

    async def close(self) -> None: ...


class MessageLimiter(Protocol):
    async def hit(self, principal_key: str) -> bool:
        """Count one message and answer True, or answer False (nothing counted) over the limit."""
        ...

    async def close(self) -> None: ...


class MemoryConnectionLimiter:
    """Connections of this process only; a dead process takes its count with it, so no expiry."""

    def __init__(self, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.max_connections = max_connections
        self._open: dict[str, set[str]] = {}

    async def acquire(self, principal_key: str, connection_id: str) -> bool:
        connections = self._open.get(principal_key, set())
        if connection_id not in connections and len(connections) >= self.max_connections:
            return False
        self._open.setdefault(principal_key, set()).add(connection_id)
        return True

    async def refresh(self, principal_key: str, connection_id: str) -> None:
        return None

    async def release(self, principal_key: str, connection_id: str) -> None:
        connections = self._open.get(principal_key)
        if connections is None:
            return
        connections.discard(connection_id)
        if not connections:
            del self._open[principal_key]

    async def close(self) -> None:
        self._open.clear()


class MemoryMessageLimiter:
    """Exact sliding window kept in this process: the time of every counted message in the window."""

    def __init__(
        self, *, limit: int = DEFAULT_MESSAGE_LIMIT, window: float = DEFAULT_MESSAGE_WINDOW
    ) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}
        self._next_sweep = time.monotonic() + window

    async def hit(self, principal_key: str) -> bool:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._forget_idle(now)
        hits = self._hits.setdefault(principal_key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    def _forget_idle(self, now: float) -> None:
        # Once a window: a principal that sent nothing for a whole window holds no counted hit.
        idle = [
            key for key, hits in self._hits.items() if not hits or hits[-1] <= now - self.window
        ]
        for key in idle:
            del self._hits[key]
        self._next_sweep = now + self.window

    async def close(self) -> None:
        self._hits.clear()


# A sorted set per principal: member = connection id, score = when it stops counting (ms on Redis's
# own clock, so replicas with skewed clocks agree). Expired members are removed before counting,
# and the count and the add happen in one script, so two replicas racing cannot both admit the
# connection over the limit. A connection already counted is refreshed and admitted again.
ACQUIRE_CONNECTION = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local member = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if not redis.call('ZSCORE', key, member) and redis.call('ZCARD', key) >= limit then
  return 0
end
redis.call('ZADD', key, now + ttl, member)
redis.call('PEXPIRE', key, ttl)
return 1
"""

# Adds the member back if it was lost (Redis restarted, or it was admitted while Redis was down):
# the count should say how many connections are open, even if that is briefly over the limit.
REFRESH_CONNECTION = """
local key = KEYS[1]
local ttl = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', key, now + ttl, ARGV[2])
redis.call('PEXPIRE', key, ttl)
return 1
"""


class _FailOpenWarning:
    """Logs that Redis is unreachable at most every FAIL_OPEN_WARNING_EVERY seconds."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._last = -math.inf

    def __call__(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last >= FAIL_OPEN_WARNING_EVERY:
            self._last = now
            log.warning("live %s: Redis unreachable, allowing: %s", self.what, exc)


class RedisConnectionLimiter:
    """Connections counted across every replica through Redis.

    When Redis is unreachable, a connection is admitted (fail open): the limit guards against a
    client opening sockets in a loop, not a security boundary, and refusing every WebSocket while
    Redis blips would take the live channel down for everyone. Refreshes count such a connection
    once Redis answers again.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        ttl: float = CONNECTION_TTL,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        self.max_connections = max_connections
        self.ttl_ms = max(1, int(ttl * 1000))
        self.key_prefix = key_prefix
        self._redis = connect(redis_url)
        self._acquire: Any = self._redis.register_script(ACQUIRE_CONNECTION)
        self._refresh: Any = self._redis.register_script(REFRESH_CONNECTION)
        self._warn = _FailOpenWarning("connection limit")

    def _key(self, principal_key: str) -> str:
        return f"{self.key_prefix}:connections:{principal_key}"

    async def acquire(self, principal_key: str, connection_id: str) -> bool:
        try:
            admitted = await self._acquire(
                keys=[self._key(principal_key)],
                args=[self.max_connections, self.ttl_ms, connection_id],
            )
        except (RedisError, OSError) as exc:
            self._warn(exc)
            return True
        return bool(admitted)

    async def refresh(self, principal_key: str, connection_id: str) -> None:
        try:
            await self._refresh(keys=[self._key(principal_key)], args=[self.ttl_ms, connection_id])
        except (RedisError, OSError) as exc:
            self._warn(exc)

    async def release(self, principal_key: str, connection_id: str) -> None:
        try:
            await self._redis.zrem(self._key(principal_key), connection_id)
        except (RedisError, OSError) as exc:
            # The entry stops counting on its own after the TTL.
            self._warn(exc)

    async def close(self) -> None:
        await self._redis.aclose()  # type: ignore[attr-defined]  # stubs predate aclose()


class RedisMessageLimiter:
    """Exact sliding window shared by every replica: the HTTP rate limiter's script, own keys.

    When Redis is unreachable, messages are allowed, for the reason the connection limit admits.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        limit: int = DEFAULT_MESSAGE_LIMIT,
        window: float = DEFAULT_MESSAGE_WINDOW,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        self.limit = limit
        self.window_ms = max(1, int(window * 1000))
        self.key_prefix = key_prefix
        self._redis = connect(redis_url)
        self._script: Any = self._redis.register_script(SLIDING_WINDOW)
        # A member unique across replicas even when two hits share Redis's microsecond.
        self._replica = uuid.uuid4().hex[:12]
        self._sequence = 0
        self._warn = _FailOpenWarning("message limit")

    async def hit(self, principal_key: str) -> bool:
        self._sequence += 1
        try:
            allowed, _remaining, _reset_ms = await self._script(
                keys=[f"{self.key_prefix}:messages:{principal_key}"],
                args=[self.limit, self.window_ms, f"{self._replica}:{self._sequence}"],
            )
        except (RedisError, OSError) as exc:
            self._warn(exc)
            return True
        return bool(allowed)

    async def close(self) -> None:
        await self._redis.aclose()  # type: ignore[attr-defined]  # stubs predate aclose()


@dataclass(frozen=True)
class LiveLimits:
    connections: ConnectionLimiter
    messages: MessageLimiter

    async def close(self) -> None:
        await self.connections.close()
        await self.messages.close()


def build_live_limits(
    redis_url: str | None,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    message_limit: int = DEFAULT_MESSAGE_LIMIT,
    message_window: float = DEFAULT_MESSAGE_WINDOW,
) -> LiveLimits:
    """Limits shared by replicas through Redis when `redis_url` is set, else kept in process."""
    if redis_url:
        return LiveLimits(
            RedisConnectionLimiter(redis_url, max_connections=max_connections),
            RedisMessageLimiter(redis_url, limit=message_limit, window=message_window),
        )
    return LiveLimits(
        MemoryConnectionLimiter(max_connections=max_connections),
        MemoryMessageLimiter(limit=message_limit, window=message_window),
    )


LIVE_LIMITS: Part[LiveLimits] = Part("live_limits")
