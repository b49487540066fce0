"""Running a code and keeping its run record; reading run records (project members only)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.access.repository import code_by_any_id, run_by_any_id
from codeactions.access.service import authorize_code, authorize_run, visible_code
from codeactions.auth.principals import Principal, Role
from codeactions.codes.cache import CodeCache
from codeactions.codes.service import MAX_PAGE, parse_page_number
from codeactions.db.listing import AllRows, Page
from codeactions.db.models import Code, CodeRun, utcnow
from codeactions.errors import AppError, BadRequest, CodeNotFound, RunNotFound
from codeactions.events.bus import EventBus
from codeactions.ids import is_object_id, parse_uuid
from codeactions.logs.store import LogStore
from codeactions.ops.metrics import Metrics
from codeactions.parts import Part
from codeactions.runner.base import Runner, RunOutcome, RunRequest
from codeactions.runs import repository
from codeactions.runs.journal import OutcomeJournal
from codeactions.runs.live import RunBroadcast
from codeactions.runs.outcome import (
    as_stored,
    caller_error,
    failed_outcome,
    log_entries,
    media_type,
    redact_headers,
    response_status,
    short_error,
    stored_status,
)
from codeactions.runs.queue import RunQueue, Ticket
from codeactions.runs.recording import record_outcome, record_start
from codeactions.runs.repository import RunBook
from codeactions.runs.schemas import BUCKETS, RUN_STATUSES, RunBucket
from codeactions.secrets.masking import NO_MASK, Masker
from codeactions.secrets.service import SecretVault

log = logging.getLogger(__name__)

# The runner kills a run at its deadline; this much later we stop waiting for the runner itself.
RUNNER_GRACE_SECONDS = 5.0


# --- inputs -------------------------------------------------------------------------------


@dataclass
class RunInputs:
    """The request as the code sees it."""

    params: dict[str, str] = field(default_factory=dict)
    body: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    method: str = "POST"


# --- execution ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Executor:
    """What an execution needs: built once by the lifespan, handed to the execution routes."""

    runner: Runner
    queue: RunQueue
    book: RunBook
    sessionmaker: async_sessionmaker[AsyncSession]
    log_store: LogStore
    metrics: Metrics
    tasks: set[asyncio.Task[Any]]
    journal: OutcomeJournal
    vault: SecretVault
    bus: EventBus  # where a run's lines and end are told to its followers


EXECUTOR: Part[Executor] = Part("executor")


@dataclass
class Execution:
    run: CodeRun
    outcome: RunOutcome
    status_code: int  # the HTTP status the caller is answered
    media_type: str  # on success
    error: AppError | None = None  # on failure: what the caller is answered
    # Hides the project's secret values in what is stored about the run (not in the answer).
    mask: Masker = NO_MASK
    broadcast: RunBroadcast | None = None  # None when the run was never recorded


def code_timeout_seconds(code: Code) -> float:
    """The code's whole budget: queue wait plus execution (the original read a stored 0 as 60)."""
    return float(code.timeout or 60)


@dataclass(frozen=True)
class Submission:
    """A run admitted and recorded `started`; `execution` settles once it is recorded finished."""

    run_id: uuid.UUID
    # Awaiting it (or not: an async run's caller has gone) never cancels the run itself.
    execution: asyncio.Future[Execution]


