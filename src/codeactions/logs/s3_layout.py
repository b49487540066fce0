"""Where run logs live in S3 and how they are named: day prefixes, batch and line ids, a batch on
its way to S3.

Layout (spec §4.3): `{prefix}/logs/{YYYY}/{MM}/{DD}/{run_id}/{code_id}/{name}.json`, day = UTC date of
the run's first log line. The original wrote one object per line named `{log_id}.json` holding one
CodeLog; we write one object per run named `{batch}_{count}.json` holding a JSON array of CodeLogs,
and read both. The line count in the name lets a listing count and page lines without reading them.

A line's id is a UUID (version 8) made of the batch id (24 hex digits, starting with the day) and the
line's index; a small pointer object `{prefix}/logs-index/{YYYY}/{MM}/{DD}/{batch}` holds the batch's
key. So `get` costs two GETs, instead of the original's listing of 30 days of every tenant.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from codeactions.logs.store import LogEntry

EPOCH = date(1970, 1, 1)
BATCH_NAME = re.compile(r"^([0-9a-f]{24})_(\d+)$")
_SEGMENT = re.compile(r"^[0-9A-Za-z_.-]{1,128}$")


@dataclass(frozen=True)
class LogObject:
    """A log object as a listing names it."""

    key: str
    code_id: str
    last_modified: datetime
    lines: int  # log lines the object holds: its count, or 1 for the original's per-line objects


def day_path(day: date) -> str:
    return day.strftime("%Y/%m/%d")


def key_segment(value: str, what: str) -> str:
    """A run or code id used as a key segment; anything else could escape its prefix."""
    if not _SEGMENT.fullmatch(value) or value in {".", ".."}:
        raise ValueError(f"invalid {what} for a log key: {value!r}")
    return value


def entry_from_json(data: dict[str, Any], seq: int) -> LogEntry:
    created = datetime.fromisoformat(str(data.get("created_at") or "1970-01-01T00:00:00+00:00"))
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return LogEntry(
        id=str(data.get("id", "")),
        run_id=str(data.get("run_id", "")),
        code_id=str(data.get("code_id", "")),
        type=str(data.get("type", "")),
        content=str(data.get("content", "")),
        seq=seq,
        created_at=created,
    )


def new_batch_id(day: date) -> str:
    """24 hex digits: the day (16 bits), then random bits, with UUID version 8 and variant bits."""
    digits = f"{(day - EPOCH).days:04x}" + uuid.uuid4().hex[:20]
    return digits[:12] + "8" + digits[13:16] + "89ab"[int(digits[16], 16) % 4] + digits[17:24]


def line_id(batch: str, n: int) -> str:
    return str(uuid.UUID(f"{batch}{n:08x}"))


def batch_day(batch: str) -> date:
    return EPOCH + timedelta(days=int(batch[:4], 16))


def newest_first(entries: Iterable[LogEntry]) -> list[LogEntry]:
    return sorted(entries, key=lambda e: (e.created_at, e.seq), reverse=True)


@dataclass
class Batch:
    """A run's log lines on their way to S3: one object and its pointer."""

    key: str
    pointer: str
    body: bytes
    metadata: dict[str, str]
    lines: list[LogEntry]

    def as_record(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "pointer": self.pointer,
            "body": self.body.decode(),
            "metadata": self.metadata,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Batch:
        body = str(record["body"]).encode()
        items = json.loads(body)
        return cls(
            key=str(record["key"]),
            pointer=str(record["pointer"]),
            body=body,
            metadata={str(k): str(v) for k, v in record["metadata"].items()},
            lines=[
                entry_from_json(item, n) for n, item in enumerate(items) if isinstance(item, dict)
            ],
        )

    @property
    def run_id(self) -> str:
        return self.metadata["run-id"]

    @property
    def code_id(self) -> str:
        return self.metadata["code-id"]
