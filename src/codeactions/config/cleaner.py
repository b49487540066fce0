"""Settings of the daily cleaner that deletes runs and logs past their retention."""

from __future__ import annotations

import re
from datetime import time
from typing import Any

from pydantic import field_validator

from codeactions.config.fields import Group, env


class CleanerSettings(Group):
    enabled: bool = env(
        "CLEANER_ENABLED",
        default=True,
        description="Delete runs and logs older than the retention period once a day.",
    )
    schedule_time: time = env(
        "CLEANER_SCHEDULE_TIME",
        "FLOWS_CODE_ACTIONS_CLEANER_SCHEDULE_TIME",
        default=time(1, 0),
        description="Daily run time HH:MM (UTC).",
    )
    retention_days: int = env(
        "CLEANER_RETENTION_DAYS",
        "FLOWS_CODE_ACTIONS_CLEANER_RETENTION_PERIOD",
        default=30,
        ge=1,
        description="Days runs and logs are kept (at least 1).",
    )
    batch_size: int = env(
        "CLEANER_BATCH_SIZE", default=1000, ge=1, le=100_000, description="Rows deleted per batch."
    )

    @field_validator("schedule_time", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", value)
            if not match or int(match[1]) > 23 or int(match[2]) > 59:
                raise ValueError(f"expected HH:MM, got {value!r}")
            return time(int(match[1]), int(match[2]))
        return value
