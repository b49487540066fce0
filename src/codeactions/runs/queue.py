"""The run queue of one process: `slots` runs at once, `queue_size` more waiting, and no project
or code holding more than its share of either, so one tenant cannot take every slot."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Literal

from codeactions.config import RunnerSettings
from codeactions.errors import AppError, QueueFull, TooManyWaiting
from codeactions.ops.metrics import Metrics


@dataclass
class Share:
    """The runs of one project, or of one code, executing and waiting."""

    running: int = 0
    waiting: int = 0

    @property
    def idle(self) -> bool:
        return self.running == 0 and self.waiting == 0


@dataclass(frozen=True)
class Caps:
    running: int  # executing at once
    waiting: int  # waiting for a slot; more are refused (429)


def caps(settings: RunnerSettings, slots: int) -> tuple[Caps, Caps]:
    """The project's and the code's caps when `slots` runs may execute at once."""
    at = settings.model_copy(update={"slots": max(slots, 1)})
    return (
        Caps(running=at.project_concurrency, waiting=at.project_queued),
        Caps(running=at.code_concurrency, waiting=at.code_queued),
    )


class RunQueue:
    """Admission is decided at once: a run starts if a slot is free and its project and code are
    under their caps, else it waits (503 when the queue is full, 429 when its project or code
    already has as many waiting as it may). A freed slot goes to the oldest waiting run whose
    project and code are under their caps, so a project at its cap does not hold up the others.
    """

    def __init__(
        self,
        *,
        slots: int,
        queue_size: int,
        project: Caps,
        code: Caps,
        metrics: Metrics,
    ) -> None:
        self.slots = slots
        self.queue_size = queue_size
        self.capacity = slots + queue_size
        self.project_caps = project
        self.code_caps = code
        self._metrics = metrics
        self.running = 0
        self._waiting: dict[Ticket, None] = {}  # oldest first
        self._projects: dict[str, Share] = {}
        self._codes: dict[str, Share] = {}

    def resize(self, slots: int, *, project: Caps, code: Caps) -> None:
        """Workers joined or left: this many runs may execute at once from now on (runs over
        it finish; no new one starts until the count is under it)."""
        self.slots, self.project_caps, self.code_caps = slots, project, code
        self.capacity = slots + self.queue_size
        self._metrics.slots_changed(slots)
        self._dispatch()
        self._report()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def admitted(self) -> int:
        return self.running + len(self._waiting)

    def admit(self, *, project_uuid: str, code_id: str) -> Ticket:
        """A slot now, or a place among the waiting runs; else QueueFull or TooManyWaiting."""
        project = self._projects.get(project_uuid) or Share()
        code = self._codes.get(code_id) or Share()
        starts = self._may_start(project, code)
        if not starts:
            refusal = self._refusal(project, code)
            if refusal is not None:
                self._metrics.queue_rejected()
                raise refusal
        self._projects[project_uuid] = project
        self._codes[code_id] = code
        ticket = Ticket(self, project_uuid, code_id)
        if starts:
            self._start(ticket)
        else:
            self._waiting[ticket] = None
            project.waiting += 1
            code.waiting += 1
        self._report()
        return ticket

    def _may_start(self, project: Share, code: Share) -> bool:
        return (
            self.running < self.slots
            and project.running < self.project_caps.running
            and code.running < self.code_caps.running
        )

    def _refusal(self, project: Share, code: Share) -> AppError | None:
        if project.waiting >= self.project_caps.waiting:
            return TooManyWaiting("project")
        if code.waiting >= self.code_caps.waiting:
            return TooManyWaiting("code")
        if len(self._waiting) >= self.queue_size:
            return QueueFull()
        return None

    def _start(self, ticket: Ticket) -> None:
        ticket.state = "running"
        self.running += 1
        self._projects[ticket.project_uuid].running += 1
        self._codes[ticket.code_id].running += 1
        self._metrics.run_waited(time.perf_counter() - ticket.admitted_at)
        ticket.granted.set_result(None)

    def _release(self, ticket: Ticket) -> None:
        project = self._projects[ticket.project_uuid]
        code = self._codes[ticket.code_id]
        freed = ticket.state == "running"
        if freed:
            self.running -= 1
            project.running -= 1
            code.running -= 1
        else:
            del self._waiting[ticket]
            project.waiting -= 1
            code.waiting -= 1
            ticket.granted.cancel()  # a waiter still there learns it will never get a slot
        ticket.state = "released"
        if project.idle:
            del self._projects[ticket.project_uuid]
        if code.idle:
            del self._codes[ticket.code_id]
        if freed:
            self._dispatch()
        self._report()

    def _dispatch(self) -> None:
        """Start the oldest waiting runs that may start, while slots are free."""
        for ticket in list(self._waiting):
            if self.running >= self.slots:
                return
            if ticket.granted.cancelled():
                continue  # its waiter gave up (timeout, cancellation); it is released next
            project = self._projects[ticket.project_uuid]
            code = self._codes[ticket.code_id]
            if self._may_start(project, code):
                del self._waiting[ticket]
                project.waiting -= 1
                code.waiting -= 1
                self._start(ticket)

    def _report(self) -> None:
        self._metrics.queue_depth(len(self._waiting), self.running, self.capacity)


class Ticket:
    """One admitted run: wait for a slot, and give everything back once, whatever happened."""

    def __init__(self, queue: RunQueue, project_uuid: str, code_id: str) -> None:
        self._queue = queue
        self.project_uuid = project_uuid
        self.code_id = code_id
        self.state: Literal["waiting", "running", "released"] = "waiting"
        self.granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.admitted_at = time.perf_counter()

    async def wait_for_slot(self) -> None:
        """Return once the run holds a slot (at once when it got one on admission)."""
        await self.granted

    def release(self) -> None:
        """Give back the slot (the next waiting runs start) or the place in the queue; once."""
        if self.state != "released":
            self._queue._release(self)
