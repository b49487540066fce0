"""How a failed message is classed (permanent or temporary) and retried (count and delay)."""

from __future__ import annotations

from typing import Any

from codeactions.config import RabbitSettings
from codeactions.db import errors as db_errors
from codeactions.errors import BadRequest
from codeactions.projects.consumers.messages import InvalidMessage

RETRIES_HEADER = "x-codeactions-retries"
REASON_HEADER = "x-death-reason"
MAX_RETRY_DELAY = 60.0


def is_temporary(exc: BaseException) -> bool:
    """Whether applying the message again later may succeed: never for an invalid message."""
    if isinstance(exc, InvalidMessage | BadRequest):
        return False
    return db_errors.is_temporary(exc)


def describe(exc: BaseException) -> str:
    """`Type: message` of the error and, when it wraps one, of its root cause (SQLAlchemy's own
    message would carry the statement and the message's values)."""
    root = db_errors.causes(exc)[-1]
    if type(root).__name__ == type(exc).__name__:
        return f"{type(exc).__name__}: {root}"[:500]
    return f"{type(exc).__name__} ({type(root).__name__}: {root})"[:500]


def retry_count(headers: dict[str, Any] | None) -> int:
    """Retries already done, from the message's header (0 when missing or not a count)."""
    value: object = (headers or {}).get(RETRIES_HEADER)
    if isinstance(value, bytes | str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return max(value, 0)
    return 0


def retry_delay_ms(settings: RabbitSettings, retries: int) -> int:
    """Wait before retry number `retries + 1`: `retry_seconds` doubled each retry, at most
    `MAX_RETRY_DELAY`."""
    seconds = min(settings.retry_seconds * 2.0 ** min(retries, 32), MAX_RETRY_DELAY)
    return max(1, round(seconds * 1000))
