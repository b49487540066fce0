"""May this principal see or change this? One answer for codes, runs, log lines, secrets and projects.

A non-member of the owning project is told the resource does not exist (404), so another
project's resources are not revealed; a member with too low a role gets 403. Admins and service
accounts act on every project with the Moderator's rights, and still read the runs and log lines
of a deleted code.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.access import repository
from codeactions.auth.principals import Principal, Role
from codeactions.db.models import Code, CodeRun, Secret
from codeactions.errors import (
    AppError,
    CodeNotFound,
    Forbidden,
    LogNotFound,
    RunNotFound,
    SecretNotFound,
)
from codeactions.ids import is_id


async def project_role(session: AsyncSession, principal: Principal, project_uuid: str) -> int:
    """The principal's role in the project; 0 when not a member.

    Roles from RabbitMQ events are stored as given, as the original did, and read as it did:
    3 and above act as Moderator, 0 and below grant nothing (as not being a member).
    """
    if principal.sees_all_projects:
        return int(Role.MODERATOR)
    if not principal.email or not project_uuid:
        return 0
    permission = await repository.get_permission(
        session, project_uuid=project_uuid, email=principal.email
    )
    return permission.role if permission else 0


def role_name(role: int) -> str:
    """A role as the API names it: `viewer`, `contributor` or `moderator` (3 and above, read as
    the Moderator's)."""
    return Role(min(role, Role.MODERATOR)).name.lower()


async def role_names(
    session: AsyncSession, principal: Principal, project_uuids: list[str]
) -> dict[str, str]:
    """The principal's role in each of these projects, by name: `admin` for admins and service
    accounts (every project), else `role_name` of the member's permission; projects where the
    principal is not a member are left out."""
    if principal.sees_all_projects:
        return dict.fromkeys(project_uuids, "admin")
    if not principal.email:
        return {}
    roles = await repository.roles_in(session, email=principal.email, project_uuids=project_uuids)
    return {uuid: role_name(role) for uuid, role in roles.items() if role >= Role.VIEWER}


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


async def visible_code(
    session: AsyncSession, principal: Principal, code_id: str, needed: Role
) -> Code:
    """The code an id names, when the principal holds `needed` in its project; else CodeNotFound."""
    code = await repository.code_by_any_id(session, code_id)
    if code is None:
        raise CodeNotFound()
    await authorize(session, principal, code.project_uuid, needed, not_member=CodeNotFound())
    return code


async def authorize_code(
    session: AsyncSession,
    principal: Principal,
    code: Code | None,
    needed: Role,
    *,
    not_found: AppError,
) -> None:
    """Raise `not_found` unless the principal holds `needed` in the code's project; a code that
    is gone (None) is for admins only."""
    if principal.sees_all_projects:
        return
    if code is None:
        raise not_found
    await authorize(session, principal, code.project_uuid, needed, not_member=not_found)


async def authorize_run(
    session: AsyncSession, principal: Principal, run: CodeRun, needed: Role
) -> None:
    """The run's project is its code's; others (and all but admins, once the code is deleted)
    get RunNotFound."""
    if principal.sees_all_projects:
        return
    code = await repository.code_of_run(session, run)
    await authorize_code(session, principal, code, needed, not_found=RunNotFound())


async def authorize_log(
    session: AsyncSession, principal: Principal, *, run_id: str, code_id: str
) -> None:
    """A log line is read by Viewers of its run's code's project, or of the code it names when the
    run is gone; others (and all but admins, once the code is deleted) get LogNotFound."""
    if principal.sees_all_projects:
        return
    code = None
    run = await repository.run_by_any_id(session, run_id)
    if run is not None:
        code = await repository.code_of_run(session, run)
    if code is None and is_id(code_id):
        code = await repository.code_by_any_id(session, code_id)
    await authorize_code(session, principal, code, Role.VIEWER, not_found=LogNotFound())


async def authorize_secret(
    session: AsyncSession, principal: Principal, secret: Secret, needed: Role
) -> None:
    """Raise unless the principal holds `needed` in the secret's project; others get SecretNotFound."""
    await authorize(session, principal, secret.project_uuid, needed, not_member=SecretNotFound())
