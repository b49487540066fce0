"""Rules for projects and their members' roles; used by the HTTP routes and the RabbitMQ consumers.

Emails are stored stripped and lowercased and compared case-insensitively (see
`normalize_email`), so `Ana@X.org` from one source and `ana@x.org` from another are one member.
Permissions do not require a `projects` row: the original never required one, and older projects
only exist through their permissions.

Uuids and emails with control characters (NUL among them) or surrogates are refused, written or
looked up: stored with U+FFFD, `p\\x00` and `p\\ufffd` would be one project. Names are free text,
stored with U+FFFD in place of what no database stores (see `codeactions.db.text`).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.access.service import role_names
from codeactions.auth.principals import Principal, Role, normalize_email
from codeactions.codes.service import parse_search
from codeactions.db.listing import Page
from codeactions.db.models import Project, UserPermission
from codeactions.db.text import has_control_characters
from codeactions.errors import BadRequest, PermissionNotFound
from codeactions.projects import repository

MAX_LENGTH = 255  # the columns' VARCHAR(255)
ROLE_ERROR = "role must be 1 (viewer), 2 (contributor) or 3 (moderator)"
# What the `role` column (INTEGER) holds. RabbitMQ events store any of these as given, as the
# original did: 3 and above act as Moderator, 0 and below grant nothing (see access.service).
STORED_ROLES = (-(2**31), 2**31 - 1)


UNADDRESSABLE = "uuid must not contain `/` nor be only dots: it names the project in URLs"


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{what} is required")
    value = value.strip()
    if len(value) > MAX_LENGTH:
        raise BadRequest(f"{what} is longer than {MAX_LENGTH} characters")
    return value


def valid_identifier(value: object, what: str) -> str:
    """`value` stripped, when it may name a project or a member; else 400 saying why."""
    text = _text(value, what)
    if has_control_characters(text):
        raise BadRequest(f"{what} must not contain control characters")
    return text


def _email(email: object) -> str:
    return normalize_email(valid_identifier(email, "email"))


def _role(role: object, *, as_given: bool) -> int:
    # bool is an int in Python; `true` is not a role.
    if isinstance(role, bool) or not isinstance(role, int):
        raise BadRequest(ROLE_ERROR)
    if as_given:
        if not STORED_ROLES[0] <= role <= STORED_ROLES[1]:
            raise BadRequest("role must fit a 32-bit integer")
        return role
    if not Role.VIEWER <= role <= Role.MODERATOR:
        raise BadRequest(ROLE_ERROR)
    return role


async def ensure_project(session: AsyncSession, *, uuid: str, name: str) -> tuple[Project, bool]:
    """The project with this uuid, created if missing; True when it was created now."""
    uuid = valid_identifier(uuid, "uuid")
    if "/" in uuid or not uuid.replace(".", ""):
        raise BadRequest(UNADDRESSABLE)  # it could never be read back at /projects/{uuid}
    name = _text(name, "name")
    created = await repository.insert_project_if_missing(session, uuid=uuid, name=name)
    project = await repository.get_project(session, uuid=uuid)
    assert project is not None  # inserted above or already there
    return project, created


async def create_project(session: AsyncSession, *, uuid: str, name: str) -> Project:
    """Idempotent: an existing uuid returns the stored project unchanged."""
    project, _ = await ensure_project(session, uuid=uuid, name=name)
    return project


async def get_project(session: AsyncSession, *, uuid: str) -> Project | None:
    return await repository.get_project(session, uuid=valid_identifier(uuid, "uuid"))


async def list_projects(
    session: AsyncSession,
    principal: Principal,
    *,
    search: str | None,
    page: int,
    page_size: int,
) -> Page[tuple[Project, str]]:
    """The projects the principal sees, newest first: every one for admins and service
    accounts, else those where its email holds a role; `search` filters by name."""
    search = parse_search(search)
    if not principal.sees_all_projects and not principal.email:
        return Page([], 0, page, page_size)
    projects, total = await repository.list_projects(
        session,
        member_email=None if principal.sees_all_projects else principal.email,
        search=search,
        offset=(page - 1) * page_size,
        limit=page_size,
    )
    roles = await role_names(session, principal, [project.uuid for project in projects])
    # A role removed between the two queries leaves its project out rather than guess a role.
    visible = [(project, roles[project.uuid]) for project in projects if project.uuid in roles]
    return Page(visible, total, page, page_size)


async def list_permissions(session: AsyncSession, *, project_uuid: str) -> list[UserPermission]:
    return await repository.list_permissions(
        session, project_uuid=valid_identifier(project_uuid, "project uuid")
    )


async def add_permission(
    session: AsyncSession, *, project_uuid: str, email: str, role: int, role_as_given: bool = False
) -> bool:
    """Insert the member unless present; False (and nothing changed) when it already existed.

    `role` is 1 to 3, or with `role_as_given` (RabbitMQ events) any 32-bit integer."""
    return await repository.insert_permission_if_missing(
        session,
        project_uuid=valid_identifier(project_uuid, "project uuid"),
        email=_email(email),
        role=_role(role, as_given=role_as_given),
    )


async def grant_role(
    session: AsyncSession, *, project_uuid: str, email: str, role: int, role_as_given: bool = False
) -> UserPermission:
    """Give the member this role, adding the member if needed (`role` as in `add_permission`)."""
    return await repository.upsert_permission(
        session,
        project_uuid=valid_identifier(project_uuid, "project uuid"),
        email=_email(email),
        role=_role(role, as_given=role_as_given),
    )


async def revoke_role(session: AsyncSession, *, project_uuid: str, email: str) -> bool:
    """Remove the member; False when it was not a member."""
    return await repository.delete_permission(
        session, project_uuid=valid_identifier(project_uuid, "project uuid"), email=_email(email)
    )


async def remove_member(session: AsyncSession, *, project_uuid: str, email: str) -> None:
    """As `revoke_role`, for callers that must report an absent member (HTTP DELETE)."""
    if not await revoke_role(session, project_uuid=project_uuid, email=email):
        raise PermissionNotFound()
