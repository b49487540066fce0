"""Events shared by every replica through Redis pub/sub: each replica publishes what happens in
it and hears everyone's through one pattern subscription, then hands events to its own listeners.

Publishing never waits on Redis: messages queue (bounded) and one task sends them in pipelines.
A replica's own events reach its own listeners at once, not through Redis, so they still arrive
when Redis is down; what other replicas miss meanwhile is missed (the run records, which clients
read when they reconnect, are the truth). Backlogs (a running run's lines so far) are Redis lists
that expire, so a follower connected to any replica can catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from codeactions.events.bus import (
    BACKLOG_GRACE_SECONDS,
    BACKLOG_MAX,
    DEFAULT_QUEUE_SIZE,
    Event,
    LocalHub,
    Subscription,
)

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "codeactions:events:"
BACKLOG_PREFIX = "codeactions:backlog:"
# A backlog's life while its run goes on (a run lasts 300 s at most; this covers a stuck one).
BACKLOG_TTL_SECONDS = 3600
# Messages waiting to be sent before new ones are dropped (Redis down or too slow).
OUTBOX_MAX = 10_000
PIPELINE_MAX = 500
RECONNECT_MAX_SECONDS = 5.0
LISTEN_WAIT_SECONDS = 1.0
WARNING_EVERY_SECONDS = 30.0


class RedisBus:
    def __init__(self, url: str) -> None:
        self._url = url
        self._redis: Redis[bytes] = Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=5.0
        )
        self.hub = LocalHub()
        self._replica = uuid.uuid4().hex
        self._outbox: asyncio.Queue[tuple[str, list[Event], bool] | tuple[str, None, bool]] = (
            asyncio.Queue(OUTBOX_MAX)
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = asyncio.Event()
        self._closing = False
        self._last_warning = -math.inf
        self.dropped = 0  # messages other replicas did not get (outbox full or Redis down)

    # --- publishing ---------------------------------------------------------------------

    def publish(self, channel: str, events: list[Event], *, keep: bool = False) -> None:
        if keep:
            self.hub.keep(channel, events)
        self.hub.dispatch(channel, events)
        try:
            self._outbox.put_nowait((channel, events, keep))
        except asyncio.QueueFull:
            self.dropped += 1
            self._warn("the Redis event outbox is full: events for other replicas dropped")

    def forget(self, channel: str) -> None:
        self.hub.forget(channel)
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait((channel, None, False))

    async def _send_loop(self) -> None:
        delay = 0.1
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < PIPELINE_MAX and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            try:
                await self._send(batch)
                delay = 0.1
            except (RedisError, OSError) as exc:
                self.dropped += len(batch)
                self._warn(f"publishing events to Redis failed: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _send(
        self, batch: list[tuple[str, list[Event], bool] | tuple[str, None, bool]]
    ) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for channel, events, keep in batch:
            backlog = BACKLOG_PREFIX + channel
            if events is None:
                pipe.expire(backlog, int(BACKLOG_GRACE_SECONDS))
                continue
            encoded = json.dumps(events, separators=(",", ":"))
            if keep:
                pipe.rpush(backlog, *(json.dumps(event, separators=(",", ":")) for event in events))
                pipe.ltrim(backlog, -BACKLOG_MAX, -1)
                pipe.expire(backlog, BACKLOG_TTL_SECONDS)
            pipe.publish(CHANNEL_PREFIX + channel, f'{{"r":"{self._replica}","e":{encoded}}}')
        await pipe.execute()

    # --- listening ----------------------------------------------------------------------

    def subscribe(self, channel: str, maxsize: int = DEFAULT_QUEUE_SIZE) -> Subscription:
        return self.hub.subscribe(channel, maxsize)

    async def backlog(self, channel: str) -> list[Event]:
        kept = self.hub.kept(channel)
        if kept is not None:  # the run is (or was just) running here: the freshest copy
            return kept
        try:
            raw = await self._redis.lrange(BACKLOG_PREFIX + channel, 0, -1)
        except (RedisError, OSError) as exc:
            self._warn(f"reading an event backlog from Redis failed: {exc}")
            return []
        return [json.loads(item) for item in raw]

    async def _listen_loop(self) -> None:
        delay = 0.1
        while not self._closing:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                self._listening.set()
                delay = 0.1
                # Short waits: a cancellation that lands as a wait times out can be lost (3.11's
                # asyncio.timeout), and the loop must then still see `_closing`.
                while not self._closing:
                    message = await pubsub.get_message(timeout=LISTEN_WAIT_SECONDS)
                    if message is not None and message.get("type") == "pmessage":
                        self._received(message["channel"], message["data"])
            except (RedisError, OSError) as exc:
                self._warn(f"listening to Redis events failed: {exc}")
            finally:
                self._listening.clear()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(LISTEN_WAIT_SECONDS):
                        await pubsub.aclose()  # type: ignore[attr-defined]
            if self._closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _received(self, raw_channel: bytes, data: bytes) -> None:
        channel = raw_channel.decode()[len(CHANNEL_PREFIX) :]
        if not self.hub.has_listeners(channel):
            return  # nobody here listens: not even parsed
        try:
            message: dict[str, Any] = json.loads(data)
        except ValueError:
            return
        if message.get("r") == self._replica:
            return  # ours: our listeners had it when it was published
        events = message.get("e")
        if isinstance(events, list):
            self.hub.dispatch(channel, events)

    # --- life ---------------------------------------------------------------------------

    def listeners(self) -> int:
        return self.hub.listeners()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="events-send"),
            asyncio.create_task(self._listen_loop(), name="events-listen"),
        ]
        # Subscribed before the service takes traffic, when Redis answers at all.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._listening.wait()

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=LISTEN_WAIT_SECONDS * 2)
        # What is still queued goes out, if Redis takes it quickly.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                while not self._outbox.empty():
                    batch = [self._outbox.get_nowait()]
                    while len(batch) < PIPELINE_MAX and not self._outbox.empty():
                        batch.append(self._outbox.get_nowait())
                    await self._send(batch)
        self.hub.close()
        await self._redis.aclose()  # type: ignore[attr-defined]

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARNING_EVERY_SECONDS:
            self._last_warning = now
            log.warning(message)
