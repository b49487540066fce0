"""RabbitMQ consumers on the local broker: events applied, dead-lettered, retried later, reconnects."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.auth.dependencies import VERIFIER
from codeactions.config import RabbitSettings, Settings
from codeactions.main import create_app
from codeactions.ops.metrics import METRICS
from codeactions.projects import service
from codeactions.projects.consumers import (
    CONSUMERS,
    RETRIES_HEADER,
    EventConsumers,
    consumer_specs,
    retry_delay_ms,
    start_consumers,
)
from tests.codes.support import as_user
from tests.conftest import ADMIN, need


@pytest.fixture
def settings(make_settings: Callable[..., Settings], rabbit: RabbitSettings) -> Settings:
    return make_settings(rabbitmq=rabbit)


@pytest.fixture
async def consumers(app: FastAPI) -> EventConsumers:
    consumers: EventConsumers = app.state.parts[CONSUMERS]
    await asyncio.wait_for(consumers.ready.wait(), 15)
    return consumers


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 10.0) -> Any:
    """Poll until `check` returns a truthy value (and return it) or fail after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    pytest.fail(f"condition not met within {within}s (last: {last!r})")


async def members(client: httpx.AsyncClient, project: str) -> dict[str, int]:
    response = await client.get(f"/projects/{project}/permissions", headers=ADMIN)
    if response.status_code != 200:
        return {}
    return {p["email"]: p["role"] for p in response.json()}


