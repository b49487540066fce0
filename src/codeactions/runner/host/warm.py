"""Warm workers: a process kept, after a run that ended normally, for the next run of the same
code (Lambda-style); when it is kept, cleaned between runs, stopped while idle, and retired."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import time

from codeactions.runner import wire
from codeactions.runner.host.cgroups import MB
from codeactions.runner.host.log import log
from codeactions.runner.host.processes import (
    CLEAN_STEP,
    ipc_objects,
    kill_round,
    process_rss,
    sweep_shared_tmp,
    wipe,
    wipe_owned,
)
from codeactions.runner.host.slots import Child, Run, Slot, SlotState
from codeactions.runner.host.state import HostState

# System calls a worker waits in between runs: Python reads its request pipe, Node polls.
SYS_READ = {"x86_64": 0, "aarch64": 63}.get(platform.machine(), -1)
SYS_EPOLL_WAITS = {"x86_64": {"232", "281", "441"}, "aarch64": {"22", "441"}}.get(
    platform.machine(), set()
)
WARM_IDLE_TTL = 60.0  # an idle warm worker is retired after this many seconds
WARM_STOP_AFTER = 0.02  # ... and stopped (SIGSTOP) after this many, until its next run
WARM_MAX_RUNS = 500  # ... and after this many runs
# A warm Python worker retires when its RSS grew by this share of memory_mb since its first run
# (which may import libraries), or reaches WARM_RSS_MAX of it: the next run needs room.
WARM_RSS_GROWTH = 0.25
WARM_RSS_MAX = 0.5


class WarmWorkers(HostState):
    def _reusable(self, run: Run, slot: Slot, outcome: wire.Outcome) -> bool:
        """Whether the worker may serve the next run of the same code."""
        child = run.child
        if child is None or not child.warm or not self.reuse:
            return False
        if child.kind != "node":
            # A Python worker whose memory grew much would leave the next run little room.
            rss, limit = process_rss(child.pid), int(self.s["memory_mb"]) * MB
            child.rss_base = child.rss_base or rss
            if rss - child.rss_base > WARM_RSS_GROWTH * limit or rss > WARM_RSS_MAX * limit:
                return False
        return (
            (slot.kind == "node") == (child.kind == "node")
            and child.exit_status is None
            and run.done_code is not None
            and run.done_keep
            and run.reason is None
            and outcome["reason"] in (None, "exception")
            and (run.error is None or run.error.get("kind") == "exception")
            and slot.warm_runs + 1 < WARM_MAX_RUNS
        )

    def _recycle(self, slot: Slot, key: str) -> None:
        """Between two runs of a warm worker: kill the slot's other processes, wipe its temp dirs."""
        child = slot.child
        assert child is not None
        for fd in (child.stdout, child.stderr, child.proto):
            self.fd_owner.pop(fd, None)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)
        slot.state = SlotState.RECYCLING
        slot.warm_key = key
        slot.warm_runs += 1
        slot.clean_deadline = time.monotonic() + 10
        self._recycle_step(slot, child)

    def _recycle_step(self, slot: Slot, child: Child) -> None:
        if slot.state != SlotState.RECYCLING or slot.child is not child:
            return  # retired meanwhile (the worker died)
        others = kill_round(lambda: self._slot_pids(slot) - {child.pid})
        if others:
            if time.monotonic() > slot.clean_deadline:
                log(f"slot {slot.index}: processes {sorted(others)[:5]} do not die; retired")
                self._retire_warm(slot)
                return
            self.call_later(CLEAN_STEP, lambda: self._recycle_step(slot, child))
            return
        slot.clean_deadline = 0.0
        if self.count_ipc:
            try:
                objects = ipc_objects(child.pid)
            except OSError as exc:
                log(f"slot {slot.index}: cannot look at a warm worker's IPC objects: {exc}")
                objects = -1
            if objects:  # SysV objects of a run must not reach the next (nor count against it)
                self._retire_warm(slot)
                return
        try:
            if self.child_cfg["mountns"]:
                # The worker's private /tmp, /var/tmp, /dev/shm, seen through its mount namespace.
                for directory in ("tmp", "var/tmp", "dev/shm"):
                    wipe_owned(f"/proc/{child.pid}/root/{directory}", slot.uid)
            else:
                wipe(slot.dir)
                if self.root:
                    sweep_shared_tmp(slot.uid)
        except OSError as exc:
            log(f"slot {slot.index}: cannot wipe a warm worker's dirs: {exc}")
            self._retire_warm(slot)
            return
        slot.state = SlotState.WARM
        slot.warm_used = time.monotonic()
        runs = slot.warm_runs
        self.call_later(WARM_STOP_AFTER, lambda: self._stop_idle(slot, child, runs))
        self.call_later(WARM_IDLE_TTL, lambda: self._warm_expired(slot, child, runs))
        self._keep_a_fresh_spare(slot.warm_key, slot.kind)
        self._dispatch()

    def _stop_idle(self, slot: Slot, child: Child, runs: int) -> None:
        """Stop (SIGSTOP) a warm worker still waiting since that run, until its next run: what
        the code left scheduled (timers, signal handlers) cannot run in between. Not at once:
        back-to-back runs would pay for stopping and continuing it every time."""
        if slot.state == SlotState.WARM and slot.child is child and slot.warm_runs == runs:
            try:
                os.kill(child.pid, signal.SIGSTOP)
            except OSError:
                self._retire_warm(slot)
                return
            child.stopped = True

    def _warm_expired(self, slot: Slot, child: Child, runs: int) -> None:
        # Still idle since that run (no later run re-armed its own timer): retire it.
        if slot.state == SlotState.WARM and slot.child is child and slot.warm_runs == runs:
            self._retire_warm(slot)

    def _keep_a_fresh_spare(self, key: str, kind: str = "node") -> bool:
        """Retire the least recently used idle warm worker not of `key` when no slot of `kind`
        is (or is becoming) a fresh spare, so a code without a warm worker still finds one soon."""
        node = [slot for slot in self.slots if slot.kind == kind]
        if any(
            slot.state not in (SlotState.BUSY, SlotState.WARM, SlotState.RECYCLING) for slot in node
        ):
            return False
        idle = [slot for slot in node if slot.state == SlotState.WARM and slot.warm_key != key]
        if not idle:
            return False
        self._retire_warm(min(idle, key=lambda slot: slot.warm_used))
        return True

    def _retire_warm(self, slot: Slot) -> None:
        """End a warm worker: the usual cleaning kills the slot, wipes it, boots a spare."""
        slot.warm_key, slot.warm_runs = "", 0
        self._drop_child(slot)
        self._kill_slot_pids(slot)
        self._clean(slot)


