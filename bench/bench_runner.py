"""Runner benchmark: a trivial Python (and JavaScript) action through SandboxRunner vs a fresh interpreter per run.

Usage: .venv/bin/python bench/bench_runner.py [--runs N] [--baseline-runs N] [--slots N] [--js-runs N]
Prints p50/p99 latency and runs/s at concurrency 1 and 8 for both ways of running the code, and
for a trivial JavaScript action run back to back (the same code each time).
The baseline is what the original did per run: start the runtime interpreter, import boto3,
requests and psycopg2, then run the code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

from codeactions.config import LogSettings, RunnerSettings
from codeactions.runner.base import RunRequest
from codeactions.runner.sandbox import SandboxRunner

SOURCE = 'def Run(engine):\n    engine.result.set({"calculation": 50})\n'
JS_SOURCE = 'function Run(engine){ engine.result.set("ok") }\n'
BASELINE = (
    "import boto3, requests, psycopg2\n"
    "exec(compile(" + repr(SOURCE) + ", 'action.py', 'exec'))\n"
    "class R:\n    def set(self, *a, **k): pass\n"
    "class E:\n    result = R()\n"
    "Run(E())\n"
)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(
    name: str,
    concurrency: int,
    total: int,
    once: Callable[[], Awaitable[None]],
    pause: float = 0.0,
) -> None:
    latencies: list[float] = []
    queue = iter(range(total))

    async def worker() -> None:
        for _ in queue:
            started = time.perf_counter()
            await once()
            latencies.append(time.perf_counter() - started)
            if pause:
                await asyncio.sleep(pause)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    rate = f"{total / elapsed:8.1f} runs/s" if not pause else "   (paced)"
    print(
        f"{name:<34} c={concurrency:<2} n={total:<5} "
        f"p50={percentile(latencies, 0.5) * 1000:8.2f} ms  "
        f"p99={percentile(latencies, 0.99) * 1000:8.2f} ms  "
        f"mean={statistics.fmean(latencies) * 1000:8.2f} ms  "
        f"{rate}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--baseline-runs", type=int, default=40)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--js-runs", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-runner-") as work_dir:
        settings = RunnerSettings(
            work_dir=work_dir, slots=args.slots, uid_base=67000, node_spares=0
        )
        runner = SandboxRunner(settings, LogSettings())
        await runner.start()
        status = runner.status()
        print(f"runner: isolation={status['isolation']}")
        print(f"        network={status['network']} cgroups={status['cgroups']}")
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        await asyncio.sleep(1)  # let every slot's spare finish its set-up

        async def sandboxed() -> None:
            outcome = await runner.run(
                RunRequest(
                    run_id="bench", code_id="bench", language="python", source=SOURCE, timeout=30
                )
            )
            if not outcome.ok or outcome.result != '{"calculation": 50}':
                raise RuntimeError(f"unexpected outcome: {outcome}")

        try:
            for _ in range(50):  # warm-up
                await sandboxed()
            # Paced: a spare is always ready, so this is what one request pays (the hand-off).
            await measure("SandboxRunner, 20 ms apart", 1, args.runs // 2, sandboxed, pause=0.02)
            for concurrency in (1, 8):
                await measure("SandboxRunner, same code", concurrency, args.runs, sandboxed)
        finally:
            await runner.close()

    # JavaScript: the same code run back to back, with the default Node slots.
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as work_dir:
        js_runner = SandboxRunner(
            RunnerSettings(work_dir=work_dir, slots=args.slots, uid_base=67000),
            LogSettings(),
        )
        await js_runner.start()
        await asyncio.sleep(1)

        async def javascript() -> None:
            outcome = await js_runner.run(
                RunRequest(
                    run_id="bench",
                    code_id="bench-js",
                    language="javascript",
                    source=JS_SOURCE,
                    timeout=30,
                )
            )
            if not outcome.ok or outcome.result != "ok":
                raise RuntimeError(f"unexpected outcome: {outcome}")

        try:
            for _ in range(20):  # warm-up
                await javascript()
            for concurrency in (1, 8):
                await measure("SandboxRunner, JavaScript", concurrency, args.js_runs, javascript)
        finally:
            await js_runner.close()

    async def fresh_interpreter() -> None:
        process = await asyncio.create_subprocess_exec(
            settings.python, "-c", BASELINE, env={"PATH": "/usr/bin:/bin"}
        )
        if await process.wait() != 0:
            raise RuntimeError("baseline run failed")

    for concurrency in (1, 8):
        await measure(
            "fresh python + boto3/requests/pg", concurrency, args.baseline_runs, fresh_interpreter
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
