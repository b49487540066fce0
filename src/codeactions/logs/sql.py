"""Run logs in the `codelogs` table."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.db.models import CodeLog
from codeactions.logs.store import LogEntry, LogQuery


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def log_rows(entries: list[LogEntry]) -> list[dict[str, Any]]:
    """The `codelogs` rows of a run's lines, for an INSERT."""
    return [
        {
            "id": uuid.UUID(e.id),
            "run_id": uuid.UUID(e.run_id),
            "code_id": e.code_id,
            "seq": e.seq,
            "type": e.type,
            "content": e.content,
            "created_at": e.created_at,
            "updated_at": e.created_at,
        }
        for e in entries
    ]


def _entry(row: CodeLog) -> LogEntry:
    return LogEntry(
        id=str(row.id),
        run_id=str(row.run_id),
        code_id=row.code_id,
        type=row.type,
        content=row.content,
        seq=row.seq,
        created_at=row.created_at,
    )


class SqlLogStore:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @property
    def written_with_run(self) -> bool:
        return True  # `codelogs` is in the runs' database: one transaction holds both

    async def write(self, entries: list[LogEntry]) -> None:
        if not entries:
            return
        async with self._sessionmaker() as session, session.begin():
            await session.execute(insert(CodeLog), log_rows(entries))

    async def get(self, log_id: str) -> LogEntry | None:
        key = _uuid(log_id)
        if key is None:
            return None
        async with self._sessionmaker() as session:
            row = await session.get(CodeLog, key)
            return _entry(row) if row else None

    async def list(self, query: LogQuery) -> tuple[list[LogEntry], int]:
        conditions = []
        if query.run_id is not None:
            run_id = _uuid(query.run_id)
            if run_id is None:
                return [], 0
            conditions.append(CodeLog.run_id == run_id)
        if query.code_ids:
            conditions.append(or_(*(CodeLog.code_id == c for c in query.code_ids)))
        async with self._sessionmaker() as session:
            total = await session.scalar(
                select(func.count()).select_from(CodeLog).where(*conditions)
            )
            rows = await session.scalars(
                select(CodeLog)
                .where(*conditions)
                .order_by(CodeLog.created_at.desc(), CodeLog.seq.desc())
                .offset((query.page - 1) * query.page_size)
                .limit(query.page_size)
            )
            return [_entry(r) for r in rows], int(total or 0)

    async def delete_older(self, before: datetime, limit: int) -> int:
        async with self._sessionmaker() as session, session.begin():
            ids = (
                select(CodeLog.id)
                .where(CodeLog.created_at < before)
                .order_by(CodeLog.created_at)
                .limit(limit)
            )
            result = await session.execute(delete(CodeLog).where(CodeLog.id.in_(ids)))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def ping(self) -> None:
        async with self._sessionmaker() as session:
            await session.execute(text("SELECT 1"))

    def spool_status(self) -> None:
        return None  # written straight to the database: nothing spooled

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
