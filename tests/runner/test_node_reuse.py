"""Warm Node workers: repeated runs of the same JavaScript code reuse one sandboxed process."""

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

pytestmark = needs_node

# One source for most tests: `mode` picks what a run does, every run reports its process id.
SOURCE = """
const fs = require('fs');
const os = require('os');
const { spawn } = require('child_process');
let counter = 0;
async function Run(engine) {
  counter += 1;
  globalThis.total = (globalThis.total || 0) + 1;
  const mode = engine.params.get('mode');
  const out = { pid: process.pid, counter, total: globalThis.total };
  if (mode === 'write') fs.writeFileSync(os.tmpdir() + '/left-behind', 'secret');
  // What runs wrote: a checkout under /tmp stays visible as root-owned dirs.
  if (mode === 'list') out.files = fs.readdirSync(os.tmpdir()).filter(
    (n) => fs.lstatSync(os.tmpdir() + '/' + n).uid !== 0);
  if (mode === 'background') {
    const child = spawn('sleep', ['100'], { detached: true, stdio: 'ignore' });
    child.unref();
    out.child = child.pid;
    setInterval(() => console.log('tick from run 1'), 1);
    setTimeout(() => engine.log.info('late log from run 1'), 30);
    console.log('run 1 log');
  }
  if (mode === 'wait') await new Promise((resolve) => setTimeout(resolve, 100));
  if (mode === 'hang') while (true) {}
  if (mode === 'throw') throw new Error('boom');
  engine.result.set(out);
}
"""


def new_code() -> str:
    return f"code-{uuid.uuid4()}"


