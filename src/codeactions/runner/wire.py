"""The runner's wire contract, shared by the API side (`sandbox.py`) and the host (`host/`).

Stdlib only: the host process imports it on the runtime interpreter (outside the service's venv).

API <-> supervisor: frames of an 8-byte header (two big-endian lengths), a JSON object and an
opaque blob. The blob carries what the supervisor passes on without reading: a run's request for
the child (see `child_request`), so a large request costs the supervisor only a copy of its bytes.

  API -> supervisor   {"op": "init", "settings": {...}, "max_log_chars": n}   (first frame)
                      {"op": "run", "id": str, "run": RunMeta}
                          + blob: the child's request (child_request), never parsed there
                      {"op": "compile", "id": str, "source": str}
                      {"op": "ping", "id": str}
                      {"op": "shutdown"}
  supervisor -> API   {"op": "ready", "status": SupervisorStatus}   (once each language has
                          started or failed to: the first status the API sees is true)
                      {"op": "status", "status": SupervisorStatus}  (a language's changed)
                      {"op": "logs", "id": str, "logs": [LogEntry, ...]}  (a run's next log
                          lines, sent while it runs: what a run's "logs" frames carry, in order,
                          is always a prefix of its outcome's logs; a run over within
                          20 ms of a line sends it only in its outcome: host/runs.py)
                      {"op": "done", "id": str, "outcome": Outcome}
                      {"op": "compiled", "id": str, "error": str|null, "runner_error": str|null}
                      {"op": "pong", "id": str}

Supervisor -> child: one JSON line (the request without its body, with `body_size`) followed by
exactly `body_size` raw bytes of body. No escaping, no parsing of the body on the way.

The status the supervisor reports (`SupervisorStatus`, per language a `LanguageStatus`) and the
one the API's runner answers (`RunnerStatus`) are typed here, for both sides.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Literal, TypedDict

FRAME_HEADER = struct.Struct(">II")

Language = Literal["python", "javascript", "go"]
LANGUAGES: tuple[Language, ...] = ("python", "javascript", "go")

ApiOp = Literal["init", "run", "compile", "ping", "shutdown"]  # what the API sends
# What the supervisor sends.
SupervisorOp = Literal["ready", "status", "logs", "done", "compiled", "pong"]

# Why a run failed, as stored in the run's `extra.reason` and counted in metrics.
FailureReason = Literal[
    "exception",  # the code raised (or exited non-zero / missing Run)
    "timeout",  # wall-clock timeout: the whole process tree was killed
    "memory",  # memory limit reached
    "cpu",  # CPU-time limit reached
    "output",  # output (result or logs) over the limit
    "file_size",  # wrote a file over the size limit
    "killed",  # killed by a signal (segfault, abort, ...)
    "runner",  # the runner itself failed (not the user's fault)
    "worker lost",  # the worker running it died or fell silent (dispatch over RabbitMQ)
]

# One log line of a run: [level ("debug" | "info" | "error"), text, unix time] (a JSON array).
LogEntry = tuple[str, str, float]


class RunMeta(TypedDict, total=False):
    """API -> supervisor: what the supervisor reads of a run ({"op": "run", "run": ...})."""

    language: Language
    timeout: float  # seconds, wall clock
    warm_key: str  # code id + hashes of its source and secrets: which warm worker may run it
    source: str  # Go only: compiled by the supervisor (other languages' go to the child)


class Outcome(TypedDict):
    """Supervisor -> API: how a run ended ({"op": "done", "id": ..., "outcome": ...})."""

    ok: bool
    result: str
    status_code: int | str  # as the code set it (the engines send ints or strings)
    content_type: str
    reason: FailureReason | None  # None when ok
    error: str
    logs: list[LogEntry]
    duration: float  # seconds


class LanguageStatus(TypedDict):
    """Whether runs of one language can start now, and if not, why."""

    ready: bool
    error: str  # why not ready ("" when ready)
    failures: int  # consecutive failed starts of its sandboxes (or its toolchain)
    retry_in: float  # seconds until the next start is tried (0 when none is waiting)


class IsolationStatus(TypedDict):
    """What the supervisor found at start-up: the isolation layers it set up, its slots."""

    isolation: str
    network: str
    cgroups: str
    slots: int
    node_spares: int
    root: bool
    warnings: list[str]


class SupervisorStatus(IsolationStatus):
    """Supervisor -> API: in {"op": "ready", "status": ...} once every language has started or
    failed to, and in {"op": "status", "status": ...} whenever a language's status changes."""

    languages: dict[Language, LanguageStatus]


class RunnerStatus(TypedDict):
    """What `Runner.status()` answers, and `/health` reports."""

    ok: bool  # the runner is up and every language can run
    error: str  # why not ok, naming each language that cannot run ("" when ok)
    isolation: str
    network: str
    cgroups: str
    slots: int
    busy: int
    queued: int
    node_spares: int
    warnings: list[str]
    restarts: int
    supervisor_pid: int | None
    languages: dict[Language, LanguageStatus]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes | bytearray | str) -> Any:
    """json.loads without NaN and Infinity, which JSON does not have (nor our databases)."""
    return json.loads(data, parse_constant=_no_constant)


def encode_frame(message: dict[str, Any], blob: bytes = b"") -> bytes:
    meta = json.dumps(message, allow_nan=False).encode()
    return FRAME_HEADER.pack(len(meta), len(blob)) + meta + blob


class FrameReader:
    """Splits a byte stream into (message, blob) frames; each byte is copied a bounded number
    of times however the stream is chunked (no re-copying of a growing buffer)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
        buffer = self._buffer
        buffer += data
        frames = []
        start = 0
        while len(buffer) - start >= FRAME_HEADER.size:
            meta_size, blob_size = FRAME_HEADER.unpack_from(buffer, start)
            meta_at = start + FRAME_HEADER.size
            end = meta_at + meta_size + blob_size
            if len(buffer) < end:
                break
            message = loads(bytes(buffer[meta_at : meta_at + meta_size]))
            frames.append((message, bytes(buffer[meta_at + meta_size : end])))
            start = end
        if start:
            del buffer[:start]
        return frames


def child_request(request: dict[str, Any], body: bytes) -> bytes:
    """What a child reads on stdin for one run: the request line, then the raw body."""
    # ASCII-only (the default escaping): a lone surrogate in a source or parameter still parses.
    line = json.dumps({**request, "body_size": len(body)}, allow_nan=False)
    return line.encode() + b"\n" + body
