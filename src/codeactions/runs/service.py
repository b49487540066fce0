"""Running a code and keeping its run record; reading run records (project members only)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.auth.permissions import authorize
from codeactions.auth.principals import Principal, Role
from codeactions.codes.cache import CodeCache
from codeactions.codes.repository import get_by_any_id, is_object_id, parse_uuid
from codeactions.codes.service import MAX_PAGE, parse_page_number
from codeactions.db.listing import AllRows
from codeactions.db.models import Code, CodeRun, utcnow
from codeactions.errors import (
    AppError,
    BadRequest,
    CodeNotFound,
    RunNotFound,
    RunTimedOut,
    Unavailable,
)
from codeactions.logs.sql import SqlLogStore, log_rows
from codeactions.logs.store import LogEntry, LogStore
from codeactions.ops.metrics import Metrics
from codeactions.runner.base import Language, Runner, RunnerStatus, RunOutcome, RunRequest
from codeactions.runs import repository
from codeactions.runs.journal import OutcomeJournal
from codeactions.runs.queue import RunQueue, Ticket
from codeactions.runs.repository import RunBook, code_of_run
from codeactions.secrets.masking import NO_MASK, Masker
from codeactions.secrets.service import SecretVault

log = logging.getLogger(__name__)

# The runner kills a run at its deadline; this much later we stop waiting for the runner itself.
RUNNER_GRACE_SECONDS = 5.0

REDACTED = "[REDACTED]"
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)
_SECRET_PARTS = ("token", "secret", "password", "signature")

# What the caller is told for failures that are not the code's own exception.
_EXPLAINED = {
    "timeout": "timeout",
    "memory": "memory limit exceeded",
    "cpu": "CPU time limit exceeded",
    "output": "output limit exceeded",
    "file_size": "file size limit exceeded",
    "killed": "the process was killed",
    "runner": "the code runner failed",
}
_MAX_MESSAGE_CHARS = 500


class RunFailed(AppError):
    """The code ran and failed: the caller gets a short message with the run id, no traceback."""

    status_code = 500

    def __init__(self, message: str, *, status_code: int = 500) -> None:
        super().__init__(message)
        self.status_code = status_code


class DisabledRunner:
    """Stands in for the sandbox runner when it is turned off: every execution answers 503."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def run(self, request: RunRequest) -> RunOutcome:
        raise Unavailable("code runner is disabled")

    async def check(self, language: Language, source: str) -> None:
        return None  # nothing to compile with; a save is not refused for it

    def status(self) -> RunnerStatus:
        return RunnerStatus(
            ok=True,
            error="",
            isolation="none (the runner is disabled)",
            network="none",
            cgroups="none",
            slots=0,
            busy=0,
            queued=0,
            node_spares=0,
            warnings=[],
            restarts=0,
            supervisor_pid=None,
            languages={},
        )


# --- inputs -------------------------------------------------------------------------------


@dataclass
class RunInputs:
    """The request as the code sees it."""

    params: dict[str, str] = field(default_factory=dict)
    body: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    method: str = "POST"


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or any(part in lowered for part in _SECRET_PARTS)


def redact_headers(headers: dict[str, list[str]]) -> dict[str, list[str]]:
    """Headers as stored on the run: credentials replaced, so run readers never see them."""
    return {
        name: [REDACTED] * max(1, len(values)) if is_secret_header(name) else list(values)
        for name, values in headers.items()
    }


# --- execution ----------------------------------------------------------------------------


@dataclass
class Executor:
    """What an execution needs, taken from the app's state for each request."""

    runner: Runner
    queue: RunQueue
    book: RunBook
    sessionmaker: async_sessionmaker[AsyncSession]
    log_store: LogStore
    metrics: Metrics
    tasks: set[asyncio.Task[Any]]
    journal: OutcomeJournal
    vault: SecretVault


@dataclass
class Execution:
    run: CodeRun
    outcome: RunOutcome
    status_code: int  # the HTTP status the caller is answered
    media_type: str  # on success
    error: AppError | None = None  # on failure: what the caller is answered
    # Hides the project's secret values in what is stored about the run (not in the answer).
    mask: Masker = NO_MASK


def code_timeout_seconds(code: Code) -> float:
    """The code's whole budget: queue wait plus execution (the original read a stored 0 as 60)."""
    return float(code.timeout or 60)


DEFAULT_STATUS = 200


