"""The dispatch's connection to RabbitMQ: tried until it works (or its process stops), then kept
by aio-pika, which reconnects and declares again what was declared."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

log = logging.getLogger(__name__)


class Broker:
    """One robust connection and its channel; `error` says why there is none yet ("" once
    connected)."""

    def __init__(self, url: str, *, name: str, retry_seconds: float) -> None:
        self.url = url
        self.name = name  # shown by the broker's tools: which process holds the connection
        self.retry_seconds = retry_seconds
        self.error = "connecting to RabbitMQ"
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None

    async def connect(
        self,
        setup: Callable[[AbstractChannel], Awaitable[None]],
        *,
        stop: asyncio.Event | None = None,
        **channel_options: Any,
    ) -> bool:
        """Connect, open a channel and `setup` what is consumed on it; on failure wait
        `retry_seconds` and try again. False when `stop` was set first."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                connection = await aio_pika.connect_robust(
                    self.url, client_properties={"connection_name": self.name}
                )
                channel = await connection.channel(**channel_options)
                await setup(channel)
            except Exception as exc:
                self.error = f"RabbitMQ unreachable: {type(exc).__name__}: {exc}"[:300]
                log.warning("%s: %s; retrying in %g s", self.name, self.error, self.retry_seconds)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.retry_seconds):
                        await stop.wait()
                continue
            self.connection, self.channel, self.error = connection, channel, ""
            return True
        return False

    @property
    def connected(self) -> bool:
        connection = self.connection
        return connection is not None and connection.connected.is_set() and not self.error

    async def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await self.connection.close()
