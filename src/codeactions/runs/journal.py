"""Run outcomes the database could not take, kept in a local spool and written when it is back.

A run answered to its caller has an outcome that must not be lost: when storing it fails (the
database is down, frozen or refusing connections), the outcome and its log lines are appended to
the journal (fsynced) before the caller is answered, and a background consumer writes them with
backoff until the database takes them. The record then ends `completed` or `failed` with its
result and logs, as if nothing had happened. Only when the journal cannot keep it either (disk
full, over its size limit) does the caller get a 503.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

from codeactions.db import errors as db_errors
from codeactions.db.models import CodeRun
from codeactions.logs.sql import log_rows
from codeactions.logs.store import LogEntry
from codeactions.parts import Part
from codeactions.runs.repository import RunBook
from codeactions.spool import Spool, SpoolConsumer

# Replays at once: a backlog after an outage drains at the database's pace, not one at a time.
WORKERS = 4


def is_permanent(exc: BaseException) -> bool:
    """Errors the database will answer again for the same record (a constraint, a bad value), or
    a record this version cannot read."""
    return isinstance(exc, KeyError | TypeError) or not db_errors.is_temporary(exc)


class OutcomeJournal:
    def __init__(self, book: RunBook, spool: Spool) -> None:
        self._book = book
        self.spool = spool
        self.consumer = SpoolConsumer(
            spool, self._apply, name="run outcomes", workers=WORKERS, permanent=is_permanent
        )

    def start(self) -> None:
        self.spool.open()
        self.consumer.start()

    async def close(self, grace: float = 5.0) -> None:
        await self.consumer.drain(grace)
        self.spool.close()

    async def keep(self, run: CodeRun, logs: list[LogEntry]) -> None:
        """Keep the outcome of `run` (as set on it) and its logs until the database takes them."""
        await self.spool.append(
            {
                "run": {
                    "id": str(run.id),
                    "status": run.status,
                    "result": run.result or "",
                    "extra": run.extra or {},
                    "updated_at": run.updated_at.isoformat(),
                },
                "logs": [
                    {**asdict(entry), "created_at": entry.created_at.isoformat()} for entry in logs
                ],
            }
        )

    async def _apply(self, record: dict[str, Any]) -> None:
        fields = record["run"]
        run = CodeRun(
            id=uuid.UUID(fields["id"]),
            status=fields["status"],
            result=fields["result"],
            extra=fields["extra"],
            updated_at=datetime.fromisoformat(fields["updated_at"]),
        )
        entries = [
            LogEntry(**{**line, "created_at": datetime.fromisoformat(line["created_at"])})
            for line in record["logs"]
        ]
        await self._book.finish(run, log_rows(entries), replay=True)


JOURNAL: Part[OutcomeJournal] = Part("journal")
