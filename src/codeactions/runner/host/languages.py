"""Whether each language can run: what its runs need started (the zygote, its sandboxes, its
toolchain), their back-off after failed starts, and the status the API is told."""

from __future__ import annotations

import os
import time
from collections import deque

from codeactions.runner import wire
from codeactions.runner.host.boot import Boot
from codeactions.runner.host.slots import Run, Slot, SlotState
from codeactions.runner.host.spares import gist
from codeactions.runner.host.state import HostState

LANGUAGE_NAMES = {"python": "Python", "javascript": "JavaScript", "go": "Go"}


class Languages(HostState):
    def _boot_of(self, slot: Slot) -> Boot:
        return self.boots["javascript" if slot.kind == "node" else "python"]

    def _needs(self, language: str) -> list[Boot]:
        """What must start for a run of `language`, the cause first: the zygote forks every
        sandbox; Go binaries, and Node where there is no Node slot, run in general slots."""
        boots = self.boots
        if language == "python":
            return [boots["zygote"], boots["python"]]
        if language == "javascript":
            general = [] if self.node_slots else [boots["python"]]
            return [boots["zygote"], *general, boots["javascript"]]
        return [boots["zygote"], boots["python"], boots["go"]]

    def _probes_itself(self, boot: Boot) -> bool:
        """Whether the next start of `boot` is tried by us (the zygote, a spare) when its back-off
        step ends; else (Go, Node without Node slots) the next run or compile is that try."""
        return boot.key in ("zygote", "python") or (boot.key == "javascript" and self.node_slots)

    def _missing(self, key: str) -> str:
        """What a language lacks here for sure (its program, its engine), or ""."""
        if key == "javascript":
            engine = os.path.join(self.engines_dir, "engine.js")
            return not_executable(self.s["node"]) or (
                "" if os.path.isfile(engine) else f"{engine} is missing"
            )
        if key == "go":
            return not_executable(self.s["go"])
        return ""

    def _refusal(self, language: str) -> str:
        """Why a run of `language` is refused now ("" when it is taken): something it needs
        failed to start BROKEN_AFTER times in a row. A run refused ends at once (reason
        "runner") instead of waiting for its timeout."""
        for boot in self._needs(language):
            if boot.ready() or (not self._probes_itself(boot) and not boot.waiting()):
                continue
            return f"{LANGUAGE_NAMES[language]} cannot run on this runner now: {boot.describe()}"
        return ""

    def _language_status(self, language: str) -> wire.LanguageStatus:
        boots = self._needs(language)
        broken = [boot for boot in boots if not boot.ready()]
        failing = broken or [boot for boot in boots if boot.failures]
        if not failing:
            return {"ready": True, "error": "", "failures": 0, "retry_in": 0.0}
        boot = failing[0]
        return {
            "ready": not broken,
            "error": boot.describe() if broken else "",
            "failures": boot.failures,
            "retry_in": round(max(0.0, boot.retry_at - time.monotonic()), 3),
        }

    def _settled(self, language: str) -> bool:
        """At start-up: whether `language` has shown that it runs, or that it cannot."""
        boots = self._needs(language)
        if any(not boot.ready() for boot in boots):
            return True
        return all(boot.started for boot in boots if self._probes_itself(boot))

    def _report(self, force: bool = False) -> None:
        """Tell the API: "ready" once every language has started or failed to (or BOOT_SETTLE
        passed), then a "status" frame whenever a language's status changes."""
        languages = {name: self._language_status(name) for name in wire.LANGUAGES}
        status: wire.SupervisorStatus = {**self.status, "languages": languages}
        seen = {
            name: (language["ready"], language["error"], language["failures"])
            for name, language in status["languages"].items()
        }
        if not self.announced:
            if not force and not all(self._settled(name) for name in wire.LANGUAGES):
                return
            self.announced = True
            self.send_api({"op": "ready", "status": status})
        elif seen != self.reported:
            self.send_api({"op": "status", "status": status})
        self.reported = seen

    def _boot_failed(self, key: str, error: str, *, certain: bool = False) -> None:
        boot = self.boots[key]
        counted = boot.failed(error, certain)
        if boot.timer is None:
            delay = max(0.0, boot.retry_at - time.monotonic())
            boot.timer = self.call_later(delay, lambda: self._retry(key))
        if counted:
            self._fail_refused()
            self._report()

    def _boot_worked(self, key: str) -> None:
        boot = self.boots[key]
        first = not boot.started
        if boot.worked():
            self._unpark(None if key == "zygote" else key)
            self._report()
        elif first:
            if key != "zygote":
                self._unpark(key)  # the rest of its spares
            self._report()  # may complete the start-up

    def _retry(self, key: str) -> None:
        """A back-off step ended: try one start (a spare, the zygote, a look for a missing
        program); how it ends decides the next step."""
        boot = self.boots[key]
        boot.timer = None
        problem = self._missing(key)
        if problem:
            self._boot_failed(key, problem, certain=True)
        elif boot.certain:
            self._boot_worked(key)  # what was missing is there now
        elif key == "zygote":
            try:
                self._start_zygote()
            except OSError as exc:
                self._boot_failed(key, f"cannot start it: {exc}")
                return
            self._unpark()
        else:
            kind = "node" if key == "javascript" else "general"
            parked = [
                slot for slot in self.slots if slot.kind == kind and slot.state == SlotState.PARKED
            ]
            if parked:
                self._spawn(parked[0])

    def _unpark(self, key: str | None = None) -> None:
        for slot in self.slots:
            if slot.state == SlotState.PARKED and key in (None, self._boot_of(slot).key):
                self._spawn(slot)  # parks it again while its language backs off

    def _fail_refused(self) -> None:
        """Runs waiting for a language that cannot run now end at once."""
        waiting, self.pending = self.pending, deque()
        for run in waiting:
            refusal = self._refusal(run.language)
            if refusal:
                self._finish_early(run, "runner", refusal)
            else:
                self.pending.append(run)

    def _node_started_for(self, run: Run, outcome: wire.Outcome) -> None:
        """Node started for this run in a general slot (no Node spare was free): a start of
        Node like a spare's. One that ended before its engine booted fails as the runner's."""
        if run.engine_ready:
            self._boot_worked("javascript")
            return
        if outcome["reason"] not in ("exception", "killed"):
            return  # a limit of the run's (timeout, memory, ...), or the runner's already
        error = gist("\n".join(str(entry[1]) for entry in run.logs if entry[0] == "error"))
        self._boot_failed("javascript", error)
        why = f"Node.js cannot start: {error}"
        outcome["reason"] = "runner"
        outcome["error"] = f"JavaScript cannot run on this runner now: {why}"


def not_executable(path: str) -> str:
    return "" if os.path.isfile(path) and os.access(path, os.X_OK) else f"{path} is not a program"
