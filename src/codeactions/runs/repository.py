"""SQL for code runs (a run looked up by its id: `codeactions.access.repository.run_by_any_id`,
where every check of who may see it finds it)."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Engine,
    Executable,
    Integer,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from codeactions.db.listing import AllRows, all_rows, page_of
from codeactions.db.models import CodeLog, CodeRun, utcnow
from codeactions.db.session import inline_sqlite_engine, is_busy
from codeactions.parts import Part
from codeactions.runs.schemas import RunBucket


def new_started_run(
    *,
    run_id: uuid.UUID | None = None,
    code_id: uuid.UUID,
    code_mongo_id: str | None,
    params: dict[str, str],
    body: str,
    headers: dict[str, list[str]],
) -> CodeRun:
    now = utcnow()
    return CodeRun(
        id=run_id or uuid.uuid4(),
        code_id=code_id,
        code_mongo_id=code_mongo_id,
        status="started",
        result="",
        extra=None,
        params=params,
        body=body,
        headers=headers,
        created_at=now,
        updated_at=now,
    )


class RunBook:
    """Writes the execution path's run records: `started`, then the outcome with its logs.

    Core statements on a plain connection (no unit of work to track). On SQLite a transaction is
    a few tens of microseconds of work, less than handing it to a thread: it runs inline on a
    plain connection that gives up after INLINE_BUSY_MS when another writer holds the database,
    and only then goes to the writer thread (which waits as long as needed).
    """

    def __init__(self, engine: AsyncEngine, sqlite_path: str | None = None) -> None:
        self._engine = engine
        self._inline: Engine | None = None
        self._sync: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        if sqlite_path is not None:
            self._inline = inline_sqlite_engine(sqlite_path)
            self._sync = inline_sqlite_engine(sqlite_path, busy_ms=30_000)
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="runbook")

    async def start(self, run: CodeRun) -> None:
        row = {name: getattr(run, name) for name in _RUN_COLUMNS}
        await self._transaction([(insert(CodeRun), [row])])

    async def finish(
        self, run: CodeRun, log_rows: list[dict[str, Any]], *, replay: bool = False
    ) -> None:
        """Store the run's outcome and its log rows in one transaction.

        `replay`: the outcome may already be stored (a commit whose answer was lost), so its log
        rows are written over instead of added twice.
        """
        statements: list[tuple[Executable, Any]] = []
        if replay and log_rows:
            statements.append((delete(CodeLog).where(CodeLog.run_id == run.id), None))
        statements += [
            (
                update(CodeRun)
                .where(CodeRun.id == run.id)
                # Unconditional: a late real outcome is worth more than the reaper's "run lost".
                .values(
                    status=run.status,
                    result=run.result or "",
                    extra=run.extra or {},
                    updated_at=run.updated_at,
                ),
                None,
            )
        ]
        if log_rows:
            statements.append((insert(CodeLog), log_rows))
        await self._transaction(statements)

    async def _transaction(self, statements: list[tuple[Executable, Any]]) -> None:
        if self._inline is None or self._sync is None:
            async with self._engine.begin() as conn:
                for statement, params in statements:
                    await conn.execute(statement, params)
            return
        try:
            _run_transaction(self._inline, statements)
            return
        except OperationalError as exc:
            if not is_busy(exc):
                raise
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, _run_transaction, self._sync, statements)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        for engine in (self._inline, self._sync):
            if engine is not None:
                engine.dispose()


def _run_transaction(engine: Engine, statements: list[tuple[Executable, Any]]) -> None:
    with engine.begin() as conn:
        for statement, params in statements:
            conn.execute(statement, params)


_RUN_COLUMNS = (
    "id",
    "code_id",
    "code_mongo_id",
    "status",
    "result",
    "extra",
    "params",
    "body",
    "headers",
    "created_at",
    "updated_at",
)


def _of_code(code_uuid: uuid.UUID | None, code_mongo_id: str | None) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if code_uuid is not None:
        conditions.append(CodeRun.code_id == code_uuid)
    if code_mongo_id:
        conditions.append(CodeRun.code_mongo_id == code_mongo_id)
    return or_(*conditions)


def _run_conditions(
    code_uuid: uuid.UUID | None,
    code_mongo_id: str | None,
    after: datetime | None,
    before: datetime | None,
    status: str | None = None,
) -> list[ColumnElement[bool]]:
    """A code's runs created between `after` and `before` (inclusive), in `status` if given.

    A run belongs to the code when its `code_id` is the code's UUID or its `code_mongo_id` is the
    code's ObjectID (legacy rows of ObjectID invocations may lack the UUID).
    """
    conditions = [_of_code(code_uuid, code_mongo_id)]
    if after is not None:
        conditions.append(CodeRun.created_at >= after)
    if before is not None:
        conditions.append(CodeRun.created_at <= before)
    if status is not None:
        conditions.append(CodeRun.status == status)
    return conditions


async def list_runs(
    session: AsyncSession,
    *,
    code_uuid: uuid.UUID | None,
    code_mongo_id: str | None,
    after: datetime | None,
    before: datetime | None,
    offset: int,
    limit: int,
    status: str | None = None,
) -> tuple[list[CodeRun], int]:
    """One page of a code's runs, newest first, and how many match in all."""
    if code_uuid is None and not code_mongo_id:
        return [], 0
    conditions = _run_conditions(code_uuid, code_mongo_id, after, before, status)
    return await page_of(session, CodeRun, conditions, offset=offset, limit=limit)


