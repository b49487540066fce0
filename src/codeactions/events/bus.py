"""The event bus every replica talks to, the bounded subscription a listener reads from, and the
in-process bus (one replica, no Redis)."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterable
from typing import Annotated, Any, Protocol

from fastapi import Depends

from codeactions.parts import Part, part

log = logging.getLogger(__name__)

Event = dict[str, Any]

# Events a listener may have waiting before it counts as fallen behind (`Lagged`).
DEFAULT_QUEUE_SIZE = 1000
# Events of a channel kept for listeners that join late (a run's log lines so far).
BACKLOG_MAX = 10_000
# How long a channel's backlog outlives `forget` (a follower arriving just as the run ends).
BACKLOG_GRACE_SECONDS = 60.0


class Lagged(Exception):
    """The listener fell behind: events were dropped for it and its subscription ended."""


class Subscription:
    """One listener's events of one channel, bounded: when more than `maxsize` wait, later ones
    are dropped and, once the waiting ones are read, `get` raises Lagged. A slow listener so
    never slows the publisher, nor any other listener."""

    def __init__(self, channel: str, maxsize: int, on_close: Any = None) -> None:
        self.channel = channel
        self._maxsize = maxsize
        self._events: collections.deque[Event] = collections.deque()
        self._ready = asyncio.Event()
        self._on_close = on_close
        self.lagged = False
        self.closed = False

    def push(self, events: Iterable[Event]) -> None:
        if self.lagged or self.closed:
            return
        for event in events:
            if len(self._events) >= self._maxsize:
                self.lagged = True
                break
            self._events.append(event)
        self._ready.set()

    async def get(self, within: float | None = None) -> Event | None:
        """The next event; None when `within` seconds pass without one; Lagged once the events
        that were queued before the listener fell behind are read."""
        while not self._events:
            if self.lagged or self.closed:  # closed under it (the service stops): resume later
                raise Lagged()
            self._ready.clear()
            try:
                async with asyncio.timeout(within):
                    await self._ready.wait()
            except TimeoutError:
                return None
        return self._events.popleft()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._ready.set()
            if self._on_close is not None:
                self._on_close(self)


class EventBus(Protocol):
    def publish(self, channel: str, events: list[Event], *, keep: bool = False) -> None:
        """Deliver `events` to every listener of `channel` on every replica, without waiting.
        `keep`: also add them to the channel's backlog, for listeners that join later."""
        ...

    def subscribe(self, channel: str, maxsize: int = DEFAULT_QUEUE_SIZE) -> Subscription:
        """A subscription that receives every event published from now on (close it)."""
        ...

    async def backlog(self, channel: str) -> list[Event]:
        """The channel's kept events, oldest first ([] when none or gone)."""
        ...

    def forget(self, channel: str) -> None:
        """The channel's backlog is no longer needed (kept a little longer for late joiners)."""
        ...

    def listeners(self) -> int:
        """Open subscriptions on this replica."""
        ...

    async def start(self) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class LocalHub:
    """This replica's listeners, by channel, and the backlogs of the channels it publishes."""

    def __init__(self) -> None:
        self._channels: dict[str, set[Subscription]] = {}
        self._backlogs: dict[str, collections.deque[Event]] = {}
        self._forgetting: dict[str, asyncio.TimerHandle] = {}

    def dispatch(self, channel: str, events: list[Event]) -> None:
        for subscription in tuple(self._channels.get(channel, ())):
            subscription.push(events)

    def has_listeners(self, channel: str) -> bool:
        return channel in self._channels

    def subscribe(self, channel: str, maxsize: int) -> Subscription:
        subscription = Subscription(channel, maxsize, self._unsubscribe)
        self._channels.setdefault(channel, set()).add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        listeners = self._channels.get(subscription.channel)
        if listeners is not None:
            listeners.discard(subscription)
            if not listeners:
                del self._channels[subscription.channel]

    def keep(self, channel: str, events: list[Event]) -> None:
        backlog = self._backlogs.get(channel)
        if backlog is None:
            backlog = self._backlogs[channel] = collections.deque(maxlen=BACKLOG_MAX)
        backlog.extend(events)

    def kept(self, channel: str) -> list[Event] | None:
        backlog = self._backlogs.get(channel)
        return None if backlog is None else list(backlog)

    def forget(self, channel: str, after: float = BACKLOG_GRACE_SECONDS) -> None:
        if channel not in self._backlogs or channel in self._forgetting:
            return

        def drop() -> None:
            self._backlogs.pop(channel, None)
            self._forgetting.pop(channel, None)

        self._forgetting[channel] = asyncio.get_running_loop().call_later(after, drop)

    def listeners(self) -> int:
        return sum(len(listeners) for listeners in self._channels.values())

    def close(self) -> None:
        for handle in self._forgetting.values():
            handle.cancel()
        self._forgetting.clear()
        self._backlogs.clear()
        for listeners in tuple(self._channels.values()):
            for subscription in tuple(listeners):
                subscription.close()


class LocalBus:
    """Events for this replica only: the embedded default, with no Redis."""

    def __init__(self) -> None:
        self.hub = LocalHub()

    def publish(self, channel: str, events: list[Event], *, keep: bool = False) -> None:
        if keep:
            self.hub.keep(channel, events)
        self.hub.dispatch(channel, events)

    def subscribe(self, channel: str, maxsize: int = DEFAULT_QUEUE_SIZE) -> Subscription:
        return self.hub.subscribe(channel, maxsize)

    async def backlog(self, channel: str) -> list[Event]:
        return self.hub.kept(channel) or []

    def forget(self, channel: str) -> None:
        self.hub.forget(channel)

    def listeners(self) -> int:
        return self.hub.listeners()

    async def start(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self.hub.close()


EVENT_BUS: Part[EventBus] = Part("event_bus")
EventBusDep = Annotated[EventBus, Depends(part(EVENT_BUS))]
