"""What an API replica knows of the workers: who is alive, how busy, where a code is warm."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from codeactions.dispatch.wire import Heartbeat, LanguageReady
from codeactions.runner.wire import Language


def remember(codes: deque[str], code_id: str) -> None:
    """`code_id` ran last: it moves to the end (the oldest falls out of a bounded deque)."""
    if code_id in codes:
        codes.remove(code_id)
    codes.append(code_id)


@dataclass
class WorkerView:
    id: str
    queue: str
    slots: int
    busy: int  # as it last said (in a heartbeat or an answer)
    last_seen: float  # monotonic
    draining: bool = False
    isolation: str = ""
    languages: dict[Language, LanguageReady] = field(default_factory=dict)
    warm: deque[str] = field(default_factory=deque)  # most recent last
    mine: int = 0  # runs this replica has handed it and not yet seen end

    @property
    def load(self) -> int:
        # Its report lags; what this replica handed it is known now.
        return max(self.busy, self.mine)

    @property
    def free(self) -> int:
        return self.slots - self.load

    def warmed(self, code_id: str) -> None:
        remember(self.warm, code_id)


class WorkerTable:
    """The workers heard from lately. A worker is lost when it has been silent `lost_seconds`."""

    def __init__(self, lost_seconds: float) -> None:
        self.lost_seconds = lost_seconds
        self.workers: dict[str, WorkerView] = {}

    def heard(self, beat: Heartbeat, now: float) -> WorkerView:
        """Take a worker's heartbeat; a new worker joins the table."""
        view = self.workers.get(beat["worker"])
        if view is None:
            view = WorkerView(beat["worker"], beat["queue"], beat["slots"], beat["busy"], now)
            self.workers[view.id] = view
        view.queue, view.slots, view.busy, view.last_seen = (
            beat["queue"],
            beat["slots"],
            beat["busy"],
            now,
        )
        view.draining = beat["draining"] or beat["gone"]
        view.isolation = beat["isolation"]
        view.languages = dict(beat["languages"])
        # What it ran last, one code per slot: what its slots most likely still hold warm.
        view.warm = deque(beat["warm"][-max(1, view.slots) :], maxlen=max(1, view.slots))
        return view

    def silent(self, now: float) -> list[WorkerView]:
        """The workers not heard from for `lost_seconds`, taken out of the table."""
        lost = [w for w in self.workers.values() if now - w.last_seen >= self.lost_seconds]
        for worker in lost:
            del self.workers[worker.id]
        return lost

    def drop(self, worker_id: str) -> WorkerView | None:
        return self.workers.pop(worker_id, None)

    def open(self) -> list[WorkerView]:
        """Workers that take new runs."""
        return [w for w in self.workers.values() if not w.draining]

    @property
    def capacity(self) -> int:
        return sum(w.slots for w in self.open())

    def pick(self, code_id: str) -> tuple[WorkerView, bool] | None:
        """The worker for a run of `code_id`, and whether the code is warm there: the warm one
        with a free slot, else the one with the most free slots (the code is cold there), else
        the least loaded (the run waits there for a slot). None when no worker takes runs."""
        workers = self.open()
        if not workers:
            return None
        warm = [w for w in workers if w.free > 0 and code_id in w.warm]
        if warm:
            return max(warm, key=lambda w: (w.free, -w.mine)), True
        best = max(workers, key=lambda w: (w.free, -w.mine))
        return best, code_id in best.warm