async def dead_letters(
    rabbit: RabbitSettings, queue: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    return await take_all(rabbit, f"{queue}.dead")


async def take_all(
    rabbit: RabbitSettings, queue: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message now in `queue`, taken out of it."""
    connection = await aio_pika.connect(rabbit.url)
    async with connection:
        channel = await connection.channel()
        source = await channel.declare_queue(queue, passive=True)
        found = []
        while (message := await source.get(fail=False)) is not None:
            await message.ack()
            found.append(message)
        return found


async def depth(rabbit: RabbitSettings, queue: str) -> int:
    """How many messages wait in `queue` (not counting one delivered and not yet acked)."""
    connection = await aio_pika.connect(rabbit.url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count: int = declared.declaration_result.message_count
        return count


def project_retry_queue(rabbit: RabbitSettings, retries_done: int) -> str:
    spec = consumer_specs(rabbit)[0]
    return spec.retry_queue(retry_delay_ms(rabbit, retries_done))


def project_message(project: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uuid": project,
        "name": "Acme",
        "is_template": False,
        "user_email": "owner@example.com",
        "date_format": "D",
        "template_type_uuid": None,
        "timezone": "America/Sao_Paulo",
        "organization_id": 420209,
        "extra_fields": {},
        "authorizations": [
            {"user_email": "owner@example.com", "role": 3},
            {"user_email": "viewer@example.com", "role": 1},
        ],
        "description": "d",
        "organization_uuid": str(uuid.uuid4()),
        "brain_on": True,
    }
    body.update(overrides)
    return body


async def test_project_creation_message_creates_project_and_members(
    client: httpx.AsyncClient, consumers: EventConsumers, publish: Any
) -> None:
    project = str(uuid.uuid4())
    await publish("project", project_message(project))
    await publish("project", project_message(project))  # the same event twice: same state

    assert await eventually(lambda: members(client, project)) == {
        "owner@example.com": 3,
        "viewer@example.com": 1,
    }
    response = await client.get(f"/projects/{project}", headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["name"] == "Acme"


async def test_permission_messages_create_update_and_delete_members(
    client: httpx.AsyncClient, consumers: EventConsumers, publish: Any
) -> None:
    project = str(uuid.uuid4())
    await publish(
        "permission", {"action": "create", "project": project, "user": "a@x.org", "role": 1}
    )
    await publish(
        "permission", {"action": "create", "project": project, "user": "b@x.org", "role": 2}
    )
    await publish(
        "permission", {"action": "create", "project": project, "user": "a@x.org", "role": 3}
    )
    await publish(
        "permission", {"action": "update", "project": project, "user": "b@x.org", "role": 3}
    )
    await publish(
        "permission", {"action": "update", "project": project, "user": "c@x.org", "role": 2}
    )
    await publish(
        "permission", {"action": "delete", "project": project, "user": "c@x.org", "role": 0}
    )
    await publish("permission", {"action": "delete", "project": project, "user": "c@x.org"})
    marker = {"action": "create", "project": project, "user": "last@x.org", "role": 1}
    await publish("permission", marker)

    async def settled() -> dict[str, int] | None:
        now = await members(client, project)
        return now if "last@x.org" in now else None

    # `create` never changes an existing member (as the original); `update` upserts.
    assert await eventually(settled) == {"a@x.org": 1, "b@x.org": 3, "last@x.org": 1}


POISON = [
    b"not json at all",
    b'{"uuid": "p", "name": "n", "organization_id": "420209"}',
    b'{"uuid": "p", "name": "n", "authorizations": {"user_email": "a@x.org", "role": 3}}',
    b'{"name": "no uuid"}',
]


async def test_poison_messages_go_to_the_dead_letter_queue_and_consumption_goes_on(
    app: FastAPI,
    client: httpx.AsyncClient,
    consumers: EventConsumers,
    publish: Any,
    rabbit: RabbitSettings,
) -> None:
    for body in POISON:
        await publish("project", body)
    await publish("permission", {"action": "promote", "project": "p", "user": "a@x.org", "role": 1})
    too_big = {"action": "create", "project": "p", "user": "a@x.org", "role": 2**31}
    await publish("permission", too_big)
    await publish("permission", {"action": "create", "project": "p", "user": 5, "role": 1})
    project = str(uuid.uuid4())
    await publish("project", project_message(project))
    await publish(
        "permission", {"action": "create", "project": project, "user": "z@x.org", "role": 2}
    )

    async def applied() -> bool:
        return "z@x.org" in await members(client, project)

    await eventually(applied)
    dead_projects = await dead_letters(rabbit, rabbit.project_queue)
    dead_permissions = await dead_letters(rabbit, rabbit.permission_queue)
    assert sorted(m.body for m in dead_projects) == sorted(POISON)
    assert len(dead_permissions) == 3
    reasons = [str((m.headers or {}).get("x-death-reason")) for m in dead_projects]
    assert all(r.startswith("invalid message") for r in reasons), reasons
    assert (dead_projects[0].headers or {}).get("x-original-queue") == rabbit.project_queue
    # Nothing is left to be redelivered.
    assert await members(client, "p") == {}
    registry = app.state.parts[METRICS].registry
    counted = {"consumer": "projects", "outcome": "dead"}
    assert registry.get_sample_value("codeactions_events_total", counted) == len(POISON)


async def test_a_passing_failure_is_retried_then_applied(
    client: httpx.AsyncClient,
    consumers: EventConsumers,
    publish: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
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
    assert failures["left"] == 0


async def test_a_lasting_failure_ends_in_the_dead_letter_queue(
    consumers: EventConsumers,
    publish: Any,
    rabbit: RabbitSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts = []

    async def down(session: Any, *, uuid: str, name: str) -> Any:
        attempts.append(uuid)
        raise ConnectionError("database is down")

    monkeypatch.setattr(service, "create_project", down)
    await publish("project", project_message(str(uuid.uuid4())))

    dead = await eventually(lambda: dead_letters(rabbit, rabbit.project_queue))
    assert len(attempts) == rabbit.max_retries + 1
    assert "gave up after 2 retries" in str((dead[0].headers or {}).get("x-death-reason"))


def outcomes(app: FastAPI, outcome: str) -> float:
    registry = app.state.parts[METRICS].registry
    labels = {"consumer": "projects", "outcome": outcome}
    return registry.get_sample_value("codeactions_events_total", labels) or 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_message_the_database_refuses_is_dead_lettered_at_once_and_the_next_applied(
    app: FastAPI,
    client: httpx.AsyncClient,
    consumers: EventConsumers,
    publish: Any,
    rabbit: RabbitSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = service.create_project

    async def name_through_postgresql(session: Any, *, uuid: str, name: str) -> Any:
        # `projects.name` stores a NUL byte as U+FFFD; this passes the name to PostgreSQL as it
        # is, as a column without that cleaning would, and PostgreSQL refuses the NUL.
        await session.execute(text("SELECT CAST(:name AS text)"), {"name": name})
        return await real(session, uuid=uuid, name=name)

    monkeypatch.setattr(service, "create_project", name_through_postgresql)
    refused, valid = str(uuid.uuid4()), str(uuid.uuid4())
    await publish("project", project_message(refused, name="Ac\x00me"))
    await publish("project", project_message(valid))

    assert await eventually(lambda: members(client, valid), within=2)
    [dead] = await eventually(lambda: dead_letters(rabbit, rabbit.project_queue), within=2)
    assert json.loads(dead.body)["uuid"] == refused
    reason = str((dead.headers or {}).get("x-death-reason"))
    assert reason.startswith("permanent error: "), reason
    assert "invalid byte sequence" in reason
    assert RETRIES_HEADER not in (dead.headers or {})  # dead-lettered on its first failure
    assert outcomes(app, "retried") == 0
    assert await members(client, refused) == {}


@pytest.mark.parametrize("rabbit", [{"retry_seconds": 30}], indirect=True)
async def test_a_temporary_failure_waits_in_the_retry_queue_while_the_next_message_is_applied(
    client: httpx.AsyncClient,
    consumers: EventConsumers,
    publish: Any,
    rabbit: RabbitSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = service.create_project
    waiting, valid = str(uuid.uuid4()), str(uuid.uuid4())

    async def down_for_one(session: Any, *, uuid: str, name: str) -> Any:
        if uuid == waiting:
            raise ConnectionRefusedError("database is down")
        return await real(session, uuid=uuid, name=name)

    monkeypatch.setattr(service, "create_project", down_for_one)
    await publish("project", project_message(waiting))
    await publish("project", project_message(valid))

    assert await eventually(lambda: members(client, valid), within=2)
    retry_queue = project_retry_queue(rabbit, 0)
    assert retry_queue == f"{rabbit.project_queue}.retry.30s"
    [copy] = await eventually(lambda: take_all(rabbit, retry_queue), within=2)
    assert json.loads(copy.body)["uuid"] == waiting
    headers = copy.headers or {}
    assert headers[RETRIES_HEADER] == 1
    assert headers["x-original-exchange"] == rabbit.project_exchange
    assert copy.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert await depth(rabbit, rabbit.project_queue) == 0
    assert await members(client, waiting) == {}


class OutcomeRecorder:
    """Consumers started on `sessionmaker`, recording every outcome."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []

    async def start(
        self, rabbit: RabbitSettings, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> EventConsumers:
        consumers = await start_consumers(
            rabbit, sessionmaker, on_handled=lambda _, outcome: self.outcomes.append(outcome)
        )
        await asyncio.wait_for(consumers.ready.wait(), 15)
        return consumers

    async def seen(self, outcome: str, times: int = 1) -> bool:
        return self.outcomes.count(outcome) >= times


@pytest.mark.parametrize("rabbit", [{"retry_seconds": 30}], indirect=True)
async def test_an_unreachable_database_sends_each_message_to_the_retry_queue_at_once(
    rabbit: RabbitSettings,
    unreachable_database: async_sessionmaker[AsyncSession],
    publish: Any,
) -> None:
    recorded = OutcomeRecorder()
    consumers = await recorded.start(rabbit, unreachable_database)
    try:
        projects = [str(uuid.uuid4()) for _ in range(3)]
        for project in projects:
            await publish("project", project_message(project))

        await eventually(lambda: recorded.seen("retried", 3), within=2)
        assert recorded.outcomes == ["retried"] * 3
        assert await depth(rabbit, rabbit.project_queue) == 0
        waiting = await take_all(rabbit, project_retry_queue(rabbit, 0))
        assert [json.loads(m.body)["uuid"] for m in waiting] == projects  # in their order
    finally:
        await consumers.close()


@pytest.mark.parametrize("rabbit", [{"retry_seconds": 0.3, "max_retries": 3}], indirect=True)
async def test_the_retry_count_survives_a_restart(
    rabbit: RabbitSettings,
    unreachable_database: async_sessionmaker[AsyncSession],
    publish: Any,
) -> None:
    before, after = OutcomeRecorder(), OutcomeRecorder()
    consumers = await before.start(rabbit, unreachable_database)
    try:
        await publish("project", project_message(str(uuid.uuid4())))
        await eventually(lambda: before.seen("retried"), within=2)
    finally:
        await consumers.close()
    consumers = await after.start(rabbit, unreachable_database)
    try:
        await eventually(lambda: after.seen("dead"), within=10)
    finally:
        await consumers.close()

    # One first attempt and three retries across both processes, not three more after the restart.
    assert before.outcomes + after.outcomes == ["retried"] * 3 + ["dead"]
    assert "retried" in after.outcomes
    [dead] = await dead_letters(rabbit, rabbit.project_queue)
    headers = dead.headers or {}
    assert headers[RETRIES_HEADER] == 3
    assert str(headers["x-death-reason"]).startswith("gave up after 3 retries: ")
    assert "ConnectionRefusedError" in str(headers["x-death-reason"])


@pytest.mark.parametrize("rabbit", [{"retry_seconds": 0.05, "max_retries": 3}], indirect=True)
async def test_a_message_near_its_last_retry_is_retried_once_more_then_dead_lettered(
    rabbit: RabbitSettings,
    unreachable_database: async_sessionmaker[AsyncSession],
    publish: Any,
) -> None:
    recorded = OutcomeRecorder()
    consumers = await recorded.start(rabbit, unreachable_database)
    try:
        headers = {RETRIES_HEADER: rabbit.max_retries - 1}  # as left by an earlier process
        await publish("project", project_message(str(uuid.uuid4())), headers)
        await eventually(lambda: recorded.seen("dead"), within=5)
    finally:
        await consumers.close()

    assert recorded.outcomes == ["retried", "dead"]
    [dead] = await dead_letters(rabbit, rabbit.project_queue)
    assert (dead.headers or {})[RETRIES_HEADER] == rabbit.max_retries


async def test_health_reports_the_consumers_connection(
    client: httpx.AsyncClient, consumers: EventConsumers
) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["services"]["rabbitmq"]["status"] == "healthy"


def _close_connection_on_broker(name: str) -> bool:
    """Close our consumers' connection from the broker's side, as a broker restart would."""
    listing = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "client_properties", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if listing.returncode != 0:
        return False
    for line in listing.stdout.splitlines():
        pid, _, properties = line.partition("\t")
        if f'"{name}"' in properties:
            subprocess.run(
                ["rabbitmqctl", "close_connection", pid, "test: broker restart"],
                capture_output=True,
                timeout=60,
                check=True,
            )
            return True
    return False


async def test_messages_published_while_the_connection_is_down_are_applied_after_reconnect(
    client: httpx.AsyncClient, consumers: EventConsumers, publish: Any
) -> None:
    closed = await asyncio.to_thread(_close_connection_on_broker, consumers.connection_name)
    need(closed, "rabbitmqctl cannot close connections here")
    project = str(uuid.uuid4())
    await publish(
        "permission", {"action": "create", "project": project, "user": "r@x.org", "role": 2}
    )

    assert await eventually(lambda: members(client, project), within=20) == {"r@x.org": 2}
    assert isinstance(consumers.connection, aio_pika.RobustConnection)
    assert consumers.connection.connection_attempt >= 2  # it really reconnected
    response = await eventually(lambda: _healthy(client), within=10)
    assert response["services"]["rabbitmq"]["status"] == "healthy"


async def _healthy(client: httpx.AsyncClient) -> dict[str, Any] | None:
    response = await client.get("/health")
    return response.json() if response.status_code == 200 else None


async def test_existing_queue_and_exchange_declared_otherwise_are_used_as_they_are(
    make_settings: Callable[..., Settings], rabbit: RabbitSettings
) -> None:
    connection = await aio_pika.connect(rabbit.url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(
            rabbit.permission_queue, durable=True, arguments={"x-max-length": 10000}
        )
        await channel.declare_exchange(
            rabbit.dead_letter_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
    app = create_app(make_settings(rabbitmq=rabbit))
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.parts[CONSUMERS].ready.wait(), 15)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            connection = await aio_pika.connect(rabbit.url)
            async with connection:
                channel = await connection.channel()
                exchange = await channel.get_exchange(rabbit.permission_exchange)
                project = str(uuid.uuid4())
                body = {"action": "create", "project": project, "user": "q@x.org", "role": 1}
                await exchange.publish(aio_pika.Message(b"{broken"), "k")
                await exchange.publish(aio_pika.Message(json.dumps(body).encode()), "k")
            assert await eventually(lambda: members(client, project)) == {"q@x.org": 1}
            dead = await dead_letters(rabbit, rabbit.permission_queue)
            assert [m.body for m in dead] == [b"{broken"]


async def test_a_bad_authorization_is_set_aside_and_the_rest_of_the_project_applied(
    app: FastAPI,
    client: httpx.AsyncClient,
    consumers: EventConsumers,
    publish: Any,
    rabbit: RabbitSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    project = str(uuid.uuid4())
    bad: list[Any] = [
        {"user_email": "", "role": 1},
        {"user_email": "typed@x.org", "role": "3"},
        {"user_email": "huge@x.org", "role": 2**31},
        {"role": 2},
        "not an object",
    ]
    authorizations = [{"user_email": "owner@x.org", "role": 3}, *bad]
    authorizations.append({"user_email": "viewer@x.org", "role": 1})
    await publish("project", project_message(project, authorizations=authorizations))

    assert await eventually(lambda: members(client, project)) == {
        "owner@x.org": 3,
        "viewer@x.org": 1,
    }
    assert (await client.get(f"/projects/{project}", headers=ADMIN)).status_code == 200
    parts = await eventually(lambda: dead_letters(rabbit, rabbit.project_queue))
    # Each bad item alone, in a project event of its own, with why.
    assert [json.loads(m.body) for m in parts] == [
        {"uuid": project, "name": "Acme", "authorizations": [item]} for item in bad
    ]
    reasons = [str((m.headers or {}).get("x-death-reason")) for m in parts]
    assert reasons[0].startswith("authorizations.1: ") and "email" in reasons[0], reasons
    assert reasons[1].startswith("authorizations.2: role: "), reasons
    assert outcomes(app, "partial") == 1 and outcomes(app, "dead") == 0
    logged = [r for r in caplog.records if "set aside" in r.getMessage()]
    assert len(logged) == len(bad)
    assert {getattr(r, "project_uuid", None) for r in logged} == {project}
    assert getattr(logged[1], "user_email", None) == "typed@x.org"

    # Fixed, a set-aside part is a project event that applies as such.
    fixed = json.loads(parts[1].body)
    fixed["authorizations"][0]["role"] = 3
    await publish("project", fixed)
    assert (await eventually(lambda: members_with(client, project, "typed@x.org")))[
        "typed@x.org"
    ] == 3


async def members_with(client: httpx.AsyncClient, project: str, email: str) -> dict[str, int]:
    now = await members(client, project)
    return now if email in now else {}


async def test_roles_outside_1_to_3_are_stored_as_given_and_read_as_the_original_did(
    app: FastAPI, client: httpx.AsyncClient, consumers: EventConsumers, publish: Any
) -> None:
    project = str(uuid.uuid4())
    roles = {"four@x.org": 4, "five@x.org": 5, "zero@x.org": 0, "minus@x.org": -1}
    authorizations = [{"user_email": email, "role": role} for email, role in roles.items()]
    await publish("project", project_message(project, authorizations=authorizations))
    await publish(
        "permission", {"action": "update", "project": project, "user": "two@x.org", "role": 7}
    )
    await publish(
        "permission", {"action": "update", "project": project, "user": "two@x.org", "role": 2}
    )
    await publish(
        "permission", {"action": "create", "project": project, "user": "neg@x.org", "role": -3}
    )
    expected = {**roles, "two@x.org": 2, "neg@x.org": -3}
    assert await eventually(lambda: members_with(client, project, "neg@x.org")) == expected

    # The original: read if role >= 1, write if role >= 3. Here 3 and above are Moderators
    # (they manage members), 0 and below are answered as non-members.
    app.state.parts[VERIFIER].on = True
    manage = f"/projects/{project}/permissions/new@x.org"
    for email in ("four@x.org", "five@x.org"):
        response = await client.put(manage, json={"role": 1}, headers=as_user(email))
        assert response.status_code == 200, (email, response.text)
    response = await client.put(manage, json={"role": 1}, headers=as_user("two@x.org"))
    assert response.status_code == 403
    for email in ("zero@x.org", "minus@x.org", "neg@x.org"):
        response = await client.get(f"/projects/{project}/permissions", headers=as_user(email))
        assert response.status_code == 404, (email, response.text)
