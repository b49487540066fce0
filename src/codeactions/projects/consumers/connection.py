"""The consumers' connection: connect until ready, consume both queues, report, drain and close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika import ExchangeType
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.config import RabbitSettings
from codeactions.parts import Part
from codeactions.projects.consumers.settlement import MessageSettler
from codeactions.projects.consumers.topology import (
    ConsumerSpec,
    TopologyMissing,
    consumer_specs,
    declare_topology,
    warn_refused,
)

# One logger for every module of the consumers, named as before they were split.
log = logging.getLogger("codeactions.projects.consumers")

DRAIN_SECONDS = 10.0  # how long close() lets a message being handled finish


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
        self.settler = MessageSettler(settings, sessionmaker, self.on_handled)
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
        topology = self.settler.topology = await declare_topology(self.settings, self.specs)
        # The queues are needed; their exchanges only to bind them, which others may have done.
        missing = [spec.queue for spec in self.specs if not topology.has(spec.queue)]
        if missing:
            raise TopologyMissing(
                f"queue {', '.join(missing)} missing and the RabbitMQ user may not declare it "
                "(no configure permission): have it created, or grant the permission"
            )
        if topology.refused and not self._told_refused:  # said once
            self._told_refused = True
            warn_refused(self.settings, self.specs, topology)
        # Confirms: a dead-letter or retry copy is acked by the broker before the message is.
        # A copy no queue would take raises instead of vanishing.
        channel = self.settler.channel = self.connection.channel(
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
            self.settler.dead_routes[spec.name] = None
            if topology.has(spec.dead_queue):
                dead = await queue(spec.dead_queue)
                if dlx is not None and (spec.dead_queue, dlx_name) in topology.bound:
                    await dead.bind(dlx, spec.queue)
                    self.settler.dead_routes[spec.name] = (dlx, spec.queue)
                else:  # straight to the queue: a binding made by others is not known to us
                    self.settler.dead_routes[spec.name] = (
                        channel.default_exchange,
                        spec.dead_queue,
                    )
            for name, arguments in spec.retry_queues.items():
                if topology.has(name):
                    await queue(name, arguments)
            tag = await events.consume(self._handler(spec), no_ack=False)
            self._consuming.append((events, tag))

    def _handler(self, spec: ConsumerSpec) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def handle(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._handling.add(task)
            try:
                await self.settler.settle(spec, message)
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


# None without RabbitMQ.
CONSUMERS: Part[EventConsumers | None] = Part("consumers")
