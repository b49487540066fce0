"""SQL for code runs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.codes.repository import is_object_id, parse_uuid
from codeactions.db.models import CodeRun


async def get_run_by_any_id(session: AsyncSession, run_id: str) -> CodeRun | None:
    """Look a run up by its UUID or its legacy 24-hex ObjectID."""
    key = parse_uuid(run_id)
    if key is not None:
        return await session.get(CodeRun, key)
    if not is_object_id(run_id):
        return None
    result = await session.scalars(select(CodeRun).where(CodeRun.mongo_object_id == run_id))
    return result.first()
