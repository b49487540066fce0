"""Run an engine process directly (no sandbox) and collect what it says on fd 3."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import codeactions
from codeactions.runner.wire import child_request

ENGINES = Path(codeactions.__file__).parent / "runner" / "engines"
ENGINE_JS = ENGINES / "engine.js"
GOLANG_PY = Path(codeactions.__file__).parent / "runner" / "host" / "gocompile.py"
NODE = "/usr/bin/node"
GO = "/usr/bin/go"


@dataclass
class ChildRun:
    events: list[dict[str, Any]]
    stdout: str
    stderr: str
    returncode: int

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["t"] == kind]

    @property
    def result(self) -> dict[str, Any] | None:
        results = self.of("result")
        return results[-1] if results else None

    @property
    def error(self) -> str:
        errors = self.of("error")
        assert len(errors) == 1, self.events
        assert errors[0]["kind"] == "exception"
        return str(errors[0]["message"])


def run_events(data: bytes) -> list[dict[str, Any]]:
    """What an engine said on fd 3 about its runs: its JSON lines, less engine.js's boot
    announcement ({"t": "ready"}, which only the supervisor waits for)."""
    events = [json.loads(line) for line in data.splitlines()]
    return [event for event in events if event != {"t": "ready"}]


def make_request(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "run_id": "run-1",
        "code_id": "code-1",
        "params": {},
        "body": "",
        "headers": {},
        "method": "POST",
        "max_log_chars": 8000,
    }
    request.update(overrides)
    return request


def encode_request(request: dict[str, Any]) -> bytes:
    """A request as the supervisor writes it to a child: the line, then the raw body."""
    fields = dict(request)
    return child_request(fields, str(fields.pop("body", "")).encode())


@dataclass
class Child:
    """A started engine process that has not been given its request yet."""

    process: subprocess.Popen[bytes]
    events_fd: int
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, argv: list[str]) -> Child:
        read_fd, write_fd = os.pipe()

        def events_on_fd3() -> None:
            os.dup2(write_fd, 3)

        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(3,),
            preexec_fn=events_on_fd3,
            env={},
            cwd="/",
        )
        os.close(write_fd)
        return cls(process=process, events_fd=read_fd)

    def send(self, request: dict[str, Any], timeout: float = 20) -> ChildRun:
        reader = threading.Thread(target=self._read_events)
        reader.start()
        stdout, stderr = self.process.communicate(encode_request(request), timeout=timeout)
        reader.join(timeout)
        return ChildRun(
            events=self.events,
            stdout=stdout.decode(),
            stderr=stderr.decode(),
            returncode=self.process.returncode,
        )

    def _read_events(self) -> None:
        with os.fdopen(self.events_fd, "rb") as stream:
            self.events.extend(run_events(stream.read()))


def run_child(argv: list[str], request: dict[str, Any], timeout: float = 20) -> ChildRun:
    return Child.start(argv).send(request, timeout)
