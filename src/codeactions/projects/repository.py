"""SQL for projects and user permissions."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.db.models import UserPermission


async def get_permission(
    session: AsyncSession, *, project_uuid: str, email: str
) -> UserPermission | None:
    result = await session.scalars(
        select(UserPermission).where(
            UserPermission.project_uuid == project_uuid, UserPermission.email == email
        )
    )
    return result.first()
