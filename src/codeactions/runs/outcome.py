"""What a run's caller is answered and what is stored about the run: the HTTP status and media
type, a one-line error, headers with credentials redacted, and secrets masked in the stored
outcome and log lines."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from codeactions.db.models import CodeRun, utcnow
from codeactions.errors import AppError, RunFailed, RunTimedOut, Unavailable
from codeactions.logs.store import LogEntry
from codeactions.runner.base import RunOutcome
from codeactions.secrets.masking import NO_MASK, Masker

REDACTED = "[REDACTED]"
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)
_SECRET_PARTS = ("token", "secret", "password", "signature")

# What the caller is told for failures that are not the code's own exception.
_EXPLAINED = {
    "timeout": "timeout",
    "memory": "memory limit exceeded",
    "cpu": "CPU time limit exceeded",
    "output": "output limit exceeded",
    "file_size": "file size limit exceeded",
    "killed": "the process was killed",
    "runner": "the code runner failed",
    "worker lost": "the worker running the code was lost",
}
_MAX_MESSAGE_CHARS = 500


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or any(part in lowered for part in _SECRET_PARTS)


def redact_headers(headers: dict[str, list[str]]) -> dict[str, list[str]]:
    """Headers as stored on the run: credentials replaced, so run readers never see them."""
    return {
        name: [REDACTED] * max(1, len(values)) if is_secret_header(name) else list(values)
        for name, values in headers.items()
    }


DEFAULT_STATUS = 200


def _status_number(value: Any) -> int | None:
    """The number a status set by a code stands for: an int, or a string of decimal digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 2**31 else None
    if isinstance(value, str):
        text = value.strip()
        if text.isdecimal() and len(text) <= 9:
            return int(text)
    return None


def response_status(value: Any) -> int:
    """The status the code set when it is an int or a numeric string of a final status, else 200.

    (The original's PG mode ignored ints, a bug; 1xx cannot end a response, Go answered 200.)
    """
    number = _status_number(value)
    return number if number is not None and 200 <= number <= 599 else DEFAULT_STATUS


def stored_status(value: Any) -> int | str:
    """The status kept in the run's `extra`: what the code set when it is an int or a numeric
    string, else the default (NaN, infinities, objects, booleans would poison the record)."""
    return value if _status_number(value) is not None else DEFAULT_STATUS


def media_type(content_type: Any) -> str:
    if content_type == "json":
        return "application/json; charset=UTF-8"
    if content_type == "html":
        return "text/html; charset=UTF-8"
    return "text/plain; charset=UTF-8"


def short_error(outcome: RunOutcome) -> str:
    """One line for the caller: the traceback's last line, or the limit that ended the run."""
    if outcome.reason == "exception":
        lines = [line.strip() for line in outcome.error.strip().splitlines() if line.strip()]
        text = lines[-1] if lines else "the code raised an exception"
    elif outcome.reason == "runner" and " cannot run on this runner now: " in outcome.error:
        # Which language the runner cannot run now, without its inner details (/health has them).
        text = outcome.error.split(": ", 1)[0]
    else:
        text = _EXPLAINED.get(outcome.reason or "runner", "the code failed")
    return text[:_MAX_MESSAGE_CHARS]


def caller_error(outcome: RunOutcome, run_id: uuid.UUID, mask: Masker) -> AppError:
    """What the caller of a failed run is answered."""
    if outcome.reason == "timeout":
        return RunTimedOut()
    # Masked: the message is the service's report (to anonymous callers on public endpoints);
    # a code hands a secret to its caller, if it must, through `result.set`.
    message = f"error on executing code: {mask(short_error(outcome))} (run {run_id})"
    if outcome.reason in ("runner", "worker lost"):
        return Unavailable(message)
    return RunFailed(message)


def failed_outcome(reason: Any, error: str) -> RunOutcome:
    """The outcome of a run that the service, not the code, ended."""
    return RunOutcome(ok=False, reason=reason, error=error, status_code=None, content_type="text")


def as_stored(run: CodeRun, mask: Masker) -> CodeRun:
    """The outcome of `run` as it is stored: with the secrets masked (a copy, when any)."""
    if not mask:
        return run
    return CodeRun(
        id=run.id,
        status=run.status,
        result=mask(run.result or ""),
        extra=mask.json(run.extra),
        updated_at=run.updated_at,
    )


def log_entries(
    run: CodeRun, *, invoked_id: str, outcome: RunOutcome, mask: Masker = NO_MASK
) -> list[LogEntry]:
    """The run's log lines as stored: the code's own, then its error when they lack it."""
    entries = [
        LogEntry(
            run_id=str(run.id),
            code_id=invoked_id,
            type=line.type,
            content=line.content,
            seq=seq,
            created_at=datetime.fromtimestamp(line.at, UTC) if line.at else utcnow(),
        )
        for seq, line in enumerate(outcome.logs)
    ]
    if not outcome.ok and outcome.error and not any(e.content == outcome.error for e in entries):
        # The traceback (or why the run was stopped) belongs with the run's logs.
        entries.append(
            LogEntry(
                run_id=str(run.id),
                code_id=invoked_id,
                type="error",
                content=outcome.error,
                seq=len(entries),
            )
        )
    if mask:
        for entry in entries:
            entry.content = mask(entry.content)
    return entries
