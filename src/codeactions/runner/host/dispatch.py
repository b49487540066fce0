"""Dispatch: which slot serves a run (a warm worker of its code, a fresh spare, or a wait for
one about to be ready), and handing the run's request to that slot's child."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import struct
import time
from collections import deque
from typing import Any

from codeactions.runner.host.slots import READ_SIZE, Child, Run, Slot, SlotState
from codeactions.runner.host.state import HostState

FRESH = "*"  # in _dispatch: Node spares being booted (no warm key is ever "*")
FRESH_GENERAL = "**"  # ... and general spares being forked


class Dispatch(HostState):
    def _dispatch(self) -> None:
        if not self.pending:
            return
        remaining: deque[Run] = deque()
        # Warm workers being cleaned between runs: each may be awaited by one run of its code;
        # Node spares being booted ("*"): each may be awaited by one JavaScript run.
        recycling: dict[str, int] = {FRESH: 0, FRESH_GENERAL: 0}
        for candidate in self.slots:
            if candidate.state == SlotState.RECYCLING:
                recycling[candidate.warm_key] = recycling.get(candidate.warm_key, 0) + 1
            elif candidate.state in (
                SlotState.NEW,
                SlotState.SPAWNING,
                SlotState.STARTING,
                SlotState.CLEANING,
            ):
                recycling[FRESH_GENERAL if candidate.kind == "general" else FRESH] += 1
        while self.pending:
            run = self.pending.popleft()
            slot = self._pick(run, recycling) if self.running < self.capacity else None
            if slot is None:
                remaining.append(run)
                continue
            self._start_run(run, slot)
        self.pending = remaining

    def _pick(self, run: Run, recycling: dict[str, int]) -> Slot | None:
        if self.reuse and run.language in ("javascript", "python"):
            kind = "node" if run.language == "javascript" else "general"
            for slot in self.slots:
                if (
                    slot.state == SlotState.WARM
                    and slot.kind == kind
                    and slot.warm_key == run.warm_key
                ):
                    assert slot.child is not None
                    if self._has_budget_for(slot.child, run):
                        return slot
                    # Its RLIMIT_CPU could end this run early, blaming it: retire it instead.
                    self._retire_warm(slot)
            if recycling.get(run.warm_key, 0) > 0:
                recycling[run.warm_key] -= 1
                return None  # its warm worker is ready in a few ms: cheaper than a cold one
        ready = [slot for slot in self.slots if slot.state == SlotState.READY]
        if run.language == "javascript":
            for slot in ready:
                if slot.kind == "node":
                    return slot
            # No Node process for this code: let the least recently used warm worker of
            # another code make room for a fresh spare (booted in the background).
            if self._keep_a_fresh_spare(run.warm_key):
                recycling[FRESH] += 1
            if recycling[FRESH] > 0:
                # Waiting for a booting spare costs about what starting Node in a general
                # slot does, and leaves a warm worker for the next run.
                recycling[FRESH] -= 1
                return None
        for slot in ready:
            if slot.kind == "general":
                return slot
        # Every general slot may hold a warm Python worker: the least recently used one of
        # another code makes room (a fresh spare forks in a few ms).
        if self._keep_a_fresh_spare(run.warm_key, "general"):
            recycling[FRESH_GENERAL] += 1
        if recycling[FRESH_GENERAL] > 0:
            recycling[FRESH_GENERAL] -= 1
        return None

    def _start_run(self, run: Run, slot: Slot) -> None:
        child = slot.child
        assert child is not None
        slot.state = SlotState.BUSY
        slot.run = run
        run.slot = slot
        run.child = child
        self.running += 1
        run.oom_before = self.cgroups.oom_kills(slot.index)
        # The child lowers its own RLIMIT_CPU from the header: prlimit() on another uid's
        # process needs CAP_SYS_RESOURCE, which a container's root often lacks.
        cpu = self._cpu_limit(run)
        python_warm = self.python_reuse and run.language == "python" and slot.kind == "general"
        if child.kind == "node":
            # engine.js reports {"t": "done"} instead of exiting (the request says `reuse`)
            child.warm = self.reuse
            self._drain_stale(child)
            self._limit_worker_cpu(run, child, cpu)
        elif python_warm:
            self._drain_stale(child)
            self._limit_worker_cpu(run, child, cpu)
        if child.stopped:  # a warm worker: stopped since its last run
            child.stopped = False
            os.kill(child.pid, signal.SIGCONT)
        if child.kind == "node" or child.warm:
            header = b""  # a warm worker awaits just the next request line
        else:
            if run.language == "javascript":
                run.argv = self.child_cfg["node_argv"]
            mode: dict[str, Any] = (
                {"mode": "exec", "argv": run.argv} if run.argv else {"mode": "python"}
            )
            mode["cpu"] = cpu
            if python_warm:
                mode["reuse"] = True  # python_engine serves request lines until one retires it
                child.warm = True
            encoded = json.dumps(mode).encode()
            header = struct.pack(">I", len(encoded)) + encoded
        run.pending_stdin = memoryview(header + run.payload)
        run.payload = b""
        run.started = time.monotonic()
        run.timer = self.call_later(run.timeout, lambda: self._timeout(run))
        for fd, name in (
            (child.stdout, "stdout"),
            (child.stderr, "stderr"),
            (child.proto, "proto"),
        ):
            self.fd_owner[fd] = (run, name)
            self.selector.register(fd, selectors.EVENT_READ, ("out", run))
        self._write_stdin(run, first=True)

    def _write_stdin(self, run: Run, first: bool = False) -> None:
        child = run.child
        if child is None or child.stdin < 0:
            return
        try:
            while run.pending_stdin:
                written = os.write(child.stdin, run.pending_stdin)
                run.pending_stdin = run.pending_stdin[written:]
        except BlockingIOError:
            if first:
                self.selector.register(child.stdin, selectors.EVENT_WRITE, ("in", run))
            return
        except BrokenPipeError:
            run.pending_stdin = memoryview(b"")
        if not first:
            self.selector.unregister(child.stdin)
        if child.warm:
            return  # a warm worker may get further requests on this pipe
        os.close(child.stdin)
        child.stdin = -1

    def _drain_stale(self, child: Child) -> None:
        """Discard what a warm worker's pipes hold from before this run (killed leftovers)."""
        for fd in (child.stdout, child.stderr, child.proto):
            with contextlib.suppress(OSError):
                while os.read(fd, READ_SIZE):
                    pass
