"""Secret routes: /secret (JSON bodies, as the original's); values are write-only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from codeactions.auth.dependencies import CurrentPrincipal
from codeactions.codes.service import PROJECT_UUID_MAX_CHARS
from codeactions.db.session import SessionDep
from codeactions.errors import BadRequest
from codeactions.http import parse_json, read_body
from codeactions.ops.docs import error_responses, query
from codeactions.projects.schemas import NO_CONTROL_CHARACTERS
from codeactions.secrets import service
from codeactions.secrets.crypto import SecretBoxDep
from codeactions.secrets.schemas import CREATE_BODY, UPDATE_BODY, SecretOut, secret_json

router = APIRouter(tags=["secrets"])

# Far above the largest value, even with every character escaped as \uXXXX.
MAX_BODY_BYTES = 1024 * 1024


async def _json_object(request: Request) -> service.Body:
    """The body as a JSON object; an empty body is an empty object (Go's Bind did the same)."""
    raw = await read_body(request, MAX_BODY_BYTES)
    if not raw.strip():
        return {}
    document = parse_json(raw, expected="a JSON object")
    if not isinstance(document, dict):
        raise BadRequest("invalid body: expected a JSON object")
    return document


_NOT_FOUND = (404, "No secret with this id in the caller's projects")
_BAD_BODY = (400, "Invalid body or field: the message says which")
_TAKEN = (409, "The project already has a secret of this name")
_MODERATOR = (403, "Moderator role on the project needed")


@router.post(
    "/secret",
    summary="Create a secret (Moderator on `project_uuid`)",
    status_code=201,
    response_model=SecretOut,
    openapi_extra=CREATE_BODY,
    responses=error_responses(_BAD_BODY, 401, _MODERATOR, _TAKEN, 413, 503),
)
async def create_secret(
    request: Request, session: SessionDep, box: SecretBoxDep, principal: CurrentPrincipal
) -> JSONResponse:
    secret = await service.create_secret(
        session, principal, box=box, body=await _json_object(request)
    )
    return JSONResponse(secret_json(secret), status_code=201)


@router.get(
    "/secret",
    summary="List a project's secrets, newest first (values masked)",
    response_model=list[SecretOut],
    description="Always a JSON array.",
    responses=error_responses(400, 401, (403, "The caller is not a member of the project"), 503),
)
async def list_secrets(
    session: SessionDep,
    principal: CurrentPrincipal,
    project_uuid: Annotated[
        str | None,
        query(
            "The project's uuid",
            required=True,
            minLength=1,
            maxLength=PROJECT_UUID_MAX_CHARS,
            pattern=NO_CONTROL_CHARACTERS,
        ),
    ] = None,
) -> JSONResponse:
    secrets = await service.list_secrets(session, principal, project_uuid=project_uuid)
    return JSONResponse([secret_json(secret) for secret in secrets])


@router.get(
    "/secret/{id}",
    summary="Get a secret (value masked)",
    response_model=SecretOut,
    responses=error_responses(401, _NOT_FOUND, 503),
)
async def get_secret(session: SessionDep, principal: CurrentPrincipal, id: str) -> JSONResponse:
    secret = await service.get_secret(session, principal, secret_id=id)
    return JSONResponse(secret_json(secret))


@router.patch(
    "/secret/{id}",
    summary="Rename a secret or replace its value (Moderator)",
    response_model=SecretOut,
    openapi_extra=UPDATE_BODY,
    responses=error_responses(_BAD_BODY, 401, _MODERATOR, _NOT_FOUND, _TAKEN, 413, 503),
)
async def update_secret(
    request: Request, session: SessionDep, box: SecretBoxDep, principal: CurrentPrincipal, id: str
) -> JSONResponse:
    secret = await service.update_secret(
        session, principal, box=box, secret_id=id, body=await _json_object(request)
    )
    return JSONResponse(secret_json(secret))


@router.delete(
    "/secret/{id}",
    summary="Delete a secret (Moderator)",
    response_class=Response,
    responses={
        200: {"description": "Deleted (empty body)"},
        **error_responses(401, _MODERATOR, _NOT_FOUND, 503),
    },
)
async def delete_secret(session: SessionDep, principal: CurrentPrincipal, id: str) -> Response:
    await service.delete_secret(session, principal, secret_id=id)
    return Response(status_code=200)
