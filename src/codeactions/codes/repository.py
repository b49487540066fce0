"""SQL for codes."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.db.models import Code

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
