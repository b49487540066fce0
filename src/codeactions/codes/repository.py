"""SQL for codes (a code looked up by its id: `codeactions.access.repository.code_by_any_id`,
where every check of who may see it finds it)."""

from __future__ import annotations

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.db.listing import AllRows, all_rows, page_of
from codeactions.db.models import Code
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


def _code_conditions(project_uuid: str, code_type: str | None) -> list[ColumnElement[bool]]:
    conditions = [Code.project_uuid == project_uuid]
    if code_type is not None:
        conditions.append(Code.type == code_type)
    return conditions


async def list_codes(
    session: AsyncSession,
    *,
    project_uuid: str,
    code_type: str | None,
    offset: int,
    limit: int,
) -> tuple[list[Code], int]:
    """One page of a project's codes, newest first, and how many there are in all."""
    if not is_storable(project_uuid):  # no row holds it; PostgreSQL would fail the query
        return [], 0
    conditions = _code_conditions(project_uuid, code_type)
    return await page_of(session, Code, conditions, offset=offset, limit=limit)


async def all_codes(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    project_uuid: str,
    code_type: str | None,
) -> AllRows[Code]:
    """Every code of a project, newest first (as `list_codes`), read in chunks."""
    if not is_storable(project_uuid):
        return AllRows(0, [], None)
    conditions = _code_conditions(project_uuid, code_type)
    return await all_rows(session, sessionmaker, Code, conditions)


async def delete_code(session: AsyncSession, code: Code) -> None:
    await session.delete(code)
    await session.flush()
