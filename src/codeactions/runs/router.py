"""Run routes: the execution endpoints (`/action/endpoint`, `/endpoint`, `/run`) and `/coderun`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from codeactions.auth.dependencies import CurrentPrincipal
from codeactions.db.session import SessionDep
from codeactions.errors import AppError, BadRequest, NotFound, RateLimited
from codeactions.http import (
    canonical_header_key,
    first_query_values,
    parse_json,
    read_body,
    request_headers,
)
from codeactions.runs import service
from codeactions.runs.schemas import CodeRunOut, Message, RunCodeIn, RunCodeOut, run_json
from codeactions.runs.service import Execution, Executor, RunInputs

router = APIRouter()

# Echo's `Any`: these are documented; the others are accepted but kept out of the OpenAPI
# document (OPTIONS never gets here: the CORS middleware answers it).
DOCUMENTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
HIDDEN_METHODS = ("OPTIONS", "CONNECT", "PROPFIND", "REPORT", "TRACE")

_RAW_BODY = {
    "requestBody": {
        "required": False,
        "description": "Raw body handed to the code as `engine.body` (decoded as UTF-8).",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Message, "description": "No code with this id"},
    408: {"model": Message, "description": "The code's timeout ran out (queue wait + execution)"},
    413: {"model": Message, "description": "Request body over the limit"},
    429: {
        "model": Message,
        "description": "Too many runs of the code's project, or of the code, waiting for a slot",
    },
    500: {"model": Message, "description": "The code failed: `error on executing code: ...`"},
    503: {"model": Message, "description": "Queue full or runner unavailable"},
}
_EXECUTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "What the code set with `engine.result.set` (status and type it chose)",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/json": {"schema": {}},
            "text/html": {"schema": {"type": "string"}},
        },
    },
    **_ERRORS,
    429: {
        "model": Message,
        "description": "Rate limit of this code reached, or too many runs of its project or of "
        "the code waiting for a slot",
    },
}


def _executor(request: Request) -> Executor:
    state = request.app.state
    return Executor(
        runner=state.runner,
        queue=state.run_queue,
        book=state.run_book,
        sessionmaker=state.sessionmaker,
        log_store=state.log_store,
        metrics=state.metrics,
        tasks=state.run_tasks,
    )


def _max_body(request: Request) -> int:
    return int(request.app.state.settings.server.max_body_bytes)


def _result_response(execution: Execution, headers: dict[str, str]) -> Response:
    status = execution.status_code
    body = b"" if status in (204, 304) else execution.outcome.result.encode("utf-8", "replace")
    return Response(
        content=body,
        status_code=status,
        headers={**headers, "content-type": execution.media_type},
    )


async def run_endpoint(request: Request, code_id: str) -> Response:
    """Run a code as a public HTTP endpoint: query, headers, body and method go to the code."""
    state = request.app.state
    decision = await state.limiter.hit(code_id)
    limit_headers = decision.headers()
    if not decision.allowed:
        state.metrics.rate_limited()
        raise RateLimited(headers=limit_headers)
    try:
        code = await service.find_code(state.sessionmaker, state.code_cache, code_id)
        if code is None:
            raise NotFound()
        raw = await read_body(request, _max_body(request))
        inputs = RunInputs(
            params=first_query_values(request),
            body=raw.decode("utf-8", "replace"),
            headers=request_headers(request),
            method=request.method,
        )
        execution = await service.execute(
            _executor(request), code=code, invoked_id=code_id, inputs=inputs
        )
        service.raise_for_failure(execution)
    except AppError as exc:
        exc.headers = {**limit_headers, **(exc.headers or {})}
        raise
    return _result_response(execution, limit_headers)


def _add_execution_routes(path: str, name: str, summary: str) -> None:
    for method in DOCUMENTED_METHODS + HIDDEN_METHODS:
        documented = method in DOCUMENTED_METHODS
        router.add_api_route(
            path,
            run_endpoint,
            methods=[method],
            name=f"{name}_{method.lower()}",
            summary=summary,
            tags=["execution"],
            include_in_schema=documented,
            response_class=Response,
            responses=_EXECUTION_RESPONSES,
            openapi_extra=_RAW_BODY if method not in ("GET", "HEAD") else None,
        )


_add_execution_routes(
    "/action/endpoint/{code_id}",
    "action_endpoint",
    "Run a code (UUID or ObjectID) as a public endpoint, rate limited per code",
)
_add_execution_routes(
    "/endpoint/{code_id}",
    "endpoint",
    "Run a code as a public endpoint (same as /action/endpoint)",
)


def _run_inputs(raw: bytes) -> RunInputs:
    if not raw.strip():
        return RunInputs()
    document = parse_json(raw, expected="a JSON object")
    try:
        body = RunCodeIn.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise BadRequest(f"invalid body: {problems}") from None
    headers: dict[str, list[str]] = {}
    for name, values in body.headers.items():
        headers.setdefault(canonical_header_key(name), []).extend(values)
    return RunInputs(params=body.params, body=body.body, headers=headers, method=body.method)


@router.post(
    "/run/{code_id}",
    summary="Run a code (Contributors of its project, internal callers, the admin token)",
    tags=["execution"],
    response_model=RunCodeOut,
    responses={
        401: {"model": Message},
        403: {"model": Message},
        400: {"model": Message},
        **_ERRORS,
    },
    openapi_extra={
        "requestBody": {
            "required": False,
            "description": "What the code sees as its request; every field optional.",
            "content": {"application/json": {"schema": RunCodeIn.model_json_schema()}},
        }
    },
)
async def run_code(request: Request, principal: CurrentPrincipal, code_id: str) -> Response:
    code = await service.find_code_to_run(request.app.state.sessionmaker, principal, code_id)
    inputs = _run_inputs(await read_body(request, _max_body(request)))
    execution = await service.execute(
        _executor(request), code=code, invoked_id=code_id, inputs=inputs
    )
    service.raise_for_failure(execution)
    return JSONResponse({"code_id": code_id, "result": run_json(execution.run)})


@router.get(
    "/coderun/{id}",
    summary="One run (Viewers of its code's project)",
    tags=["runs"],
    response_model=CodeRunOut,
    responses={401: {"model": Message}, 404: {"model": Message}},
)
async def get_run(session: SessionDep, principal: CurrentPrincipal, id: str) -> Response:
    run = await service.get_run(session, principal, run_id=id)
    return JSONResponse(run_json(run))


@router.get(
    "/coderun",
    summary="A code's runs, newest first, paginated (X-Total-Count and Link headers)",
    tags=["runs"],
    response_model=list[CodeRunOut],
    responses={400: {"model": Message}, 401: {"model": Message}, 404: {"model": Message}},
)
async def list_runs(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    code_id: Annotated[
        str | None, Query(description="The code's UUID or legacy ObjectID (required)")
    ] = None,
    after: Annotated[
        str | None,
        Query(
            description="Runs created at or after: `2024-12-10`, `2024-12-10T10:00:00`, RFC 3339"
        ),
    ] = None,
    before: Annotated[
        str | None, Query(description="Runs created at or before (same formats; UTC if no zone)")
    ] = None,
    page: Annotated[str | None, Query(description="Page number, from 1")] = None,
    page_size: Annotated[str | None, Query(description="Runs per page, 1 to 1000 (100)")] = None,
) -> Response:
    found = await service.list_runs(
        session,
        principal,
        code_id=code_id,
        after=after,
        before=before,
        page=page,
        page_size=page_size,
    )
    headers = {"X-Total-Count": str(found.total)}
    if found.has_next:
        next_url = request.url.include_query_params(page=found.page + 1)
        headers["Link"] = f'<{next_url}>; rel="next"'
    return JSONResponse([run_json(run) for run in found.runs], headers=headers)
