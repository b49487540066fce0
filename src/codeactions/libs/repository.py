"""SQL for the `codelibs` table."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.db.models import CodeLib


async def list_codelibs(session: AsyncSession, *, language: str) -> list[CodeLib]:
    rows = await session.scalars(select(CodeLib).where(CodeLib.language == language))
    return list(rows)
