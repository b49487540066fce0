"""Text and JSON values both databases store, whatever a run or a caller produced.

A lone UTF-16 surrogate (`"\\ud800"`, which `json.loads` happily returns) is not UTF-8, so neither
SQLite nor PostgreSQL takes it; PostgreSQL text and jsonb refuse NUL; jsonb refuses NaN and
Infinity, which SQLite stores but no JSON answer can carry.
"""

from __future__ import annotations

import math
from typing import Any

REPLACEMENT = "\ufffd"


def storable_text(text: str) -> str:
    """`text` with lone surrogates and NUL replaced by U+FFFD (surrogate pairs joined into the
    character they encode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text.replace("\x00", REPLACEMENT)


def storable_json(value: Any) -> Any:
    """A JSON value with every string (keys too) made storable and NaN and ±Infinity as null."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {
            storable_text(k) if isinstance(k, str) else k: storable_json(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [storable_json(v) for v in value]
    return value
