"""Run log routes: one log line, and a run's or a code's logs page by page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from codeactions.auth.dependencies import CurrentPrincipal
from codeactions.db.session import SessionDep
from codeactions.logs import service
from codeactions.logs.schemas import CodeLogOut, CodeLogPage, log_json, page_json
from codeactions.logs.store import LogStore

router = APIRouter(tags=["logs"])


def _store(request: Request) -> LogStore:
    store: LogStore = request.app.state.log_store
    return store


@router.get("/codelog/{id}", summary="One log line", response_model=CodeLogOut)
async def get_log(
    request: Request, session: SessionDep, principal: CurrentPrincipal, id: str
) -> dict[str, Any]:
    entry = await service.get_log(session, principal, _store(request), log_id=id)
    return log_json(entry)


@router.get(
    "/codelog",
    summary="A run's or a code's logs, newest first, 20 per page",
    response_model=CodeLogPage,
)
async def list_logs(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    run_id: str | None = None,
    code_id: str | None = None,
    page: str | None = None,
) -> dict[str, Any]:
    entries, total, number = await service.list_logs(
        session, principal, _store(request), run_id=run_id, code_id=code_id, page=page
    )
    return page_json(entries, total=total, page=number)
