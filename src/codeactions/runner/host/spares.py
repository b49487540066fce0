"""The zygote and the spares it forks: one sandboxed child per slot, ready ahead of demand; a
slot's cleaning between two spares."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from typing import Any

from codeactions.runner import wire
from codeactions.runner.host.log import log
from codeactions.runner.host.processes import CLEAN_STEP, kill_round, sweep_shared_tmp, wipe
from codeactions.runner.host.setup import CHILD_ENV
from codeactions.runner.host.slots import READ_SIZE, Child, Slot, SlotState
from codeactions.runner.host.state import HostState

ZYGOTE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zygote.py")
BOOT_TIMEOUT = 30.0  # a spare not ready by then (sandboxed; a Node spare: its engine booted) failed


class Spares(HostState):
    def _start_zygote(self) -> None:
        if self.zsock is not None:
            self.selector.unregister(self.zsock)
            self.zsock.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.zygote = subprocess.Popen(
            [sys.executable, "-I", ZYGOTE, str(theirs.fileno()), self.engines_dir],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=CHILD_ENV,
        )
        theirs.close()
        self.zsock = ours
        ours.send(json.dumps(self.child_cfg).encode())
        self.selector.register(ours, selectors.EVENT_READ, ("zygote", None))

    def _spawn(self, slot: Slot) -> None:
        slot.child = None
        slot.warm_key, slot.warm_runs = "", 0
        if self.zsock is None or self._boot_of(slot).waiting():
            # Until the zygote is back or the back-off step ends (_retry).
            slot.state = SlotState.PARKED
            return
        slot.state = SlotState.SPAWNING
        kind = "node" if slot.kind == "node" else "python"
        with contextlib.suppress(OSError):  # the zygote is gone: _zygote_died parks the slot
            self.zsock.send(json.dumps({"op": "spawn", "slot": slot.index, "kind": kind}).encode())

    def _read_zygote(self) -> None:
        assert self.zsock is not None
        try:
            data, fds, _, _ = socket.recv_fds(self.zsock, 1 << 16, 8)
        except BlockingIOError:
            return
        except ConnectionError:  # it died before reading what we sent
            data, fds = b"", []
        if not data:
            self._zygote_died()
            return
        message = json.loads(data)
        op = message["op"]
        if op == "spawned":
            slot = self.slots[message["slot"]]
            child = Child(message["pid"], message["kind"], fds)
            for fd in fds:
                os.set_blocking(fd, False)
            self.pid_slot[child.pid] = slot
            slot.child = child
            slot.state = SlotState.STARTING
            self.selector.register(child.proto, selectors.EVENT_READ, ("spare", slot))
            child.boot_timer = self.call_later(
                BOOT_TIMEOUT, lambda: self._boot_timed_out(slot, child)
            )
        elif op == "spawn_failed":
            slot = self.slots[message["slot"]]
            slot.state = SlotState.CLEANING
            self._boot_failed(self._boot_of(slot).key, f"cannot fork: {message['error']}")
            self._spawn(slot)  # parked until the back-off step ends
        elif op == "exit":
            slot = self.pid_slot.pop(message["pid"], None)
            if slot is None:
                return
            status = message["status"]
            run = slot.run
            if run is not None and run.child is not None and run.child.pid == message["pid"]:
                run.child.exit_status = status
                run.child.cpu = float(message.get("cpu", 0.0))
                if not run.finished:
                    self._finish(run)
            elif (
                slot.child is not None
                and slot.child.pid == message["pid"]
                and slot.state == SlotState.READY
            ):
                self._retire_spare(slot, f"it ended before its first run (status {status})")
            elif (
                slot.child is not None
                and slot.child.pid == message["pid"]
                and slot.state in (SlotState.WARM, SlotState.RECYCLING)
            ):
                self._retire_warm(slot)

    def _spare_ready(self, slot: Slot) -> None:
        """The spare says it is sandboxed ({"t": "ready"}), a Node spare then that its engine
        booted (a second one); a spare that failed says why ({"t": "error"}), or just ends."""
        child = slot.child
        if child is None:
            return
        try:
            data = os.read(child.proto, 4096)
        except BlockingIOError:
            return
        child.boot += data
        events = [proto_event(line) for line in bytes(child.boot).split(b"\n")[:-1]]
        readies = sum(1 for event in events if event.get("t") == "ready")
        if data and readies == len(events) and len(child.boot) < READ_SIZE:
            if readies < (2 if child.kind == "node" else 1):
                return  # Node is still booting
            self.selector.unregister(child.proto)
            if child.boot_timer is not None:
                child.boot_timer[2] = None
            slot.state = SlotState.READY
            self._boot_worked("zygote")
            self._boot_worked(self._boot_of(slot).key)
            self._dispatch()
            return
        errors = [str(event.get("message", "")) for event in events if event.get("t") == "error"]
        self._retire_spare(slot, errors[0] if errors else gist(read_available(child.stderr)))

    def _boot_timed_out(self, slot: Slot, child: Child) -> None:
        if slot.child is child and slot.state == SlotState.STARTING:
            self._retire_spare(slot, f"not ready after {BOOT_TIMEOUT:g} s")

    def _retire_spare(self, slot: Slot, error: str) -> None:
        """A spare that failed to start, or ended before its first run: its language backs off;
        the slot is cleaned and waits for the end of the step (parked)."""
        self._drop_child(slot)
        self._boot_failed(self._boot_of(slot).key, error)
        self._clean(slot)

    def _zygote_died(self) -> None:
        status = None
        if self.zygote is not None:
            with contextlib.suppress(Exception):
                self.zygote.kill()
                status = self.zygote.wait(5)
        if self.zsock is not None:
            self.selector.unregister(self.zsock)
            self.zsock.close()
            self.zsock = None  # slots park until _retry starts it again
        self.pid_slot.clear()
        self._boot_failed("zygote", f"it ended (status {status})")
        for slot in self.slots:
            if slot.run is not None and not slot.run.finished:
                self._kill_run(slot.run, "runner", "the runner's zygote died")
            elif slot.state != SlotState.CLEANING:
                if slot.child is not None:
                    self._kill_slot(slot)
                    self._close_child(slot.child)
                    slot.child = None
                slot.state = SlotState.CLEANING
                self._clean(slot)

    def _clean(self, slot: Slot) -> None:
        """Kill every process of the slot until none is left, wipe its dir, fork a new spare."""
        if slot.state != SlotState.CLEANING or slot.cleaning:
            return  # one cleaning at a time per slot, or it would get two spares
        slot.cleaning = True
        self._clean_step(slot)

    def _clean_step(self, slot: Slot) -> None:
        if not slot.clean_deadline:
            slot.clean_deadline = time.monotonic() + 10
        pids = kill_round(lambda: self._slot_pids(slot))
        if pids:
            if time.monotonic() > slot.clean_deadline:
                log(f"slot {slot.index}: processes {sorted(pids)[:5]} do not die; slot paused")
                slot.clean_deadline = time.monotonic() + 10
                self.call_later(1.0, lambda: self._clean_step(slot))
            else:
                self.call_later(CLEAN_STEP, lambda: self._clean_step(slot))
            return
        slot.clean_deadline = 0.0
        slot.cleaning = False
        try:
            wipe(slot.dir)
            self._prepare_dir(slot)
            if not self.child_cfg["mountns"] and self.root:
                sweep_shared_tmp(slot.uid)
        except OSError as exc:
            log(f"slot {slot.index}: cannot wipe its dir: {exc}")
        self._spawn(slot)


def proto_event(line: bytes) -> dict[str, Any]:
    """One JSON line of a child's protocol fd ({} for anything else)."""
    try:
        event = wire.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def read_available(fd: int) -> str:
    try:
        return os.read(fd, READ_SIZE).decode("utf-8", "replace")
    except OSError:
        return ""


def gist(output: str) -> str:
    """What went wrong, from a program's error output: its first error line (Node prints
    "Error: Cannot find module ..." amid a stack), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.split(":", 1)[0].endswith(("Error", "Exception"))]
    found = errors[0] if errors else lines[-1] if lines else "it ended before it was ready"
    return found[:300]
