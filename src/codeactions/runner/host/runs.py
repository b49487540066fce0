"""A run in its child: reading what the child says (output, logs, result, "done"), its limits
on output and time, its log lines sent live, and its end (the outcome sent to the API, the slot
kept warm or cleaned)."""

from __future__ import annotations

import contextlib
import os
import signal
import time

from codeactions.runner import wire
from codeactions.runner.host import outcome
from codeactions.runner.host.processes import kill_round, uid_pids
from codeactions.runner.host.slots import READ_SIZE, Child, Run, Slot, SlotState
from codeactions.runner.host.state import HostState
from codeactions.runner.host.warm import is_idle

IDLE_NAP = 0.00002  # a warm worker that said "done" is looked at every IDLE_NAP seconds
IDLE_WAIT_NOW = 0.002  # ... for this long, then by the loop's timers every IDLE_STEP,
IDLE_STEP = 0.001  # ... doubling up to IDLE_STEP_MAX, until it is idle (or the run times out)
IDLE_STEP_MAX = 0.05
# A run's new log lines go to the API this long after the first of them, if it still runs: a
# run over by then sends them in its outcome only, so short runs pay nothing for streaming.
LIVE_FLUSH_SECONDS = 0.02
LIVE_FRAME_ENTRIES = 1000  # at most this many lines in one "logs" frame ...
LIVE_FRAME_CHARS = 1 << 20  # ... and about this much text; the rest on the next flush


