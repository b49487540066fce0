"""SQL for codes (a code looked up by its id: `codeactions.access.repository.code_by_any_id`,
where every check of who may see it finds it)."""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from codeactions.codes.schemas import LastRun
from codeactions.db.listing import AllRows, all_rows, name_contains, page_of
from codeactions.db.models import Code, CodeRun
from codeactions.db.text import is_storable


async def add_code(
    session: AsyncSession,
    *,
    project_uuid: str,
    name: str,
    type: str,
    language: str,
    source: str,
    timeout_seconds: int,
) -> Code:
    code = Code(
        project_uuid=project_uuid,
        name=name,
        type=type,
        language=language,
        source=source,
        timeout=timeout_seconds,
    )
    session.add(code)
    await session.flush()
    return code


def _code_conditions(
    project_uuid: str, code_type: str | None, search: str | None
) -> list[ColumnElement[bool]]:
    conditions = [Code.project_uuid == project_uuid]
    if code_type is not None:
        conditions.append(Code.type == code_type)
    if search is not None:
        conditions.append(name_contains(Code.name, search))
    return conditions


async def list_codes(
    session: AsyncSession,
    *,
    project_uuid: str,
    code_type: str | None,
    search: str | None = None,
    offset: int,
    limit: int,
) -> tuple[list[Code], int]:
    """One page of a project's codes, newest first, and how many there are in all; `search`:
    a case-insensitive substring of the name."""
    if not is_storable(project_uuid):  # no row holds it; PostgreSQL would fail the query
        return [], 0
    conditions = _code_conditions(project_uuid, code_type, search)
    return await page_of(session, Code, conditions, offset=offset, limit=limit)


async def all_codes(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    project_uuid: str,
    code_type: str | None,
    search: str | None = None,
) -> AllRows[Code]:
    """Every code of a project, newest first (as `list_codes`), read in chunks."""
    if not is_storable(project_uuid):
        return AllRows(0, [], None)
    conditions = _code_conditions(project_uuid, code_type, search)
    return await all_rows(session, sessionmaker, Code, conditions)


async def last_runs(session: AsyncSession, code_ids: list[uuid.UUID]) -> dict[uuid.UUID, LastRun]:
    """The newest run (by `created_at`, then id) of each of these codes that has one, in one
    query: per code, one step down `idx_coderuns_code_id_created_at` from its end."""
    if not code_ids:
        return {}
    other = aliased(CodeRun)
    newest = (
        select(other.id)
        .where(other.code_id == Code.id)
        .order_by(other.created_at.desc(), other.id.desc())
        .limit(1)
        .correlate(Code)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(Code.id, CodeRun.id, CodeRun.status, CodeRun.created_at, CodeRun.updated_at)
        .join(CodeRun, CodeRun.id == newest)
        .where(Code.id.in_(code_ids))
    )
    return {
        code_id: LastRun(id=run_id, status=status, created_at=created, updated_at=updated)
        for code_id, run_id, status, created, updated in rows
    }


async def delete_code(session: AsyncSession, code: Code) -> None:
    await session.delete(code)
    await session.flush()
