"""Settings of the per-code rate limit of the execution endpoints, in process or in Redis."""

from __future__ import annotations

from codeactions.config.fields import Group, env


class RateLimitSettings(Group):
    max_requests: int = env(
        "RATELIMIT_MAX_REQUESTS",
        "FLOWS_CODE_ACTIONS_CODE_LIMITER_MAX_REQUESTS",
        default=600,
        ge=1,
        description="Runs allowed per code and window on the execution endpoints (429 above).",
    )
    window_seconds: int = env(
        "RATELIMIT_WINDOW_SECONDS",
        "FLOWS_CODE_ACTIONS_CODE_LIMITER_WINDOW_WINDOW",
        default=60,
        ge=1,
        description="Length of the sliding rate-limit window.",
    )
    redis_url: str = env(
        "REDIS_URL",
        "FLOWS_CODE_ACTIONS_REDIS",
        default="",
        description="Redis shared by replicas: rate limits, live events, /web connection and "
        "message limits, login sessions; empty keeps all of them in process.",
    )
    fail_open: bool = env(
        "RATELIMIT_FAIL_OPEN",
        default=True,
        description="When Redis is down: allow runs (true) or answer 503 (false).",
    )