def _status_number(value: Any) -> int | None:
    """The number a status set by a code stands for: an int, or a string of decimal digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 2**31 else None
    if isinstance(value, str):
        text = value.strip()
        if text.isdecimal() and len(text) <= 9:
            return int(text)
    return None


def response_status(value: Any) -> int:
    """The status the code set when it is an int or a numeric string of a final status, else 200.

    (The original's PG mode ignored ints, a bug; 1xx cannot end a response, Go answered 200.)
    """
    number = _status_number(value)
    return number if number is not None and 200 <= number <= 599 else DEFAULT_STATUS


def stored_status(value: Any) -> int | str:
    """The status kept in the run's `extra`: what the code set when it is an int or a numeric
    string, else the default (NaN, infinities, objects, booleans would poison the record)."""
    return value if _status_number(value) is not None else DEFAULT_STATUS


def media_type(content_type: Any) -> str:
    if content_type == "json":
        return "application/json; charset=UTF-8"
    if content_type == "html":
        return "text/html; charset=UTF-8"
    return "text/plain; charset=UTF-8"


def short_error(outcome: RunOutcome) -> str:
    """One line for the caller: the traceback's last line, or the limit that ended the run."""
    if outcome.reason == "exception":
        lines = [line.strip() for line in outcome.error.strip().splitlines() if line.strip()]
        text = lines[-1] if lines else "the code raised an exception"
    elif outcome.reason == "runner" and " cannot run on this runner now: " in outcome.error:
        # Which language the runner cannot run now, without its inner details (/health has them).
        text = outcome.error.split(": ", 1)[0]
    else:
        text = _EXPLAINED.get(outcome.reason or "runner", "the code failed")
    return text[:_MAX_MESSAGE_CHARS]


def _failure(outcome: RunOutcome, run_id: uuid.UUID, mask: Masker) -> AppError:
    if outcome.reason == "timeout":
        return RunTimedOut()
    # Masked: the message is the service's report (to anonymous callers on public endpoints);
    # a code hands a secret to its caller, if it must, through `result.set`.
    message = f"error on executing code: {mask(short_error(outcome))} (run {run_id})"
    if outcome.reason == "runner":
        return Unavailable(message)
    return RunFailed(message)


def _failed(reason: Any, error: str) -> RunOutcome:
    return RunOutcome(ok=False, reason=reason, error=error, status_code=None, content_type="text")


async def execute(ex: Executor, *, code: Code, invoked_id: str, inputs: RunInputs) -> Execution:
    """Run the code once: record it `started`, wait for a slot, run, record the outcome.

    Raises QueueFull or TooManyWaiting at once when the run may not wait for a slot. The work
    runs as its own task, which records the outcome and then answers: a client that disconnects
    does not cancel it.
    """
    started = time.perf_counter()
    deadline = asyncio.get_running_loop().time() + code_timeout_seconds(code)
    try:
        ticket = ex.queue.admit(project_uuid=code.project_uuid, code_id=str(code.id))
    except AppError:
        _count(ex, code, "rejected", None, started)
        raise
    answer: asyncio.Future[Execution] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        _execute(
            ex,
            ticket,
            answer,
            code=code,
            invoked_id=invoked_id,
            inputs=inputs,
            deadline=deadline,
            started=started,
        )
    )
    ex.tasks.add(task)
    task.add_done_callback(ex.tasks.discard)
    # The task gives the slot back as soon as the run ends; this covers whatever else happens
    # to it (cancelled, even before it started). A second release does nothing.
    task.add_done_callback(lambda _: ticket.release())
    return await asyncio.shield(answer)


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
    answer: asyncio.Future[Execution],
    *,
    code: Code,
    invoked_id: str,
    inputs: RunInputs,
    deadline: float,
    started: float,
) -> None:
    try:
        execution = await _run_once(
            ex, ticket, code=code, invoked_id=invoked_id, inputs=inputs, deadline=deadline
        )
    except BaseException as exc:
        if not answer.done():
            if isinstance(exc, asyncio.CancelledError):
                answer.cancel()
            else:
                answer.set_exception(exc)
        _count(ex, code, "failed", "runner", started)
        raise
    # Recorded before the caller is answered, so whoever reads the run or its logs right after
    # sees them; this task is shielded, so a client that goes away does not stop it.
    try:
        await _record_outcome(ex, execution, invoked_id=invoked_id)
    except AppError as exc:
        answer.set_exception(exc)
        _count(ex, code, "failed", "runner", started)
        return
    answer.set_result(execution)
    _count(ex, code, _label(execution.outcome), execution.outcome.reason, started)


