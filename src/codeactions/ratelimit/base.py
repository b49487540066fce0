"""What every rate limiter answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends

from codeactions.parts import Part, part


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # seconds until a request would be allowed again (or the window renews)

    def headers(self) -> dict[str, str]:
        values = {
            "Limit": str(self.limit),
            "Remaining": str(self.remaining),
            "Reset": str(self.reset_seconds),  # seconds from now, in both spellings
        }
        headers = {
            f"{prefix}RateLimit-{name}": value
            for name, value in values.items()
            for prefix in ("", "X-")
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


LIMITER: Part[RateLimiter] = Part("limiter")
LimiterDep = Annotated[RateLimiter, Depends(part(LIMITER))]
