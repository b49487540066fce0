"""SQL for projects and user permissions (a member's permission is looked up where every role
check finds it, `codeactions.access.repository`).

Lookups by a uuid or an email no row can hold (NUL, a lone surrogate; see `is_storable`) find
nothing without querying: PostgreSQL would fail the query where SQLite answers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.access.repository import get_permission, member_projects, same_email
from codeactions.db.listing import name_contains, page_of
from codeactions.db.models import Project, UserPermission, utcnow
from codeactions.db.text import is_storable


def _insert(session: AsyncSession, model: type[Any]) -> Any:
    """INSERT with ON CONFLICT support; both supported backends have it with the same syntax."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def _storable(*values: str) -> bool:
    return all(is_storable(value) for value in values)


async def get_project(session: AsyncSession, *, uuid: str) -> Project | None:
    if not _storable(uuid):
        return None
    result = await session.scalars(
        select(Project).where(Project.uuid == uuid).execution_options(populate_existing=True)
    )
    return result.first()


async def list_projects(
    session: AsyncSession,
    *,
    member_email: str | None,
    search: str | None,
    offset: int,
    limit: int,
) -> tuple[list[Project], int]:
    """One page of the projects, newest first, and how many match in all: every project, or
    with `member_email` those where it is a member; `search`: a case-insensitive substring of
    the name."""
    conditions: list[ColumnElement[bool]] = []
    if member_email is not None:
        if not _storable(member_email):
            return [], 0
        conditions.append(Project.uuid.in_(member_projects(member_email)))
    if search:
        conditions.append(name_contains(Project.name, search))
    return await page_of(session, Project, conditions, offset=offset, limit=limit)


async def insert_project_if_missing(session: AsyncSession, *, uuid: str, name: str) -> bool:
    """Insert the project unless its uuid exists (also when a concurrent writer won); True if inserted."""
    statement = _insert(session, Project).values(uuid=uuid, name=name, authorizations=[])
    result = await session.execute(statement.on_conflict_do_nothing(index_elements=["uuid"]))
    return bool(getattr(result, "rowcount", 0))


async def list_permissions(session: AsyncSession, *, project_uuid: str) -> list[UserPermission]:
    if not _storable(project_uuid):
        return []
    result = await session.scalars(
        select(UserPermission)
        .where(UserPermission.project_uuid == project_uuid)
        .order_by(UserPermission.email)
    )
    return list(result)


async def insert_permission_if_missing(
    session: AsyncSession, *, project_uuid: str, email: str, role: int
) -> bool:
    """True if inserted; False when the (project, email) pair exists, even in another case."""
    if await get_permission(session, project_uuid=project_uuid, email=email) is not None:
        return False
    statement = _insert(session, UserPermission).values(
        project_uuid=project_uuid, email=email, role=role
    )
    result = await session.execute(
        statement.on_conflict_do_nothing(index_elements=["project_uuid", "email"])
    )
    return bool(getattr(result, "rowcount", 0))


async def upsert_permission(
    session: AsyncSession, *, project_uuid: str, email: str, role: int
) -> UserPermission:
    existing = await get_permission(session, project_uuid=project_uuid, email=email)
    if existing is not None:
        existing.role = role
        await session.flush()
        return existing
    statement = _insert(session, UserPermission).values(
        project_uuid=project_uuid, email=email, role=role
    )
    # A concurrent writer may have inserted the pair since the lookup: update it instead.
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["project_uuid", "email"],
            set_={"role": role, "updated_at": utcnow()},
        )
    )
    permission = await get_permission(session, project_uuid=project_uuid, email=email)
    assert permission is not None  # just written in this transaction
    return permission


async def delete_permission(session: AsyncSession, *, project_uuid: str, email: str) -> bool:
    if not _storable(project_uuid, email):
        return False
    result = await session.execute(
        delete(UserPermission)
        .where(UserPermission.project_uuid == project_uuid, same_email(email))
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))
