"""The base of every settings group, and fields named CODEACTIONS_* with legacy aliases."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def env(name: str, *legacy: str, **kwargs: Any) -> Any:
    """A field read from CODEACTIONS_<name>, or from the original's legacy names, in that order."""
    return Field(validation_alias=AliasChoices(f"CODEACTIONS_{name}", *legacy), **kwargs)


class Group(BaseSettings):
    # Empty values count as unset, as in the original (config.go:373-379).
    model_config = SettingsConfigDict(
        env_ignore_empty=True, populate_by_name=True, extra="ignore", frozen=True
    )


def split_comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value
