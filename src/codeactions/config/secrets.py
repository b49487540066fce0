"""Settings of project secrets: the Fernet key that encrypts them at rest, former keys, the key file."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from pydantic import field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from codeactions.config.fields import Group, env, split_comma_list

KEY_HINT = "32 url-safe base64-encoded bytes; `codeactions secrets new-key` prints one"


def check_secrets_key(value: str) -> str:
    """A Fernet key: 32 bytes in url-safe base64 (standard base64 is read too)."""
    try:
        raw = base64.urlsafe_b64decode(value.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"a secrets key is {KEY_HINT}")
    return value.strip()


class SecretsSettings(Group):
    # A mistyped key must not end up in the error printed at start.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    key: str = env(
        "SECRETS_KEY",
        default="",
        repr=False,
        description="Key that encrypts project secrets at rest (" + KEY_HINT + "). Empty: "
        "a key generated once into `CODEACTIONS_SECRETS_KEY_FILE`. Replicas sharing a database "
        "need the same key.",
    )
    old_keys: Annotated[list[str], NoDecode] = env(
        "SECRETS_OLD_KEYS",
        default_factory=list,
        repr=False,
        description="Comma list of former keys: secrets written under them stay readable; "
        "`codeactions secrets encrypt` rewrites them under `CODEACTIONS_SECRETS_KEY`.",
    )
    key_file: str = env(
        "SECRETS_KEY_FILE",
        default="",
        description="Where the key is kept when `CODEACTIONS_SECRETS_KEY` is empty (created "
        "with mode 0600 when missing; a warning at every start). Empty: `<sqlite "
        "file>-secrets.key` beside the SQLite database, or `secrets.key` in the spool directory "
        "with PostgreSQL.",
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_secrets_key(value) if value.strip() else ""

    @field_validator("old_keys", mode="before")
    @classmethod
    def _old_keys(cls, value: Any) -> Any:
        value = split_comma_list(value)
        return [check_secrets_key(key) for key in value] if isinstance(value, list) else value
