"""Sliding-window limiter shared by every replica through Redis (one atomic Lua script per hit)."""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from codeactions.config import RateLimitSettings
from codeactions.errors import Unavailable
from codeactions.ratelimit.base import Decision

log = logging.getLogger(__name__)

# The clock is Redis's own TIME, read inside the script: every replica's hits land on one time
# axis, so a replica whose clock runs 2 s ahead can neither expire others' hits early nor have its
# own outlive the window. Redis >= 5 replicates scripts by effects, which makes TIME allowed here.
#
# A key left by the original service (a hash {count, timestamp} at the same name) is dropped: it
# only held a window's worth of counting, and keeping it would fail every hit with WRONGTYPE.
SLIDING_WINDOW = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local kind = redis.call('TYPE', key)['ok']
if kind ~= 'none' and kind ~= 'zset' then
  redis.call('DEL', key)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local allowed = 0
if count < limit then
  redis.call('ZADD', key, now, t[1] .. t[2] .. ':' .. ARGV[3])
  redis.call('PEXPIRE', key, window)
  count = count + 1
  allowed = 1
end
local reset = window
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
if oldest[2] then
  reset = tonumber(oldest[2]) + window - now
end
return {allowed, limit - count, reset}
"""

# Short timeouts: a dead or partitioned Redis must cost a request half a second, not a stall.
SOCKET_TIMEOUT = 0.5
FAIL_OPEN_WARNING_EVERY = 30.0


def connect(url: str) -> Redis[bytes]:
    """A client for `url`, with short timeouts and one immediate retry (a stale pooled socket)."""
    client: Redis[bytes] = Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
    )
    return client


class RedisRateLimiter:
    def __init__(self, settings: RateLimitSettings) -> None:
        self.limit = settings.max_requests
        self.window_ms = settings.window_seconds * 1000
        self.fail_open = settings.fail_open
        # A URL without a database number selects db 0; the original's `/10` keeps working.
        self._redis = connect(settings.redis_url)
        # EVALSHA first, EVAL (which loads it) on NOSCRIPT: the script crosses the wire once.
        self._script: Any = self._redis.register_script(SLIDING_WINDOW)
        # A member unique across replicas even when two hits share Redis's microsecond.
        self._replica = uuid.uuid4().hex[:12]
        self._sequence = 0
        self._last_warning = -math.inf

    async def hit(self, key: str) -> Decision:
        self._sequence += 1
        member = f"{self._replica}:{self._sequence}"
        try:
            allowed, remaining, reset_ms = await self._script(
                keys=[f"ratelimit:{key}"], args=[self.limit, self.window_ms, member]
            )
        except (RedisError, OSError) as exc:
            return self._unreachable(exc)
        reset = max(0, math.ceil(int(reset_ms) / 1000))
        if not allowed:
            return Decision(False, self.limit, 0, max(1, reset))
        return Decision(True, self.limit, int(remaining), reset)

    def _unreachable(self, exc: Exception) -> Decision:
        if not self.fail_open:
            raise Unavailable("rate limiter unavailable") from exc
        now = time.monotonic()
        if now - self._last_warning >= FAIL_OPEN_WARNING_EVERY:
            self._last_warning = now
            log.warning("rate limiter Redis unreachable, allowing requests: %s", exc)
        return Decision(True, self.limit, self.limit, self.window_ms // 1000)

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()  # type: ignore[attr-defined]  # stubs predate aclose()
