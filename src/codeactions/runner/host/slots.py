"""A sandbox slot, the child process it holds, and the run it serves."""

from __future__ import annotations

import enum
import os
from typing import Any

from codeactions.runner import wire

# [when, sequence, callback]; a callback of None cancels it (Supervisor.call_later)
Timer = list[Any]
READ_SIZE = 65536  # what is read of a child's pipe at once


class SlotState(enum.Enum):
    """Where a slot is in its cycle: fork a spare, hand it a run, clean up, fork again.

    NEW -> SPAWNING -> STARTING -> READY -> BUSY -> CLEANING -> SPAWNING ...
    A worker kept warm goes BUSY -> RECYCLING -> WARM -> BUSY instead. A slot whose language (or
    the zygote) backs off after failed starts waits PARKED until the back-off step ends.
    """

    NEW = "new"  # not started yet
    PARKED = "parked"  # waits for its language's back-off step to end (or the zygote to be back)
    SPAWNING = "spawning"  # the zygote was asked to fork its spare
    STARTING = "starting"  # the spare is forked and sandboxing itself (a Node spare: booting)
    READY = "ready"  # a fresh spare waits for its first run
    BUSY = "busy"  # serves a run
    CLEANING = "cleaning"  # its processes are being killed and its dir wiped, then a new spare
    RECYCLING = "recycling"  # a warm worker being cleaned between two runs of its code
    WARM = "warm"  # a warm worker idle, waiting for the next run of its code


class Child:
    def __init__(self, pid: int, kind: str, fds: list[int]) -> None:
        self.pid = pid
        self.kind = kind
        self.stdin, self.stdout, self.stderr, self.proto = fds
        self.exit_status: int | None = None
        self.cpu = 0.0
        self.warm = False  # serves several runs: its stdin stays open between them
        self.rss_base = 0  # resident bytes after its first run (a warm Python worker)
        self.stopped = False  # SIGSTOPped while it waits, warm, for the next run of its code
        # How /proc names its request pipe (the one whose write end we hold as `stdin`).
        self.request_pipe = f"pipe:[{os.fstat(self.stdin).st_ino}]" if self.stdin >= 0 else ""
        self.proc_fds: tuple[int, int] | None = None  # its /proc syscall and stat, kept open
        self.boot = bytearray()  # what a spare said on its protocol fd before it was ready
        self.boot_timer: Timer | None = None


class Run:
    def __init__(self, run_id: str, meta: wire.RunMeta, payload: bytes) -> None:
        self.id = run_id
        self.payload = payload  # what the child reads on stdin (wire.child_request)
        self.language: str = meta.get("language", "python")
        self.timeout = float(meta.get("timeout") or 60)
        self.source = str(meta.get("source", ""))  # Go only: compiled here, not sent to the child
        # code id + source hash: which warm worker may run it (JavaScript and Python)
        self.warm_key = str(meta.get("warm_key", "")) if self.language != "go" else ""
        # A program's stdout is its result (text), as the original ran codes: a Go `main`, or
        # JavaScript without Run. engine.js says which once it knows ({"t": "script"} or
        # {"t": "action"}), so until then a JavaScript run's raw stdout is kept, and the log lines
        # made of it wait in `stdout_logs`: dropped if it is a script, logs if it has a Run.
        self.program = False
        self.stdout: bytearray | None = bytearray() if self.language == "javascript" else None
        self.stdout_logs: list[wire.LogEntry] = []
        self.argv: list[str] | None = None  # exec'd program (Go binary, or Node without a spare)
        self.slot: Slot | None = None
        self.child: Child | None = None
        self.started = 0.0
        self.logs: list[wire.LogEntry] = []
        self.streamed = 0  # how many of `logs` were sent to the API while the run ran
        self.stream_timer: Timer | None = None  # the pending send of the next ones
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.reason: wire.FailureReason | None = None
        self.reason_message = ""
        self.output = 0
        self.buffers: dict[int, bytearray] = {}
        self.pending_stdin = memoryview(b"")
        self.oom_before = 0
        self.timer: Timer | None = None
        self.finished = False
        self.done_code: int | None = None  # the child said it is done (before its exit)
        self.done_checking = False  # ... and we wait to see it idle (a warm worker)
        self.done_keep = False  # ... and that its process may serve another run
        self.cpu_base = 0.0  # CPU seconds the child had used before this run
        self.engine_ready = False  # Node started for this run (no spare): its engine booted


class Slot:
    def __init__(self, index: int, uid: int, directory: str, kind: str) -> None:
        self.index = index
        self.uid = uid
        self.dir = directory
        self.kind = kind  # "general" (Python, exec) or "node" (a booted Node spare)
        self.state = SlotState.NEW
        self.child: Child | None = None
        self.run: Run | None = None
        self.clean_deadline = 0.0
        self.cleaning = False
        # A warm worker (state WARM when idle, RECYCLING while cleaned between runs).
        self.warm_key = ""
        self.warm_runs = 0
        self.warm_used = 0.0
