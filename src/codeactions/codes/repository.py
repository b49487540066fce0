"""SQL for codes."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.db.models import Code
from codeactions.db.text import is_storable

OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")


def parse_uuid(value: str) -> uuid.UUID | None:
    """A canonical 8-4-4-4-12 UUID, else None (as the original's IsValidUUID)."""
    if len(value) != 36:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def is_object_id(value: str) -> bool:
    return OBJECT_ID.fullmatch(value) is not None


async def get_by_any_id(session: AsyncSession, code_id: str) -> Code | None:
    """Look a code up by its UUID or by its legacy 24-hex ObjectID."""
    key = parse_uuid(code_id)
    if key is not None:
        return await session.get(Code, key)
    if not is_object_id(code_id):
        return None
    result = await session.scalars(select(Code).where(Code.mongo_object_id == code_id))
    return result.first()


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
    conditions = [Code.project_uuid == project_uuid]
    if code_type is not None:
        conditions.append(Code.type == code_type)
    total = await session.scalar(select(func.count()).select_from(Code).where(*conditions))
    rows = await session.scalars(
        select(Code)
        .where(*conditions)
        .order_by(Code.created_at.desc(), Code.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return list(rows), int(total or 0)


async def delete_code(session: AsyncSession, code: Code) -> None:
    await session.delete(code)
    await session.flush()