async def submit(
    ex: Executor,
    *,
    code: Code,
    invoked_id: str,
    inputs: RunInputs,
    run_id: uuid.UUID | None = None,
    draft: str | None = None,
) -> Submission:
    """Admit the run and start it as its own task; return once it is recorded `started`, so a
    `GET /coderun/{id}` right after finds it.

    `run_id`: the id to record the run under (a caller following it subscribes first).
    `draft`: a source to run instead of the code's own, recorded as a run of the code.

    Raises QueueFull or TooManyWaiting at once when the run may not wait for a slot, and
    Unavailable when it could not be recorded (then it did not run). The task records the
    outcome and then settles `execution`: a caller that goes away does not cancel it.
    """
    started = time.perf_counter()
    deadline = asyncio.get_running_loop().time() + code_timeout_seconds(code)
    run_id = run_id or uuid.uuid4()
    try:
        ticket = ex.queue.admit(project_uuid=code.project_uuid, code_id=str(code.id))
    except AppError:
        _count(ex, code, "rejected", None, started)
        raise
    loop = asyncio.get_running_loop()
    recorded: asyncio.Future[None] = loop.create_future()
    answer: asyncio.Future[Execution] = loop.create_future()
    task = asyncio.create_task(
        _execute(
            ex,
            ticket,
            recorded,
            answer,
            code=code,
            invoked_id=invoked_id,
            inputs=inputs,
            run_id=run_id,
            draft=draft,
            deadline=deadline,
            started=started,
        )
    )
    ex.tasks.add(task)
    task.add_done_callback(ex.tasks.discard)
    # The task gives the slot back as soon as the run ends; this covers whatever else happens
    # to it (cancelled, even before it started). A second release does nothing.
    task.add_done_callback(lambda _: ticket.release())
    execution = asyncio.shield(answer)
    execution.add_done_callback(_retrieved)
    await asyncio.shield(recorded)
    return Submission(run_id, execution)


def _retrieved(future: asyncio.Future[Execution]) -> None:
    # An async run's outcome may be awaited by no one: its failure is not an "exception never
    # retrieved" (the run task and the run record tell it).
    if not future.cancelled():
        future.exception()


async def execute(
    ex: Executor,
    *,
    code: Code,
    invoked_id: str,
    inputs: RunInputs,
    run_id: uuid.UUID | None = None,
    draft: str | None = None,
) -> Execution:
    """Run the code once and wait for its outcome (`submit`, then its execution)."""
    submission = await submit(
        ex, code=code, invoked_id=invoked_id, inputs=inputs, run_id=run_id, draft=draft
    )
    return await submission.execution


def _label(outcome: RunOutcome) -> str:
    if outcome.ok:
        return "completed"
    return "timeout" if outcome.reason == "timeout" else "failed"


def _count(ex: Executor, code: Code, outcome: str, reason: str | None, started: float) -> None:
    try:
        ex.metrics.run_finished(
            project_uuid=code.project_uuid,
            code_id=str(code.id),
            language=code.language,
            outcome=outcome,
            reason=reason,
            seconds=time.perf_counter() - started,
        )
    except Exception:  # metrics never fail a run
        log.exception("recording run metrics failed")


async def _execute(
    ex: Executor,
    ticket: Ticket,
    recorded: asyncio.Future[None],
    answer: asyncio.Future[Execution],
    *,
    code: Code,
    invoked_id: str,
    inputs: RunInputs,
    run_id: uuid.UUID,
    draft: str | None,
    deadline: float,
    started: float,
) -> None:
    try:
        execution = await _run_once(
            ex,
            ticket,
            recorded,
            code=code,
            invoked_id=invoked_id,
            inputs=inputs,
            run_id=run_id,
            draft=draft,
            deadline=deadline,
        )
    except BaseException as exc:
        # Before the run was recorded, its submitter hears the failure; after, its awaiters.
        told = answer if recorded.done() else recorded
        if not recorded.done():
            answer.cancel()
        if not told.done():
            if isinstance(exc, asyncio.CancelledError):
                told.cancel()
            else:
                told.set_exception(exc)
        _count(ex, code, "failed", "runner", started)
        raise
    # Recorded before the caller is answered, so whoever reads the run or its logs right after
    # sees them; this task is shielded, so a client that goes away does not stop it.
    # Secret values are masked in all of it (result, error, log lines), whichever store takes it.
    run = as_stored(execution.run, execution.mask)
    lines = log_entries(run, invoked_id=invoked_id, outcome=execution.outcome, mask=execution.mask)
    try:
        await record_outcome(ex.book, ex.journal, ex.log_store, run, lines)
    except AppError as exc:
        answer.set_exception(exc)
        _count(ex, code, "failed", "runner", started)
        return
    finally:
        if execution.broadcast is not None:  # its followers hear the end whatever was kept
            execution.broadcast.finished(execution.run, lines)
    answer.set_result(execution)
    _count(ex, code, _label(execution.outcome), execution.outcome.reason, started)


