"""Warm Python workers: repeated runs of the same Python code reuse one sandboxed process."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from codeactions.config import LogSettings
from codeactions.runner.base import RunOutcome, RunRequest
from codeactions.runner.sandbox import SandboxRunner
from tests.conftest import needs_node
from tests.runner.conftest import UID_BASE, runner_settings, sandbox_pids

# One source for most tests: `mode` picks what a run does, every run reports its process id.
SOURCE = """
import os
import subprocess
import sys
import threading
import time

counter = 0


def Run(engine):
    global counter
    counter += 1
    mode = engine.params.get("mode")
    out = {"pid": os.getpid(), "counter": counter, "seen": getattr(sys, "_left_by_run", None)}
    if mode == "write":
        with open("/tmp/left-behind", "w") as handle:
            handle.write("secret")
    if mode == "list":
        out["files"] = [n for n in os.listdir("/tmp") if os.lstat("/tmp/" + n).st_uid != 0]
    if mode == "background":
        # Double fork: the sleep is no child of the worker, only of the slot.
        shell = subprocess.run(
            ["sh", "-c", "sleep 100 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True
        )
        out["child"] = int(shell.stdout.strip())
        print("run 1 log")
    if mode == "child":
        out["child"] = subprocess.Popen(["sleep", "100"]).pid
    if mode == "thread":
        threading.Thread(target=time.sleep, args=(100,), daemon=True).start()
    if mode == "stray-print":
        sys.stdout.write("partial line of run 1")
    if mode == "exit":
        sys.exit(0)
    if mode == "hang":
        while True:
            pass
    if mode == "memory":
        chunks = []
        while True:
            chunks.append(bytearray(16 * 1024 * 1024))
    if mode == "grow":
        sys._kept = bytearray(60 * 1024 * 1024)
        sys._kept[::4096] = b"x" * len(sys._kept[::4096])
    if mode == "throw":
        raise ValueError("boom")
    engine.result.set(out)
"""


def new_code() -> str:
    return f"code-{uuid.uuid4()}"


async def run_py(
    runner: SandboxRunner, code_id: str, source: str = SOURCE, seconds: float = 10.0, **params: str
) -> RunOutcome:
    return await runner.run(
        RunRequest(
            run_id=str(uuid.uuid4()),
            code_id=code_id,
            language="python",
            source=source,
            timeout=seconds,
            params=params,
        )
    )


def data(outcome: RunOutcome) -> dict[str, Any]:
    assert outcome.ok, outcome.error
    result: dict[str, Any] = json.loads(outcome.result)
    return result


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def gone(pid: int) -> bool:
    for _ in range(40):
        if not alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_second_run_of_the_same_code_reuses_the_worker_and_is_fast(
    runner: SandboxRunner,
) -> None:
    code = new_code()
    first = data(await run_py(runner, code))
    started = time.monotonic()
    second = data(await run_py(runner, code))
    elapsed = time.monotonic() - started
    assert second["pid"] == first["pid"]
    assert elapsed < 0.05


async def test_a_different_code_never_gets_another_codes_worker(runner: SandboxRunner) -> None:
    code_a, code_b = new_code(), new_code()
    a = data(await run_py(runner, code_a))
    b = data(await run_py(runner, code_b))
    assert b["pid"] != a["pid"]
    assert data(await run_py(runner, code_a))["pid"] == a["pid"]
    assert data(await run_py(runner, code_b))["pid"] == b["pid"]


async def test_a_changed_source_gets_a_new_worker(runner: SandboxRunner) -> None:
    code = new_code()
    old = data(await run_py(runner, code))
    changed = data(await run_py(runner, code, SOURCE + "\n# edited\n"))
    assert changed["pid"] != old["pid"]


async def test_module_state_does_not_leak_between_runs(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_py(runner, code))
    second = data(await run_py(runner, code))
    assert second["pid"] == first["pid"]
    assert (first["counter"], second["counter"]) == (1, 1)


async def test_temp_files_of_a_run_are_wiped_before_the_next_run(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_py(runner, code, mode="write"))
    second = data(await run_py(runner, code, mode="list"))
    assert second["pid"] == first["pid"]
    assert second["files"] == []
    other = data(await run_py(runner, new_code(), mode="list"))
    assert other["files"] == []


async def test_background_processes_of_a_run_are_dead_before_the_next_run(
    runner: SandboxRunner,
) -> None:
    code = new_code()
    outcome = await run_py(runner, code, mode="background")
    first = data(outcome)
    assert [line.content for line in outcome.logs] == ["run 1 log"]
    second_outcome = await run_py(runner, code)
    second = data(second_outcome)
    assert second["pid"] == first["pid"]
    assert not alive(first["child"])
    assert second_outcome.logs == []


async def test_a_partial_line_of_a_run_never_shows_in_the_next(runner: SandboxRunner) -> None:
    code = new_code()
    first_outcome = await run_py(runner, code, mode="stray-print")
    first = data(first_outcome)
    assert [line.content for line in first_outcome.logs] == ["partial line of run 1"]
    second_outcome = await run_py(runner, code)
    assert data(second_outcome)["pid"] == first["pid"]
    assert second_outcome.logs == []


async def test_a_run_leaving_a_child_process_is_not_reused(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_py(runner, code, mode="child"))
    second = data(await run_py(runner, code))
    assert second["pid"] != first["pid"]
    assert not alive(first["child"])


async def test_a_run_leaving_a_thread_is_not_reused(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_py(runner, code, mode="thread"))
    second = data(await run_py(runner, code))
    assert second["pid"] != first["pid"]


async def test_sys_exit_retires_the_worker(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_py(runner, code))
    exited = await run_py(runner, code, mode="exit")
    assert exited.ok, exited.error
    assert data(await run_py(runner, code))["pid"] != first["pid"]


async def test_an_exception_keeps_the_worker(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_py(runner, code))
    failed = await run_py(runner, code, mode="throw")
    assert (failed.ok, failed.reason) == (False, "exception")
    assert "boom" in failed.error
    assert data(await run_py(runner, code))["pid"] == first["pid"]


async def test_a_timeout_retires_the_worker_and_the_next_run_works(
    runner: SandboxRunner,
) -> None:
    code = new_code()
    first = data(await run_py(runner, code))
    hung = await run_py(runner, code, seconds=1.0, mode="hang")
    assert (hung.ok, hung.reason) == (False, "timeout")
    assert await gone(first["pid"])
    after = data(await run_py(runner, code))
    assert after["pid"] != first["pid"]
    assert after["counter"] == 1


async def test_a_memory_failure_retires_the_worker(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_py(runner, code))
    assert data(await run_py(runner, code))["pid"] == first["pid"]
    failed = await run_py(runner, code, mode="memory")
    assert (failed.ok, failed.reason) == (False, "memory"), failed.error
    assert data(await run_py(runner, code))["pid"] != first["pid"]


async def test_a_worker_whose_memory_grew_is_retired(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_py(runner, code))
    grown = data(await run_py(runner, code, mode="grow"))
    assert grown["pid"] == first["pid"]
    assert data(await run_py(runner, code))["pid"] != first["pid"]


async def test_concurrent_runs_of_one_code_each_get_their_own_worker(
    runner: SandboxRunner,
) -> None:
    code = new_code()
    waiting = SOURCE.replace(
        "    engine.result.set(out)\n", "    time.sleep(0.2)\n    engine.result.set(out)\n"
    )
    outcomes = await asyncio.gather(*(run_py(runner, code, waiting) for _ in range(2)))
    pids = [data(outcome)["pid"] for outcome in outcomes]
    assert pids[0] != pids[1]


CPU_SOURCE = """
import os
import time


def Run(engine):
    burn = float(engine.params.get("burn") or 0)
    until = time.process_time() + burn
    while burn < 0 or time.process_time() < until:
        pass
    engine.result.set({"pid": os.getpid()})
"""


async def test_the_cpu_limit_is_per_run_in_a_warm_worker(tmp_path: Path) -> None:
    sandbox = SandboxRunner(
        runner_settings(tmp_path, uid_base=UID_BASE + 70, slots=1, node_spares=0, cpu_seconds=1),
        LogSettings(),
    )
    await sandbox.start()
    try:
        code = new_code()
        # Three runs of 0.6 s of CPU each: over the limit together, each under it alone.
        pids = {data(await run_py(sandbox, code, CPU_SOURCE, burn="0.6"))["pid"] for _ in range(3)}
        assert len(pids) == 1
        hog = await run_py(sandbox, code, CPU_SOURCE, burn="-1")
        assert (hog.ok, hog.reason) == (False, "cpu"), hog.error
        after = data(await run_py(sandbox, code, CPU_SOURCE))
        assert after["pid"] not in pids
    finally:
        await sandbox.close()
    assert sandbox_pids(UID_BASE + 70, 2) == []


async def test_with_reuse_off_every_run_gets_a_fresh_process(tmp_path: Path) -> None:
    sandbox = SandboxRunner(
        runner_settings(tmp_path, uid_base=UID_BASE + 80, slots=2, node_spares=0, reuse=False),
        LogSettings(),
    )
    await sandbox.start()
    try:
        code = new_code()
        pids = [data(await run_py(sandbox, code))["pid"] for _ in range(3)]
        assert len(set(pids)) == 3
    finally:
        await sandbox.close()
    assert sandbox_pids(UID_BASE + 80, 2) == []


async def test_a_pending_alarm_of_a_run_does_not_fire_in_the_next(runner: SandboxRunner) -> None:
    source = """
import os, signal, time
def Run(engine):
    if engine.params.get("mode") == "alarm":
        signal.signal(signal.SIGALRM, lambda *_: print("alarm of run 1"))
        signal.alarm(1)
    else:
        time.sleep(1.5)
    engine.result.set({"pid": os.getpid()})
"""
    code = new_code()
    first = data(await run_py(runner, code, source, mode="alarm"))
    second_outcome = await run_py(runner, code, source)
    assert data(second_outcome)["pid"] == first["pid"]
    assert second_outcome.logs == []


@needs_node
async def test_with_reuse_off_javascript_runs_get_a_fresh_process_too(tmp_path: Path) -> None:
    sandbox = SandboxRunner(
        runner_settings(tmp_path, uid_base=UID_BASE + 90, slots=1, node_spares=1, reuse=False),
        LogSettings(),
    )
    await sandbox.start()
    try:
        code = new_code()
        source = "function Run(engine) { engine.result.set({ pid: process.pid }); }\n"
        pids = set()
        for _ in range(3):
            outcome = await sandbox.run(
                RunRequest(
                    run_id=str(uuid.uuid4()),
                    code_id=code,
                    language="javascript",
                    source=source,
                    timeout=10,
                )
            )
            pids.add(data(outcome)["pid"])
        assert len(pids) == 3
    finally:
        await sandbox.close()
