"""RabbitMQ consumers of project and permission events (the original's exchanges, queues, messages).

Roles are stored as given, as the original did (any 32-bit integer; the API's 1 to 3 is not
imposed on events): 3 and above act as Moderator, 0 and below grant nothing.

Differences from the original, on purpose:
- Exchanges and queues are declared (durable) when missing instead of being required. A broker
  user without configure permission (ACCESS_REFUSED) uses what exists, looked up passively: the
  events' queues must exist then (else the consumers wait and /health says why).
  Without the delay queues, a message failing for a passing reason is held for the delay, then
  requeued (the queue waits meanwhile); without the dead-letter queue, a message that cannot be
  applied is logged in full and dropped. Both said once at connect.
- One bad authorization in a project event does not drop the event: the project and the other
  members are applied, the bad item is logged and dead-lettered alone, as a project event holding
  only that item (fixed, it can be published again).
- A failed message never holds the queue. `is_temporary` sorts each failure:
  - permanent, it would fail again the same way (not JSON, wrong types, unknown action, a role
    beyond 32 bits, or values the database refuses: a NUL byte, a constraint): on the first
    failure the message is published to the dead-letter exchange, then acked. It stays in
    `<queue>.dead`, the reason in its `x-death-reason` header. The original redelivered such
    messages forever.
  - temporary (database unreachable, disconnected, locked, starting up, a timeout; and errors not
    recognised): a copy with `x-codeactions-retries` incremented goes to the delay queue
    `<queue>.retry.<delay>s`, then the message is acked and the next one handled at once. The delay
    queue has no consumer: its `x-message-ttl` expires the copy and its dead-letter arguments send
    it back to `<queue>` through the default exchange. The delay is `rabbitmq.retry_seconds`,
    doubled each retry, at most 60 s; one delay queue per delay, as the broker expires messages
    only at a queue's head. After `rabbitmq.max_retries` retries the message is dead-lettered.
    The defaults (20 retries) ride out about 16 minutes of database outage.
  The retry count travels in the message header, so a restart neither resets nor loses it.
- Publishing dead letters and retries explicitly (instead of `x-dead-letter-exchange` on the
  queue) keeps queues created by the original usable: a queue cannot be re-declared with different
  arguments.
- Acks are manual, one message at a time, and only after the database commit or the broker's
  confirm of the dead-letter or retry copy, so a lost connection or a crash redelivers instead of
  losing; handlers are idempotent. A message retried later is applied after the events that came
  behind it: order holds among the messages that succeed on their first attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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
from codeactions.db import errors as db_errors
from codeactions.errors import BadRequest
from codeactions.projects import service

log = logging.getLogger(__name__)

RETRIES_HEADER = "x-codeactions-retries"
REASON_HEADER = "x-death-reason"
MAX_RETRY_DELAY = 60.0
DRAIN_SECONDS = 10.0  # how long close() lets a message being handled finish

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
# Stored as given, as the original did: 3 and above act as Moderator, 0 and below grant nothing.
RoleValue = Annotated[int, Field(ge=service.STORED_ROLES[0], le=service.STORED_ROLES[1])]
LOGGED_BODY_CHARS = 16 * 1024  # of a message dropped for want of a dead-letter queue


class InvalidMessage(Exception):
    """A message that can never be applied: it goes to the dead-letter queue."""


def is_temporary(exc: BaseException) -> bool:
    """Whether applying the message again later may succeed: never for an invalid message."""
    if isinstance(exc, InvalidMessage | BadRequest):
        return False
    return db_errors.is_temporary(exc)


def describe(exc: BaseException) -> str:
    """`Type: message` of the error and, when it wraps one, of its root cause (SQLAlchemy's own
    message would carry the statement and the message's values)."""
    root = db_errors.causes(exc)[-1]
    if type(root).__name__ == type(exc).__name__:
        return f"{type(exc).__name__}: {root}"[:500]
    return f"{type(exc).__name__} ({type(root).__name__}: {root})"[:500]


def retry_count(headers: dict[str, Any] | None) -> int:
    """Retries already done, from the message's header (0 when missing or not a count)."""
    value: object = (headers or {}).get(RETRIES_HEADER)
    if isinstance(value, bytes | str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return max(value, 0)
    return 0


def retry_delay_ms(settings: RabbitSettings, retries: int) -> int:
    """Wait before retry number `retries + 1`: `retry_seconds` doubled each retry, at most
    `MAX_RETRY_DELAY`."""
    seconds = min(settings.retry_seconds * 2.0 ** min(retries, 32), MAX_RETRY_DELAY)
    return max(1, round(seconds * 1000))


class _Message(BaseModel):
    # Strict like Go's json.Unmarshal: `"3"` is not a role, `1` is not a bool. Unknown fields
    # are ignored as Go does.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


M = TypeVar("M", bound=_Message)


class Authorization(_Message):
    user_email: Text
    role: RoleValue  # required: a member without a role is a broken item, not role 0


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
    # Each item is checked on its own: a bad one is set aside, the others are applied.
    authorizations: list[Any] | None = None
    description: str | None = None
    organization_uuid: str | None = None
    brain_on: bool | None = None


class PermissionChanged(_Message):
    action: Literal["create", "update", "delete"]
    project: Text
    user: Text
    role: RoleValue | None = None  # ignored for `delete`

    @model_validator(mode="after")
    def _role_for_writes(self) -> PermissionChanged:
        if self.action != "delete" and self.role is None:
            raise ValueError("role is required to create or update a permission")
        return self


def _first_error(exc: ValidationError) -> str:
    """Where and what, never the offending value (it may be anything the publisher sent)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first['msg']}" if where else first["msg"]


def parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidMessage(_first_error(exc)) from exc


@dataclass(frozen=True)
class SetAside:
    """A part of a message that could not be applied while the rest was: it is dead-lettered
    alone, as a message of the same kind holding only that part."""

    body: bytes
    reason: str
    context: dict[str, Any]  # for the log: which project, which item (known fields only)


async def apply_project_created(session: AsyncSession, body: bytes) -> list[SetAside]:
    message = parse(ProjectCreated, body)
    await service.create_project(session, uuid=message.uuid, name=message.name)
    set_aside = []
    for index, item in enumerate(message.authorizations or ()):
        try:
            authorization = Authorization.model_validate(item)
            await service.add_permission(
                session,
                project_uuid=message.uuid,
                email=authorization.user_email,
                role=authorization.role,
                role_as_given=True,
            )
        except (ValidationError, BadRequest) as exc:
            what = _first_error(exc) if isinstance(exc, ValidationError) else str(exc)
            set_aside.append(_authorization_set_aside(message, index, item, what))
    return set_aside


def _authorization_set_aside(
    message: ProjectCreated, index: int, item: object, what: str
) -> SetAside:
    part = {"uuid": message.uuid, "name": message.name, "authorizations": [item]}
    context: dict[str, Any] = {"project_uuid": message.uuid, "authorization": index}
    if isinstance(item, dict):
        context.update({k: str(item[k])[:100] for k in ("user_email", "role") if k in item})
    return SetAside(json.dumps(part).encode(), f"authorizations.{index}: {what}", context)


async def apply_permission_changed(session: AsyncSession, body: bytes) -> list[SetAside]:
    message = parse(PermissionChanged, body)
    if message.action == "create":
        assert message.role is not None
        await service.add_permission(
            session,
            project_uuid=message.project,
            email=message.user,
            role=message.role,
            role_as_given=True,
        )
    elif message.action == "update":
        assert message.role is not None
        await service.grant_role(
            session,
            project_uuid=message.project,
            email=message.user,
            role=message.role,
            role_as_given=True,
        )
    else:
        await service.revoke_role(session, project_uuid=message.project, email=message.user)
    return []


# Applies a message in the session (the caller commits); returns the parts set aside.
Apply = Callable[[AsyncSession, bytes], Awaitable[list[SetAside]]]


@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    exchange: str
    queue: str
    apply: Apply
    retry_delays_ms: tuple[int, ...] = ()

    @property
    def dead_queue(self) -> str:
        return f"{self.queue}.dead"

    def retry_queue(self, delay_ms: int) -> str:
        return f"{self.queue}.retry.{delay_ms / 1000:g}s"

    @property
    def retry_queues(self) -> dict[str, dict[str, Any]]:
        """The delay queues by name, with their arguments. The delay is in the name, so a queue
        is never re-declared with another TTL; one left by an older setting drains by itself."""
        return {
            self.retry_queue(delay_ms): {
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.queue,
            }
            for delay_ms in self.retry_delays_ms
        }


def consumer_specs(settings: RabbitSettings) -> list[ConsumerSpec]:
    delays = tuple(sorted({retry_delay_ms(settings, n) for n in range(settings.max_retries)}))
    return [
        ConsumerSpec(
            "projects",
            settings.project_exchange,
            settings.project_queue,
            apply_project_created,
            delays,
        ),
        ConsumerSpec(
            "permissions",
            settings.permission_exchange,
            settings.permission_queue,
            apply_permission_changed,
            delays,
        ),
    ]


async def _declare(
    channel: AbstractChannel,
    name: str,
    exchange_type: ExchangeType | None,
    arguments: dict[str, Any] | None,
    *,
    passive: bool,
) -> None:
    """Declare a durable exchange (of `exchange_type`) or queue (`exchange_type` None)."""
    if exchange_type is None:
        await channel.declare_queue(name, durable=True, arguments=arguments, passive=passive)
    else:
        await channel.declare_exchange(name, exchange_type, durable=True, passive=passive)


class TopologyMissing(Exception):
    """A queue the consumers read is missing, and the broker user may not declare it."""


@dataclass
class Topology:
    """The exchanges, queues and bindings found at connect. `declared`: declared by us;
    `existing`: there already and used passively (the broker user may not configure them, or
    they have other arguments). A name in neither is missing."""

    declared: set[str] = field(default_factory=set)
    existing: set[str] = field(default_factory=set)
    bound: set[tuple[str, str]] = field(default_factory=set)  # (queue, exchange) bound by us
    refused: list[str] = field(default_factory=list)  # what the broker user may not declare

    def has(self, name: str) -> bool:
        return name in self.declared or name in self.existing


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
        self.topology = Topology()
        # Where each consumer's dead letters go: (exchange, routing key), None without a queue.
        self._dead_routes: dict[str, tuple[AbstractExchange, str] | None] = {}
        # Failures in a row given back to the queue for want of a delay queue (see _hold).
        self._held_retries: dict[str, int] = {}
        self._told_refused = False
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
        topology = self.topology = await self._declare_topology()
        # The queues are needed; their exchanges only to bind them, which others may have done.
        missing = [spec.queue for spec in self.specs if not topology.has(spec.queue)]
        if missing:
            raise TopologyMissing(
                f"queue {', '.join(missing)} missing and the RabbitMQ user may not declare it "
                "(no configure permission): have it created, or grant the permission"
            )
        self._tell_refused(topology)
        # Confirms: a dead-letter or retry copy is acked by the broker before the message is.
        # A copy no queue would take raises instead of vanishing.
        channel = self._channel = self.connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        await channel.initialize()
        await channel.set_qos(prefetch_count=1)  # one at a time: keeps the events' order

        # On this robust channel, what exists is declared again (actively only if we declared
        # it) and what we bound is bound again, so a reconnect restores it: missing entities are
        # left out, as a passive declaration of them would close the channel.
        async def exchange(name: str, kind: ExchangeType) -> AbstractExchange:
            passive = name not in topology.declared
            return await channel.declare_exchange(name, kind, durable=True, passive=passive)

        async def queue(name: str, arguments: dict[str, Any] | None = None) -> AbstractQueue:
            passive = name not in topology.declared
            return await channel.declare_queue(
                name, durable=True, arguments=arguments, passive=passive
            )

        dlx_name = self.settings.dead_letter_exchange
        dlx = await exchange(dlx_name, ExchangeType.DIRECT) if topology.has(dlx_name) else None
        for spec in self.specs:
            events = await queue(spec.queue)
            if (spec.queue, spec.exchange) in topology.bound:
                await events.bind(await exchange(spec.exchange, ExchangeType.TOPIC), "#")
            self._dead_routes[spec.name] = None
            if topology.has(spec.dead_queue):
                dead = await queue(spec.dead_queue)
                if dlx is not None and (spec.dead_queue, dlx_name) in topology.bound:
                    await dead.bind(dlx, spec.queue)
                    self._dead_routes[spec.name] = (dlx, spec.queue)
                else:  # straight to the queue: a binding made by others is not known to us
                    self._dead_routes[spec.name] = (channel.default_exchange, spec.dead_queue)
            for name, arguments in spec.retry_queues.items():
                if topology.has(name):
                    await queue(name, arguments)
            tag = await events.consume(self._handler(spec), no_ack=False)
            self._consuming.append((events, tag))

    async def _declare_topology(self) -> Topology:
        """Declare every exchange, queue and binding on a scratch connection. What exists with
        other arguments is used as it is; what the broker user may not declare (ACCESS_REFUSED:
        no configure permission, the ops team owns the topology) is looked up passively."""
        # (name, exchange type or None for a queue, queue arguments)
        dlx = self.settings.dead_letter_exchange
        names: list[tuple[str, ExchangeType | None, dict[str, Any] | None]] = [
            (dlx, ExchangeType.DIRECT, None)
        ]
        bindings: list[tuple[str, str, str]] = []  # queue, exchange, routing key
        for spec in self.specs:
            names += [
                (spec.exchange, ExchangeType.TOPIC, None),
                (spec.queue, None, None),
                (spec.dead_queue, None, None),
            ]
            names += [(name, None, arguments) for name, arguments in spec.retry_queues.items()]
            bindings += [(spec.queue, spec.exchange, "#"), (spec.dead_queue, dlx, spec.queue)]
        topology = Topology()
        # A plain connection: a closed channel must not linger on the robust one. Every
        # refusal closes the channel, hence a new one after each.
        async with await aio_pika.connect(self.settings.url) as connection:
            channel = await connection.channel()
            for name, exchange_type, arguments in names:
                kind = "queue" if exchange_type is None else "exchange"
                try:
                    await _declare(channel, name, exchange_type, arguments, passive=False)
                    topology.declared.add(name)
                    continue
                except aiormq.exceptions.ChannelPreconditionFailed as exc:
                    log.warning(
                        "rabbitmq %s %r exists with other arguments, used as is: %s",
                        kind,
                        name,
                        exc,
                    )
                    topology.existing.add(name)
                    channel = await connection.channel()
                    continue
                except aiormq.exceptions.ChannelAccessRefused:
                    topology.refused.append(f"{kind} {name}")
                    channel = await connection.channel()
                try:
                    await _declare(channel, name, exchange_type, arguments, passive=True)
                    topology.existing.add(name)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    channel = await connection.channel()
            for queue_name, exchange_name, key in bindings:
                if not (topology.has(queue_name) and topology.has(exchange_name)):
                    continue
                try:
                    queue = await channel.get_queue(queue_name, ensure=False)
                    await queue.bind(exchange_name, key)
                    topology.bound.add((queue_name, exchange_name))
                except aiormq.exceptions.ChannelAccessRefused:
                    topology.refused.append(f"binding of {queue_name} to {exchange_name}")
                    channel = await connection.channel()
        return topology

    def _tell_refused(self, topology: Topology) -> None:
        """Say once what the broker user may not declare and what follows from it."""
        if not topology.refused or self._told_refused:
            return
        self._told_refused = True
        missing = sorted(
            {
                name
                for spec in self.specs
                for name in (
                    spec.exchange,
                    self.settings.dead_letter_exchange,
                    spec.dead_queue,
                    *spec.retry_queues,
                )
                if not topology.has(name)
            }
        )
        effects = []
        if any(not topology.has(name) for spec in self.specs for name in spec.retry_queues):
            effects.append("a message failing for a passing reason is held, then requeued")
        if any(not topology.has(spec.dead_queue) for spec in self.specs):
            effects.append("a message that cannot be applied is logged in full and dropped")
        log.warning(
            "rabbitmq user may not declare exchanges, queues or bindings (ACCESS_REFUSED): "
            "using those that exist%s%s",
            f"; missing: {', '.join(missing)}" if missing else "",
            f"; so {' and '.join(effects)}" if effects else "",
            extra={"refused": topology.refused, "missing": missing},
        )

    def _handler(self, spec: ConsumerSpec) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def handle(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._handling.add(task)
            try:
                await self._handle(spec, message)
            except Exception as exc:
                # The connection dropped before the ack, or the broker refused the dead-letter or
                # retry copy. Given back after a pause, so a broker refusing every copy is not
                # hammered; on a lost channel the nack fails and the broker redelivers anyway.
                log.warning(
                    "rabbitmq message not settled, it will be redelivered: %s: %s",
                    type(exc).__name__,
                    exc,
                    extra={"queue": spec.queue},
                )
                await asyncio.sleep(self.settings.reconnect_seconds)
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
            finally:
                if task is not None:
                    self._handling.discard(task)

        return handle

    async def _handle(self, spec: ConsumerSpec, message: AbstractIncomingMessage) -> None:
        # Cancellation (shutting down) is not an Exception: the message stays unacked and the
        # broker redelivers it.
        try:
            async with self.sessionmaker() as session:
                set_aside = await spec.apply(session, message.body)
                await session.commit()
        except (InvalidMessage, BadRequest) as exc:
            await self._dead_letter(spec, message, f"invalid message: {exc}")
            return
        except Exception as exc:
            if is_temporary(exc):
                await self._retry_later(spec, message, describe(exc))
            else:
                await self._dead_letter(spec, message, f"permanent error: {describe(exc)}")
            return
        for part in set_aside:
            log.warning(
                "rabbitmq message applied without a part of it, set aside",
                extra={"queue": spec.queue, "reason": part.reason[:500], **part.context},
            )
            await self._publish_dead(spec, message, part.reason, body=part.body)
        await message.ack()  # after the set-aside parts' copies: a crash applies it again
        self._settled(spec, "partial" if set_aside else "applied")

    def _settled(self, spec: ConsumerSpec, outcome: str) -> None:
        if outcome != "requeued":
            self._held_retries[spec.name] = 0
        self.on_handled(spec.name, outcome)

    async def _dead_letter(
        self, spec: ConsumerSpec, message: AbstractIncomingMessage, reason: str
    ) -> None:
        log.warning(
            "rabbitmq message dead-lettered",
            extra={"queue": spec.queue, "reason": reason[:500], "dead_queue": spec.dead_queue},
        )
        kept = await self._publish_dead(spec, message, reason)
        await message.ack()  # only after the broker confirmed the dead-letter copy
        self._settled(spec, "dead" if kept else "dropped")

    async def _publish_dead(
        self,
        spec: ConsumerSpec,
        message: AbstractIncomingMessage,
        reason: str,
        *,
        body: bytes | None = None,
    ) -> bool:
        """Put a copy of the message (or `body` in its place) in the dead-letter queue; without
        one (the broker user could not declare it), log it in full instead. True when queued."""
        body = message.body if body is None else body
        route = self._dead_routes.get(spec.name)
        if route is None:
            log.error(
                "rabbitmq message dropped: no dead-letter queue %s to keep it",
                spec.dead_queue,
                extra={
                    "queue": spec.queue,
                    "reason": reason[:500],
                    "body": body[:LOGGED_BODY_CHARS].decode("utf-8", "replace"),
                    "body_bytes": len(body),
                },
            )
            return False
        exchange, routing_key = route
        headers = self._headers(spec, message)
        headers[REASON_HEADER] = reason[:1000]
        await exchange.publish(self._copy(message, headers, body), routing_key=routing_key)
        return True

    async def _retry_later(
        self, spec: ConsumerSpec, message: AbstractIncomingMessage, error: str
    ) -> None:
        retries = retry_count(message.headers) + self._held_retries.get(spec.name, 0)
        if retries >= self.settings.max_retries:
            await self._dead_letter(spec, message, f"gave up after {retries} retries: {error}")
            return
        delay_ms = retry_delay_ms(self.settings, retries)
        retry_queue = spec.retry_queue(delay_ms)
        if not self.topology.has(retry_queue):
            await self._hold(spec, message, error, retries, delay_ms)
            return
        log.warning(
            "rabbitmq message failed, retrying later",
            extra={
                "queue": spec.queue,
                "error": error,
                "retry": retries + 1,
                "delay": delay_ms / 1000,
                "retry_queue": retry_queue,
            },
        )
        headers = self._headers(spec, message)
        headers[RETRIES_HEADER] = retries + 1
        assert self._channel is not None
        await self._channel.default_exchange.publish(
            self._copy(message, headers), routing_key=retry_queue
        )
        await message.ack()  # only after the broker confirmed the copy
        self._settled(spec, "retried")

    async def _hold(
        self,
        spec: ConsumerSpec,
        message: AbstractIncomingMessage,
        error: str,
        retries: int,
        delay_ms: int,
    ) -> None:
        """Without the delay queue: keep the message for the delay, then give it back to its
        queue. Nothing is lost, but the queue waits meanwhile (its next message would most likely
        fail the same way). A requeued message keeps its headers, so the retries are counted
        here: this consumer's failures in a row. A shutdown meanwhile leaves it unacked, and the
        broker redelivers it."""
        log.warning(
            "rabbitmq message failed, requeued after a pause (no delay queue)",
            extra={
                "queue": spec.queue,
                "error": error,
                "retry": retries + 1,
                "delay": delay_ms / 1000,
            },
        )
        await asyncio.sleep(delay_ms / 1000)
        await message.nack(requeue=True)
        self._held_retries[spec.name] = self._held_retries.get(spec.name, 0) + 1
        self._settled(spec, "requeued")

    @staticmethod
    def _headers(spec: ConsumerSpec, message: AbstractIncomingMessage) -> dict[str, Any]:
        """The message's headers plus where it first came from (a retried message comes back
        through the default exchange)."""
        headers = dict(message.headers or {})
        headers.setdefault("x-original-exchange", message.exchange or "")
        headers.setdefault("x-original-routing-key", message.routing_key or "")
        headers.setdefault("x-original-queue", spec.queue)
        return headers

    @staticmethod
    def _copy(
        message: AbstractIncomingMessage, headers: dict[str, Any], body: bytes | None = None
    ) -> aio_pika.Message:
        # Every property but `expiration` (the copy's wait is the delay queue's) and `user_id`
        # (the broker refuses one other than our connection's user). Persistent: a retry must
        # survive a broker restart.
        return aio_pika.Message(
            message.body if body is None else body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            priority=message.priority,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=message.type,
            app_id=message.app_id,
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