async def _run_once(
    ex: Executor,
    ticket: Ticket,
    recorded: asyncio.Future[None],
    *,
    code: Code,
    invoked_id: str,
    inputs: RunInputs,
    run_id: uuid.UUID,
    draft: str | None,
    deadline: float,
) -> Execution:
    """Record the run `started` (then settle `recorded`), run it, and settle what the caller is
    answered and stored."""
    run = repository.new_started_run(
        run_id=run_id,
        code_id=code.id,
        code_mongo_id=invoked_id if is_object_id(invoked_id) else None,
        params=inputs.params,
        body=inputs.body,
        headers=redact_headers(inputs.headers),
    )
    passthrough: AppError | None = None
    try:
        # Read as the run starts, before anything is recorded: a database that cannot answer is
        # a 503 that leaves nothing behind, and a run under way never waits on it again.
        secrets = await ex.vault.for_run(code.project_uuid)
        mask = Masker(secrets.values()) if secrets else NO_MASK
        await record_start(ex.book, ex.journal, run)
        broadcast = RunBroadcast(ex.bus, run=run, project_uuid=code.project_uuid, mask=mask)
        broadcast.started(run)
        recorded.set_result(None)
        try:
            outcome = await _run_in_slot(
                ex,
                ticket,
                run=run,
                code=code,
                source=code.source if draft is None else draft,
                inputs=inputs,
                secrets=secrets,
                broadcast=broadcast,
                deadline=deadline,
            )
        except AppError as exc:  # e.g. the runner is disabled: the caller gets its answer
            passthrough = exc
            outcome = failed_outcome("runner", exc.message)
    finally:
        ticket.release()  # free the slot before the bookkeeping

    if outcome.ok:
        status = response_status(outcome.status_code)
        extra: dict[str, Any] = {
            "status_code": stored_status(outcome.status_code),
            "content_type": outcome.content_type,
        }
        result, error = outcome.result, None
    else:
        error = passthrough or caller_error(outcome, run.id, mask)
        status = error.status_code
        extra = {
            "status_code": status,
            "content_type": "text",
            "reason": outcome.reason,
            "error": short_error(outcome) if passthrough is None else passthrough.message,
        }
        result = outcome.error or str(extra["error"])
        if outcome.reason == "runner":
            log.warning("run %s failed in the runner: %s", run.id, mask(outcome.error)[:500])
    # The run as its caller sees it; it is stored with the secrets masked (`as_stored`).
    run.status = "completed" if outcome.ok else "failed"
    run.result, run.extra, run.updated_at = result, extra, utcnow()
    return Execution(run, outcome, status, media_type(outcome.content_type), error, mask, broadcast)


async def _run_in_slot(
    ex: Executor,
    ticket: Ticket,
    *,
    run: CodeRun,
    code: Code,
    source: str,
    inputs: RunInputs,
    secrets: dict[str, str],
    broadcast: RunBroadcast,
    deadline: float,
) -> RunOutcome:
    try:
        async with asyncio.timeout_at(deadline):
            await ticket.wait_for_slot()
    except TimeoutError:
        return failed_outcome("timeout", "timed out waiting for a free runner slot")
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        return failed_outcome("timeout", "timed out waiting for a free runner slot")
    request = RunRequest(
        run_id=str(run.id),
        code_id=str(code.id),
        language=code.language,  # type: ignore[arg-type]
        source=source,
        timeout=remaining,
        params=inputs.params,
        body=inputs.body,
        headers=inputs.headers,
        method=inputs.method,
        secrets=secrets,
        on_logs=broadcast.lines,
    )
    try:
        async with asyncio.timeout_at(deadline + RUNNER_GRACE_SECONDS):
            return await ex.runner.run(request)
    except TimeoutError:
        log.error("the runner did not end run %s at its deadline", run.id)
        return failed_outcome("timeout", "the run did not end by its deadline")
    except AppError:
        raise
    except Exception as exc:
        log.exception("the runner failed on run %s", run.id)
        return failed_outcome("runner", f"runner error: {type(exc).__name__}")


