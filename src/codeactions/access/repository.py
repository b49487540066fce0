"""SQL that answers who may see what: a member's permission in a project, and the code or run an
id names, with the code a run belongs to (whose project owns the run and its logs).

Lookups by a uuid or an email no row can hold (NUL, a lone surrogate; see `is_storable`) find
nothing without querying: PostgreSQL would fail the query where SQLite answers, and the role check
passes emails from tokens, not checked by the services.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.auth.principals import Role
from codeactions.db.models import Code, CodeRun, UserPermission
from codeactions.db.text import is_storable
from codeactions.ids import is_object_id, parse_uuid


def same_email(email: str) -> ColumnElement[bool]:
    # Rows written by the original may have any case; new ones are stored lowercased.
    return func.lower(UserPermission.email) == email.lower()


async def get_permission(
    session: AsyncSession, *, project_uuid: str, email: str
) -> UserPermission | None:
    """The member's permission in the project (the oldest, should the original have left two)."""
    if not (is_storable(project_uuid) and is_storable(email)):
        return None
    result = await session.scalars(
        select(UserPermission)
        .where(UserPermission.project_uuid == project_uuid, same_email(email))
        .order_by(UserPermission.created_at)
        .execution_options(populate_existing=True)
    )
    return result.first()


def member_projects(email: str) -> Select[str]:
    """The uuids of the projects where `email` holds a role that grants anything (1 and above,
    as `access.service.project_role` reads roles)."""
    return select(UserPermission.project_uuid).where(
        same_email(email), UserPermission.role >= Role.VIEWER
    )


async def roles_in(
    session: AsyncSession, *, email: str, project_uuids: list[str]
) -> dict[str, int]:
    """The member's role in each of these projects where it has a permission (the oldest, as
    `get_permission`, should the original have left two)."""
    uuids = [uuid for uuid in project_uuids if is_storable(uuid)]
    if not uuids or not is_storable(email):
        return {}
    rows = await session.execute(
        select(UserPermission.project_uuid, UserPermission.role)
        .where(UserPermission.project_uuid.in_(uuids), same_email(email))
        .order_by(UserPermission.created_at.desc())
    )
    return {project_uuid: role for project_uuid, role in rows}


async def code_by_any_id(session: AsyncSession, code_id: str) -> Code | None:
    """Look a code up by its UUID or by its legacy 24-hex ObjectID."""
    key = parse_uuid(code_id)
    if key is not None:
        return await session.get(Code, key)
    if not is_object_id(code_id):
        return None
    result = await session.scalars(select(Code).where(Code.mongo_object_id == code_id))
    return result.first()


async def run_by_any_id(session: AsyncSession, run_id: str) -> CodeRun | None:
    """Look a run up by its UUID or its legacy 24-hex ObjectID."""
    key = parse_uuid(run_id)
    if key is not None:
        return await session.get(CodeRun, key)
    if not is_object_id(run_id):
        return None
    result = await session.scalars(select(CodeRun).where(CodeRun.mongo_object_id == run_id))
    return result.first()


async def code_of_run(session: AsyncSession, run: CodeRun) -> Code | None:
    """The code a run belongs to: by its UUID, else by the ObjectID it was invoked with."""
    for key in (str(run.code_id) if run.code_id else None, run.code_mongo_id):
        if key:
            code = await code_by_any_id(session, key)
            if code is not None:
                return code
    return None
