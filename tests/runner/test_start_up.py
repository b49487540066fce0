"""The runner as a new user starts it (`codeactions serve` in its own process): from a clone in a
private temp dir every language runs; a language that cannot start backs off, is named in
/health (503) while the others go on serving, and runs again once it starts."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from codeactions.config import LogSettings
from codeactions.runner.sandbox import SandboxRunner
from tests.conftest import (
    ADMIN,
    RUNNER_DEFAULTS,
    need,
    needs_go,
    needs_node,
    needs_runtime,
)
from tests.faults.service import Service
from tests.runner.conftest import UID_BASE, request, runner_settings

pytestmark = [pytest.mark.sandbox, needs_runtime]

REPO = Path(__file__).resolve().parents[2]
SOURCES = {
    "python": "def Run(engine):\n    engine.result.set('from python')\n",
    "javascript": "function Run(engine) { engine.result.set('from javascript'); }\n",
    "go": 'package main\n\nfunc Run(engine *Engine) {\n\tengine.Result.Set("from go", 200, "text")\n}\n',
}


def clone_of_this_checkout(target: Path) -> Path:
    """`git clone` of this repository with the working tree's src/ over it (a clone holds only
    what was committed; the code under test is what src/ holds now), and the runtime
    interpreter `make deps` would make in it: this checkout's (a venv takes a minute to make)."""
    need(shutil.which("git") is not None, "git is not installed")
    subprocess.run(["git", "clone", "-q", str(REPO), str(target)], check=True, timeout=120)
    shutil.rmtree(target / "src")
    shutil.copytree(REPO / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (target / ".venv-runtime").symlink_to(Path(RUNNER_DEFAULTS.python).parents[1])
    return target


def save(service: Service, language: str, source: str) -> str:
    response = httpx.post(
        f"{service.url}/code",
        params={
            "project_uuid": "start-up",
            "name": language,
            "language": language,
            "type": "endpoint",
        },
        content=source,
        headers=ADMIN,
        timeout=120,  # Go compiles on save
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def run(service: Service, code: str) -> httpx.Response:
    return httpx.post(f"{service.url}/action/endpoint/{code}", headers=ADMIN, timeout=60)


def commands_of_children(pid: int) -> list[str]:
    """The command lines of every process below `pid`."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with open(f"/proc/{child}/cmdline", "rb") as handle:
            found.append(handle.read().replace(b"\0", b" ").decode())
        found += commands_of_children(int(child))
    return found


@needs_node
@needs_go
def test_a_clone_in_a_private_temp_dir_runs_python_javascript_and_go(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)  # as `mktemp -d` makes it: sandbox users cannot enter it
    clone = clone_of_this_checkout(private / "x")
    env = {
        "PYTHONPATH": str(clone / "src"),
        "CODEACTIONS_RUNNER_NODE_SPARES": "1",
        "CODEACTIONS_HEALTH_CACHE_SECONDS": "0",
    }
    where = subprocess.run(
        [sys.executable, "-c", "import codeactions; print(codeactions.__file__)"],
        env={**os.environ, **env},
        cwd=clone,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(clone / "src" / "codeactions" / "__init__.py")

    (tmp_path / "service").mkdir()
    service = Service(tmp_path / "service", env, uid_base=65000, cwd=clone)
    service.start()
    try:
        assert service.process is not None
        supervisor = str(clone / "src" / "codeactions" / "runner" / "host" / "__main__.py")
        assert any(supervisor in command for command in commands_of_children(service.process.pid))
        for language, source in SOURCES.items():
            response = run(service, save(service, language, source))
            assert (response.status_code, response.text) == (200, f"from {language}")
        health = httpx.get(f"{service.url}/health", timeout=30)
        assert health.status_code == 200, health.text
        assert health.json()["services"]["runner"]["message"].startswith(
            "ok (python, javascript, go ready;"
        )
    finally:
        service.stop()


@pytest.fixture
def visible_dir(tmp_path: Path) -> Iterator[Path]:
    """A dir the sandboxes see and may write to. Not under /tmp when root: there sandboxes get
    a private /tmp (and /var/tmp, /dev/shm, /run), so they would not see the host's."""
    place = tmp_path
    if os.geteuid() == 0:
        place = Path(tempfile.mkdtemp(prefix="codeactions-test-", dir="/var/lib"))
    place.chmod(0o755)
    try:
        yield place
    finally:
        if place != tmp_path:
            shutil.rmtree(place, ignore_errors=True)


@needs_go
def test_a_language_that_cannot_start_backs_off_and_fails_health_while_the_others_run(
    tmp_path: Path, visible_dir: Path
) -> None:
    starts = visible_dir / "starts"
    starts.touch(mode=0o666)
    starts.chmod(0o666)  # whatever the umask: each sandbox user appends to it
    node = visible_dir / "node"
    node.write_text(
        f"#!/bin/sh\n# A Node.js that cannot start: it marks the try, says why, ends.\n"
        f"echo start >> {starts}\necho 'Error: this node cannot start' >&2\nexit 1\n"
    )
    node.chmod(0o755)
    env = {
        "CODEACTIONS_RUNNER_NODE": str(node),
        "CODEACTIONS_RUNNER_NODE_SPARES": "2",
        "CODEACTIONS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "CODEACTIONS_HEALTH_CACHE_SECONDS": "0",
    }
    service = Service(tmp_path, env, uid_base=65100)
    service.start()
    try:
        time.sleep(2)  # 0.1 s doubling: some five tries by now, where spinning makes hundreds
        tries = starts.read_text().count("start")
        assert 3 <= tries <= 8
        logged = [
            line
            for line in service.log_path.read_text().splitlines()
            if "Node.js failed to start" in line
        ]
        assert tries - 1 <= len(logged) <= tries  # one line a step (the last try may be ending)

        health = httpx.get(f"{service.url}/health", timeout=30)
        assert health.status_code == 503
        runner = health.json()["services"]["runner"]
        assert runner["status"] == "unhealthy"
        assert runner["message"].startswith(
            "RuntimeError: javascript cannot run: Node.js cannot start: "
            "Error: this node cannot start ("
        )
        assert runner["message"].endswith("; python, go ready")

        response = run(service, save(service, "python", SOURCES["python"]))
        assert (response.status_code, response.text) == (200, "from python")
        began = time.monotonic()
        response = run(service, save(service, "javascript", SOURCES["javascript"]))
        assert response.status_code == 503
        assert response.json()["message"].startswith(
            "error on executing code: JavaScript cannot run on this runner now (run "
        )
        assert time.monotonic() - began < 2  # at once, not at the code's timeout
    finally:
        service.stop()


@needs_node
async def test_a_language_that_starts_again_runs_again(tmp_path: Path, visible_dir: Path) -> None:
    broken = visible_dir / "broken"
    broken.touch()
    node = visible_dir / "node"
    node.write_text(
        f"#!/bin/sh\n[ -e {broken} ] && {{ echo 'Error: not yet' >&2; exit 1; }}\n"
        f'exec {RUNNER_DEFAULTS.node} "$@"\n'
    )
    node.chmod(0o755)
    runner = SandboxRunner(
        runner_settings(tmp_path, uid_base=UID_BASE + 100, slots=1, node_spares=1, node=str(node)),
        LogSettings(),
    )
    await runner.start()
    try:
        javascript = runner.status()["languages"]["javascript"]
        assert (javascript["ready"], javascript["error"]) == (
            False,
            "Node.js cannot start: Error: not yet",
        )
        broken.unlink()
        for _ in range(600):  # the next try comes within 30 s, the longest step
            if runner.status()["ok"]:
                break
            await asyncio.sleep(0.1)
        assert runner.status()["languages"]["javascript"] == {
            "ready": True,
            "error": "",
            "failures": 0,
            "retry_in": 0.0,
        }
        outcome = await runner.run(request(SOURCES["javascript"], "javascript"))
        assert (outcome.ok, outcome.result) == (True, "from javascript")
    finally:
        await runner.close()
