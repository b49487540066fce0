"""The settings table of the README, rendered from the settings models so it cannot drift."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices
from pydantic_core import PydanticUndefined

from codeactions.config import GROUPS


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return ""
    else:
        value = field.default
    if isinstance(value, list):
        value = ",".join(value)
    if hasattr(value, "strftime"):
        value = value.strftime("%H:%M")
    text = str(value)
    return f"`{text}`" if text else "(empty)"


def settings_table() -> str:
    rows = [
        "| Variable | Legacy aliases | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for group in GROUPS.values():
        for name, field in group.model_fields.items():
            alias = field.validation_alias
            choices = list(alias.choices) if isinstance(alias, AliasChoices) else [name]
            main, legacy = str(choices[0]), [str(c) for c in choices[1:]]
            meaning = (field.description or name.replace("_", " ")).replace("|", "\\|")
            aliases = ", ".join(f"`{c}`" for c in legacy) or ""
            rows.append(f"| `{main}` | {aliases} | {_default(field)} | {meaning} |")
    return "\n".join(rows) + "\n"
