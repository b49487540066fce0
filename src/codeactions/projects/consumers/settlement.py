"""Settling a delivered message: acked once applied, else dead-lettered, retried later or held."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.config import RabbitSettings
from codeactions.errors import BadRequest
from codeactions.projects.consumers.failures import (
    REASON_HEADER,
    RETRIES_HEADER,
    describe,
    is_temporary,
    retry_count,
    retry_delay_ms,
)
from codeactions.projects.consumers.messages import InvalidMessage
from codeactions.projects.consumers.topology import ConsumerSpec, Topology

# One logger for every module of the consumers, named as before they were split.
log = logging.getLogger("codeactions.projects.consumers")

LOGGED_BODY_CHARS = 16 * 1024  # of a message dropped for want of a dead-letter queue


class MessageSettler:
    """Applies each message a consumer receives and settles it. What it needs of the connection
    (the channel, the topology found, where dead letters go) is set by `EventConsumers` at
    connect."""

    def __init__(
        self,
        settings: RabbitSettings,
        sessionmaker: async_sessionmaker[AsyncSession],
        on_handled: Callable[[str, str], None],
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.on_handled = on_handled
        self.channel: AbstractChannel | None = None
        self.topology = Topology()
        # Where each consumer's dead letters go: (exchange, routing key), None without a queue.
        self.dead_routes: dict[str, tuple[AbstractExchange, str] | None] = {}
        # Failures in a row given back to the queue for want of a delay queue (see _hold).
        self.held_retries: dict[str, int] = {}

    async def settle(self, spec: ConsumerSpec, message: AbstractIncomingMessage) -> None:
        """Apply the message and commit, then ack it; or dead-letter it, retry it later, hold it."""
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
            self.held_retries[spec.name] = 0
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
        route = self.dead_routes.get(spec.name)
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
        retries = retry_count(message.headers) + self.held_retries.get(spec.name, 0)
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
        assert self.channel is not None
        await self.channel.default_exchange.publish(
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
        self.held_retries[spec.name] = self.held_retries.get(spec.name, 0) + 1
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
