"""Run routes: the execution endpoints (`/action/endpoint`, `/endpoint`, `/run`) and `/coderun`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from codeactions.auth.dependencies import CurrentPrincipal
from codeactions.codes.cache import CodeCacheDep
from codeactions.codes.service import MAX_PAGE, page_number_pattern
from codeactions.db.session import SessionDep, SessionMakerDep
from codeactions.errors import AppError, BadRequest, NotFound, RateLimited
from codeactions.http import (
    canonical_headers,
    first_query_values,
    json_array,
    page_headers,
    parse_json,
    read_body,
    request_headers,
    validation_problems,
)
from codeactions.ops.docs import Message, error_responses, query
from codeactions.ops.metrics import MetricsDep
from codeactions.parts import SettingsDep, part
from codeactions.ratelimit.base import LimiterDep
from codeactions.runs import service
from codeactions.runs.callbacks import MAX_URL_CHARS, CallbacksDep
from codeactions.runs.schemas import (
    BUCKETS,
    RUN_STATUSES,
    CodeRunOut,
    RunAcceptedOut,
    RunCodeIn,
    RunCodeOut,
    RunStatsOut,
    run_json,
    run_stats_out,
)
from codeactions.runs.service import EXECUTOR, Execution, Executor, RunInputs

router = APIRouter()

# Echo's `Any`: these are documented; the others are accepted but OpenAPI 3.1 has no place for
# them (OPTIONS never gets here: the CORS middleware answers it).
DOCUMENTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE")
HIDDEN_METHODS = ("OPTIONS", "CONNECT", "PROPFIND", "REPORT")
# Requests that carry no body (RFC 9110): no request body is documented for them.
BODILESS_METHODS = ("GET", "HEAD", "TRACE")

_RAW_BODY = {
    "requestBody": {
        "required": False,
        "description": "Raw body handed to the code as `engine.body` (decoded as UTF-8); "
        "more than `CODEACTIONS_MAX_BODY_BYTES` (10 MiB by default) is a 413.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
_RUN_ERRORS = error_responses(
    (404, "No code with this id"),
    408,
    413,
    (429, "Too many runs of the code's project, or of the code, waiting for a slot"),
    500,
    (503, "Queue full, runner unavailable, or a dependency down; retry after `Retry-After`"),
)
# What the code chose (`engine.result.set(value, status_code, content_type)`).
_CODE_CONTENT = {
    "text/plain": {"schema": {"type": "string"}},
    "application/json": {"schema": {}},
    "text/html": {"schema": {"type": "string"}},
}
_EXECUTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "What the code set with `engine.result.set`", "content": _CODE_CONTENT},
    **_RUN_ERRORS,
    429: {
        "model": Message,
        "description": "Rate limit of this code reached (`RateLimit-*` and `Retry-After` "
        "headers), or too many runs of its project or of the code waiting for a slot",
    },
    "default": {
        "description": "Any other status the code chose, with its body and type (a code "
        "choosing one of the statuses above answers with its own body and type too)",
        "content": _CODE_CONTENT,
    },
}


# Empty: no limit. A zone-less date-time (UTC) is accepted too, as the description says.
_TIME: dict[str, Any] = {
    "type": "string",
    "anyOf": [{"format": "date"}, {"format": "date-time"}, {"maxLength": 0}],
}


ExecutorDep = Annotated[Executor, Depends(part(EXECUTOR))]
CodeId = Annotated[
    str | None, query("The code's UUID or legacy ObjectID", required=True, minLength=1)
]


def _result_response(execution: Execution, headers: dict[str, str]) -> Response:
    status = execution.status_code
    body = b"" if status in (204, 304) else execution.outcome.result.encode("utf-8", "replace")
    return Response(
        content=body,
        status_code=status,
        headers={**headers, "content-type": execution.media_type},
    )


async def run_endpoint(
    request: Request,
    code_id: str,
    settings: SettingsDep,
    sessionmaker: SessionMakerDep,
    cache: CodeCacheDep,
    limiter: LimiterDep,
    metrics: MetricsDep,
    executor: ExecutorDep,
) -> Response:
    """Run a code as a public HTTP endpoint: query, headers, body and method go to the code."""
    code = await service.find_code(sessionmaker, cache, code_id)
    if code is None:
        raise NotFound()  # before the limiter: ids that name no code leave no state there
    # One quota per code, however its id is spelled (UUID in any case, or its ObjectID).
    decision = await limiter.hit(str(code.id))
    limit_headers = decision.headers()
    if not decision.allowed:
        metrics.rate_limited()
        raise RateLimited(headers=limit_headers)
    try:
        raw = await read_body(request, settings.server.max_body_bytes)
        inputs = RunInputs(
            params=first_query_values(request),
            body=raw.decode("utf-8", "replace"),
            headers=request_headers(request),
            method=request.method,
        )
        execution = await service.execute(executor, code=code, invoked_id=code_id, inputs=inputs)
        # The run's id, to find its record and logs (`/coderun/{id}`, `/codelog?run_id=`).
        limit_headers = {**limit_headers, "X-Run-Id": str(execution.run.id)}
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
            openapi_extra=None if method in BODILESS_METHODS else _RAW_BODY,
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
    if not raw:
        return RunInputs()  # no body: the code sees an empty request, as the original ran it
    document = parse_json(raw, expected="a JSON object")
    try:
        body = RunCodeIn.model_validate(document)
    except ValidationError as exc:
        raise BadRequest(f"invalid body: {validation_problems(exc, 'body')}") from None
    headers = canonical_headers(body.headers)
    return RunInputs(params=body.params, body=body.body, headers=headers, method=body.method)


@router.post(
    "/run/{code_id}",
    summary="Run a code (Contributors of its project, internal callers, the admin token)",
    tags=["execution"],
    response_model=RunCodeOut,
    description="Waits for the run and answers with it, or with `async=true` answers `202` at "
    "once, when the run is recorded `started`: its record is then at `GET /coderun/{id}` "
    "(`Location`), followed live at `/coderun/{id}/events`, and POSTed to `callback_url` once "
    "finished (the same JSON as `GET /coderun/{id}`; headers `X-Run-Id`, `User-Agent: "
    "codeactions/<version>`; retried with backoff on network errors, timeouts, 408, 429 and "
    "5xx; redirects are not followed). Refusals (queue full, too many waiting) answer at once "
    "either way.",
    responses={
        202: {
            "model": RunAcceptedOut,
            "description": "With `async=true`: the run is recorded `started` and runs on",
            "headers": {
                "Location": {
                    "description": "`/coderun/{run_id}`",
                    "schema": {"type": "string"},
                },
                "X-Run-Id": {"description": "The run's id", "schema": {"type": "string"}},
            },
        },
        **error_responses(
            (
                400,
                "The body is not a JSON object of this shape, invalid `async`, or a "
                "`callback_url` that is not a public http(s) address or without `async=true`",
            ),
            401,
        ),
        **error_responses((403, "Contributor role needed")),
        **_RUN_ERRORS,
        404: {"model": Message, "description": "No code with this id in the caller's projects"},
    },
    openapi_extra={
        "requestBody": {
            "required": False,
            "description": "What the code sees as its request; every field optional.",
            "content": {"application/json": {"schema": RunCodeIn.model_json_schema()}},
        }
    },
)
async def run_code(
    request: Request,
    principal: CurrentPrincipal,
    code_id: str,
    settings: SettingsDep,
    sessionmaker: SessionMakerDep,
    executor: ExecutorDep,
    callbacks: CallbacksDep,
    run_async: Annotated[
        str | None,
        query(
            "`true` or `1`: answer 202 with the run's id as soon as it is recorded `started`; "
            "`false`, `0` or empty: wait for the run (the default)",
            alias="async",
            enum=["", "true", "false", "1", "0"],
        ),
    ] = None,
    callback_url: Annotated[
        str | None,
        query(
            "With `async=true`: where the finished run is POSTed (http or https, a host that "
            "resolves to public addresses only)",
            maxLength=MAX_URL_CHARS,
        ),
    ] = None,
) -> Response:
    code = await service.find_code_to_run(sessionmaker, principal, code_id)
    is_async = service.parse_async(run_async)
    target = None
    if callback_url:
        if not is_async:
            raise BadRequest("callback_url needs async=true")
        target = await callbacks.check(callback_url)
    inputs = _run_inputs(await read_body(request, settings.server.max_body_bytes))
    if not is_async:
        execution = await service.execute(executor, code=code, invoked_id=code_id, inputs=inputs)
        service.raise_for_failure(execution)
        return JSONResponse({"code_id": code_id, "result": run_json(execution.run)})
    submission = await service.submit(executor, code=code, invoked_id=code_id, inputs=inputs)
    if target is not None:
        callbacks.send_when_finished(submission, target)
    run_id = str(submission.run_id)
    return JSONResponse(
        RunAcceptedOut(run_id=run_id).model_dump(),
        status_code=202,
        headers={"Location": f"/coderun/{run_id}", "X-Run-Id": run_id},
    )


# Declared before `/coderun/{id}`, which would otherwise take `stats` for a run id.
@router.get(
    "/coderun/stats",
    summary="A code's runs per hour or day: counts by status and duration percentiles",
    tags=["runs"],
    response_model=RunStatsOut,
    description="Every bucket (UTC, aligned on the hour or day) from `after` to `before`, "
    "oldest first, those without runs with zeros and null percentiles. Durations are "
    "`updated_at - created_at` of the finished (completed or failed) runs, in milliseconds. "
    "Runs created at or after `after` and before `before` count; the range is the last 24 "
    "hours by default, at most 31 days.",
    responses=error_responses(
        (400, "Missing `code_id`, invalid time or bucket, empty or over 31 days range"),
        401,
        (404, "No code with this id in the caller's projects"),
        503,
    ),
)
async def run_stats(
    session: SessionDep,
    principal: CurrentPrincipal,
    code_id: CodeId = None,
    after: Annotated[
        str | None,
        query(
            "Start of the range (same formats as `GET /coderun`); default: 24 hours before "
            "`before`",
            **_TIME,
        ),
    ] = None,
    before: Annotated[
        str | None, query("End of the range, excluded (same formats); default: now", **_TIME)
    ] = None,
    bucket: Annotated[
        str | None, query("Bucket length: `hour` (default) or `day`", enum=["", *BUCKETS])
    ] = None,
) -> Response:
    stats = await service.run_stats(
        session, principal, code_id=code_id, after=after, before=before, bucket=bucket
    )
    body = run_stats_out(
        code_id or "", stats.after, stats.before, stats.bucket_seconds, stats.buckets
    )
    return JSONResponse(body.model_dump())


@router.get(
    "/coderun/{id}",
    summary="One run (Viewers of its code's project)",
    tags=["runs"],
    response_model=CodeRunOut,
    responses=error_responses(401, (404, "No run with this id in the caller's projects"), 503),
)
async def get_run(session: SessionDep, principal: CurrentPrincipal, id: str) -> Response:
    run = await service.get_run(session, principal, run_id=id)
    return JSONResponse(run_json(run))


@router.get(
    "/coderun",
    summary="A code's runs, newest first: all of them, or a page; by status if asked",
    tags=["runs"],
    response_model=list[CodeRunOut],
    description="Always a JSON array. Without `page` and `page_size`, every matching run (as "
    "the original), written as it is read; with either, one page and a `Link` to the next. "
    "`X-Total-Count` gives how many match.",
    responses=error_responses(
        400, 401, (404, "No code with this id in the caller's projects"), 503
    ),
)
async def list_runs(
    request: Request,
    session: SessionDep,
    sessionmaker: SessionMakerDep,
    principal: CurrentPrincipal,
    code_id: CodeId = None,
    after: Annotated[
        str | None,
        query(
            "Runs created at or after: a date, an RFC 3339 date-time, or `2024-12-10T10:00:00`"
            " / `2024-12-10 10:00:00` (UTC); empty: no limit",
            **_TIME,
        ),
    ] = None,
    before: Annotated[
        str | None, query("Runs created at or before (same formats)", **_TIME)
    ] = None,
    page: Annotated[
        str | None, query("Page number, from 1", pattern=page_number_pattern(MAX_PAGE))
    ] = None,
    page_size: Annotated[
        str | None,
        query(
            "Runs per page, 1 to 1000 (100 when only `page` is given)",
            pattern=page_number_pattern(service.MAX_RUNS_PAGE),
        ),
    ] = None,
    status: Annotated[
        str | None, query("Only runs in this status (any when empty)", enum=["", *RUN_STATUSES])
    ] = None,
) -> Response:
    if not page and not page_size:
        every = await service.all_runs(
            session,
            sessionmaker,
            principal,
            code_id=code_id,
            after=after,
            before=before,
            status=status,
        )
        return json_array(
            every.first, every.rest, run_json, headers={"X-Total-Count": str(every.total)}
        )
    found = await service.list_runs(
        session,
        principal,
        code_id=code_id,
        after=after,
        before=before,
        page=page,
        page_size=page_size,
        status=status,
    )
    return JSONResponse(
        [run_json(run) for run in found.items], headers=page_headers(request, found)
    )
