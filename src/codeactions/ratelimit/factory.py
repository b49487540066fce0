"""The choice between the in-process and the Redis rate limiter."""

from __future__ import annotations

from codeactions.config import RateLimitSettings
from codeactions.ratelimit.base import RateLimiter


def build_rate_limiter(settings: RateLimitSettings) -> RateLimiter:
    if settings.redis_url:
        from codeactions.ratelimit.redis import RedisRateLimiter

        return RedisRateLimiter(settings)
    from codeactions.ratelimit.memory import MemoryRateLimiter

    return MemoryRateLimiter(settings)
