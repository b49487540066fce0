"""The runner as the service uses it: other languages, Go compile checks, concurrency, restarts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from codeactions.config import LogSettings
from codeactions.runner.base import CompileError
from codeactions.runner.sandbox import SandboxRunner
from tests.conftest import needs_go, needs_node
from tests.runner.conftest import (
    SLOTS,
    UID_BASE,
    RunCode,
    request,
    runner_settings,
    sandbox_pids,
)

pytestmark = pytest.mark.sandbox

GO_SOURCE = """package main

func Run(engine *Engine) {
	engine.Log.Info("from go")
	engine.Result.Set(map[string]any{"x": engine.Params.Get("x")}, 201, "json")
}
"""
JS_SOURCE = """
function Run(engine) {
  console.log("from js");
  engine.result.set({x: engine.params.get("x")}, 201, "json");
}
"""


def test_status_describes_the_isolation_honestly(runner: SandboxRunner) -> None:
    status = runner.status()
    assert status["ok"] is True
    assert status["slots"] == SLOTS and status["busy"] == 0
    assert status["cgroups"] in {"v1", "v2", "none"}
    if os.geteuid() == 0:
        assert "uid per slot" in status["isolation"]
        assert "iptables" in status["network"] or "namespace" in status["network"]


@needs_node
@needs_go
def test_status_says_every_language_can_run(runner: SandboxRunner) -> None:
    status = runner.status()
    assert (status["ok"], status["error"]) == (True, "")
    ready = {"ready": True, "error": "", "failures": 0, "retry_in": 0.0}
    assert status["languages"] == {"python": ready, "javascript": ready, "go": ready}


async def test_runs_beyond_the_slot_count_wait_for_a_free_slot(run_code: RunCode) -> None:
    source = 'import time\ndef Run(engine):\n    time.sleep(0.3)\n    engine.result.set(engine.params.get("n"))\n'
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(run_code(source, params={"n": str(n)}) for n in range(SLOTS * 2))
    )
    assert [outcome.result for outcome in outcomes] == [str(n) for n in range(SLOTS * 2)]
    assert time.monotonic() - started >= 0.6  # two waves of SLOTS runs


@needs_node
async def test_javascript_runs_in_a_booted_node_spare(run_code: RunCode) -> None:
    for _ in range(3):  # more runs than node spares: the rest start node in a general slot
        outcome = await run_code(JS_SOURCE, language="javascript", params={"x": "7"})
        assert outcome.ok, outcome.error
        assert json.loads(outcome.result) == {"x": "7"}
        assert outcome.status_code == 201
        assert [line.content for line in outcome.logs] == ["from js"]


@needs_node
async def test_javascript_cannot_reach_local_services(run_code: RunCode) -> None:
    source = """
