"""Runner supervisor: owns the sandbox slots and runs each request in a pre-forked sandboxed child.

Stdlib only, started by the API on the runtime interpreter with an empty environment as
`python -I <src>/codeactions/runner/host/__main__.py <fd>`. Talks to the API over the stream
socket <fd> in frames of runner/wire.py (a JSON object and a blob), multiplexed by request id;
wire.py lists the messages.

Per slot: a uid, a private dir, cgroups (memory, pids, cpu) where the kernel allows, and one
spare child forked by the zygote ahead of demand. A run only hands its request to that spare.

Node slots hold a booted Node process. After a JavaScript run that ended normally (a result or
an ordinary exception) the process stays as the warm worker of that code (code id + sha256 of
the source), Lambda-style: engine.js ends the run with {"t": "done"} instead of exiting, the
supervisor kills every other process of the slot, wipes its temp dirs and hands the next run of
the same code to it. Any other ending (timeout, memory, CPU, output, signal, a run leaving work
behind in the event loop) retires the process: slot killed, dir wiped, a fresh spare booted.
Python children in general slots are kept the same way (python_engine ends a run with
{"t": "done", "keep": bool}; it says no when the run left threads or child processes behind,
exited, or failed with a limit), and also retired when their memory grew too much. The `reuse`
setting turns warm workers off for every language: then each run gets a fresh process.

The supervisor is one object made of parts, a module each: setup.py (start-up), spares.py (the
zygote and its spares), languages.py (readiness, back-off), dispatch.py (a slot for each run),
runs.py (a run in its child, its end), warm.py (warm workers), cpu.py (CPU budget), gobuilds.py
(Go compile jobs). This module holds the event loop and the API connection.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from codeactions.runner import wire
from codeactions.runner.host import network
from codeactions.runner.host.boot import Boot
from codeactions.runner.host.cpu import CpuBudget
from codeactions.runner.host.dispatch import Dispatch
from codeactions.runner.host.gobuilds import GoBuilds
from codeactions.runner.host.languages import LANGUAGE_NAMES, Languages
from codeactions.runner.host.linux import libc
from codeactions.runner.host.log import log
from codeactions.runner.host.processes import kill_until_empty
from codeactions.runner.host.runs import RunOutput
from codeactions.runner.host.setup import ENGINES_DIR, StartUp
from codeactions.runner.host.slots import Run, Slot, SlotState, Timer
from codeactions.runner.host.spares import Spares
from codeactions.runner.host.state import CompileDone
from codeactions.runner.host.warm import WarmWorkers


class Supervisor(StartUp, Spares, Languages, Dispatch, RunOutput, WarmWorkers, CpuBudget, GoBuilds):
    def __init__(self, sock: socket.socket) -> None:
        self.api = sock
        self.api.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.api_in = wire.FrameReader()
        self.api_out = bytearray()
        self.timers: list[Timer] = []
        self.counter = itertools.count()
        self.slots: list[Slot] = []
        self.pending: deque[Run] = deque()
        self.running = 0
        self.fd_owner: dict[int, tuple[Run, str]] = {}
        self.pid_slot: dict[int, Slot] = {}
        self.go_cache: dict[str, str] = {}
        self.go_jobs: dict[str, list[CompileDone]] = {}
        self.go_waiting: deque[tuple[str, str]] = deque()  # compiles waiting for a builder
        self.go_builders: list[int] = []  # free build cgroups (-1: none, limits only)
        self.go_touched: dict[str, float] = {}
        self.zygote: subprocess.Popen[bytes] | None = None
        self.zsock: socket.socket | None = None
        self.warnings: list[str] = []
        self.engines_dir = ENGINES_DIR  # until start() copies them where sandboxes can read
        self.boots = {
            "zygote": Boot("zygote", "the zygote"),
            "python": Boot("python", "Python sandboxes"),
            "javascript": Boot("javascript", "Node.js"),
            "go": Boot("go", "the Go toolchain"),
        }
        self.node_slots = False
        self.announced = False  # "ready" sent
        self.reported: dict[wire.Language, tuple[bool, str, int]] = {}  # languages as last sent
        self.owner_filter: network.OwnerFilter | None = None
        self.slot_networks: network.SlotNetworks | None = None

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        entry = [time.monotonic() + delay, next(self.counter), callback]
        heapq.heappush(self.timers, entry)
        return entry

    def send_api(self, message: dict[str, Any]) -> None:
        was_empty = not self.api_out
        self.api_out += wire.encode_frame(message)
        if was_empty:
            self._flush_api()

    def _flush_api(self) -> None:
        sent_total = 0
        try:
            with memoryview(self.api_out) as view:
                while sent_total < len(view):
                    sent_total += self.api.send(view[sent_total:])
        except BlockingIOError:
            pass
        finally:
            del self.api_out[:sent_total]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.api_out else 0)
        with contextlib.suppress(KeyError):
            self.selector.modify(self.api, events, ("api", None))

    def loop(self) -> None:
        while True:
            while self.timers and self.timers[0][2] is None:
                heapq.heappop(self.timers)  # cancelled: not worth a wake-up
            timeout = None
            if self.timers:
                timeout = max(0.0, self.timers[0][0] - time.monotonic())
            for key, events in self.selector.select(timeout):
                kind, owner = key.data
                try:
                    if kind == "api":
                        if events & selectors.EVENT_WRITE:
                            self._flush_api()
                        if events & selectors.EVENT_READ and not self._read_api():
                            return
                    elif kind == "zygote":
                        self._read_zygote()
                    elif kind == "out":
                        self._read_child(key.fd)
                    elif kind == "in":
                        self._write_stdin(owner)
                    elif kind == "compile":
                        owner()
                    elif kind == "spare":
                        self._spare_ready(owner)
                except Exception as exc:  # one broken run must not take the others down
                    log(f"error handling {kind}: {exc!r}")
                    if kind == "spare" and owner.state == SlotState.STARTING:
                        self._retire_spare(owner, f"runner error: {exc!r}")
                    if kind in ("out", "in"):
                        run = (
                            owner
                            if isinstance(owner, Run)
                            else self.fd_owner.get(key.fd, (None,))[0]
                        )
                        if run is not None and not run.finished:
                            self._kill_run(run, "runner", f"runner error: {exc}")
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, callback = heapq.heappop(self.timers)
                if callback is not None:
                    try:
                        callback()
                    except Exception as exc:
                        log(f"error in timer: {exc!r}")

    def _read_api(self) -> bool:
        try:
            data = self.api.recv(1 << 20)
        except BlockingIOError:
            return True
        if not data:
            return False
        for frame, blob in self.api_in.feed(data):
            self._handle_api(frame, blob)
        return True

    def _handle_api(self, frame: dict[str, Any], blob: bytes) -> None:
        op: wire.ApiOp | None = frame.get("op")
        if op == "run":
            meta: wire.RunMeta = frame["run"]
            run = Run(frame["id"], meta, blob)
            if run.language not in LANGUAGE_NAMES:
                self._finish_early(run, "runner", f"unsupported language {run.language!r}")
            elif refusal := self._refusal(run.language):
                self._finish_early(run, "runner", refusal)
            elif run.language == "go":
                self._prepare_go(run)
            else:
                self.pending.append(run)
                self._dispatch()
        elif op == "compile":
            request_id = frame["id"]

            def reply(path: str | None, error: str | None) -> None:
                runner_error = None
                if error and error.startswith("runner: "):
                    runner_error = error.removeprefix("runner: ")
                    error = None
                self.send_api(
                    {
                        "op": "compiled",
                        "id": request_id,
                        "error": error,
                        "runner_error": runner_error,
                    }
                )

            self._compile(frame["source"], reply)
        elif op == "ping":
            self.send_api({"op": "pong", "id": frame["id"]})
        elif op == "shutdown":
            raise SystemExit(0)

    def shutdown(self) -> None:
        if not hasattr(self, "cgroups"):
            return  # start-up failed before anything was created
        for slot in self.slots:
            self._kill_slot(slot)
        if self.zygote is not None:
            with contextlib.suppress(Exception):
                self.zygote.kill()
                self.zygote.wait(5)
        for slot in self.slots:
            kill_until_empty(functools.partial(self._slot_pids, slot))
        self.cgroups.remove()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        if self.owner_filter is not None:
            self.owner_filter.remove()
        if self.slot_networks is not None:
            self.slot_networks.remove()
        if self.zsock is not None:
            self.zsock.close()


def _read_first_frame(sock: socket.socket) -> dict[str, Any]:
    reader = wire.FrameReader()
    while True:
        data = sock.recv(1 << 20)
        if not data:
            raise EOFError
        frames = reader.feed(data)
        if frames:
            return frames[0][0]  # the API sends nothing else before our "ready"


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(0)  # runs the `finally` that kills every sandbox


def main() -> None:
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the API process
    libc.prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK 1 µs: short naps (_on_done) stay short
    sock = socket.socket(fileno=int(sys.argv[1]))
    init = _read_first_frame(sock)
    supervisor = Supervisor(sock)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        supervisor.start(init)  # "ready" goes out from the loop (_report)
        supervisor.loop()
    finally:
        supervisor.shutdown()
