"""Which failures a consumer retries later and which it dead-letters at once, on real errors."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, insert, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from codeactions.config import DatabaseSettings
from codeactions.errors import BadRequest
from codeactions.projects.consumers import (
    InvalidMessage,
    ProjectCreated,
    describe,
    is_temporary,
    parse,
)
from tests.conftest import PG_ADMIN_URL, need_service


async def raised(awaitable: Awaitable[Any]) -> BaseException:
    try:
        await awaitable
    except Exception as exc:
        return exc
    pytest.fail("nothing was raised")


@pytest.fixture
async def postgresql() -> AsyncIterator[AsyncConnection]:
    need_service("PostgreSQL", "127.0.0.1", 5432)
    engine = create_async_engine(DatabaseSettings(url=PG_ADMIN_URL).async_url)
    async with engine.connect() as connection:
        yield connection
    await engine.dispose()


@pytest.fixture
async def sqlite() -> AsyncIterator[AsyncConnection]:
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.connect() as connection:
        yield connection
    await engine.dispose()


NUL = {"v": "Ac\x00me"}


async def test_a_nul_byte_postgresql_refuses_is_permanent(postgresql: AsyncConnection) -> None:
    error = await raised(postgresql.execute(text("SELECT CAST(:v AS text)"), NUL))

    assert isinstance(error, sa_exc.DBAPIError)  # SQLAlchemy's generic wrapper...
    assert not is_temporary(error)  # ...of asyncpg's CharacterNotInRepertoireError
    assert "CharacterNotInRepertoireError: invalid byte sequence" in describe(error)
    assert "\x00" not in describe(error)  # the statement's values are not in the reason


async def test_an_untranslatable_character_is_permanent(postgresql: AsyncConnection) -> None:
    value = {"v": '"\\u0000"'}
    error = await raised(postgresql.execute(text("SELECT CAST(:v AS jsonb) #>> '{}'"), value))

    assert not is_temporary(error)
    assert "UntranslatableCharacterError" in describe(error)


async def test_asyncpg_errors_without_sqlalchemy_are_classified_too(closed_port: int) -> None:
    need_service("PostgreSQL", "127.0.0.1", 5432)
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        refused = await raised(connection.fetchval("SELECT $1::text", "Ac\x00me"))
    finally:
        await connection.close()
    unreachable = await raised(asyncpg.connect(f"postgresql://u@127.0.0.1:{closed_port}/x"))

    assert isinstance(refused, asyncpg.CharacterNotInRepertoireError)
    assert not is_temporary(refused)
    assert isinstance(unreachable, OSError)
    assert is_temporary(unreachable)
    # Said by a server while it starts up; no test server does that on demand.
    assert is_temporary(asyncpg.CannotConnectNowError("the database system is starting up"))


async def test_a_missing_table_on_postgresql_is_permanent(postgresql: AsyncConnection) -> None:
    error = await raised(postgresql.execute(text("SELECT * FROM no_such_table")))

    assert isinstance(error, sa_exc.ProgrammingError)
    assert not is_temporary(error)


async def test_a_constraint_violation_is_permanent(sqlite: AsyncConnection) -> None:
    await sqlite.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    await sqlite.execute(text("INSERT INTO t VALUES (1)"))
    error = await raised(sqlite.execute(text("INSERT INTO t VALUES (1)")))

    assert isinstance(error, sa_exc.IntegrityError)
    assert not is_temporary(error)


async def test_a_value_no_statement_can_be_built_from_is_permanent(sqlite: AsyncConnection) -> None:
    table = Table("d", MetaData(), Column("id", Integer, primary_key=True), Column("at", DateTime))
    await sqlite.run_sync(table.metadata.create_all)
    error = await raised(sqlite.execute(insert(table).values(id=1, at="yesterday")))

    assert type(error) is sa_exc.StatementError
    assert not is_temporary(error)


def test_invalid_messages_are_permanent() -> None:
    with pytest.raises(InvalidMessage) as validation:
        parse(ProjectCreated, b'{"uuid": 5, "name": "n"}')
    with pytest.raises(ValueError) as not_json:
        json.loads(b"{broken")

    assert not is_temporary(validation.value)
    assert not is_temporary(not_json.value)
    assert not is_temporary(BadRequest("uuid is required"))


async def test_an_unreachable_database_is_temporary(
    unreachable_database: async_sessionmaker[AsyncSession],
) -> None:
    async with unreachable_database() as session:
        error = await raised(session.execute(text("SELECT 1")))

    assert isinstance(error, OSError)
    assert is_temporary(error)


async def test_a_terminated_connection_is_temporary(postgresql: AsyncConnection) -> None:
    error = await raised(postgresql.execute(text("SELECT pg_terminate_backend(pg_backend_pid())")))

    assert is_temporary(error)
    assert "AdminShutdownError" in describe(error)


async def test_a_locked_sqlite_database_is_temporary(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0})
    try:
        async with engine.connect() as connection:
            error = await raised(connection.execute(text("INSERT INTO t VALUES (1)")))
    finally:
        await engine.dispose()
        holder.close()

    assert isinstance(error, sa_exc.OperationalError)
    assert "database is locked" in str(error)
    assert is_temporary(error)


async def test_timeouts_and_unknown_errors_are_temporary() -> None:
    timeout = await raised(asyncio.wait_for(asyncio.sleep(1), 0.01))

    assert is_temporary(timeout)
    # Not recognised: retried, but only `rabbitmq.max_retries` times.
    assert is_temporary(RuntimeError("surprise"))
