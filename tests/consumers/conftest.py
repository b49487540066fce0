"""A database no consumer can reach: a PostgreSQL URL on a port nothing listens on."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connecting is refused at once


@pytest.fixture
async def unreachable_database(closed_port: int) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(f"postgresql+asyncpg://u@127.0.0.1:{closed_port}/x")
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()
