"""What the service asks of the runner, and what a run gives back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from fastapi import Depends

from codeactions.parts import Part, part
from codeactions.runner import wire
from codeactions.runner.wire import FailureReason as FailureReason
from codeactions.runner.wire import Language as Language
from codeactions.runner.wire import LanguageStatus as LanguageStatus
from codeactions.runner.wire import RunnerStatus as RunnerStatus


@dataclass
class RunRequest:
    run_id: str
    code_id: str
    language: Language
    source: str
    timeout: float  # seconds, wall clock, for this execution
    params: dict[str, str] = field(default_factory=dict)
    body: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    method: str = "POST"
    # The code's project's secrets (name -> plaintext value), as they were at the run's start.
    secrets: dict[str, str] = field(default_factory=dict)
    # Called on the event loop with the run's next log lines, in order, while it runs (a line
    # reaches it within ~50 ms, or only in the outcome if the run ends first); together they
    # are a prefix of RunOutcome.logs. What it raises is logged, never the run's concern.
    on_logs: Callable[[list[RunLogLine]], None] | None = None


@dataclass
class RunLogLine:
    type: str  # debug | info | error (print() -> info, stderr -> error)
    content: str
    at: float  # unix time when the child emitted it


@dataclass
class RunOutcome:
    ok: bool
    result: str = ""  # the value given to result.set (a string, JSON for non-strings)
    status_code: Any = 200  # as set by the code (int or numeric string)
    content_type: str = "text"
    reason: FailureReason | None = None  # set when not ok
    error: str = ""  # short message on failure (a traceback for exceptions)
    logs: list[RunLogLine] = field(default_factory=list)
    duration: float = 0.0  # seconds spent executing


def outcome_of(outcome: wire.Outcome) -> RunOutcome:
    """A run's outcome as the runner's wire carries it (from the supervisor, or a worker)."""
    return RunOutcome(
        ok=outcome["ok"],
        result=outcome["result"],
        status_code=outcome["status_code"],
        content_type=outcome["content_type"],
        reason=outcome["reason"],
        error=outcome["error"],
        logs=log_lines(outcome["logs"]),
        duration=outcome["duration"],
    )


def wire_outcome(outcome: RunOutcome) -> wire.Outcome:
    """The other way: what a worker sends back of a run's outcome."""
    return wire.Outcome(
        ok=outcome.ok,
        result=outcome.result,
        status_code=outcome.status_code,
        content_type=outcome.content_type,
        reason=outcome.reason,
        error=outcome.error,
        logs=wire_lines(outcome.logs),
        duration=outcome.duration,
    )


def wire_lines(lines: list[RunLogLine]) -> list[wire.LogEntry]:
    return [(line.type, line.content, line.at) for line in lines]


def log_lines(entries: list[wire.LogEntry]) -> list[RunLogLine]:
    return [RunLogLine(type=kind, content=content, at=at) for kind, content, at in entries]


class CompileError(Exception):
    """The source does not compile; the message is the compiler's."""


class Runner(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def run(self, request: RunRequest) -> RunOutcome:
        """Execute once; never raises for anything the user code did."""
        ...

    async def check(self, language: Language, source: str) -> None:
        """Validate a source at save time (Go compiles here); raise CompileError."""
        ...

    def status(self) -> RunnerStatus:
        """Health of the runner: up or not, and for each language whether it can run now."""
        ...


RUNNER: Part[Runner] = Part("runner")
RunnerDep = Annotated[Runner, Depends(part(RUNNER))]
