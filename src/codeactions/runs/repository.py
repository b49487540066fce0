"""SQL for code runs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.codes.repository import is_object_id, parse_uuid
from codeactions.db.models import CodeRun, utcnow


async def get_run_by_any_id(session: AsyncSession, run_id: str) -> CodeRun | None:
    """Look a run up by its UUID or its legacy 24-hex ObjectID."""
    key = parse_uuid(run_id)
    if key is not None:
        return await session.get(CodeRun, key)
    if not is_object_id(run_id):
        return None
    result = await session.scalars(select(CodeRun).where(CodeRun.mongo_object_id == run_id))
    return result.first()


def new_started_run(
    *,
    code_id: uuid.UUID,
    code_mongo_id: str | None,
    params: dict[str, str],
    body: str,
    headers: dict[str, list[str]],
) -> CodeRun:
    now = utcnow()
    return CodeRun(
        id=uuid.uuid4(),
        code_id=code_id,
        code_mongo_id=code_mongo_id,
        status="started",
        result="",
        extra=None,
        params=params,
        body=body,
        headers=headers,
        created_at=now,
        updated_at=now,
    )


async def insert_run(session: AsyncSession, run: CodeRun) -> None:
    session.add(run)
    await session.flush()


async def finish_run(
    session: AsyncSession,
    run_id: uuid.UUID,
    *,
    status: str,
    result: str,
    extra: dict[str, Any],
    updated_at: datetime,
) -> None:
    # Unconditional: a late real outcome is worth more than the reaper's "run lost".
    await session.execute(
        update(CodeRun)
        .where(CodeRun.id == run_id)
        .values(status=status, result=result, extra=extra, updated_at=updated_at)
    )


def _of_code(code_uuid: uuid.UUID | None, code_mongo_id: str | None) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if code_uuid is not None:
        conditions.append(CodeRun.code_id == code_uuid)
    if code_mongo_id:
        conditions.append(CodeRun.code_mongo_id == code_mongo_id)
    return or_(*conditions)


async def list_runs(
    session: AsyncSession,
    *,
    code_uuid: uuid.UUID | None,
    code_mongo_id: str | None,
    after: datetime | None,
    before: datetime | None,
    offset: int,
    limit: int,
) -> tuple[list[CodeRun], int]:
    """One page of a code's runs, newest first, and how many match in all.

    A run belongs to the code when its `code_id` is the code's UUID or its `code_mongo_id` is the
    code's ObjectID (legacy rows of ObjectID invocations may lack the UUID).
    """
    if code_uuid is None and not code_mongo_id:
        return [], 0
    conditions = [_of_code(code_uuid, code_mongo_id)]
    if after is not None:
        conditions.append(CodeRun.created_at >= after)
    if before is not None:
        conditions.append(CodeRun.created_at <= before)
    total = await session.scalar(select(func.count()).select_from(CodeRun).where(*conditions))
    rows = await session.scalars(
        select(CodeRun)
        .where(*conditions)
        .order_by(CodeRun.created_at.desc(), CodeRun.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return list(rows), int(total or 0)


async def fail_stale_runs(
    session: AsyncSession, *, started_before: datetime, result: str, extra: dict[str, Any]
) -> int:
    """Mark runs still `started` that were created before `started_before` as failed."""
    outcome = await session.execute(
        update(CodeRun)
        .where(CodeRun.status == "started", CodeRun.created_at < started_before)
        .values(status="failed", result=result, extra=extra, updated_at=utcnow())
    )
    return int(outcome.rowcount or 0)  # type: ignore[attr-defined]
