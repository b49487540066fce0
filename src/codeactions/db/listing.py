"""Lists newest first, shared by repositories: one page, or every row read in chunks; a search by
name; the page a service answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import QueryableAttribute

from codeactions.db.models import Timestamped
from codeactions.db.text import storable_text

# Rows read per query when every row is listed: the memory a listing holds, whatever its length.
CHUNK_ROWS = 1000

M = TypeVar("M", bound=Timestamped)
T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of a list (`page` from 1) and how many items the whole list has."""

    items: list[T]
    total: int
    page: int
    page_size: int

    @property
    def has_next(self) -> bool:
        return self.page * self.page_size < self.total


@dataclass
class AllRows(Generic[M]):
    """Every row of a list: the first chunk, read in the request's session, then the rest.

    `rest` is None when the first chunk holds every row; otherwise it yields non-empty chunks,
    each read in a short session of its own, so no connection or transaction is held while the
    caller writes a chunk out (a slow or vanished client holds nothing).
    """

    total: int
    first: list[M]
    rest: AsyncGenerator[list[M], None] | None


def name_contains(column: QueryableAttribute[str], text: str) -> ColumnElement[bool]:
    """A case-insensitive substring filter on a name (a search box): `%` and `_` are literal, and
    the text is cleaned as stored names are (NUL as U+FFFD), so it can match them."""
    return column.icontains(storable_text(text), autoescape=True)


def _newest_first(model: type[M], conditions: Sequence[ColumnElement[bool]]) -> Select[M]:
    # The id breaks ties between rows created in the same microsecond: every order is total.
    return select(model).where(*conditions).order_by(model.created_at.desc(), model.id.desc())


async def _count(
    session: AsyncSession, model: type[M], conditions: Sequence[ColumnElement[bool]]
) -> int:
    total = await session.scalar(select(func.count()).select_from(model).where(*conditions))
    return int(total or 0)


async def page_of(
    session: AsyncSession,
    model: type[M],
    conditions: Sequence[ColumnElement[bool]],
    *,
    offset: int,
    limit: int,
) -> tuple[list[M], int]:
    """One page of the rows, newest first, and how many there are in all."""
    total = await _count(session, model, conditions)
    rows = await session.scalars(_newest_first(model, conditions).offset(offset).limit(limit))
    return list(rows), total


async def _chunk_after(
    session: AsyncSession,
    model: type[M],
    conditions: Sequence[ColumnElement[bool]],
    last: M | None,
    limit: int,
) -> list[M]:
    """The `limit` rows that follow `last` (keyset pagination: no OFFSET to walk past)."""
    query = _newest_first(model, conditions).limit(limit)
    if last is not None:
        # `created_at <= x` alone lets the (..., created_at) indexes bound the scan.
        query = query.where(
            model.created_at <= last.created_at,
            or_(model.created_at < last.created_at, model.id < last.id),
        )
    return list(await session.scalars(query))


async def all_rows(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    model: type[M],
    conditions: Sequence[ColumnElement[bool]],
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> AllRows[M]:
    """Every row, newest first (as `page_of`), read `chunk_rows` at a time.

    The count and the first chunk are read now in `session`, so a failing database is still an
    error answer; the rest only when iterated. Rows added or removed meanwhile may be missed or
    seen (no snapshot spans the chunks), but none is seen twice and the order holds.
    """
    total = await _count(session, model, conditions)
    first = await _chunk_after(session, model, conditions, None, chunk_rows)
    if len(first) < chunk_rows:
        return AllRows(total, first, None)
    return AllRows(total, first, _rest(sessionmaker, model, conditions, first[-1], chunk_rows))


async def _read_chunk(
    sessionmaker: async_sessionmaker[AsyncSession],
    model: type[M],
    conditions: Sequence[ColumnElement[bool]],
    last: M,
    limit: int,
) -> list[M]:
    async with sessionmaker() as session:
        return await _chunk_after(session, model, conditions, last, limit)


async def _rest(
    sessionmaker: async_sessionmaker[AsyncSession],
    model: type[M],
    conditions: Sequence[ColumnElement[bool]],
    last: M,
    chunk_rows: int,
) -> AsyncGenerator[list[M], None]:
    while True:
        # Shielded: a client going away cancels the listing, never a query half done (the
        # driver would then drop the connection instead of returning it to the pool).
        rows = await asyncio.shield(_read_chunk(sessionmaker, model, conditions, last, chunk_rows))
        if not rows:
            return
        if (rows[0].created_at, rows[0].id) >= (last.created_at, last.id):
            # Only stored values the database orders unlike Python could do this: fail (the
            # answer is cut short, visibly) rather than repeat rows, or loop forever.
            raise RuntimeError(f"listing {model.__name__}: the keyset did not advance")
        yield rows
        if len(rows) < chunk_rows:
            return
        last = rows[-1]
        del rows  # the caller has written this chunk out: not kept while reading the next
