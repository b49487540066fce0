"""Async engine, session maker, and the after-commit hook of the request session (`SessionDep`)."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import Engine, event, make_url
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from codeactions.config import DatabaseSettings
from codeactions.db.errors import causes
from codeactions.parts import Part, part

AFTER_COMMIT = "codeactions.after_commit"

ENGINE: Part[AsyncEngine] = Part("engine")
SESSIONMAKER: Part[async_sessionmaker[AsyncSession]] = Part("sessionmaker")
SessionMakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(part(SESSIONMAKER))]


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    kwargs: dict[str, Any] = {"pool_pre_ping": not settings.is_sqlite}
    if settings.is_sqlite:
        kwargs["connect_args"] = {"timeout": 30}
        # Every write commits or rolls back itself, and pysqlite opens no transaction for
        # reads: the rollback on return would only cost each checkout another thread hop.
        kwargs["pool_reset_on_return"] = None
        _make_private(settings.sqlite_path)
    else:
        kwargs.update(
            pool_size=settings.pool_size,
            max_overflow=settings.pool_size,
            # Bounded everywhere: a dead or frozen database answers 503, never holds a caller.
            pool_timeout=settings.connect_timeout,
            connect_args={
                "timeout": settings.connect_timeout,
                "command_timeout": settings.command_timeout,
                **settings.ssl_connect_args,
            },
        )
    engine = create_async_engine(settings.async_url, **kwargs)
    if settings.is_sqlite:
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    return engine


class DatabaseUnreachable(Exception):
    """No connection to the database could be opened; the message says where (without the
    password) and why, in one line."""


async def check_connection(engine: AsyncEngine, settings: DatabaseSettings) -> None:
    """Open one connection, or raise DatabaseUnreachable saying why (for the start-up checks:
    a wrong `sslmode` or certificate is a line, not a traceback)."""
    try:
        async with engine.connect():
            return
    except Exception as exc:
        root = causes(exc)[-1]
        where = make_url(settings.url).render_as_string(hide_password=True)
        hint = ""
        if "rejected SSL upgrade" in str(root):
            hint = (
                " (the server does not accept TLS: turn `ssl` on in PostgreSQL, or lower sslmode)"
            )
        elif isinstance(root, ssl.SSLCertVerificationError):
            hint = " (sslrootcert must name the CA that signed the server's certificate; "
            hint += "verify-full also checks the host name against it)"
        message = f"cannot connect to the database {where}: {type(root).__name__}: {root}{hint}"
        raise DatabaseUnreachable(message) from exc


def _make_private(path: str | None) -> None:
    """Create the SQLite file readable by its owner only, so sandboxed code cannot open it."""
    if path is None:
        return
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    else:
        os.chmod(path, 0o600)


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# How long a read or write on the event loop's own SQLite connection waits for another writer
# before it hands the work to a path that may wait (a thread, the async engine).
INLINE_BUSY_MS = 20


def inline_sqlite_engine(path: str, *, busy_ms: int = INLINE_BUSY_MS) -> Engine:
    """A plain (synchronous) engine on the SQLite file, for statements of tens of microseconds
    run in the event loop, where the async driver's thread hop would cost more than the work."""
    engine = create_sync_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False},
        pool_reset_on_return=None,
    )

    def pragmas(dbapi_conn: Any, record: Any) -> None:
        sqlite_pragmas(dbapi_conn, record)
        dbapi_conn.execute(f"PRAGMA busy_timeout={busy_ms}")

    event.listen(engine, "connect", pragmas)
    return engine


def is_busy(exc: OperationalError) -> bool:
    """SQLite gave up waiting for another writer (the inline path's cue to go the slow way)."""
    return "locked" in str(exc) or "busy" in str(exc)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Call `callback` once the request session has committed (e.g. to drop a cached row)."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


@asynccontextmanager
async def unit_of_work(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session that commits when the block succeeds and rolls back when it raises; what was
    asked for `after_commit` runs once it has committed."""
    async with maker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        for callback in session.info.pop(AFTER_COMMIT, ()):
            callback()


async def get_session(maker: SessionMakerDep) -> AsyncIterator[AsyncSession]:
    """The request session: commits when the handler succeeds, rolls back when it raises."""
    async with unit_of_work(maker) as session:
        yield session


# "function" scope: commit before the response is sent, so a 201 means the row is there.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
