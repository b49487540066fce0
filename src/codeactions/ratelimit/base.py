"""What every rate limiter answers, and the choice between the in-process and the Redis one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from codeactions.config import RateLimitSettings


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # seconds until a request would be allowed again (or the window renews)

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_seconds))
        return headers


class RateLimiter(Protocol):
    async def hit(self, key: str) -> Decision:
        """Count one request for `key` and say whether it may go through."""
        ...

    async def ping(self) -> None:
        """Raise if the limiter's backend is unreachable."""
        ...

    async def close(self) -> None: ...


def build_rate_limiter(settings: RateLimitSettings) -> RateLimiter:
    if settings.redis_url:
        from codeactions.ratelimit.redis import RedisRateLimiter

        return RedisRateLimiter(settings)
    from codeactions.ratelimit.memory import MemoryRateLimiter

    return MemoryRateLimiter(settings)
