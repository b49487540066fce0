"""The exchanges, queues and bindings of each consumer, declared at connect or found there."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel

from codeactions.config import RabbitSettings
from codeactions.projects.consumers.failures import retry_delay_ms
from codeactions.projects.consumers.handlers import (
    Apply,
    apply_permission_changed,
    apply_project_created,
)

# One logger for every module of the consumers, named as before they were split.
log = logging.getLogger("codeactions.projects.consumers")


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


async def declare_topology(settings: RabbitSettings, specs: list[ConsumerSpec]) -> Topology:
    """Declare every exchange, queue and binding on a scratch connection. What exists with
    other arguments is used as it is; what the broker user may not declare (ACCESS_REFUSED:
    no configure permission, the ops team owns the topology) is looked up passively."""
    # (name, exchange type or None for a queue, queue arguments)
    dlx = settings.dead_letter_exchange
    names: list[tuple[str, ExchangeType | None, dict[str, Any] | None]] = [
        (dlx, ExchangeType.DIRECT, None)
    ]
    bindings: list[tuple[str, str, str]] = []  # queue, exchange, routing key
    for spec in specs:
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
    async with await aio_pika.connect(settings.url) as connection:
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


def warn_refused(settings: RabbitSettings, specs: list[ConsumerSpec], topology: Topology) -> None:
    """Say what the broker user may not declare and what follows from it."""
    missing = sorted(
        {
            name
            for spec in specs
            for name in (
                spec.exchange,
                settings.dead_letter_exchange,
                spec.dead_queue,
                *spec.retry_queues,
            )
            if not topology.has(name)
        }
    )
    effects = []
    if any(not topology.has(name) for spec in specs for name in spec.retry_queues):
        effects.append("a message failing for a passing reason is held, then requeued")
    if any(not topology.has(spec.dead_queue) for spec in specs):
        effects.append("a message that cannot be applied is logged in full and dropped")
    log.warning(
        "rabbitmq user may not declare exchanges, queues or bindings (ACCESS_REFUSED): "
        "using those that exist%s%s",
        f"; missing: {', '.join(missing)}" if missing else "",
        f"; so {' and '.join(effects)}" if effects else "",
        extra={"refused": topology.refused, "missing": missing},
    )
