"""Exchanges and queues of one test on the local RabbitMQ, a publisher, and a database no
consumer can reach (a PostgreSQL URL on a port nothing listens on)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aio_pika
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from codeactions.config import RabbitSettings
from codeactions.projects.consumers import consumer_specs
from tests.conftest import need_service

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
def rabbit(request: pytest.FixtureRequest) -> Iterator[RabbitSettings]:
    """Exchange and queue names of this test only, deleted afterwards. A test changes other
    settings with `@pytest.mark.parametrize("rabbit", [{...}], indirect=True)`."""
    need_service("RabbitMQ", "127.0.0.1", 5672)
    tag = f"test-{uuid.uuid4().hex[:10]}"
    values: dict[str, Any] = {
        "url": RABBIT_URL,
        "project_exchange": f"{tag}.projects.topic",
        "project_queue": f"{tag}.code-actions.projects",
        "permission_exchange": f"{tag}.permissions.topic",
        "permission_queue": f"{tag}.code-actions-permissions",
        "dead_letter_exchange": f"{tag}.dlx",
        "reconnect_seconds": 0.3,
        "retry_seconds": 0.05,
        "max_retries": 2,
    }
    settings = RabbitSettings(**{**values, **getattr(request, "param", {})})
    yield settings
    asyncio.run(_delete_entities(settings))


async def _delete_entities(settings: RabbitSettings) -> None:
    connection = await aio_pika.connect(settings.url)
    async with connection:
        for spec in consumer_specs(settings):
            for name in (spec.queue, spec.dead_queue, *spec.retry_queues):
                channel = await connection.channel()
                await channel.queue_delete(name)
        for exchange in (
            settings.project_exchange,
            settings.permission_exchange,
            settings.dead_letter_exchange,
        ):
            channel = await connection.channel()
            await channel.exchange_delete(exchange)


@pytest.fixture
async def publish(rabbit: RabbitSettings) -> AsyncIterator[Callable[..., Awaitable[None]]]:
    connection = await aio_pika.connect(rabbit.url)
    channel = await connection.channel()

    async def send(kind: str, body: Any, headers: dict[str, Any] | None = None) -> None:
        name = rabbit.project_exchange if kind == "project" else rabbit.permission_exchange
        exchange = await channel.get_exchange(name)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        await exchange.publish(
            aio_pika.Message(raw, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="event",
        )

    yield send
    await connection.close()


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
