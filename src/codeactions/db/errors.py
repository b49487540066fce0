"""Which database errors pass (the server is down, restarting, overloaded) and which will be
answered again the same way (a bad value, a constraint): what retries, journals and callers need."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

# SQLSTATE classes (PostgreSQL's; asyncpg and psycopg errors carry them).
# Temporary: connection exception, transaction rollback (deadlock, serialization), insufficient
# resources, operator intervention (shutting down, starting up, statement timeout), system error.
_TEMPORARY_SQLSTATES = frozenset({"08", "40", "53", "57", "58"})
# Permanent: feature not supported, cardinality, data exception (invalid byte sequence, NUL byte),
# integrity constraint, syntax or access rule, check option.
_PERMANENT_SQLSTATES = frozenset({"0A", "21", "22", "23", "42", "44"})
_TEMPORARY_TYPES: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # also SQLite's "database is locked"
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection in time
    OSError,  # connection refused or reset
    TimeoutError,
)
_PERMANENT_TYPES: tuple[type[BaseException], ...] = (
    ValueError,  # validation, encoding, asyncpg's client-side DataError
    sa_exc.DataError,
    sa_exc.IntegrityError,
    sa_exc.ProgrammingError,
    sa_exc.NotSupportedError,
)


def is_temporary(exc: BaseException) -> bool:
    """Whether the same statement may succeed later.

    The root cause decides first (under SQLAlchemy's generic `DBAPIError` sits asyncpg's
    `CharacterNotInRepertoireError`), then each wrapper outwards. An error recognised by none
    counts as temporary: callers bound their retries.
    """
    for link in reversed(causes(exc)):
        verdict = _temporary_or_not(link)
        if verdict is not None:
            return verdict
    return True


def is_database_error(exc: BaseException) -> bool:
    """Whether `exc` came from the database or its driver (SQLAlchemy, asyncpg, sqlite3)."""
    return any(
        isinstance(link, sa_exc.SQLAlchemyError)
        or type(link).__module__.split(".")[0] in ("asyncpg", "sqlite3")
        for link in causes(exc)
    )


def causes(exc: BaseException) -> list[BaseException]:
    """`exc` and the errors it wraps, outermost first."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and all(link is not seen for seen in chain) and len(chain) < 10:
        chain.append(link)
        orig = getattr(link, "orig", None) if isinstance(link, sa_exc.StatementError) else None
        link = orig if isinstance(orig, BaseException) else link.__cause__
    return chain


def _temporary_or_not(link: BaseException) -> bool | None:
    sqlstate = getattr(link, "sqlstate", None) or getattr(link, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in _TEMPORARY_SQLSTATES:
        return True
    if isinstance(sqlstate, str) and sqlstate[:2] in _PERMANENT_SQLSTATES:
        return False
    if isinstance(link, sa_exc.DBAPIError) and link.connection_invalidated:
        return True
    if isinstance(link, _TEMPORARY_TYPES):
        return True
    if isinstance(link, _PERMANENT_TYPES):
        return False
    if isinstance(link, sa_exc.StatementError) and not isinstance(link, sa_exc.DBAPIError):
        return False  # the statement could not even be built from the values
    return None
