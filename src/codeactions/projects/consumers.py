"""RabbitMQ consumers of project and permission events (the original's exchanges, queues, messages).

Differences from the original, on purpose:
- Exchanges and queues are declared (durable) when missing instead of being required.
- A message that can never be applied (not JSON, wrong types, unknown action, invalid role) is
  published to the dead-letter exchange, then acked: it leaves the queue once and stays
  inspectable in `<queue>.dead`. The original redelivered such messages forever. Publishing
  explicitly (instead of `x-dead-letter-exchange` on the queue) keeps queues created by the
  original usable: a queue cannot be re-declared with different arguments.
- A message that failed for a passing reason (database down) is re-queued after a growing
  delay, at most `rabbitmq.max_retries` times, then dead-lettered.
- Acks are manual, one message at a time, and only after the database commit, so a lost
  connection or a crash redelivers instead of losing; handlers are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import aio_pika
import aiormq
from aio_pika import ExchangeType
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.config import RabbitSettings
from codeactions.errors import BadRequest
from codeactions.projects import service

log = logging.getLogger(__name__)

RETRIES_HEADER = "x-codeactions-retries"
MAX_RETRY_DELAY = 60.0
DRAIN_SECONDS = 10.0  # how long close() lets a message being handled finish

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
RoleValue = Annotated[int, Field(ge=1, le=3)]


class InvalidMessage(Exception):
    """A message that can never be applied: it goes to the dead-letter queue."""


class _Message(BaseModel):
    # Strict like Go's json.Unmarshal: `"3"` is not a role, `1` is not a bool. Unknown fields
    # are ignored as Go does.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


M = TypeVar("M", bound=_Message)


class Authorization(_Message):
    user_email: Text
    role: RoleValue


class ProjectCreated(_Message):
    """`internal/eventdriven/events.go` ProjectCreationMessage; only uuid, name and
    authorizations are used, the other fields are type-checked as the original did."""

    uuid: Text
    name: Text
    is_template: bool | None = None
    user_email: str | None = None
    date_format: str | None = None
    template_type_uuid: str | None = None
    timezone: str | None = None
    organization_id: int | None = None
    extra_fields: Any = None
    authorizations: list[Authorization] | None = None
    description: str | None = None
    organization_uuid: str | None = None
    brain_on: bool | None = None


class PermissionChanged(_Message):
    action: Literal["create", "update", "delete"]
    project: Text
    user: Text
    role: int | None = None  # ignored for `delete`

    @model_validator(mode="after")
    def _role_for_writes(self) -> PermissionChanged:
        if self.action != "delete" and (self.role is None or not 1 <= self.role <= 3):
            raise ValueError("role must be 1 (viewer), 2 (contributor) or 3 (moderator)")
        return self


def parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidMessage(f"{where}: {first['msg']}" if where else first["msg"]) from exc


async def apply_project_created(session: AsyncSession, body: bytes) -> None:
    message = parse(ProjectCreated, body)
    await service.create_project(session, uuid=message.uuid, name=message.name)
    for authorization in message.authorizations or ():
        await service.add_permission(
            session,
            project_uuid=message.uuid,
            email=authorization.user_email,
            role=authorization.role,
        )


async def apply_permission_changed(session: AsyncSession, body: bytes) -> None:
    message = parse(PermissionChanged, body)
    if message.action == "create":
        assert message.role is not None
        await service.add_permission(
            session, project_uuid=message.project, email=message.user, role=message.role
        )
    elif message.action == "update":
        assert message.role is not None
        await service.grant_role(
            session, project_uuid=message.project, email=message.user, role=message.role
        )
    else:
        await service.revoke_role(session, project_uuid=message.project, email=message.user)


Apply = Callable[[AsyncSession, bytes], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    exchange: str
    queue: str
    apply: Apply

    @property
    def dead_queue(self) -> str:
        return f"{self.queue}.dead"


def consumer_specs(settings: RabbitSettings) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(
            "projects", settings.project_exchange, settings.project_queue, apply_project_created
        ),
        ConsumerSpec(
            "permissions",
            settings.permission_exchange,
            settings.permission_queue,
            apply_permission_changed,
        ),
    ]


class EventConsumers:
    """Both consumers on one robust connection, reconnecting by itself."""

    def __init__(
        self,
        settings: RabbitSettings,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        on_handled: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.specs = consumer_specs(settings)
        self.on_handled = on_handled or (lambda consumer, outcome: None)
        self.connection: AbstractRobustConnection | None = None
        self.ready = asyncio.Event()  # set once every consumer is consuming
        self._channel: AbstractChannel | None = None
        self._dlx: AbstractExchange | None = None
        self._consuming: list[tuple[AbstractQueue, str]] = []
        self._handling: set[asyncio.Task[Any]] = set()
        self._starter: asyncio.Task[None] | None = None
        self._closing = False
        self._last_error = "connecting"
        # Shown by the broker's tools: which process holds the connection.
        self.connection_name = (
            f"codeactions-consumers {socket.gethostname()} {os.getpid()} {id(self):x}"
        )

    async def start(self) -> None:
        """Connect in the background: the API serves (and /health reports) while RabbitMQ is down."""
        self._starter = asyncio.create_task(self._connect_until_ready(), name="rabbitmq-connect")

    def status(self) -> tuple[bool, str]:
        connection = self.connection
        if (
            self.ready.is_set()
            and connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
        ):
            return True, f"ok (consuming {', '.join(s.queue for s in self.specs)})"
        if self.ready.is_set():
            return False, "connection lost, reconnecting"
        return False, self._last_error

    async def _connect_until_ready(self) -> None:
        while not self._closing:
            try:
                await self._connect()
                self.ready.set()
                log.info(
                    "rabbitmq consumers started", extra={"queues": [s.queue for s in self.specs]}
                )
                return
            except Exception as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning(
                    "rabbitmq not ready, retrying in %ss: %s",
                    self.settings.reconnect_seconds,
                    self._last_error,
                )
                await self._drop_connection()
                await asyncio.sleep(self.settings.reconnect_seconds)

    async def _connect(self) -> None:
        self.connection = await aio_pika.connect_robust(
            self.settings.url,
            reconnect_interval=self.settings.reconnect_seconds,
            client_properties={"connection_name": self.connection_name},
        )
        declared = await self._declare_missing()
        channel = self._channel = self.connection.channel()
        await channel.initialize()
        await channel.set_qos(prefetch_count=1)  # one at a time: keeps the events' order
        dlx = self.settings.dead_letter_exchange
        self._dlx = await channel.declare_exchange(
            dlx, ExchangeType.DIRECT, durable=True, passive=dlx not in declared
        )
        for spec in self.specs:
            # Entities that already existed with other arguments are used as they are (passive).
            exchange = await channel.declare_exchange(
                spec.exchange,
                ExchangeType.TOPIC,
                durable=True,
                passive=spec.exchange not in declared,
            )
            queue = await channel.declare_queue(
                spec.queue, durable=True, passive=spec.queue not in declared
            )
            await queue.bind(exchange, "#")
            dead = await channel.declare_queue(
                spec.dead_queue, durable=True, passive=spec.dead_queue not in declared
            )
            await dead.bind(self._dlx, spec.queue)
            tag = await queue.consume(self._handler(spec), no_ack=False)
            self._consuming.append((queue, tag))

    async def _declare_missing(self) -> set[str]:
        """Declare every exchange and queue on a scratch channel; return the names whose active
        declaration succeeded. A name missing from the result exists with other arguments."""
        names: list[tuple[str, str]] = [(self.settings.dead_letter_exchange, "dlx")]
        for spec in self.specs:
            names += [
                (spec.exchange, "exchange"),
                (spec.queue, "queue"),
                (spec.dead_queue, "queue"),
            ]
        declared: set[str] = set()
        # A plain connection: a closed channel must not linger on the robust one.
        async with await aio_pika.connect(self.settings.url) as connection:
            channel = await connection.channel()
            for name, kind in names:
                try:
                    if kind == "queue":
                        await channel.declare_queue(name, durable=True)
                    else:
                        await channel.declare_exchange(
                            name,
                            ExchangeType.DIRECT if kind == "dlx" else ExchangeType.TOPIC,
                            durable=True,
                        )
                    declared.add(name)
                except aiormq.exceptions.ChannelPreconditionFailed as exc:
                    log.warning(
                        "rabbitmq %s %r exists with other arguments, used as is: %s",
                        kind,
                        name,
                        exc,
                    )
                    channel = await connection.channel()  # the failure closed the channel
        return declared

    def _handler(self, spec: ConsumerSpec) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def handle(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._handling.add(task)
            try:
                await self._handle(spec, message)
            except Exception as exc:
                # Mostly the connection dropping before the ack: the broker redelivers.
                log.warning(
                    "rabbitmq message left unacknowledged, it will be redelivered: %s: %s",
                    type(exc).__name__,
                    exc,
                    extra={"queue": spec.queue},
                )
            finally:
                if task is not None:
                    self._handling.discard(task)

        return handle

    async def _handle(self, spec: ConsumerSpec, message: AbstractIncomingMessage) -> None:
        try:
            async with self.sessionmaker() as session:
                await spec.apply(session, message.body)
                await session.commit()
        except (InvalidMessage, BadRequest) as exc:
            await self._dead_letter(spec, message, f"invalid message: {exc}")
            return
        except asyncio.CancelledError:
            raise  # shutting down: not acked, the broker redelivers it
        except Exception as exc:
            await self._retry(spec, message, exc)
            return
        await message.ack()
        self.on_handled(spec.name, "applied")

    async def _dead_letter(
        self, spec: ConsumerSpec, message: AbstractIncomingMessage, reason: str
    ) -> None:
        log.warning(
            "rabbitmq message dead-lettered",
            extra={"queue": spec.queue, "reason": reason[:500], "dead_queue": spec.dead_queue},
        )
        assert self._dlx is not None
        headers = dict(message.headers or {})
        headers.update(
            {
                "x-death-reason": reason[:1000],
                "x-original-exchange": message.exchange or "",
                "x-original-routing-key": message.routing_key or "",
                "x-original-queue": spec.queue,
            }
        )
        await self._dlx.publish(self._copy(message, headers), routing_key=spec.queue)
        await message.ack()  # only after the broker confirmed the dead-letter copy
        self.on_handled(spec.name, "dead")

    async def _retry(
        self, spec: ConsumerSpec, message: AbstractIncomingMessage, exc: Exception
    ) -> None:
        headers = dict(message.headers or {})
        retries = headers.get(RETRIES_HEADER, 0)
        retries = retries if isinstance(retries, int) else 0
        error = f"{type(exc).__name__}: {exc}"[:500]
        if retries >= self.settings.max_retries:
            await self._dead_letter(spec, message, f"gave up after {retries} retries: {error}")
            return
        delay = min(self.settings.retry_seconds * 2**retries, MAX_RETRY_DELAY)
        log.warning(
            "rabbitmq message failed, retrying",
            extra={"queue": spec.queue, "error": error, "retry": retries + 1, "delay": delay},
        )
        # Holding the message (prefetch 1) while waiting also pauses this consumer: the next
        # events would most likely fail for the same reason.
        await asyncio.sleep(delay)
        assert self._channel is not None
        headers[RETRIES_HEADER] = retries + 1
        await self._channel.default_exchange.publish(
            self._copy(message, headers), routing_key=spec.queue
        )
        await message.ack()
        self.on_handled(spec.name, "retried")

    @staticmethod
    def _copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
        return aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            message_id=message.message_id,
            timestamp=message.timestamp,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )

    async def close(self) -> None:
        """Stop taking messages, let the one being handled finish (bounded), then disconnect."""
        self._closing = True
        if self._starter is not None and not self._starter.done():
            self._starter.cancel()
            await asyncio.gather(self._starter, return_exceptions=True)
        for queue, tag in self._consuming:
            try:
                await asyncio.wait_for(queue.cancel(tag), 2)
            except Exception as exc:  # connection already gone: nothing more is delivered
                log.debug("rabbitmq consumer cancel failed: %s", exc)
        self._consuming.clear()
        if self._handling:
            _, pending = await asyncio.wait(set(self._handling), timeout=DRAIN_SECONDS)
            for task in pending:  # not acked: the broker redelivers it to the next consumer
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._drop_connection()
        log.info("rabbitmq consumers stopped")

    async def _drop_connection(self) -> None:
        connection, self.connection = self.connection, None
        self._consuming.clear()
        if connection is not None:
            try:
                await connection.close()
            except Exception as exc:
                log.debug("rabbitmq close failed: %s", exc)


async def start_consumers(
    settings: RabbitSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    on_handled: Callable[[str, str], None] | None = None,
) -> EventConsumers:
    consumers = EventConsumers(settings, sessionmaker, on_handled=on_handled)
    await consumers.start()
    return consumers
