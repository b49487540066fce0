"""The dispatch's contract between API replicas and workers: names on the broker and messages.

  API -> worker queue `<prefix>.worker.<id>` (default exchange, mandatory: a worker that is gone
  returns it):
      RunOrder      {"op": "run", ...}       run once, answer to `reply_to`
      CompileOrder  {"op": "compile", ...}   compile a Go source, answer to `reply_to`
  worker -> API queue `<prefix>.api.<id>` (the order's `reply_to`), correlation id = order id,
  each with "busy", the worker's runs under way as it sends it:
      {"op": "started", "id", "worker"}      the worker took the run (it never takes it again)
      {"op": "logs", "id", "logs": [LogEntry, ...]}   the run's next log lines, in order
      {"op": "done", "id", "outcome": Outcome}
      {"op": "refused", "id", "error"}       not taken (its deadline passed, or draining)
      {"op": "compiled", "id", "error": str | None}
  worker -> fanout exchange `<prefix>.workers`, every heartbeat and when it changes:
      Heartbeat

Every body is one JSON object. A worker's queue is its own (exclusive): an order in it dies with
the worker, never reaching another; a worker remembers the runs it took and never runs one
delivered again.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypedDict

from codeactions.runner.wire import Language, LogEntry, Outcome, loads

ReplyOp = Literal["started", "logs", "done", "refused", "compiled"]


def workers_exchange(prefix: str) -> str:
    return f"{prefix}.workers"


def worker_queue(prefix: str, worker_id: str) -> str:
    return f"{prefix}.worker.{worker_id}"


def api_queue(prefix: str, api_id: str) -> str:
    return f"{prefix}.api.{api_id}"


class RunOrder(TypedDict):
    op: Literal["run"]
    id: str  # the run's id
    reply_to: str
    code_id: str
    language: Language
    source: str
    timeout: float  # seconds the run may execute
    deadline: float  # unix time after which it is not started at all (its caller gave up)
    params: dict[str, str]
    body: str
    headers: dict[str, list[str]]
    method: str
    secrets: dict[str, str]


class CompileOrder(TypedDict):
    op: Literal["compile"]
    id: str
    reply_to: str
    language: Language
    source: str
    deadline: float


class Reply(TypedDict, total=False):
    op: ReplyOp
    id: str
    worker: str  # started
    logs: list[LogEntry]  # logs
    outcome: Outcome  # done
    error: str | None  # refused, compiled
    busy: int  # every answer: the worker's runs under way as it sends it


class LanguageReady(TypedDict):
    ready: bool
    error: str


class Heartbeat(TypedDict):
    worker: str
    queue: str
    slots: int
    busy: int
    warm: list[str]  # the codes it ran last, one per slot, most recent last: likely still warm
    draining: bool  # finishing its runs before it stops: send it nothing new
    gone: bool  # stopped: its last word
    isolation: str
    languages: dict[Language, LanguageReady]
    sent_at: float  # unix time


def encode(message: RunOrder | CompileOrder | Reply | Heartbeat) -> bytes:
    return json.dumps(message, allow_nan=False).encode()


def decode(body: bytes) -> dict[str, Any]:
    """A message's JSON object; ValueError when it is not one."""
    value = loads(body)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


_HEARTBEAT_TYPES: dict[str, type | tuple[type, ...]] = {
    "worker": str,
    "queue": str,
    "slots": int,
    "busy": int,
    "warm": list,
    "draining": bool,
    "gone": bool,
    "isolation": str,
    "languages": dict,
    "sent_at": (int, float),
}


def heartbeat(body: bytes) -> Heartbeat:
    """A worker's heartbeat; ValueError when the message is not one."""
    value = decode(body)
    for key, kind in _HEARTBEAT_TYPES.items():
        if not isinstance(value.get(key), kind):
            raise ValueError(f"a heartbeat without a valid {key!r}")
    return value  # type: ignore[return-value]
