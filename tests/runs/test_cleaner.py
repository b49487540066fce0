"""Retention cleaner: what it deletes, in batches, on one replica at a time, at the scheduled time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from codeactions import cli
from codeactions.config import CleanerSettings, DatabaseSettings, Settings
from codeactions.db.migrate import upgrade
from codeactions.db.models import CodeLog, CodeRun
from codeactions.db.session import SESSIONMAKER, create_engine, create_sessionmaker
from codeactions.logs.store import LOG_STORE, LogEntry
from codeactions.main import create_app
from codeactions.ratelimit.redis import connect
from codeactions.runs import cleaner as cleaner_module
from codeactions.runs.cleaner import CLEANER, RetentionCleaner, next_run_at
from codeactions.runs.cleaner_locks import LocalLock, PostgresLock, RedisLock
from tests.conftest import need_service

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=1)


async def add_runs(maker: async_sessionmaker[AsyncSession], count: int, at: datetime) -> None:
    async with maker() as session, session.begin():
        session.add_all(
            CodeRun(code_id=uuid.uuid4(), status="completed", created_at=at + timedelta(seconds=i))
            for i in range(count)
        )


async def count(maker: async_sessionmaker[AsyncSession], model: Any) -> int:
    async with maker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def log_lines(count: int, at: datetime) -> list[LogEntry]:
    run_id = str(uuid.uuid4())
    return [
        LogEntry(run_id=run_id, code_id="c", type="info", content=str(i), seq=i, created_at=at)
        for i in range(count)
    ]


class SlowLogStore:
    """Deletes `size` lines per call, `calls` times, each taking `delay` seconds."""

    def __init__(self, calls: int, delay: float) -> None:
        self.calls = calls
        self.delay = delay
        self.made = 0

    async def delete_older(self, before: datetime, limit: int) -> int:
        await asyncio.sleep(self.delay)
        self.made += 1
        return limit if self.made <= self.calls else 0


def slow_cleaner(
    settings: Settings, maker: async_sessionmaker[AsyncSession], lock: Any, store: SlowLogStore
) -> RetentionCleaner:
    return RetentionCleaner(settings, sessionmaker=maker, log_store=store, lock=lock)  # type: ignore[arg-type]


async def test_old_runs_and_logs_go_in_batches_and_recent_ones_stay(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(cleaner=CleanerSettings(batch_size=3, retention_days=30))
    app = create_app(settings)
    batches: list[int] = []
    real = cleaner_module.delete_runs_older

    async def recording(*args: Any) -> int:
        deleted = await real(*args)
        batches.append(deleted)
        return deleted

    monkeypatch.setattr(cleaner_module, "delete_runs_older", recording)
    async with app.router.lifespan_context(app):
        maker = app.state.parts[SESSIONMAKER]
        await add_runs(maker, 7, OLD)
        await add_runs(maker, 2, RECENT)
        await app.state.parts[LOG_STORE].write(log_lines(5, OLD))
        await app.state.parts[LOG_STORE].write(log_lines(2, RECENT))

        result = await app.state.parts[CLEANER].run_once()

        assert result is not None and result.complete
        assert (result.runs, result.logs) == (7, 5)
        assert batches == [3, 3, 1]
        assert await count(maker, CodeRun) == 2
        assert await count(maker, CodeLog) == 2
        again = await app.state.parts[CLEANER].run_once()
        assert again is not None and (again.runs, again.logs) == (0, 0)


async def test_cleaner_is_started_only_when_enabled(make_settings: Callable[..., Settings]) -> None:
    for enabled in (True, False):
        app = create_app(make_settings(cleaner=CleanerSettings(enabled=enabled)))
        async with app.router.lifespan_context(app):
            tasks = {t.get_name() for t in asyncio.all_tasks()}
            assert ("retention-cleaner" in tasks) is enabled
            assert (app.state.parts[CLEANER] is not None) is enabled


@pytest.fixture
async def pg_makers(postgresql_url: str) -> AsyncIterator[list[Any]]:
    settings = DatabaseSettings(url=postgresql_url)
    engines = [create_engine(settings), create_engine(settings)]
    yield engines
    for engine in engines:
        await engine.dispose()


async def test_only_one_postgres_replica_holds_the_advisory_lock(pg_makers: list[Any]) -> None:
    first, second = PostgresLock(pg_makers[0]), PostgresLock(pg_makers[1])
    async with first.hold() as held:
        assert held is not None
        async with second.hold() as other:
            assert other is None
    async with second.hold() as after_release:
        assert after_release is not None


async def test_two_postgres_cleaners_at_once_clean_once(
    pg_makers: list[Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(cleaner=CleanerSettings(batch_size=10))
    maker = create_sessionmaker(pg_makers[0])
    cleaners = [
        slow_cleaner(settings, maker, PostgresLock(engine, keepalive=0.1), SlowLogStore(3, 0.1))
        for engine in pg_makers
    ]
    results = await asyncio.gather(*(c.run_once() for c in cleaners))
    assert sorted(r is None for r in results) == [False, True]
    done = next(r for r in results if r is not None)
    assert done.logs == 30 and done.complete


@pytest.fixture
async def redis_clients() -> AsyncIterator[list[Any]]:
    need_service("Redis", "127.0.0.1", 6379)
    clients = [connect("redis://127.0.0.1:6379/15"), connect("redis://127.0.0.1:6379/15")]
    yield clients
    for client in clients:
        await client.aclose()  # type: ignore[attr-defined]


async def test_only_one_redis_replica_holds_the_lock_and_release_frees_it(
    redis_clients: list[Any],
) -> None:
    key = f"test-cleaner-{uuid.uuid4()}"
    first, second = RedisLock(redis_clients[0], key), RedisLock(redis_clients[1], key)
    async with first.hold() as held:
        assert held is not None
        async with second.hold() as other:
            assert other is None
    assert await redis_clients[0].exists(key) == 0
    async with second.hold() as after_release:
        assert after_release is not None


async def test_lock_refresh_keeps_out_a_second_replica(
    redis_clients: list[Any], sqlite_url: str
) -> None:
    # The Redis lock serves SQLite deployments (PostgreSQL ones use an advisory lock).
    key = f"test-cleaner-{uuid.uuid4()}"
    settings = Settings(
        database=DatabaseSettings(url=sqlite_url), cleaner=CleanerSettings(batch_size=5)
    )
    maker = create_sessionmaker(create_engine(settings.database))
    store = SlowLogStore(5, 0.2)  # ~1.2 s of cleaning; the lock's TTL is 0.3 s
    first = slow_cleaner(settings, maker, RedisLock(redis_clients[0], key, ttl=0.3), store)
    second = slow_cleaner(
        settings, maker, RedisLock(redis_clients[1], key, ttl=0.3), SlowLogStore(5, 0)
    )
    cleaning = asyncio.create_task(first.run_once())
    late_tries = []
    for _ in range(4):
        await asyncio.sleep(0.25)
        late_tries.append(await second.run_once())
    result = await cleaning
    assert late_tries == [None, None, None, None]
    assert result is not None and result.complete and result.logs == 25
    assert await redis_clients[0].exists(key) == 0


async def test_a_lost_redis_lock_stops_the_clean(redis_clients: list[Any], sqlite_url: str) -> None:
    # The Redis lock serves SQLite deployments (PostgreSQL ones use an advisory lock).
    key = f"test-cleaner-{uuid.uuid4()}"
    settings = Settings(
        database=DatabaseSettings(url=sqlite_url), cleaner=CleanerSettings(batch_size=5)
    )
    maker = create_sessionmaker(create_engine(settings.database))
    store = SlowLogStore(50, 0.1)
    cleaner = slow_cleaner(settings, maker, RedisLock(redis_clients[0], key, ttl=0.3), store)
    cleaning = asyncio.create_task(cleaner.run_once())
    await asyncio.sleep(0.15)
    await redis_clients[1].set(key, "someone else")  # e.g. our lock expired during a pause
    result = await cleaning
    assert result is not None and not result.complete
    assert store.made < 10
    assert await redis_clients[1].get(key) == b"someone else"  # not released: not ours


async def test_in_process_lock_lets_one_pass_run(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(cleaner=CleanerSettings(batch_size=5))
    maker = create_sessionmaker(create_engine(settings.database))
    cleaners = [slow_cleaner(settings, maker, LocalLock(), SlowLogStore(2, 0.1)) for _ in range(2)]
    results = await asyncio.gather(*(c.run_once() for c in cleaners))
    assert sorted(r is None for r in results) == [False, True]


@pytest.mark.parametrize(
    ("now", "at", "expected"),
    [
        (
            datetime(2026, 5, 1, 0, 30, tzinfo=UTC),
            time(1, 0),
            datetime(2026, 5, 1, 1, 0, tzinfo=UTC),
        ),
        (
            datetime(2026, 5, 1, 1, 0, tzinfo=UTC),
            time(1, 0),
            datetime(2026, 5, 2, 1, 0, tzinfo=UTC),
        ),
        (
            datetime(2026, 5, 1, 1, 5, tzinfo=UTC),
            time(1, 30),
            datetime(2026, 5, 1, 1, 30, tzinfo=UTC),
        ),
        (
            datetime(2026, 5, 1, 1, 31, tzinfo=UTC),
            time(1, 30),
            datetime(2026, 5, 2, 1, 30, tzinfo=UTC),
        ),
        (
            datetime(2026, 12, 31, 23, 59, tzinfo=UTC),
            time(23, 45),
            datetime(2027, 1, 1, 23, 45, tzinfo=UTC),
        ),
        (
            datetime(2026, 5, 1, 3, 10, tzinfo=__import__("zoneinfo").ZoneInfo("Europe/Paris")),
            time(1, 15),
            datetime(2026, 5, 1, 1, 15, tzinfo=UTC),
        ),
    ],
)
def test_next_run_honours_hour_and_minute_in_utc(
    now: datetime, at: time, expected: datetime
) -> None:
    assert next_run_at(now, at) == expected


def test_bad_cleaner_settings_are_refused_at_startup() -> None:
    for bad in ({"retention_days": 0}, {"retention_days": -3}, {"schedule_time": "25:00"}):
        with pytest.raises(ValidationError):
            CleanerSettings(**bad)
    assert CleanerSettings(schedule_time="01:30").schedule_time == time(1, 30)


def test_clean_command_deletes_and_prints_counts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'clean.db'}"
    asyncio.run(upgrade(DatabaseSettings(url=url)))

    async def seed() -> None:
        engine = create_engine(DatabaseSettings(url=url))
        maker = create_sessionmaker(engine)
        await add_runs(maker, 3, OLD)
        await add_runs(maker, 1, RECENT)
        async with maker() as session, session.begin():
            session.add(
                CodeLog(run_id=uuid.uuid4(), code_id="c", type="info", content="x", created_at=OLD)
            )
        await engine.dispose()

    asyncio.run(seed())
    result = CliRunner().invoke(
        cli.app,
        ["clean"],
        env={
            "CODEACTIONS_DATABASE_URL": url,
            "CODEACTIONS_CLEANER_RETENTION_DAYS": "30",
            "CODEACTIONS_CLEANER_BATCH_SIZE": "2",
            "CODEACTIONS_REDIS_URL": "",
            "CODEACTIONS_S3_ENABLED": "false",
        },
    )
    assert result.exit_code == 0, result.output
    assert "deleted 3 runs and 1 logs" in result.output
