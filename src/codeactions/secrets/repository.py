"""SQL for secrets."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from codeactions.db.models import Secret
from codeactions.db.session import inline_sqlite_engine, is_busy
from codeactions.errors import SecretNameTaken


async def get_secret(session: AsyncSession, secret_id: uuid.UUID) -> Secret | None:
    return await session.get(Secret, secret_id)


async def name_taken(session: AsyncSession, *, project_uuid: str, name: str) -> bool:
    found = await session.scalar(
        select(Secret.id).where(Secret.project_uuid == project_uuid, Secret.name == name)
    )
    return found is not None


async def add_secret(session: AsyncSession, *, project_uuid: str, name: str, value: str) -> Secret:
    secret = Secret(project_uuid=project_uuid, name=name, value=value)
    session.add(secret)
    await save(session, secret)
    return secret


async def save(session: AsyncSession, secret: Secret) -> None:
    """Flush; the unique (project_uuid, name) is the only constraint a checked value can break
    (another request took the name since it was looked up)."""
    try:
        await session.flush()
    except IntegrityError:
        raise SecretNameTaken(secret.name) from None


async def list_secrets(session: AsyncSession, *, project_uuid: str) -> list[Secret]:
    """A project's secrets, newest first, as the original lists them."""
    rows = await session.scalars(
        select(Secret)
        .where(Secret.project_uuid == project_uuid)
        .order_by(Secret.created_at.desc(), Secret.id.desc())
    )
    return list(rows)


async def delete_secret(session: AsyncSession, secret: Secret) -> None:
    await session.delete(secret)
    await session.flush()


# Built once: a run pays for the query, not for making it.
_OF_PROJECT = select(Secret.name, Secret.value).where(
    Secret.project_uuid == bindparam("project_uuid")
)


class ProjectValues:
    """Reads (name, stored value) of a project's secrets for a run: one indexed SELECT.

    On SQLite the read runs on a plain connection in the event loop: tens of microseconds,
    where the async driver's thread hop costs a few hundred, a good part of a trivial run. A
    WAL reader is not blocked by writers; should SQLite still answer busy, the read goes through
    the async engine, which waits.
    """

    def __init__(self, engine: AsyncEngine, sqlite_path: str | None = None) -> None:
        # One statement needs no transaction: no BEGIN and ROLLBACK round trips around it.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._inline: Engine | None = None
        if sqlite_path is not None:
            self._inline = inline_sqlite_engine(sqlite_path)

    async def of_project(self, project_uuid: str) -> list[tuple[str, str]]:
        params = {"project_uuid": project_uuid}
        if self._inline is not None:
            try:
                with self._inline.connect() as conn:
                    return [(name, value) for name, value in conn.execute(_OF_PROJECT, params)]
            except OperationalError as exc:
                if not is_busy(exc):
                    raise
        async with self._engine.connect() as conn:
            return [(name, value) for name, value in await conn.execute(_OF_PROJECT, params)]

    def close(self) -> None:
        if self._inline is not None:
            self._inline.dispose()


async def values_after(
    session: AsyncSession, after: uuid.UUID | None, limit: int
) -> list[tuple[uuid.UUID, str]]:
    """(id, stored value) of up to `limit` secrets with ids above `after`, by id."""
    query = select(Secret.id, Secret.value).order_by(Secret.id).limit(limit)
    if after is not None:
        query = query.where(Secret.id > after)
    rows = await session.execute(query)
    return [(secret_id, value) for secret_id, value in rows]


async def replace_value(session: AsyncSession, secret_id: uuid.UUID, *, old: str, new: str) -> bool:
    """Swap the stored value unless it changed meanwhile; a re-encryption is not an update, so
    `updated_at` stays. True when the row was rewritten."""
    result = await session.execute(
        update(Secret)
        .where(Secret.id == secret_id, Secret.value == old)
        .values(value=new, updated_at=Secret.updated_at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