const net = require("net");
async function Run(engine) {
  const result = await new Promise((resolve) => {
    const socket = net.connect(6379, "127.0.0.1");
    socket.on("connect", () => { socket.destroy(); resolve("connected"); });
    socket.on("error", (error) => resolve(error.code));
  });
  engine.result.set(result);
}
"""
    outcome = await run_code(source, language="javascript")
    assert outcome.ok, outcome.error
    assert outcome.result in {"ECONNREFUSED", "ENETUNREACH"}


@needs_go
async def test_go_compiles_on_check_and_runs_sandboxed(
    runner: SandboxRunner, run_code: RunCode
) -> None:
    await runner.check("go", GO_SOURCE)
    outcome = await run_code(GO_SOURCE, language="go", params={"x": "9"})
    assert outcome.ok, outcome.error
    assert json.loads(outcome.result) == {"x": "9"}
    assert [line.content for line in outcome.logs] == ["from go"]


@needs_go
async def test_go_compile_errors_come_back_from_check(runner: SandboxRunner) -> None:
    with pytest.raises(CompileError) as error:
        await runner.check("go", "package main\n\nfunc Run(engine *Engine) { undefined_thing() }\n")
    assert "undefined" in str(error.value)


async def test_check_accepts_any_python_or_javascript(runner: SandboxRunner) -> None:
    await runner.check("python", "this is not python")
    await runner.check("javascript", "neither )(")


async def test_a_dead_supervisor_fails_the_runs_in_flight_and_comes_back(
    tmp_path: Path,
) -> None:
    sandbox = SandboxRunner(
        runner_settings(tmp_path, uid_base=UID_BASE + 20, slots=1, node_spares=0), LogSettings()
    )
    await sandbox.start()
    try:
        in_flight = asyncio.create_task(
            sandbox.run(request("import time\ndef Run(engine):\n    time.sleep(5)\n"))
        )
        await asyncio.sleep(0.5)
        pid = sandbox.status()["supervisor_pid"]
        os.kill(pid, signal.SIGKILL)
        outcome = await in_flight
        assert (outcome.ok, outcome.reason) == (False, "runner")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            outcome = await sandbox.run(
                request('def Run(engine):\n    engine.result.set("back")\n')
            )
            if outcome.ok:
                break
            await asyncio.sleep(0.2)
        assert outcome.result == "back"
        assert sandbox.status()["supervisor_pid"] != pid
        assert sandbox.status()["restarts"] == 1
    finally:
        await sandbox.close()
    assert sandbox_pids(UID_BASE + 20, 1) == []  # close() leaves no sandboxed process behind


def child_pids(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_a_dead_zygote_fails_the_runs_in_flight_and_is_replaced(tmp_path: Path) -> None:
    sandbox = SandboxRunner(
        runner_settings(tmp_path, uid_base=UID_BASE + 30, slots=1, node_spares=0), LogSettings()
    )
    await sandbox.start()
    try:
        in_flight = asyncio.create_task(
            sandbox.run(request("import time\ndef Run(engine):\n    time.sleep(5)\n"))
        )
        await asyncio.sleep(0.5)
        (zygote,) = child_pids(sandbox.status()["supervisor_pid"])
        os.kill(zygote, signal.SIGKILL)
        outcome = await in_flight
        assert (outcome.ok, outcome.reason) == (False, "runner")
        outcome = await sandbox.run(request('def Run(engine):\n    engine.result.set("back")\n'))
        assert outcome.result == "back"
    finally:
        await sandbox.close()
    assert sandbox_pids(UID_BASE + 30, 1) == []


async def test_a_stuck_supervisor_is_detected_and_replaced(tmp_path: Path) -> None:
    sandbox = SandboxRunner(
        runner_settings(tmp_path, uid_base=UID_BASE + 40, slots=1, node_spares=0), LogSettings()
    )
    sandbox.grace = sandbox.ping_timeout = 0.5
    await sandbox.start()
    try:
        pid = sandbox.status()["supervisor_pid"]
        os.kill(pid, signal.SIGSTOP)
        outcome = await sandbox.run(request("def Run(engine):\n    pass\n", timeout=1))
        assert (outcome.ok, outcome.reason) == (False, "runner")
        for _ in range(100):
            if sandbox.status()["ok"] and sandbox.status()["supervisor_pid"] != pid:
                break
            await asyncio.sleep(0.1)
        outcome = await sandbox.run(request('def Run(engine):\n    engine.result.set("back")\n'))
        assert outcome.result == "back"
    finally:
        await sandbox.close()


async def test_network_off_leaves_only_an_empty_loopback(tmp_path: Path) -> None:
    sandbox = SandboxRunner(
        runner_settings(tmp_path, uid_base=UID_BASE + 50, slots=1, node_spares=0, network="off"),
        LogSettings(),
    )
    await sandbox.start()
    try:
        if os.geteuid() == 0:
            assert "namespace" in sandbox.status()["network"]
        source = """
import socket
def Run(engine):
    seen = {}
    for host, port in [("127.0.0.1", 5432), ("8.8.8.8", 53), ("1.1.1.1", 443)]:
        try:
            socket.create_connection((host, port), timeout=2).close()
            seen[host] = "connected"
        except OSError as exc:
            seen[host] = type(exc).__name__
    engine.result.set(seen)
"""
        outcome = await sandbox.run(request(source))
        assert outcome.ok, outcome.error
        assert "connected" not in json.loads(outcome.result).values()
    finally:
        await sandbox.close()
