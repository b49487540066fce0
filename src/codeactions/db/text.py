"""Text and JSON values both databases store, whatever a run or a caller produced.

A lone UTF-16 surrogate (`"\\ud800"`, which `json.loads` happily returns) is not UTF-8, so neither
SQLite nor PostgreSQL takes it; PostgreSQL text and jsonb refuse NUL; jsonb refuses NaN and
Infinity, which SQLite stores but no JSON answer can carry.

Free text (names, run inputs and outputs, logs) is stored with U+FFFD in their place. An
identifier (project uuid, email) is not: `p\\x00` and `p\\ufffd` would then name one project, so
the services refuse identifiers with `has_control_characters`, and lookups by a value no row can
hold (`is_storable`) find nothing without querying.
"""

from __future__ import annotations

import math
import re
from typing import Any

REPLACEMENT = "\ufffd"

# C0 controls (NUL among them), DEL, C1 controls, and UTF-16 surrogates, paired or not (a `str`
# holding a surrogate code point is not text any encoding writes).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def storable_text(text: str) -> str:
    """`text` with lone surrogates and NUL replaced by U+FFFD (surrogate pairs joined into the
    character they encode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text.replace("\x00", REPLACEMENT)


def is_storable(text: str) -> bool:
    """Whether both databases store `text` as it is (no NUL, no surrogate code point)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def has_control_characters(text: str) -> bool:
    """Whether `text` holds a control character or a surrogate: nothing an identifier may hold."""
    return _CONTROL.search(text) is not None


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
