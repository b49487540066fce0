"""Sliding-window limiter kept in this process (one replica, no Redis)."""

from __future__ import annotations

import math
import time
from collections import deque

from codeactions.config import RateLimitSettings
from codeactions.ratelimit.base import Decision


class MemoryRateLimiter:
    def __init__(self, settings: RateLimitSettings) -> None:
        self.limit = settings.max_requests
        self.window = float(settings.window_seconds)
        self._hits: dict[str, deque[float]] = {}

    async def hit(self, key: str) -> Decision:
        now = time.monotonic()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            reset = math.ceil(hits[0] + self.window - now)
            return Decision(False, self.limit, 0, max(1, reset))
        hits.append(now)
        if len(self._hits) > 10_000:
            self._forget_idle(now)
        reset = math.ceil(hits[0] + self.window - now)
        return Decision(True, self.limit, self.limit - len(hits), max(0, reset))

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window]:
            del self._hits[key]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._hits.clear()