async def all_runs(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    code_uuid: uuid.UUID | None,
    code_mongo_id: str | None,
    after: datetime | None,
    before: datetime | None,
    status: str | None = None,
) -> AllRows[CodeRun]:
    """Every run of a code, newest first (as `list_runs`), read in chunks."""
    if code_uuid is None and not code_mongo_id:
        return AllRows(0, [], None)
    conditions = _run_conditions(code_uuid, code_mongo_id, after, before, status)
    return await all_rows(session, sessionmaker, CodeRun, conditions)


_FINISHED = ("completed", "failed")


def _bucket(session: AsyncSession, seconds: int) -> ColumnElement[int]:
    """The bucket a run was created in: whole `seconds` since the Unix epoch."""
    if session.get_bind().dialect.name == "postgresql":
        epoch = func.extract("epoch", CodeRun.created_at)
        return cast(func.floor(epoch / seconds), BigInteger)
    # Integer division: the floor for the times after 1970 runs are created at.
    return cast(func.strftime("%s", CodeRun.created_at), Integer) // seconds


def _duration_ms(session: AsyncSession) -> ColumnElement[Any]:
    """A run's duration, `updated_at - created_at`, in milliseconds."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", CodeRun.updated_at - CodeRun.created_at) * 1000
    # Whole seconds from strftime, microseconds from the stored text (`YYYY-MM-DD HH:MM:SS.ffffff`,
    # none when written without a fraction): julianday's doubles would blur them by ~0.04 ms.
    seconds = cast(func.strftime("%s", CodeRun.updated_at), Integer) - cast(
        func.strftime("%s", CodeRun.created_at), Integer
    )
    micros = cast(func.substr(CodeRun.updated_at, 21, 6), Integer) - cast(
        func.substr(CodeRun.created_at, 21, 6), Integer
    )
    return seconds * 1000.0 + micros / 1000.0


async def run_buckets(
    session: AsyncSession,
    *,
    code_uuid: uuid.UUID | None,
    code_mongo_id: str | None,
    after: datetime,
    before: datetime,
    bucket_seconds: int,
) -> list[RunBucket]:
    """A code's runs created at or after `after` and before `before`, counted per bucket (UTC,
    aligned on the epoch), with the percentiles of the finished runs' durations; buckets without
    runs are left out.

    Counts are grouped in SQL. PostgreSQL computes the percentiles too (`percentile_cont`);
    SQLite has no such aggregate, so only the finished runs' (bucket, duration) pairs are read
    and the same interpolation is done here.
    """
    if code_uuid is None and not code_mongo_id:
        return []
    conditions = [
        _of_code(code_uuid, code_mongo_id),
        CodeRun.created_at >= after,
        CodeRun.created_at < before,
    ]
    bucket = _bucket(session, bucket_seconds)
    finished = CodeRun.status.in_(_FINISHED)
    counts = [func.count().filter(CodeRun.status == status) for status in ("started", *_FINISHED)]
    postgresql = session.get_bind().dialect.name == "postgresql"
    percentiles = []
    if postgresql:
        duration = _duration_ms(session)
        percentiles = [
            func.percentile_cont(fraction).within_group(duration).filter(finished)
            for fraction in (0.5, 0.95)
        ]
    rows = await session.execute(
        select(bucket.label("bucket"), *counts, *percentiles).where(*conditions).group_by("bucket")
    )
    buckets = {}
    for index, started, completed, failed, *p in rows:
        buckets[int(index)] = RunBucket(
            int(index),
            started,
            completed,
            failed,
            *(None if value is None else float(value) for value in p),
        )
    if not postgresql:
        durations: dict[int, list[float]] = {}
        pairs = await session.execute(
            select(bucket, _duration_ms(session)).where(*conditions, finished)
        )
        for index, ms in pairs:
            durations.setdefault(int(index), []).append(float(ms))
        for index, values in durations.items():
            values.sort()
            buckets[index] = replace(
                buckets[index],
                p50_ms=percentile_cont(values, 0.5),
                p95_ms=percentile_cont(values, 0.95),
            )
    return sorted(buckets.values(), key=lambda b: b.index)


def percentile_cont(ordered: list[float], fraction: float) -> float:
    """PostgreSQL's `percentile_cont` of sorted values: linear between the two nearest ranks."""
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def fail_stale_runs(
    session: AsyncSession, *, started_before: datetime, result: str, extra: dict[str, Any]
) -> int:
    """Mark runs still `started` that were created before `started_before` as failed."""
    outcome = await session.execute(
        update(CodeRun)
        .where(CodeRun.status == "started", CodeRun.created_at < started_before)
        .values(status="failed", result=result, extra=extra, updated_at=utcnow())
    )
    return int(outcome.rowcount or 0)  # type: ignore[attr-defined]


async def delete_runs_older(session: AsyncSession, before: datetime, limit: int) -> int:
    """Delete up to `limit` of the oldest runs created before `before`; return how many went."""
    oldest = (
        select(CodeRun.id)
        .where(CodeRun.created_at < before)
        .order_by(CodeRun.created_at)
        .limit(limit)
    )
    result = await session.execute(
        delete(CodeRun).where(CodeRun.id.in_(oldest)).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


RUN_BOOK: Part[RunBook] = Part("run_book")
