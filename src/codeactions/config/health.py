"""Settings of `/health`: how long its answer is reused, how long each check may take."""

from __future__ import annotations

from codeactions.config.fields import Group, env


class HealthSettings(Group):
    cache_seconds: float = env(
        "HEALTH_CACHE_SECONDS",
        "FLOWS_CODE_ACTIONS_HEALTH_CHECK_CACHE_TIME",
        default=3.0,
        ge=0,
        description="How long `/health` reuses its last answer.",
    )
    timeout_seconds: float = env(
        "HEALTH_TIMEOUT_SECONDS",
        default=3.0,
        gt=0,
        description="Timeout of each dependency check of `/health`.",
    )
