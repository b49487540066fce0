"""A broker user without configure permission: the ops team's topology is used passively."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aio_pika
import aiormq
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.config import RabbitSettings, Settings
from codeactions.main import create_app
from codeactions.projects import service
from codeactions.projects.consumers import (
    CONSUMERS,
    RETRIES_HEADER,
    consumer_specs,
    start_consumers,
)
from tests.conftest import need
from tests.projects.consumers.test_consumers import (
    dead_letters,
    eventually,
    members,
    outcomes,
    project_message,
    project_retry_queue,
    take_all,
)

REFUSED_NOTICE = "may not declare"


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60, check=True)


@pytest.fixture(scope="module")
def user_without_configure() -> Iterator[tuple[str, str]]:
    """A broker user that may read and write every queue and exchange, and configure none."""
    need(shutil.which("rabbitmqctl") is not None, "rabbitmqctl is not installed")
    name, password = f"codeactions-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    try:
        rabbitmqctl("add_user", name, password)
    except subprocess.CalledProcessError as exc:
        need(False, f"rabbitmqctl cannot add users here: {exc.stderr!r}")
    try:
        rabbitmqctl("set_permissions", "-p", "/", name, "", ".*", ".*")
        yield name, password
    finally:
        rabbitmqctl("delete_user", name)


@pytest.fixture
def restricted(rabbit: RabbitSettings, user_without_configure: tuple[str, str]) -> RabbitSettings:
    """The test's names, reached as the user without configure permission."""
    name, password = user_without_configure
    return rabbit.model_copy(update={"url": f"amqp://{name}:{password}@127.0.0.1:5672/"})


async def create_topology(rabbit: RabbitSettings, *, delay_and_dead_queues: bool) -> None:
    """As the ops team would, with the administrator (guest): the events' exchanges and queues,
    bound; with `delay_and_dead_queues`, everything the consumers would declare themselves."""
    if delay_and_dead_queues:
        consumers = await start_consumers(rabbit, async_sessionmaker())
        await asyncio.wait_for(consumers.ready.wait(), 15)
        await consumers.close()
        return
    connection = await aio_pika.connect(rabbit.url)
    async with connection:
        channel = await connection.channel()
        for spec in consumer_specs(rabbit):
            exchange = await channel.declare_exchange(
                spec.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(spec.queue, durable=True)
            await queue.bind(exchange, "#")


async def exists(rabbit: RabbitSettings, queue: str) -> bool:
    connection = await aio_pika.connect(rabbit.url)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        return True


@pytest.fixture
async def restricted_app(
    make_settings: Callable[..., Settings], restricted: RabbitSettings
) -> AsyncIterator[FastAPI]:
    app = create_app(make_settings(rabbitmq=restricted))
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.parts[CONSUMERS].ready.wait(), 15)
        yield app


@pytest.fixture
async def client(restricted_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=restricted_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def refusal_notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The notices logged so far, consumers started by a fixture included."""
    records = caplog.get_records("setup") + caplog.get_records("call")
    return [r.getMessage() for r in records if REFUSED_NOTICE in r.getMessage()]


@pytest.fixture
async def only_the_events_queues(rabbit: RabbitSettings) -> None:
    await create_topology(rabbit, delay_and_dead_queues=False)


async def test_without_delay_and_dead_queues_nothing_is_lost(
    only_the_events_queues: None,
    restricted_app: FastAPI,
    client: httpx.AsyncClient,
    publish: Any,
    rabbit: RabbitSettings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Said once, with what is missing and what follows from it.
    [notice] = refusal_notices(caplog)
    assert f"{rabbit.project_queue}.dead" in notice and ".retry." in notice
    assert "requeued" in notice and "dropped" in notice
    for spec in consumer_specs(rabbit):
        for name in (spec.dead_queue, *spec.retry_queues):
            assert not await exists(rabbit, name), name

    # A passing failure: held, given back to the queue, applied once the database is back.
    real = service.create_project
    failures = {"left": 2}

    async def flaky(session: Any, *, uuid: str, name: str) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("database is down")
        return await real(session, uuid=uuid, name=name)

    monkeypatch.setattr(service, "create_project", flaky)
    project = str(uuid.uuid4())
    await publish("project", project_message(project))
    assert await eventually(lambda: members(client, project))
    assert outcomes(restricted_app, "requeued") == 2

    # A message that can never be applied: logged in full, and the next one is applied.
    await publish("project", b"not json at all")
    later = str(uuid.uuid4())
    await publish("project", project_message(later))
    assert await eventually(lambda: members(client, later))
    dropped = [r for r in caplog.records if r.getMessage().startswith("rabbitmq message dropped")]
    assert [getattr(r, "body", None) for r in dropped] == ["not json at all"]
    assert outcomes(restricted_app, "dropped") == 1
    assert len(refusal_notices(caplog)) == 1


@pytest.mark.parametrize("rabbit", [{"retry_seconds": 30}], indirect=True)
async def test_the_ops_teams_delay_and_dead_queues_are_used(
    rabbit: RabbitSettings,
    restricted: RabbitSettings,
    make_settings: Callable[..., Settings],
    publish: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await create_topology(rabbit, delay_and_dead_queues=True)
    caplog.clear()

    async def down(session: Any, *, uuid: str, name: str) -> Any:
        raise ConnectionRefusedError("database is down")

    monkeypatch.setattr(service, "create_project", down)
    app = create_app(make_settings(rabbitmq=restricted))
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.parts[CONSUMERS].ready.wait(), 15)
        waiting = str(uuid.uuid4())
        await publish("project", project_message(waiting))
        await publish("project", b"{broken")

        [copy] = await eventually(lambda: take_all(rabbit, project_retry_queue(rabbit, 0)))
        assert json.loads(copy.body)["uuid"] == waiting
        assert (copy.headers or {})[RETRIES_HEADER] == 1
        dead = await eventually(lambda: dead_letters(rabbit, rabbit.project_queue))
        assert [m.body for m in dead] == [b"{broken"]
    [notice] = refusal_notices(caplog)
    assert "missing" not in notice


async def test_a_missing_events_queue_is_reported_until_it_exists(
    restricted: RabbitSettings,
    rabbit: RabbitSettings,
    unreachable_database: async_sessionmaker[AsyncSession],
) -> None:
    consumers = await start_consumers(restricted, unreachable_database)
    try:
        await eventually(lambda: asyncio.sleep(0, "missing" in consumers.status()[1]))
        healthy, why = consumers.status()
        assert not healthy
        assert rabbit.project_queue in why and "no configure permission" in why, why
        await create_topology(rabbit, delay_and_dead_queues=False)
        await asyncio.wait_for(consumers.ready.wait(), 15)
        assert consumers.status()[0]
    finally:
        await consumers.close()
