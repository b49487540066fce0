"""The Python engine, run directly as a process serving requests (no sandbox)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.runner.engines.child import ENGINES, encode_request, make_request, run_child

SERVE = (
    f"import sys; sys.path.insert(0, {str(ENGINES)!r}); import python_engine; python_engine.serve"
)


def engine_argv(reuse: bool = False) -> list[str]:
    return [sys.executable, "-I", "-c", f"{SERVE}(0, reuse={reuse})"]


def run_reused(*requests: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """Several requests to one engine process, as a warm worker gets them."""
    read_fd, write_fd = os.pipe()
    try:
        done = subprocess.run(
            engine_argv(reuse=True),
            input=b"".join(encode_request(make_request(**request)) for request in requests),
            capture_output=True,
            pass_fds=(3,),
            preexec_fn=lambda: os.dup2(write_fd, 3),
            timeout=20,
            env={},
        )
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as events:
        return [json.loads(line) for line in events.read().splitlines()], done.returncode


SECRETS = """
import os, sys

def Run(engine):
    s = engine.secrets
    try:
        s["NOPE"]
    except KeyError as exc:
        missing = [str(exc), exc.args[0]]
    engine.result.set({
        "get": s.get("API_KEY"),
        "none": s.get("NOPE"),
        "fallback": s.get("NOPE", "dflt"),
        "item": s["API_KEY"],
        "has": [s.has("API_KEY"), s.has("NOPE")],
        "in": ["API_KEY" in s, "NOPE" in s],
        "keys": s.keys(),
        "missing": missing,
        "seen_elsewhere": any("s3cr3t" in v for v in [*os.environ.values(), *sys.argv]),
    })
"""


def test_secrets_follow_the_originals_class() -> None:
    run = run_child(
        engine_argv(), make_request(source=SECRETS, secrets={"API_KEY": "s3cr3t", "B": ""})
    )
    assert run.returncode == 0, run
    assert run.result is not None
    assert json.loads(run.result["value"]) == {
        "get": "s3cr3t",
        "none": None,
        "fallback": "dflt",
        "item": "s3cr3t",
        "has": [True, False],
        "in": [True, False],
        "keys": ["API_KEY", "B"],
        # KeyError's str() quotes its message, as the original's did.
        "missing": ["\"Secret 'NOPE' not found\"", "Secret 'NOPE' not found"],
        "seen_elsewhere": False,
    }


def test_no_secrets_is_an_empty_set() -> None:
    source = "def Run(engine):\n    engine.result.set(engine.secrets.keys())\n"
    run = run_child(engine_argv(), make_request(source=source))
    assert run.result is not None and run.result["value"] == "[]"


def test_a_reused_engine_gives_each_run_its_own_secrets() -> None:
    source = """
import os, sys

def Run(engine):
    kept = getattr(sys, "_kept", None)  # what an earlier run left in the process
    sys._kept = engine.secrets
    engine.result.set({
        "keys": engine.secrets.keys(),
        "key": engine.secrets.get("API_KEY"),
        "pid": os.getpid(),
        "kept_is_mine": kept is engine.secrets,
    })
"""
    events, code = run_reused(
        {"source": source, "secrets": {"API_KEY": "first", "OLD": "x"}},
        {"source": source, "secrets": {"API_KEY": "second"}},
        {"source": source},
    )
    assert code == 0
    assert [event["t"] for event in events] == ["result", "done"] * 3
    results = [json.loads(event["value"]) for event in events if event["t"] == "result"]
    assert [(r["keys"], r["key"]) for r in results] == [
        (["API_KEY", "OLD"], "first"),
        (["API_KEY"], "second"),
        ([], None),
    ]
    assert len({r["pid"] for r in results}) == 1  # one process served all three
    assert not any(r["kept_is_mine"] for r in results)