def raise_for_failure(execution: Execution) -> None:
    if execution.error is not None:
        raise execution.error


async def find_code(
    sessionmaker: async_sessionmaker[AsyncSession], cache: CodeCache, code_id: str
) -> Code | None:
    """The code to run, from the short-lived cache when this replica looked it up recently."""
    code = cache.get(code_id)
    if code is None:
        async with sessionmaker() as session:
            code = await code_by_any_id(session, code_id)
        if code is not None:
            cache.put(code_id, code)
    return code


async def find_code_to_run(
    sessionmaker: async_sessionmaker[AsyncSession], principal: Principal, code_id: str
) -> Code:
    """The code `POST /run` may execute: Contributors of its project (others get a 404)."""
    async with sessionmaker() as session:
        return await visible_code(session, principal, code_id, Role.CONTRIBUTOR)


def parse_async(value: str | None) -> bool:
    """The `async` parameter of `POST /run`: `true`/`1` answer at once, `false`/`0`/empty wait."""
    if value in (None, "", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise BadRequest("invalid async parameter: true or false")


# --- reading runs -------------------------------------------------------------------------


async def get_run(session: AsyncSession, principal: Principal, *, run_id: str) -> CodeRun:
    """A run, for Viewers of its code's project; a deleted code's runs for admins only."""
    run = await get_run_by_id(session, run_id)
    await authorize_run(session, principal, run, Role.VIEWER)
    return run


async def get_run_by_id(session: AsyncSession, run_id: str) -> CodeRun:
    run = await run_by_any_id(session, run_id)
    if run is None:
        raise RunNotFound()
    return run


def parse_time(value: str | None, name: str) -> datetime | None:
    """A date or time as carbon parsed them: `2024-12-10`, `2024-12-10T10:00:00`, `... 10:00:00`,
    RFC 3339 with `Z` or an offset. Without a zone it is UTC."""
    if not value:  # an empty value sets no limit; a blank one is no time
        return None
    text = value
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"invalid {name} parameter") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # an offset past year 1 or 9999 in UTC: the farthest a filter reaches
        return (datetime.min if parsed.year == 1 else datetime.max).replace(tzinfo=UTC)


MAX_RUNS_PAGE = 1000


def parse_status(value: str | None) -> str | None:
    """A `status` filter: started, completed or failed; None (any) when absent or empty."""
    if not value:
        return None
    if value not in RUN_STATUSES:
        raise BadRequest(f"invalid status parameter: one of {', '.join(RUN_STATUSES)}")
    return value


async def list_runs(
    session: AsyncSession,
    principal: Principal,
    *,
    code_id: str | None,
    after: str | None,
    before: str | None,
    page: str | None,
    page_size: str | None,
    status: str | None = None,
) -> Page[CodeRun]:
    """A page of a code's runs, newest first, for Viewers of its project (as `all_runs`);
    `status`: only runs in it (started, completed or failed)."""
    if not code_id:
        raise BadRequest("valid code_id is required")
    status = parse_status(status)
    since = parse_time(after, "after")
    until = parse_time(before, "before")
    number = parse_page_number(page, name="page", default=1, maximum=MAX_PAGE)
    size = parse_page_number(page_size, name="page_size", default=100, maximum=MAX_RUNS_PAGE)
    code_uuid, mongo_id = await _keys_of_visible_code(session, principal, code_id)
    runs, total = await repository.list_runs(
        session,
        code_uuid=code_uuid,
        code_mongo_id=mongo_id,
        after=since,
        before=until,
        offset=(number - 1) * size,
        limit=size,
        status=status,
    )
    return Page(runs, total, number, size)


