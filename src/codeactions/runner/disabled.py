"""The runner that stands in when running code is turned off."""

from __future__ import annotations

from codeactions.errors import Unavailable
from codeactions.runner.base import Language, RunnerStatus, RunOutcome, RunRequest


class DisabledRunner:
    """Stands in for the sandbox runner when it is turned off: every execution answers 503."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def run(self, request: RunRequest) -> RunOutcome:
        raise Unavailable("code runner is disabled")

    async def check(self, language: Language, source: str) -> None:
        return None  # nothing to compile with; a save is not refused for it

    def status(self) -> RunnerStatus:
        return RunnerStatus(
            ok=True,
            error="",
            isolation="none (the runner is disabled)",
            network="none",
            cgroups="none",
            slots=0,
            busy=0,
            queued=0,
            node_spares=0,
            warnings=[],
            restarts=0,
            supervisor_pid=None,
            languages={},
        )
