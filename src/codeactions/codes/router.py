"""Code CRUD routes: /code and its /admin/code aliases (raw-text source bodies)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from codeactions.auth.dependencies import CurrentPrincipal
from codeactions.codes import service
from codeactions.codes.cache import CodeCacheDep
from codeactions.codes.schemas import (
    CODE_TYPES,
    LANGUAGES,
    RAW_SOURCE_BODY,
    CodeOut,
    ListedCodeOut,
    code_json,
    last_run_json,
)
from codeactions.db.session import SessionDep, SessionMakerDep
from codeactions.errors import BadRequest, PayloadTooLarge
from codeactions.events.bus import EventBusDep
from codeactions.http import json_array, page_headers, read_body
from codeactions.ops.docs import error_responses, query
from codeactions.ops.metrics import MetricsDep
from codeactions.parts import SettingsDep
from codeactions.projects.schemas import NO_CONTROL_CHARACTERS
from codeactions.runner.base import RunnerDep

router = APIRouter(tags=["codes"])

# The original returned every code, as a request without `page` and `page_size` still does; a
# request with only `page` gets pages of this size.
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 1000


def _source_reader(request: Request, limit: int) -> service.SourceReader:
    """Read the raw body incrementally, giving up once it reaches `limit` bytes (never unbounded)."""

    async def read() -> bytes:
        try:
            return await read_body(request, limit - 1)
        except PayloadTooLarge:
            raise BadRequest(service.SOURCE_TOO_BIG) from None

    return read


CREATE_DESCRIPTION = (
    "Create a code (Contributor on `project_uuid`). The body is the raw source; "
    "`timeout` is 5-300 seconds (default 60)."
)
UPDATE_DESCRIPTION = (
    "Update a code (Contributor). Absent or empty parameters and an empty body keep the stored "
    "values."
)

# Query parameters as the service checks them (its 400s keep the original's messages).
ProjectUuid = Annotated[
    str | None,
    query(
        "The project's uuid",
        required=True,
        minLength=1,
        maxLength=service.PROJECT_UUID_MAX_CHARS,
        pattern=NO_CONTROL_CHARACTERS,
    ),
]
Name = Annotated[str | None, query("The code's name (free text)", maxLength=service.NAME_MAX_CHARS)]
Timeout = Annotated[
    str | None,
    query(
        "Seconds, 5 to 300; empty or 0: the default on create, unchanged on update",
        alias="timeout",
        pattern=service.TIMEOUT_PATTERN,
    ),
]
Page = Annotated[
    str | None, query("Page number, from 1", pattern=service.page_number_pattern(service.MAX_PAGE))
]
PageSize = Annotated[
    str | None,
    query(
        "Codes per page, 1 to 1000 (1000 when only `page` is given)",
        pattern=service.page_number_pattern(MAX_PAGE_SIZE),
    ),
]
_NOT_FOUND = (404, "No code with this id in the caller's projects")
_SAVE_ERRORS = (
    (400, "Invalid parameter or source (too big, blacklisted term, NUL, Go that does not compile)"),
    401,
    (403, "Contributor role on the project needed"),
)
_CREATE_ERRORS = error_responses(*_SAVE_ERRORS, 503)
_UPDATE_ERRORS = error_responses(*_SAVE_ERRORS, _NOT_FOUND, 503)


# `/admin/code` is the same route under the path the original's Postman collection uses.
@router.post(
    "/admin/code",
    summary="Create a code (alias)",
    status_code=201,
    response_model=CodeOut,
    description=CREATE_DESCRIPTION,
    openapi_extra=RAW_SOURCE_BODY,
    operation_id="create_code_admin",
    responses=_CREATE_ERRORS,
)
@router.post(
    "/code",
    summary="Create a code",
    status_code=201,
    response_model=CodeOut,
    description=CREATE_DESCRIPTION,
    openapi_extra=RAW_SOURCE_BODY,
    responses=_CREATE_ERRORS,
)
async def create_code(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    runner: RunnerDep,
    metrics: MetricsDep,
    cache: CodeCacheDep,
    bus: EventBusDep,
    principal: CurrentPrincipal,
    project_uuid: ProjectUuid = None,
    name: Name = None,
    language: Annotated[str | None, query("Language", required=True, enum=LANGUAGES)] = None,
    type: Annotated[str | None, query("Type", required=True, enum=CODE_TYPES)] = None,
    timeout_text: Timeout = None,
) -> JSONResponse:
    code = await service.create_code(
        session,
        principal,
        settings=settings.code,
        project_uuid=project_uuid,
        name=name,
        type=type,
        language=language,
        timeout_text=timeout_text,
        read_source=_source_reader(request, settings.code.max_source_bytes),
        check_source=service.runner_source_checker(runner),
    )
    metrics.code_created(project_uuid=code.project_uuid, code_id=str(code.id))
    service.announce(session, cache=cache, bus=bus, code=code, event="code.saved")
    return JSONResponse(code_json(code), status_code=201)


@router.patch(
    "/admin/code/{id}",
    summary="Update a code (alias)",
    response_model=CodeOut,
    description=UPDATE_DESCRIPTION,
    openapi_extra=RAW_SOURCE_BODY,
    operation_id="update_code_admin",
    responses=_UPDATE_ERRORS,
)
@router.patch(
    "/code/{id}",
    summary="Update a code",
    response_model=CodeOut,
    description=UPDATE_DESCRIPTION,
    openapi_extra=RAW_SOURCE_BODY,
    responses=_UPDATE_ERRORS,
)
async def update_code(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    runner: RunnerDep,
    metrics: MetricsDep,
    cache: CodeCacheDep,
    bus: EventBusDep,
    principal: CurrentPrincipal,
    id: str,
    name: Name = None,
    language: Annotated[str | None, query("Language", enum=["", *LANGUAGES])] = None,
    type: Annotated[str | None, query("Type", enum=["", *CODE_TYPES])] = None,
    timeout_text: Timeout = None,
) -> JSONResponse:
    code = await service.update_code(
        session,
        principal,
        settings=settings.code,
        code_id=id,
        name=name,
        type=type,
        language=language,
        timeout_text=timeout_text,
        read_source=_source_reader(request, settings.code.max_source_bytes),
        check_source=service.runner_source_checker(runner),
    )
    metrics.code_updated(project_uuid=code.project_uuid, code_id=str(code.id))
    service.announce(session, cache=cache, bus=bus, code=code, event="code.saved")
    return JSONResponse(code_json(code))


@router.get(
    "/code/{id}",
    summary="Get a code by UUID or legacy ObjectID",
    response_model=CodeOut,
    responses=error_responses(401, _NOT_FOUND, 503),
)
async def get_code(session: SessionDep, principal: CurrentPrincipal, id: str) -> JSONResponse:
    code = await service.get_code(session, principal, code_id=id)
    return JSONResponse(code_json(code))


@router.get(
    "/code",
    summary="List a project's codes, newest first",
    response_model=list[ListedCodeOut],
    description="Always a JSON array. Without `page` and `page_size`, every code (as the "
    "original), written as it is read; with either, one page and a `Link` to the next. "
    "`X-Total-Count` gives how many match. `search` keeps codes whose name contains it (any "
    "case); `last_run=true` (on a page only) adds each code's newest run as `last_run`.",
    responses=error_responses(
        400,
        401,
        (403, "The caller is not a member of the project"),
        (404, "`code_type` is not a code type (the original's status)"),
        503,
    ),
)
async def list_codes(
    request: Request,
    session: SessionDep,
    sessionmaker: SessionMakerDep,
    principal: CurrentPrincipal,
    project_uuid: ProjectUuid = None,
    code_type: Annotated[
        str | None, query("Only codes of this type (any when empty)", enum=["", *CODE_TYPES])
    ] = None,
    page: Page = None,
    page_size: PageSize = None,
    search: Annotated[
        str | None,
        query(
            "Only codes whose name contains this (case-insensitive)",
            maxLength=service.SEARCH_MAX_CHARS,
        ),
    ] = None,
    last_run: Annotated[
        str | None,
        query(
            "`true`: each code gets `last_run`, its newest run (`id`, `status`, `created_at`, "
            "`updated_at`) or null; needs `page` or `page_size`",
            enum=["", "true", "false"],
        ),
    ] = None,
) -> Response:
    with_last_run = service.parse_last_run(last_run, paged=bool(page or page_size))
    if not page and not page_size:
        every = await service.all_codes(
            session,
            sessionmaker,
            principal,
            project_uuid=project_uuid,
            code_type=code_type,
            search=search,
        )
        return json_array(
            every.first, every.rest, code_json, headers={"X-Total-Count": str(every.total)}
        )
    number = service.parse_page_number(page, name="page", default=1, maximum=service.MAX_PAGE)
    size = service.parse_page_number(
        page_size, name="page_size", default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE
    )
    found = await service.list_codes(
        session,
        principal,
        project_uuid=project_uuid,
        code_type=code_type,
        page=number,
        page_size=size,
        search=search,
    )
    headers = page_headers(request, found)
    codes = found.items
    if not with_last_run:
        return JSONResponse([code_json(c) for c in codes], headers=headers)
    runs = await service.last_runs(session, codes)
    listed = [{**code_json(c), "last_run": last_run_json(runs.get(c.id))} for c in codes]
    return JSONResponse(listed, headers=headers)


@router.delete(
    "/code/{id}",
    summary="Delete a code (Moderator); its runs and logs are kept",
    response_class=Response,
    responses={
        200: {"description": "Deleted (empty body)"},
        **error_responses(401, (403, "Moderator role needed"), _NOT_FOUND, 503),
    },
)
async def delete_code(
    session: SessionDep,
    cache: CodeCacheDep,
    bus: EventBusDep,
    principal: CurrentPrincipal,
    id: str,
) -> Response:
    code = await service.delete_code(session, principal, code_id=id)
    service.announce(session, cache=cache, bus=bus, code=code, event="code.deleted")
    return Response(status_code=200)