async def all_runs(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    principal: Principal,
    *,
    code_id: str | None,
    after: str | None,
    before: str | None,
    status: str | None = None,
) -> AllRows[CodeRun]:
    """Every run of a code, newest first, as the original listed them (no page): checked and
    authorized now, the rows after the first chunk read as the caller iterates."""
    if not code_id:
        raise BadRequest("valid code_id is required")
    status = parse_status(status)
    since = parse_time(after, "after")
    until = parse_time(before, "before")
    code_uuid, mongo_id = await _keys_of_visible_code(session, principal, code_id)
    return await repository.all_runs(
        session,
        sessionmaker,
        code_uuid=code_uuid,
        code_mongo_id=mongo_id,
        after=since,
        before=until,
        status=status,
    )


DEFAULT_STATS_RANGE = timedelta(hours=24)
MAX_STATS_RANGE = timedelta(days=31)


@dataclass
class RunStats:
    """A code's runs per bucket over a range: every bucket of it, oldest first."""

    after: datetime
    before: datetime
    bucket_seconds: int
    buckets: list[RunBucket]


def _stats_range(after: str | None, before: str | None) -> tuple[datetime, datetime]:
    """The range asked for: the last 24 hours by default, or the 24 hours before `before`."""
    until = parse_time(before, "before") or utcnow()
    since = parse_time(after, "after")
    if since is None:
        try:
            since = until - DEFAULT_STATS_RANGE
        except OverflowError:
            raise BadRequest("invalid before parameter: too early for a range") from None
    if since >= until:
        raise BadRequest("after must be earlier than before")
    if until - since > MAX_STATS_RANGE:
        raise BadRequest(f"the range from after to before is at most {MAX_STATS_RANGE.days} days")
    return since, until


async def run_stats(
    session: AsyncSession,
    principal: Principal,
    *,
    code_id: str | None,
    after: str | None,
    before: str | None,
    bucket: str | None,
) -> RunStats:
    """A code's runs from `after` to `before` per hour or day, for Viewers of its project: every
    bucket that overlaps the range, those without runs as zeros."""
    if not code_id:
        raise BadRequest("valid code_id is required")
    seconds = BUCKETS.get(bucket or "hour")
    if seconds is None:
        raise BadRequest(f"invalid bucket parameter: one of {', '.join(BUCKETS)}")
    since, until = _stats_range(after, before)
    code_uuid, mongo_id = await _keys_of_visible_code(session, principal, code_id)
    found = await repository.run_buckets(
        session,
        code_uuid=code_uuid,
        code_mongo_id=mongo_id,
        after=since,
        before=until,
        bucket_seconds=seconds,
    )
    by_index = {b.index: b for b in found}
    first = math.floor(since.timestamp() / seconds)
    last = math.ceil(until.timestamp() / seconds)  # the bucket `before` falls in ends here
    buckets = [by_index.get(index, RunBucket(index)) for index in range(first, last)]
    return RunStats(since, until, seconds, buckets)


async def _keys_of_visible_code(
    session: AsyncSession, principal: Principal, code_id: str
) -> tuple[uuid.UUID | None, str | None]:
    """The UUID and ObjectID the code's runs are stored under, for Viewers of its project; a
    deleted code's (the id as given) for admins only."""
    code = await code_by_any_id(session, code_id)
    await authorize_code(session, principal, code, Role.VIEWER, not_found=CodeNotFound())
    if code is not None:
        return code.id, code.mongo_object_id
    return parse_uuid(code_id), code_id if is_object_id(code_id) else None
