"""The runner's wire format, shared by the API side (`sandbox.py`) and the supervisor process.

Stdlib only: the supervisor imports this file by path (it runs outside the service's venv).

API <-> supervisor: frames of an 8-byte header (two big-endian lengths), a JSON object and an
opaque blob. The blob carries what the supervisor passes on without reading: a run's request for
the child (see `child_request`), so a large request costs the supervisor only a copy of its bytes.

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


class LanguageStatus(TypedDict):
    """Whether runs of one language can start now, and if not, why."""

    ready: bool
    error: str  # why not ready ("" when ready)
    failures: int  # consecutive failed starts of its sandboxes (or its toolchain)
    retry_in: float  # seconds until the next start is tried (0 when none is waiting)


class SupervisorStatus(TypedDict):
    """Supervisor -> API: in {"op": "ready", "status": ...} once every language has started or
    failed to, and in {"op": "status", "status": ...} whenever a language's status changes."""

    isolation: str
    network: str
    cgroups: str
    slots: int
    node_spares: int
    root: bool
    warnings: list[str]
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
