"""The choice between the in-process and the Redis event bus."""

from __future__ import annotations

from codeactions.events.bus import EventBus, LocalBus


def build_event_bus(redis_url: str) -> EventBus:
    if redis_url:
        from codeactions.events.redis import RedisBus

        return RedisBus(redis_url)
    return LocalBus()