async def run_js(
    runner: SandboxRunner, code_id: str, source: str = SOURCE, seconds: float = 10.0, **params: str
) -> RunOutcome:
    return await runner.run(
        RunRequest(
            run_id=str(uuid.uuid4()),
            code_id=code_id,
            language="javascript",
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


async def test_second_run_of_the_same_code_reuses_the_worker_and_is_fast(
    runner: SandboxRunner,
) -> None:
    code = new_code()
    first = data(await run_js(runner, code))
    started = time.monotonic()
    second = data(await run_js(runner, code))
    elapsed = time.monotonic() - started
    assert second["pid"] == first["pid"]
    assert elapsed < 0.05  # a booted Node alone takes longer than this to start


async def test_a_different_code_never_gets_another_codes_worker(runner: SandboxRunner) -> None:
    code_a, code_b = new_code(), new_code()
    a = data(await run_js(runner, code_a))
    b = data(await run_js(runner, code_b))
    assert b["pid"] != a["pid"]
    assert data(await run_js(runner, code_a))["pid"] == a["pid"]
    assert data(await run_js(runner, code_b))["pid"] == b["pid"]


async def test_a_changed_source_gets_a_new_worker(runner: SandboxRunner) -> None:
    code = new_code()
    old = data(await run_js(runner, code))
    changed = data(await run_js(runner, code, SOURCE + "\n// edited\n"))
    assert changed["pid"] != old["pid"]


async def test_module_and_global_state_do_not_leak_between_runs(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_js(runner, code))
    second = data(await run_js(runner, code))
    assert second["pid"] == first["pid"]
    assert (second["counter"], second["total"]) == (1, 1)


async def test_temp_files_of_a_run_are_wiped_before_the_next_run(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_js(runner, code, mode="write"))
    second = data(await run_js(runner, code, mode="list"))
    assert second["pid"] == first["pid"]
    assert second["files"] == []
    other = data(await run_js(runner, new_code(), mode="list"))
    assert other["files"] == []


async def test_background_work_of_a_run_is_gone_before_the_next_run(
    runner: SandboxRunner,
) -> None:
    code = new_code()
    outcome = await run_js(runner, code, mode="background")
    first = data(outcome)
    assert [line.content for line in outcome.logs] == ["run 1 log"]
    second_outcome = await run_js(runner, code, mode="wait")
    second = data(second_outcome)
    assert second["pid"] == first["pid"]
    assert not alive(first["child"])
    # Neither the interval nor the timeout of run 1 fired during run 2.
    assert second_outcome.logs == []


async def test_a_timeout_retires_the_worker_and_the_next_run_works(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_js(runner, code))
    hung = await run_js(runner, code, seconds=1.0, mode="hang")
    assert (hung.ok, hung.reason) == (False, "timeout")
    for _ in range(40):
        if not alive(first["pid"]):
            break
        await asyncio.sleep(0.05)
    assert not alive(first["pid"])
    after = data(await run_js(runner, code))
    assert after["pid"] != first["pid"]
    assert after["counter"] == 1


async def test_an_exception_keeps_the_worker(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_js(runner, code))
    failed = await run_js(runner, code, mode="throw")
    assert (failed.ok, failed.reason) == (False, "exception")
    assert "boom" in failed.error
    assert data(await run_js(runner, code))["pid"] == first["pid"]


async def test_concurrent_runs_of_one_code_each_get_their_own_worker(
    runner: SandboxRunner,
) -> None:
    code = new_code()
    outcomes = await asyncio.gather(*(run_js(runner, code, mode="wait") for _ in range(2)))
    pids = [data(outcome)["pid"] for outcome in outcomes]
    assert pids[0] != pids[1]


async def test_a_run_leaving_work_in_the_event_loop_is_not_reused(runner: SandboxRunner) -> None:
    source = """
function Run(engine) {
  require('timers').setTimeout(() => {}, 60000);  // not a timer the engine can clear
  engine.result.set({ pid: process.pid });
}
"""
    code = new_code()
    first = data(await run_js(runner, code, source))
    second = data(await run_js(runner, code, source))
    assert second["pid"] != first["pid"]


LIMITS_SOURCE = """
function Run(engine) {
  const mode = engine.params.get('mode');
  if (mode === 'memory') {
    const chunks = [];
    while (true) chunks.push(Buffer.alloc(16 * 1024 * 1024, 1));
  }
  if (mode === 'output') console.log('x'.repeat(2 * 1024 * 1024));
  engine.result.set({ pid: process.pid });
}
"""


async def test_a_memory_failure_retires_the_worker(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_js(runner, code, LIMITS_SOURCE))
    assert data(await run_js(runner, code, LIMITS_SOURCE))["pid"] == first["pid"]
    failed = await run_js(runner, code, LIMITS_SOURCE, mode="memory")
    assert (failed.ok, failed.reason) == (False, "memory"), failed.error
    assert data(await run_js(runner, code, LIMITS_SOURCE))["pid"] != first["pid"]


async def test_an_output_failure_retires_the_worker(runner: SandboxRunner) -> None:
    code = new_code()
    first = data(await run_js(runner, code, LIMITS_SOURCE))
    assert data(await run_js(runner, code, LIMITS_SOURCE))["pid"] == first["pid"]
    failed = await run_js(runner, code, LIMITS_SOURCE, mode="output")
    assert (failed.ok, failed.reason) == (False, "output"), failed.error
    assert data(await run_js(runner, code, LIMITS_SOURCE))["pid"] != first["pid"]


CPU_SOURCE = """
function Run(engine) {
  const burn = Number(engine.params.get('burn') || 0);
  const until = Date.now() + burn * 1000;
  if (burn < 0) while (true) {}
  while (Date.now() < until) {}
  engine.result.set({ pid: process.pid });
}
"""


async def test_the_cpu_limit_is_per_run_in_a_warm_worker(tmp_path: Path) -> None:
    sandbox = SandboxRunner(
        runner_settings(
            tmp_path,
            uid_base=UID_BASE + 40,
            slots=1,
            node_spares=1,
            node_warm_workers=1,
            cpu_seconds=1,
        ),
        LogSettings(),
    )
    await sandbox.start()
    try:
        code = new_code()
        # Three runs of 0.6 s of CPU each: over the limit together, each under it alone.
        pids = {data(await run_js(sandbox, code, CPU_SOURCE, burn="0.6"))["pid"] for _ in range(3)}
        assert len(pids) == 1
        hog = await run_js(sandbox, code, CPU_SOURCE, burn="-1")
        assert (hog.ok, hog.reason) == (False, "cpu"), hog.error
        after = data(await run_js(sandbox, code, CPU_SOURCE))
        assert after["pid"] not in pids
    finally:
        await sandbox.close()
    assert sandbox_pids(UID_BASE + 40, 3) == []
