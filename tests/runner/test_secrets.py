"""Project secrets reach a run's code through the sandbox, and only that run's secrets."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest

from codeactions.runner.base import Language, RunOutcome, RunRequest
from codeactions.runner.sandbox import SandboxRunner
from tests.conftest import needs_go, needs_node

pytestmark = pytest.mark.sandbox

# Each reads API_KEY and says whether a secret's value shows in its environment or arguments.
SOURCES: dict[Language, str] = {
    "python": """
import os

def Run(engine):
    seen = [*os.environ.values(), open("/proc/self/cmdline").read()]
    engine.result.set({
        "key": engine.secrets.get("API_KEY"),
        "keys": engine.secrets.keys(),
        "elsewhere": any("s3cr3t" in text for text in seen),
    })
""",
    "javascript": """
function Run(engine) {
  const seen = [...Object.values(process.env), ...process.argv, ...process.execArgv];
  engine.result.set({
    key: engine.secrets.get("API_KEY"),
    keys: engine.secrets.keys(),
    elsewhere: seen.some((text) => String(text).includes("s3cr3t")),
  });
}
""",
    "go": """package main

import (
	"os"
	"strings"
)

func Run(engine *Engine) {
	seen := strings.Join(append(os.Environ(), os.Args...), "\\n")
	engine.Result.Set(map[string]any{
		"key":       engine.Secrets.Get("API_KEY"),
		"keys":      engine.Secrets.Keys(),
		"elsewhere": strings.Contains(seen, "s3cr3t"),
	}, 200, "json")
}
""",
}

LANGUAGES = [
    pytest.param("python"),
    pytest.param("javascript", marks=needs_node),
    pytest.param("go", marks=needs_go),
]


async def run(
    runner: SandboxRunner,
    language: Language,
    source: str,
    code_id: str,
    secrets: dict[str, str],
) -> RunOutcome:
    return await runner.run(
        RunRequest(
            run_id=str(uuid.uuid4()),
            code_id=code_id,
            language=language,
            source=source,
            timeout=20.0,
            secrets=secrets,
        )
    )


def data(outcome: RunOutcome) -> dict[str, Any]:
    assert outcome.ok, outcome.error
    result: dict[str, Any] = json.loads(outcome.result)
    return result


@pytest.mark.parametrize("language", LANGUAGES)
async def test_code_reads_its_secrets_and_nowhere_else(
    runner: SandboxRunner, language: Language, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outcome = await run(
        runner,
        language,
        SOURCES[language],
        f"code-{uuid.uuid4()}",
        {"API_KEY": "s3cr3t", "OTHER": "s3cr3t-too"},
    )
    assert data(outcome) == {"key": "s3cr3t", "keys": ["API_KEY", "OTHER"], "elsewhere": False}
    assert "s3cr3t" not in caplog.text  # nothing the runner logs carries them


@pytest.mark.parametrize("language", LANGUAGES[:2])
async def test_a_warm_worker_never_shows_a_run_another_runs_secrets(
    runner: SandboxRunner, language: Language
) -> None:
    # Each run also reports what an earlier run of its process left behind.
    source = {
        "python": """
import os, sys

def Run(engine):
    left = getattr(sys, "_kept", None)
    sys._kept = engine.secrets.get("API_KEY")
    engine.result.set({"key": engine.secrets.get("API_KEY"), "keys": engine.secrets.keys(),
                       "left": left, "pid": os.getpid()})
""",
        "javascript": """
function Run(engine) {
  const left = process.kept === undefined ? null : process.kept;
  process.kept = engine.secrets.get("API_KEY");
  engine.result.set({ key: engine.secrets.get("API_KEY"), keys: engine.secrets.keys(),
                      left, pid: process.pid });
}
""",
    }[language]
    code = f"code-{uuid.uuid4()}"
    first = data(await run(runner, language, source, code, {"API_KEY": "one", "OLD": "x"}))
    again = data(await run(runner, language, source, code, {"API_KEY": "one", "OLD": "x"}))
    assert again["pid"] == first["pid"]  # the same secrets: the warm worker is reused
    assert (again["key"], again["left"]) == ("one", "one")
    # Rotated secrets: the run sees its own, and nothing an earlier run kept of the old ones.
    rotated = data(await run(runner, language, source, code, {"API_KEY": "two"}))
    assert (rotated["key"], rotated["keys"], rotated["left"]) == ("two", ["API_KEY"], None)
    after = data(await run(runner, language, source, code, {"API_KEY": "two"}))
    assert (after["pid"], after["key"], after["left"]) == (rotated["pid"], "two", "two")
    # No secrets at all: none from before either.
    none = data(await run(runner, language, source, code, {}))
    assert (none["key"], none["keys"], none["left"]) == (None, [], None)
