"""The log store every backend implements, and the log lines and queries it takes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Protocol

from fastapi import Depends

from codeactions.db.models import utcnow
from codeactions.db.text import storable_text
from codeactions.parts import Part, part


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
    @property
    def written_with_run(self) -> bool:
        """True when the lines live beside the run records: the run service stores them in the
        transaction that stores the run's outcome (`log_rows`), never through `write`."""
        ...

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

    def spool_status(self) -> dict[str, Any] | None:
        """The backlog of lines kept on local disk until the store takes them (`/health`), or
        None when the store writes directly and keeps no spool."""
        ...

    async def start(self) -> None:
        """Start background work (the S3 store's uploads of spooled batches)."""
        ...

    async def close(self) -> None: ...


LOG_STORE: Part[LogStore] = Part("log_store")
LogStoreDep = Annotated[LogStore, Depends(part(LOG_STORE))]