def is_idle(child: Child) -> bool:
    """What /proc says of a warm worker that reported the end of its run.

    Python: its only thread is blocked reading its request pipe, so nothing of the run goes on.
    Node: its main thread is blocked polling for events (not running code); its threads and
    event loop cannot be seen from outside, which is why a warm worker idle for WARM_STOP_AFTER
    is also stopped (SIGSTOP) until its next run.
    """
    pid = child.pid
    try:
        if child.proc_fds is None:  # read again for each run: pread on open files is cheap
            child.proc_fds = (
                os.open(f"/proc/{pid}/syscall", os.O_RDONLY),
                os.open(f"/proc/{pid}/stat", os.O_RDONLY),
            )
        syscall_fd, stat_fd = child.proc_fds
        fields = os.pread(syscall_fd, 512, 0).split()
        if child.kind == "node":
            return bool(fields) and fields[0].decode() in SYS_EPOLL_WAITS
        if len(fields) < 2 or fields[0] != str(SYS_READ).encode():
            return False  # "running", or another call
        threads = os.pread(stat_fd, 1024, 0).rsplit(b")", 1)[1].split()[17]
        if threads != b"1":
            return False
        return os.readlink(f"/proc/{pid}/fd/{int(fields[1], 16)}") == child.request_pipe
    except (OSError, ValueError, IndexError):
        return False