async def _run_once(
    ex: Executor,
    ticket: Ticket,
    *,
    code: Code,
    invoked_id: str,
    inputs: RunInputs,
    deadline: float,
) -> Execution:
    """Record the run `started`, run it, and settle what the caller is answered and stored."""
    run = repository.new_started_run(
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
        await _record_start(ex, run)
        try:
            outcome = await _run_in_slot(
                ex, ticket, run=run, code=code, inputs=inputs, secrets=secrets, deadline=deadline
            )
        except AppError as exc:  # e.g. the runner is disabled: the caller gets its answer
            passthrough = exc
            outcome = _failed("runner", exc.message)
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
        error = passthrough or _failure(outcome, run.id, mask)
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
    # The run as its caller sees it; `_record_outcome` stores it with the secrets masked.
    run.status = "completed" if outcome.ok else "failed"
    run.result, run.extra, run.updated_at = result, extra, utcnow()
    return Execution(run, outcome, status, media_type(outcome.content_type), error, mask)


NOT_RUN = "the run was not executed: the database failed while recording its start"


async def _record_start(ex: Executor, run: CodeRun) -> None:
    try:
        await ex.book.start(run)
    except Exception as exc:
        log.warning("recording run %s as started failed: %s", run.id, exc)
        # The insert may have committed before the connection broke: a journaled end makes sure
        # such a record does not stay `started` (written over nothing when it did not commit).
        run.status, run.result, run.updated_at = "failed", NOT_RUN, utcnow()
        run.extra = {
            "status_code": 503,
            "content_type": "text",
            "reason": "runner",
            "error": NOT_RUN,
        }
        with contextlib.suppress(Exception):
            await ex.journal.keep(run, [])
        raise Unavailable("could not record the run") from exc


async def _run_in_slot(
    ex: Executor,
    ticket: Ticket,
    *,
    run: CodeRun,
    code: Code,
    inputs: RunInputs,
    secrets: dict[str, str],
    deadline: float,
) -> RunOutcome:
    try:
        async with asyncio.timeout_at(deadline):
            await ticket.wait_for_slot()
    except TimeoutError:
        return _failed("timeout", "timed out waiting for a free runner slot")
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        return _failed("timeout", "timed out waiting for a free runner slot")
    request = RunRequest(
        run_id=str(run.id),
        code_id=str(code.id),
        language=code.language,  # type: ignore[arg-type]
        source=code.source,
        timeout=remaining,
        params=inputs.params,
        body=inputs.body,
        headers=inputs.headers,
        method=inputs.method,
        secrets=secrets,
    )
    try:
        async with asyncio.timeout_at(deadline + RUNNER_GRACE_SECONDS):
            return await ex.runner.run(request)
    except TimeoutError:
        log.error("the runner did not end run %s at its deadline", run.id)
        return _failed("timeout", "the run did not end by its deadline")
    except AppError:
        raise
    except Exception as exc:
        log.exception("the runner failed on run %s", run.id)
        return _failed("runner", f"runner error: {type(exc).__name__}")


async def _record_outcome(ex: Executor, execution: Execution, *, invoked_id: str) -> None:
    """Store the run's outcome and its logs (one transaction when logs live in the database).

    What the database cannot take now goes to the journal, which writes it when the database is
    back; raises Unavailable only when neither could keep it. Secret values are masked in all
    of it (result, error, log lines), whichever store takes it.
    """
    run = _as_stored(execution.run, execution.mask)
    entries = _log_entries(
        run, invoked_id=invoked_id, outcome=execution.outcome, mask=execution.mask
    )
    in_database = isinstance(ex.log_store, SqlLogStore)
    try:
        await ex.book.finish(run, log_rows(entries) if in_database else [])
    except Exception as exc:
        log.warning(
            "the database did not take the outcome of run %s, journaling it: %s", run.id, exc
        )
        try:
            await ex.journal.keep(run, entries if in_database else [])
        except Exception as journal_exc:
            log.exception("journaling the outcome of run %s failed", run.id)
            raise Unavailable("could not record the run's outcome") from journal_exc
    if entries and not in_database:
        try:
            await ex.log_store.write(entries)
        except Exception as exc:
            log.exception("keeping the logs of run %s failed", run.id)
            raise Unavailable("could not keep the run's logs") from exc


def _as_stored(run: CodeRun, mask: Masker) -> CodeRun:
    """The outcome of `run` as it is stored: with the secrets masked (a copy, when any)."""
    if not mask:
        return run
    return CodeRun(
        id=run.id,
        status=run.status,
        result=mask(run.result or ""),
        extra=mask.json(run.extra),
        updated_at=run.updated_at,
    )


def _log_entries(
    run: CodeRun, *, invoked_id: str, outcome: RunOutcome, mask: Masker = NO_MASK
) -> list[LogEntry]:
    entries = [
        LogEntry(
            run_id=str(run.id),
            code_id=invoked_id,
            type=line.type,
            content=line.content,
            seq=seq,
            created_at=datetime.fromtimestamp(line.at, UTC) if line.at else utcnow(),
        )
        for seq, line in enumerate(outcome.logs)
    ]
    if not outcome.ok and outcome.error and not any(e.content == outcome.error for e in entries):
        # The traceback (or why the run was stopped) belongs with the run's logs.
        entries.append(
            LogEntry(
                run_id=str(run.id),
                code_id=invoked_id,
                type="error",
                content=outcome.error,
                seq=len(entries),
            )
        )
    if mask:
        for entry in entries:
            entry.content = mask(entry.content)
    return entries


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
            code = await get_by_any_id(session, code_id)
        if code is not None:
            cache.put(code_id, code)
    return code


async def find_code_to_run(
    sessionmaker: async_sessionmaker[AsyncSession], principal: Principal, code_id: str
) -> Code:
    """The code `POST /run` may execute: Contributors of its project (others get a 404)."""
    async with sessionmaker() as session:
        code = await get_by_any_id(session, code_id)
        if code is None:
            raise CodeNotFound()
        await authorize(
            session, principal, code.project_uuid, Role.CONTRIBUTOR, not_member=CodeNotFound()
        )
        return code


# --- reading runs -------------------------------------------------------------------------


async def get_run(session: AsyncSession, principal: Principal, *, run_id: str) -> CodeRun:
    """A run, for Viewers of its code's project; a deleted code's runs for admins only."""
    run = await get_run_by_id(session, run_id)
    if principal.sees_all_projects:
        return run
    code = await code_of_run(session, run)
    if code is None:
        raise RunNotFound()
    await authorize(session, principal, code.project_uuid, Role.VIEWER, not_member=RunNotFound())
    return run


async def get_run_by_id(session: AsyncSession, run_id: str) -> CodeRun:
    run = await repository.get_run_by_any_id(session, run_id)
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


@dataclass
class RunPage:
    runs: list[CodeRun]
    total: int
    page: int
    page_size: int

    @property
    def has_next(self) -> bool:
        return self.page * self.page_size < self.total


async def list_runs(
    session: AsyncSession,
    principal: Principal,
    *,
    code_id: str | None,
    after: str | None,
    before: str | None,
    page: str | None,
    page_size: str | None,
) -> RunPage:
    """A page of a code's runs, newest first, for Viewers of its project (as `all_runs`)."""
    if not code_id:
        raise BadRequest("valid code_id is required")
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
    )
    return RunPage(runs, total, number, size)


async def all_runs(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    principal: Principal,
    *,
    code_id: str | None,
    after: str | None,
    before: str | None,
) -> AllRows[CodeRun]:
    """Every run of a code, newest first, as the original listed them (no page): checked and
    authorized now, the rows after the first chunk read as the caller iterates."""
    if not code_id:
        raise BadRequest("valid code_id is required")
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
    )


async def _keys_of_visible_code(
    session: AsyncSession, principal: Principal, code_id: str
) -> tuple[uuid.UUID | None, str | None]:
    """The UUID and ObjectID the code's runs are stored under, for Viewers of its project; a
    deleted code's (the id as given) for admins only."""
    code = await get_by_any_id(session, code_id)
    if code is not None:
        if not principal.sees_all_projects:
            await authorize(
                session, principal, code.project_uuid, Role.VIEWER, not_member=CodeNotFound()
            )
        return code.id, code.mongo_object_id
    if principal.sees_all_projects:
        return parse_uuid(code_id), code_id if is_object_id(code_id) else None
    raise CodeNotFound()
