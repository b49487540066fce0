"""Fixtures for the sandbox runner: one warm runner for the suite, small limits, short timeouts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from codeactions.config import LogSettings, RunnerSettings
from codeactions.runner.base import Language, RunOutcome, RunRequest
from codeactions.runner.sandbox import SandboxRunner

# Away from the default range, so other suites' runners on this machine never share our uids.
UID_BASE = 66000
SLOTS = 3

RunCode = Callable[..., Coroutine[Any, Any, RunOutcome]]


def runner_settings(work_dir: Path, **overrides: Any) -> RunnerSettings:
    values: dict[str, Any] = {
        "work_dir": str(work_dir),
        "uid_base": UID_BASE,
        "slots": SLOTS,
        "memory_mb": 128,
        "max_processes": 32,
        "file_size_mb": 8,
        "output_bytes": 1024 * 1024,
        "node_spares": 1,
    }
    values.update(overrides)
    return RunnerSettings(**values)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def runner(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SandboxRunner]:
    sandbox = SandboxRunner(
        runner_settings(tmp_path_factory.mktemp("runner")), LogSettings(max_content_chars=8000)
    )
    await sandbox.start()
    yield sandbox
    await sandbox.close()


def request(source: str, language: Language = "python", **fields: Any) -> RunRequest:
    fields.setdefault("timeout", 10.0)
    fields.setdefault("code_id", "code-1")
    return RunRequest(run_id="run-1", language=language, source=source, **fields)


@pytest.fixture
def run_code(runner: SandboxRunner) -> RunCode:
    async def run(source: str, language: Language = "python", **fields: Any) -> RunOutcome:
        return await runner.run(request(source, language, **fields))

    return run


def sandbox_pids(first_uid: int, count: int) -> list[int]:
    """Live processes whose real uid is one of the sandbox uids."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields["State"].strip().startswith("Z"):
            continue  # already dead, waiting for its parent to collect it
        if first_uid <= int(fields["Uid"].split()[0]) < first_uid + count:
            found.append(int(entry))
    return found
