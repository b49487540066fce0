"""Project-scoped authorization: which role a principal has in a project, and the checks."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.auth.principals import Principal, Role
from codeactions.errors import AppError, Forbidden
from codeactions.projects.repository import get_permission


async def project_role(session: AsyncSession, principal: Principal, project_uuid: str) -> int:
    """The principal's role in the project; 0 when not a member.

    Roles from RabbitMQ events are stored as given, as the original did, and read as it did:
    3 and above act as Moderator, 0 and below grant nothing (as not being a member).
    """
    if principal.sees_all_projects:
        return int(Role.MODERATOR)
    if not principal.email or not project_uuid:
        return 0
    permission = await get_permission(session, project_uuid=project_uuid, email=principal.email)
    return permission.role if permission else 0


async def authorize(
    session: AsyncSession,
    principal: Principal,
    project_uuid: str,
    needed: Role,
    *,
    not_member: AppError | None = None,
) -> None:
    """Raise unless the principal holds at least `needed` in the project.

    A non-member gets `not_member` (a 404 for an existing resource, so another project's
    resources are not revealed; 403 when acting on the project itself); a member with too
    low a role gets 403.
    """
    role = await project_role(session, principal, project_uuid)
    if role < Role.VIEWER:
        raise not_member or Forbidden()
    if role < needed:
        raise Forbidden()