class RunOutput(HostState):
    def _read_child(self, fd: int) -> None:
        owner = self.fd_owner.get(fd)
        if owner is None:
            return
        run, name = owner
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            self._flush_partial(run, fd, name)
            self.selector.unregister(fd)
            del self.fd_owner[fd]
            return
        self._consume(run, fd, name, data)
        if run.reason == "output":
            self._kill_run(run, "output", run.reason_message)
        elif run.done_code is not None and not run.finished and not run.done_checking:
            self._on_done(run)

    def _on_done(self, run: Run) -> None:
        """The child wrote "done". A single-use child ends here (killed right after). A warm
        worker's word is checked against /proc first: user code can write the same line, then
        go on running; such a run goes on (under its limits) until the worker is really idle."""
        child = run.child
        if child is None or not (child.warm and run.done_keep):
            self._finish(run)
            return
        # It is usually microseconds from its wait, but may need the CPU we are on to get there:
        # nap (not spin) a little before falling back to the loop's timers (1 ms resolution).
        deadline = time.monotonic() + IDLE_WAIT_NOW
        while not is_idle(child):
            if time.monotonic() > deadline:
                run.done_checking = True
                self._recheck_done(run, IDLE_STEP)
                return
            time.sleep(IDLE_NAP)
        self._finish(run)

    def _recheck_done(self, run: Run, delay: float) -> None:
        def check() -> None:
            if run.finished or run.child is None:
                return
            if is_idle(run.child):
                self._finish(run)
            else:
                self._recheck_done(run, min(delay * 2, IDLE_STEP_MAX))

        self.call_later(delay, check)

    def _consume(self, run: Run, fd: int, name: str, data: bytes) -> None:
        if run.reason is not None:
            return  # killed: what comes after does not count
        run.output += len(data)
        if run.output > int(self.s["output_bytes"]):
            run.reason = "output"
            run.reason_message = f"output over the limit of {self.s['output_bytes']} bytes"
            return
        if name == "stdout" and run.stdout is not None:
            run.stdout += data
            if run.program:
                return
        # Only the new bytes are searched for line ends; a partial line is moved once per line.
        buffer = run.buffers.setdefault(fd, bytearray())
        start = 0
        newline = data.find(b"\n")
        if newline >= 0:
            buffer += data[: newline + 1]
            self._line(run, name, bytes(buffer[:-1]))
            buffer.clear()
            start = newline + 1
            while (newline := data.find(b"\n", start)) >= 0:
                self._line(run, name, data[start:newline])
                start = newline + 1
        buffer += data[start:] if start else data

    def _flush_partial(self, run: Run, fd: int, name: str) -> None:
        rest = run.buffers.pop(fd, None)
        if rest and run.reason is None:
            self._line(run, name, bytes(rest))

    def _line(self, run: Run, name: str, raw: bytes) -> None:
        now = time.time()
        if name != "proto":
            if name == "stdout" and run.program:
                return
            text = raw.decode("utf-8", "replace")
            entry = ("info" if name == "stdout" else "error", text[: self.max_log_chars], now)
            run.logs.append(entry)
            if name == "stdout" and run.stdout is not None:
                run.stdout_logs.append(entry)
            self._stream_soon(run)
            return
        try:
            message = wire.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("t")
        if kind == "log":
            level = message.get("level")
            level = level if level in ("debug", "info", "error") else "info"
            run.logs.append((level, str(message.get("msg", ""))[: self.max_log_chars], now))
            self._stream_soon(run)
        elif kind == "result":
            code = message.get("status_code", 200)
            if isinstance(code, bool) or not isinstance(code, int | str):
                message["status_code"] = 200  # the engines send ints or strings; nothing else
            run.result = message
        elif kind == "error":
            run.error = message
        elif kind == "ready":
            run.engine_ready = True  # Node booted in this run's slot
        elif kind == "script" and run.language == "javascript" and run.stdout is not None:
            # Its stdout is its result: the lines made of it so far are no logs (nor sent live).
            run.program = True
            dropped = {id(entry) for entry in run.stdout_logs}
            run.logs = [entry for entry in run.logs if id(entry) not in dropped]
            run.stdout_logs.clear()
            self._stream_soon(run)
        elif kind == "action" and run.language == "javascript" and not run.program:
            run.stdout = None  # it has a Run: its stdout is logs, as the lines made of it so far
            run.stdout_logs.clear()
            self._stream_soon(run)
        elif kind == "done":
            code = message.get("code", 0)
            run.done_code = code if isinstance(code, int) and not isinstance(code, bool) else 1
            run.done_keep = message.get("keep", True) is True

    def _stream_soon(self, run: Run) -> None:
        """New lines: send them to the API in LIVE_FLUSH_SECONDS, unless the run is over by then
        or they are stdout lines that may be a JavaScript run's result (`_stream` sends them)."""
        if run.stream_timer is not None or run.finished or run.streamed >= len(run.logs):
            return
        if run.stdout_logs and run.logs[run.streamed] is run.stdout_logs[0]:
            return  # nothing can go before engine.js says "action" (which calls us again)
        run.stream_timer = self.call_later(LIVE_FLUSH_SECONDS, lambda: self._stream(run))

    def _stream(self, run: Run) -> None:
        """Send the run's lines not sent yet, up to the first that may be no log: what the API
        gets live is always a prefix of its outcome's logs."""
        run.stream_timer = None
        if run.finished:
            return
        end = len(run.logs)
        if run.stdout_logs:
            first = run.stdout_logs[0]  # never sent: the stream stops before it
            end = next((i for i in range(run.streamed, end) if run.logs[i] is first), run.streamed)
        stop, chars = run.streamed, 0
        while stop < end and stop - run.streamed < LIVE_FRAME_ENTRIES and chars < LIVE_FRAME_CHARS:
            chars += len(run.logs[stop][1])
            stop += 1
        if stop == run.streamed:
            return
        self.send_api({"op": "logs", "id": run.id, "logs": run.logs[run.streamed : stop]})
        run.streamed = stop
        if stop < end:
            self._stream_soon(run)

    def _timeout(self, run: Run) -> None:
        if not run.finished:
            self._kill_run(run, "timeout", f"execution took longer than {run.timeout:g} s")

    def _kill_run(self, run: Run, reason: wire.FailureReason, message: str) -> None:
        if run.finished:
            return
        run.reason = run.reason or reason
        run.reason_message = run.reason_message or message
        if run.slot is None:
            self._finish_early(run, reason, message)
            return
        self._kill_slot(run.slot)
        self._finish(run)

    def _kill_slot(self, slot: Slot) -> None:
        if slot.child is not None:
            with contextlib.suppress(OSError):
                os.killpg(slot.child.pid, signal.SIGKILL)
        self._kill_slot_pids(slot)

    def _kill_slot_pids(self, slot: Slot) -> None:
        kill_round(lambda: self._slot_pids(slot))

    def _slot_pids(self, slot: Slot) -> set[int]:
        if self.cgroups.has_any():
            return self.cgroups.pids(slot.index)
        if self.root:
            return uid_pids(slot.uid)
        return set()

    def _finish(self, run: Run) -> None:
        if run.finished:
            return
        run.finished = True
        slot = run.slot
        child = run.child
        if run.timer is not None:
            run.timer[2] = None
        if run.stream_timer is not None:
            run.stream_timer[2] = None  # what was not sent live goes in the outcome
            run.stream_timer = None
        if child is not None:
            # Everything the child wrote before it ended is in the pipes: read it all.
            for fd, name in (
                (child.proto, "proto"),
                (child.stdout, "stdout"),
                (child.stderr, "stderr"),
            ):
                while fd in self.fd_owner and run.reason is None:
                    try:
                        data = os.read(fd, READ_SIZE)
                    except OSError:
                        break
                    if not data:
                        break
                    self._consume(run, fd, name, data)
                self._flush_partial(run, fd, name)
        ended = outcome.of_run(
            run,
            oom=slot is not None and self.cgroups.oom_kills(slot.index) > run.oom_before,
            cpu_limit=self._cpu_limit(run),
            memory_mb=self.s["memory_mb"],
            file_size_mb=self.s["file_size_mb"],
        )
        if run.argv is not None and run.argv == self.child_cfg["node_argv"]:
            self._node_started_for(run, ended)
        self.send_api({"op": "done", "id": run.id, "outcome": ended})
        self.running -= 1
        if slot is not None and child is not None and self._reusable(run, slot, ended):
            slot.run = None
            self._recycle(slot, run.warm_key)
            self._dispatch()
            return
        if slot is not None:
            slot.warm_key, slot.warm_runs = "", 0
            if child is not None:
                self._close_child(child)
            if child is not None and (child.exit_status is None or not self.cgroups.has_any()):
                # The child may be gone while its process group lives on.
                with contextlib.suppress(OSError):
                    os.killpg(child.pid, signal.SIGKILL)
            slot.child = None
            slot.run = None
            slot.state = SlotState.CLEANING
            self._kill_slot_pids(slot)
            self._clean(slot)
        self._dispatch()

    def _drop_child(self, slot: Slot) -> None:
        """Kill the slot's child with its process group and close our ends of its pipes; the
        slot is left CLEANING, without a child."""
        if slot.child is not None:
            with contextlib.suppress(OSError):
                os.killpg(slot.child.pid, signal.SIGKILL)
            self._close_child(slot.child)
        slot.child = None
        slot.state = SlotState.CLEANING

    def _close_child(self, child: Child) -> None:
        for fd in (child.stdin, child.stdout, child.stderr, child.proto):
            if fd < 0:
                continue
            self.fd_owner.pop(fd, None)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        child.stdin = child.stdout = child.stderr = child.proto = -1
        for fd in child.proc_fds or ():
            with contextlib.suppress(OSError):
                os.close(fd)
        child.proc_fds = None

    def _finish_early(self, run: Run, reason: wire.FailureReason, message: str) -> None:
        run.finished = True
        self.send_api({"op": "done", "id": run.id, "outcome": outcome.failed(reason, message)})
