"""Reading run logs: which logs a principal may see (members of the code's project only)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.access.repository import code_by_any_id, code_of_run, run_by_any_id
from codeactions.access.service import authorize_code, authorize_log
from codeactions.auth.principals import Principal, Role
from codeactions.codes.service import MAX_PAGE, parse_page_number
from codeactions.db.models import Code, CodeRun
from codeactions.errors import BadRequest, CodeNotFound, LogNotFound
from codeactions.ids import is_id
from codeactions.logs.schemas import PAGE_SIZE
from codeactions.logs.store import LogEntry, LogQuery, LogStore


def _spellings(code: Code) -> tuple[str, ...]:
    """Logs of a run invoked by ObjectID carry the ObjectID: look under both ids of the code."""
    return (str(code.id), code.mongo_object_id) if code.mongo_object_id else (str(code.id),)


def _run_spellings(run: CodeRun, code: Code | None) -> tuple[str, ...]:
    """The code ids a run's logs are kept under: its code's, or the ones the run names (a
    deleted code's)."""
    if code is not None:
        return _spellings(code)
    return tuple(k for k in (str(run.code_id or ""), run.code_mongo_id or "") if k)


async def get_log(
    session: AsyncSession, principal: Principal, store: LogStore, *, log_id: str
) -> LogEntry:
    """One log line; readable by the members of its run's code's project (others get a 404)."""
    entry = await store.get(log_id) if is_id(log_id) else None
    if entry is None:
        raise LogNotFound()
    await authorize_log(session, principal, run_id=entry.run_id, code_id=entry.code_id)
    return entry


async def list_logs(
    session: AsyncSession,
    principal: Principal,
    store: LogStore,
    *,
    run_id: str | None,
    code_id: str | None,
    page: str | None,
) -> tuple[list[LogEntry], int, int]:
    """A page of a run's or a code's logs, newest first: (entries, total, page)."""
    if not run_id and not code_id:
        raise BadRequest("valid run_id or code_id is required")
    # The original panicked on page <= 0 and read garbage as 0.
    number = parse_page_number(page, name="page", default=1, maximum=MAX_PAGE)

    run = await run_by_any_id(session, run_id) if run_id else None
    if run_id and run is None:
        raise BadRequest("coderun not found")  # the original's status and text
    run_code = await code_of_run(session, run) if run is not None else None
    named_code = await code_by_any_id(session, code_id) if code_id else None
    owner = run_code if run is not None else named_code
    await authorize_code(session, principal, owner, Role.VIEWER, not_found=CodeNotFound())

    code_ids: tuple[str, ...]
    if code_id:
        if named_code is not None:
            code_ids = _spellings(named_code)
        elif is_id(code_id):
            code_ids = (code_id,)  # a deleted code's logs are kept; admins may still read them
        else:
            return [], 0, number
    else:
        assert run is not None
        code_ids = _run_spellings(run, run_code)

    query = LogQuery(
        run_id=str(run.id) if run is not None else None,
        code_ids=code_ids,
        run_created_at=run.created_at if run is not None else None,
        page=number,
        page_size=PAGE_SIZE,
    )
    entries, total = await store.list(query)
    return entries, total, number


# Lines read per page when a whole run's lines are read.
RUN_LINES_PAGE = 1000


async def run_lines(session: AsyncSession, store: LogStore, run: CodeRun) -> list[LogEntry]:
    """Every stored line of a run (already authorized), in the order it wrote them."""
    code_ids = _run_spellings(run, await code_of_run(session, run))
    entries: list[LogEntry] = []
    page = 1
    while True:
        query = LogQuery(
            run_id=str(run.id),
            code_ids=code_ids,
            run_created_at=run.created_at,
            page=page,
            page_size=RUN_LINES_PAGE,
        )
        batch, total = await store.list(query)
        entries.extend(batch)
        if not batch or len(entries) >= total:
            break
        page += 1
    entries.sort(key=lambda entry: (entry.seq, entry.created_at))
    return entries
