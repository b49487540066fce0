"""Schemathesis' whole run, as `st run --checks all` does it, against the in-process app: every
phase (examples, coverage, fuzzing, stateful), both generation modes, every check, with the
exceptions `schemathesis.toml` lists and explains. The OpenAPI document and the service agree,
and nothing fails.

Reproduce a failure with the seed it prints: `CODEACTIONS_FUZZ_SEED=<seed> pytest <this file>`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.engine import events, from_schema
from schemathesis.engine.statistic import Statistic
from schemathesis.python.asgi import shutdown_lifespans

from codeactions.config import (
    AuthSettings,
    DatabaseSettings,
    RunnerSettings,
    ServerSettings,
    Settings,
)
from codeactions.main import create_app
from tests.conftest import ADMIN, ADMIN_TOKEN
from tests.runs.conftest import FakeRunner

# The exceptions to the checks, and why, shared with `st run` in the repository's folder.
SETTINGS = Path(__file__).resolve().parents[1] / "schemathesis.toml"


@pytest.fixture
def app(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    application = create_app(
        Settings(
            server=ServerSettings(log_level="warning"),
            database=DatabaseSettings(url=sqlite_url),
            auth=AuthSettings(token=ADMIN_TOKEN),
            runner=RunnerSettings(enabled=False, work_dir=str(tmp_path_factory.mktemp("runner"))),
        ),
        # Runs complete (the sandbox stays off): the execution routes answer as they do in service.
        runner=FakeRunner(),
    )
    yield application
    # Schemathesis runs the app and its lifespan on its own event-loop thread.
    shutdown_lifespans()


def describe(statistic: Statistic) -> list[str]:
    found = []
    for label, groups in statistic.failures.items():
        for group in groups.values():
            titles = "; ".join(f"{f.title}: {f.message}" for f in group.failures)
            found.append(f"{label}: {titles}\n    {group.code_sample}")
    return found


def test_schemathesis_with_every_check_finds_nothing(app: FastAPI) -> None:
    config = schemathesis.Config.from_path(SETTINGS)
    config.projects.default.update(headers=ADMIN)
    if os.environ.get("CODEACTIONS_FUZZ_SEED"):
        config.update(max_failures=None, seed=int(os.environ["CODEACTIONS_FUZZ_SEED"]))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)

    statistic = Statistic()
    problems: list[str] = []
    phases = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
            statistic.on_scenario_finished(event.recorder)
        elif isinstance(event, events.PhaseFinished) and event.phase.is_enabled:
            phases.add(event.phase.name.value)
        elif isinstance(event, events.NonFatalError):
            problems.append(f"error in {event.label}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            problems += [f"{f.title}: {f.message}" for f in event.failures]

    assert {"coverage", "fuzzing", "stateful"} <= phases, phases
    assert statistic.total_cases > 1000, "too few requests to say anything"
    found = describe(statistic) + problems
    assert found == [], f"seed {config.seed}:\n" + "\n\n".join(found)
