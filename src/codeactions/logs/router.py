"""Run log routes: one log line, and a run's or a code's logs page by page."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter

from codeactions.auth.dependencies import CurrentPrincipal
from codeactions.codes.service import MAX_PAGE, page_number_pattern
from codeactions.db.session import SessionDep
from codeactions.logs import service
from codeactions.logs.schemas import CodeLogOut, CodeLogPage, log_json, page_json
from codeactions.logs.store import LogStoreDep
from codeactions.ops.docs import error_responses, query

router = APIRouter(tags=["logs"])


@router.get(
    "/codelog/{id}",
    summary="One log line",
    response_model=CodeLogOut,
    responses=error_responses(401, (404, "No log with this id in the caller's projects"), 503),
)
async def get_log(
    session: SessionDep, store: LogStoreDep, principal: CurrentPrincipal, id: str
) -> dict[str, Any]:
    entry = await service.get_log(session, principal, store, log_id=id)
    return log_json(entry)


@router.get(
    "/codelog",
    summary="A run's or a code's logs, newest first, 20 per page",
    response_model=CodeLogPage,
    description="`run_id` or `code_id` is required. A `run_id` that names no run is a 400 "
    "(`coderun not found`), as in the original.",
    responses=error_responses(
        (400, "Neither `run_id` nor `code_id`, a `run_id` that names no run, or a bad `page`"),
        401,
        (404, "The run's or code's project is not one of the caller's"),
        503,
    ),
)
async def list_logs(
    session: SessionDep,
    store: LogStoreDep,
    principal: CurrentPrincipal,
    run_id: Annotated[str | None, query("The run's id")] = None,
    code_id: Annotated[str | None, query("The code's UUID or legacy ObjectID")] = None,
    page: Annotated[
        str | None, query("Page number, from 1", pattern=page_number_pattern(MAX_PAGE))
    ] = None,
) -> dict[str, Any]:
    entries, total, number = await service.list_logs(
        session, principal, store, run_id=run_id, code_id=code_id, page=page
    )
    return page_json(entries, total=total, page=number)
