"""Settings of the live channel: the WebSocket /web and what its followers may queue."""

from __future__ import annotations

from codeactions.config.fields import Group, env


class LiveSettings(Group):
    ws_max_connections: int = env(
        "WS_MAX_CONNECTIONS",
        default=5,
        ge=1,
        description="Open /web connections per principal (counted across replicas through "
        "Redis when CODEACTIONS_REDIS_URL is set); one more is closed with 1008.",
    )
    ws_rate_limit: int = env(
        "WS_RATE_LIMIT",
        default=600,
        ge=1,
        description="/web messages per principal and minute (exact sliding window); over it a "
        "frame is answered status 1 `Rate limit exceeded`.",
    )
    follower_queue: int = env(
        "WS_FOLLOWER_QUEUE",
        default=1000,
        ge=1,
        le=1_000_000,
        description="Events a follower (WebSocket or SSE) may have waiting; past it, it is sent "
        "`lagged` with the `seq` to resume after.",
    )
