"""The log store every backend implements, and the choice between SQL and S3."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.config import LogSettings, SpoolSettings
from codeactions.db.models import utcnow
from codeactions.db.text import storable_text


@dataclass
class LogEntry:
    run_id: str
    code_id: str  # the id the code was invoked with (UUID or legacy ObjectID), as the original
    type: str  # debug | info | error
    content: str
    seq: int = 0
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: datetime = field(default_factory=utcnow)

    def as_json(self) -> dict[str, str]:
        """The original's CodeLog object, with content as the database would keep it."""
        stamp = self.created_at.isoformat()
        return {
            "id": self.id,
            "run_id": self.run_id,
            "code_id": self.code_id,
            "type": self.type,
            "content": storable_text(self.content),
            "created_at": stamp,
            "updated_at": stamp,
        }


@dataclass(frozen=True)
class LogQuery:
    run_id: str | None = None
    code_ids: tuple[str, ...] = ()  # UUID and legacy ObjectID spellings of one code
    run_created_at: datetime | None = None  # lets S3 look in the run's days only
    page: int = 1
    page_size: int = 20


class LogStore(Protocol):
    async def write(self, entries: list[LogEntry]) -> None:
        """Store one run's log lines (called once per run, in order)."""
        ...

    async def get(self, log_id: str) -> LogEntry | None: ...

    async def list(self, query: LogQuery) -> tuple[list[LogEntry], int]:
        """One page of a run's or a code's logs, newest first, and the total count."""
        ...

    async def delete_older(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` log lines created before `before`; return how many went."""
        ...

    async def ping(self) -> None: ...

    async def start(self) -> None:
        """Start background work (the S3 store's uploads of spooled batches)."""
        ...

    async def close(self) -> None: ...


def build_log_store(
    settings: LogSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    spools: Path,
    spool: SpoolSettings,
) -> LogStore:
    if settings.s3_enabled:
        from codeactions.logs.s3 import S3LogStore
        from codeactions.spool import destination_spool

        identity = (settings.s3_endpoint, settings.s3_bucket, settings.s3_prefix)
        return S3LogStore(settings, destination_spool(spool, spools, "s3-logs", *identity))
    from codeactions.logs.sql import SqlLogStore

    return SqlLogStore(sessionmaker)
