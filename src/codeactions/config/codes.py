"""Settings of codes: forbidden terms, source size, default timeout, lookup cache."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import field_validator
from pydantic_settings import NoDecode

from codeactions.config.fields import Group, env, split_comma_list


class CodeSettings(Group):
    blacklist: Annotated[list[str], NoDecode] = env(
        "BLACKLIST",
        "FLOWS_CODE_ACTIONS_BLACKLIST",
        default_factory=list,
        description="Comma list of terms rejected in sources (whole-word match).",
    )
    max_source_bytes: int = env(
        "MAX_SOURCE_BYTES",
        default=1024 * 1024,
        description="Sources of this size or more are refused.",
    )
    default_timeout: int = env(
        "DEFAULT_TIMEOUT",
        default=60,
        ge=5,
        le=300,
        description="Timeout of codes created without one.",
    )
    cache_seconds: float = env(
        "CODE_CACHE_SECONDS",
        default=2.0,
        ge=0,
        description="How long a replica reuses a code it looked up to run it; its own updates "
        "apply at once, other replicas' after this delay. 0 turns the cache off.",
    )

    @field_validator("blacklist", mode="before")
    @classmethod
    def _blacklist(cls, value: Any) -> Any:
        value = split_comma_list(value)
        return sorted(value) if isinstance(value, list) else value
