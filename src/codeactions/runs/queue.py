"""The bounded run queue of one process: `slots` runs at once, `queue_size` more waiting."""

from __future__ import annotations

import asyncio
import time

from codeactions.errors import QueueFull
from codeactions.ops.metrics import Metrics


class RunQueue:
    """Admission is decided at once (503 when full); a slot is then awaited under the deadline."""

    def __init__(self, *, slots: int, queue_size: int, metrics: Metrics) -> None:
        self.slots = slots
        self.capacity = slots + queue_size
        self._metrics = metrics
        self._free = asyncio.Semaphore(slots)
        self.admitted = 0  # waiting + running
        self.running = 0

    def admit(self) -> Ticket:
        """A place in the queue, or QueueFull when `slots + queue_size` runs are already in."""
        if self.admitted >= self.capacity:
            self._metrics.queue_rejected()
            raise QueueFull()
        self.admitted += 1
        self._report()
        return Ticket(self)

    def _report(self) -> None:
        self._metrics.queue_depth(self.admitted - self.running, self.running, self.capacity)


class Ticket:
    """One admitted run: wait for a slot, and give everything back once, whatever happened."""

    def __init__(self, queue: RunQueue) -> None:
        self._queue = queue
        self._holds_slot = False
        self._released = False
        self._admitted_at = time.perf_counter()

    async def wait_for_slot(self) -> None:
        await self._queue._free.acquire()
        self._holds_slot = True
        self._queue.running += 1
        self._queue._report()
        self._queue._metrics.run_waited(time.perf_counter() - self._admitted_at)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        queue = self._queue
        if self._holds_slot:
            queue.running -= 1
            queue._free.release()
        queue.admitted -= 1
        queue._report()
