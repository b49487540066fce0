"""HTTP routes for projects and their members, so a deployment without RabbitMQ is complete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from pydantic import AfterValidator

from codeactions.access.service import authorize
from codeactions.auth.dependencies import CurrentAdmin, CurrentPrincipal
from codeactions.auth.principals import Role
from codeactions.codes.service import (
    MAX_PAGE,
    SEARCH_MAX_CHARS,
    page_number_pattern,
    parse_page_number,
)
from codeactions.db.session import SessionDep
from codeactions.errors import ProjectNotFound
from codeactions.http import page_headers
from codeactions.ops.docs import error_responses, query
from codeactions.projects import service
from codeactions.projects.schemas import (
    IDENTIFIER,
    PermissionOut,
    ProjectIn,
    ProjectOut,
    ProjectWithRoleOut,
    RoleIn,
)

router = APIRouter(prefix="/projects", tags=["projects"])

# Checked before the role lookup, so every caller gets the service's 400 (its BadRequest is not a
# ValueError: it leaves validation as it is), not a non-member's 404.
ProjectUuid = Annotated[
    str,
    Path(min_length=1, max_length=255, json_schema_extra={"pattern": IDENTIFIER}),
    AfterValidator(lambda value: service.valid_identifier(value, "project uuid")),
]
Email = Annotated[
    str,
    Path(min_length=1, max_length=255, json_schema_extra={"pattern": IDENTIFIER}),
    AfterValidator(lambda value: service.valid_identifier(value, "email")),
]

DEFAULT_PROJECTS_PAGE = 100
MAX_PROJECTS_PAGE = 1000
_NOT_FOUND = (404, "No such project (or member), or the caller is not a member of the project")
_MEMBERS_ERRORS = error_responses(
    400, 401, (403, "Only moderators manage members"), _NOT_FOUND, 503
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a project (admin); an existing uuid answers 200 with it",
    responses={
        200: {"description": "Already existed", "model": ProjectOut},
        **error_responses(
            400, 401, (403, "Only the admin token and service accounts create projects"), 503
        ),
    },
)
async def create_project(
    body: ProjectIn, _admin: CurrentAdmin, session: SessionDep, response: Response
) -> ProjectOut:
    project, created = await service.ensure_project(session, uuid=body.uuid, name=body.name)
    if not created:
        response.status_code = status.HTTP_200_OK
    return ProjectOut.model_validate(project)


@router.get(
    "",
    summary="The projects the caller sees, newest first, with its role in each",
    description="Admins and service accounts see every project (role `admin`); an OIDC user "
    "those where it has a permission. One page (`page_size` 1 to 1000, 100 by default), "
    "`X-Total-Count` with how many match and a `Link` to the next page. Projects known only "
    "through permissions (no `POST /projects`, no RabbitMQ `project` event) are not listed.",
    responses=error_responses(400, 401, 503),
)
async def list_projects(
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    session: SessionDep,
    search: Annotated[
        str | None,
        query(
            "Only projects whose name contains this (case-insensitive)",
            maxLength=SEARCH_MAX_CHARS,
        ),
    ] = None,
    page: Annotated[
        str | None, query("Page number, from 1", pattern=page_number_pattern(MAX_PAGE))
    ] = None,
    page_size: Annotated[
        str | None,
        query(
            "Projects per page, 1 to 1000 (100 by default)",
            pattern=page_number_pattern(MAX_PROJECTS_PAGE),
        ),
    ] = None,
) -> list[ProjectWithRoleOut]:
    number = parse_page_number(page, name="page", default=1, maximum=MAX_PAGE)
    size = parse_page_number(
        page_size, name="page_size", default=DEFAULT_PROJECTS_PAGE, maximum=MAX_PROJECTS_PAGE
    )
    found = await service.list_projects(
        session, principal, search=search, page=number, page_size=size
    )
    response.headers.update(page_headers(request, found))
    return [ProjectWithRoleOut.of(project, role) for project, role in found.items]


@router.get(
    "/{project_uuid}",
    summary="A project (members)",
    responses=error_responses(400, 401, _NOT_FOUND, 503),
)
async def get_project(
    project_uuid: ProjectUuid, principal: CurrentPrincipal, session: SessionDep
) -> ProjectOut:
    await authorize(session, principal, project_uuid, Role.VIEWER, not_member=ProjectNotFound())
    project = await service.get_project(session, uuid=project_uuid)
    if project is None:
        raise ProjectNotFound()
    return ProjectOut.model_validate(project)


@router.get(
    "/{project_uuid}/permissions",
    summary="The project's members (moderators)",
    responses=_MEMBERS_ERRORS,
)
async def list_permissions(
    project_uuid: ProjectUuid, principal: CurrentPrincipal, session: SessionDep
) -> list[PermissionOut]:
    await authorize(session, principal, project_uuid, Role.MODERATOR, not_member=ProjectNotFound())
    permissions = await service.list_permissions(session, project_uuid=project_uuid)
    return [PermissionOut.model_validate(p) for p in permissions]


@router.put(
    "/{project_uuid}/permissions/{email}",
    summary="Give a member a role, adding the member if needed (moderators)",
    responses=_MEMBERS_ERRORS,
)
async def put_permission(
    project_uuid: ProjectUuid,
    email: Email,
    body: RoleIn,
    principal: CurrentPrincipal,
    session: SessionDep,
) -> PermissionOut:
    await authorize(session, principal, project_uuid, Role.MODERATOR, not_member=ProjectNotFound())
    permission = await service.grant_role(
        session, project_uuid=project_uuid, email=email, role=body.role
    )
    return PermissionOut.model_validate(permission)


@router.delete(
    "/{project_uuid}/permissions/{email}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member (moderators)",
    responses=_MEMBERS_ERRORS,
)
async def delete_permission(
    project_uuid: ProjectUuid, email: Email, principal: CurrentPrincipal, session: SessionDep
) -> Response:
    await authorize(session, principal, project_uuid, Role.MODERATOR, not_member=ProjectNotFound())
    await service.remove_member(session, project_uuid=project_uuid, email=email)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
