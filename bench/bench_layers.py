"""Cost of the sandbox's layers per run: this checkout's runner against another revision's.

Usage: .venv/bin/python bench/bench_layers.py [--baseline REF] [--rounds N] [--runs N] [--http]

The baseline revision (default: the newest commit on main without this checkout's changes, i.e.
`HEAD` when the working tree is dirty, else `HEAD~1`) is exported with `git archive` to a temp
dir. Both runners then run the same trivial Python, JavaScript and Go actions back to back, in
alternating rounds within this one invocation (this machine is shared and noisy: only ratios
measured side by side mean something). Prints p50/p90 per case and version, and new/old ratios.
With `--http`, the same codes are measured end to end instead: each version's whole service
(`codeactions serve`, SQLite) answering `GET /action/endpoint/<id>`, one client. `--s3` adds
run logs in S3 (a moto server process this script starts) to both services.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "python": 'def Run(engine):\n    engine.result.set({"calculation": 50})\n',
    "javascript": 'function Run(engine){ engine.result.set("ok") }\n',
    "go": 'package main\n\nfunc Run(engine *Engine) { engine.Result.Set("ok", 200, "text") }\n',
}


# With --s3 the codes write one log line, so each run has logs to store.
LOGGING_CASES = {
    "python": 'def Run(engine):\n    engine.log.info("hi")\n    engine.result.set({"calculation": 50})\n',
    "javascript": 'function Run(engine){ engine.log.info("hi"); engine.result.set("ok") }\n',
    "go": 'package main\n\nfunc Run(engine *Engine) { engine.Log.Info("hi"); engine.Result.Set("ok", 200, "text") }\n',
}


async def timed(call: Callable[[], Awaitable[bool]], runs: int) -> list[float]:
    """Latencies of `runs` calls back to back, after 20 that warm workers and caches."""
    for _ in range(20):
        await call()
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        ok = await call()
        latencies.append(time.perf_counter() - started)
        assert ok
    return latencies


async def worker(runs: int, uid_base: int) -> dict[str, list[float]]:
    """In a child process whose PYTHONPATH picks one revision's `codeactions`."""
    from codeactions.config import LogSettings, RunnerSettings
    from codeactions.runner.base import RunRequest
    from codeactions.runner.sandbox import SandboxRunner

    with tempfile.TemporaryDirectory(prefix="bench-layers-") as work:
        runner = SandboxRunner(
            RunnerSettings(
                work_dir=work,
                uid_base=uid_base,
                slots=4,
                python=str(ROOT / ".venv-runtime" / "bin" / "python"),
            ),
            LogSettings(),
        )
        await runner.start()
        await asyncio.sleep(3)  # spares boot in the background: measure the steady state
        try:
            found: dict[str, list[float]] = {}
            for language, source in CASES.items():
                if language == "go":
                    await runner.check("go", source)
                request = RunRequest(
                    run_id="bench",
                    code_id=f"bench-{language}",
                    language=language,  # type: ignore[arg-type]
                    source=source,
                    timeout=30,
                    params={"a": "1"},
                    body="body",
                )

                async def run(request: RunRequest = request) -> bool:
                    return (await runner.run(request)).ok

                found[language] = await timed(run, runs)
            return found
        finally:
            await runner.close()


async def http_worker(src: Path | None, runs: int, uid_base: int) -> dict[str, list[float]]:
    """One version's whole service, in a subprocess: the endpoint latency of each code."""
    import httpx

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_http import TOKEN, Server, free_port

    found: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-layers-http-") as work:
        server = Server(
            Path(work),
            free_port(),
            "",
            src=src,
            env={
                "CODEACTIONS_RUNNER_UID_BASE": str(uid_base),
                "CODEACTIONS_RUNNER_SLOTS": "4",
                **s3_env(),
            },
        )
        try:
            await server.wait_ready()
            await asyncio.sleep(3)  # as above
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                cases = LOGGING_CASES if os.environ.get("BENCH_S3_ENDPOINT") else CASES
                for language, source in cases.items():
                    created = await client.post(
                        "/code",
                        params={
                            "name": "bench",
                            "language": language,
                            "type": "endpoint",
                            "project_uuid": "bench-project",
                        },
                        content=source,
                        headers={"Authorization": f"Token {TOKEN}"},
                    )
                    path = f"/action/endpoint/{created.json()['id']}"

                    async def get(path: str = path) -> bool:
                        return (await client.get(path)).status_code == 200

                    found[language] = await timed(get, runs)
        finally:
            server.stop()
    return found


S3_BUCKET = "bench-logs"


def s3_env() -> dict[str, str]:
    endpoint = os.environ.get("BENCH_S3_ENDPOINT")
    if not endpoint:
        return {}
    return {
        "CODEACTIONS_S3_ENABLED": "true",
        "CODEACTIONS_S3_BUCKET": S3_BUCKET,
        "CODEACTIONS_S3_ENDPOINT": endpoint,
        "CODEACTIONS_S3_ACCESS_KEY_ID": "test",
        "CODEACTIONS_S3_SECRET_ACCESS_KEY": "test",
    }


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server in a process of its own, with the bucket the services log to."""
    import boto3  # type: ignore[import-untyped]

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_http import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        for _ in range(100):
            try:
                client.create_bucket(Bucket=S3_BUCKET)
                break
            except Exception:
                time.sleep(0.1)
        yield endpoint
    finally:
        process.kill()
        process.wait()


def export(ref: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    tar_path = into / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into)  # our own repository's files
    return into / "src"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def default_baseline() -> str:
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return "HEAD" if dirty else "HEAD~1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=200, help="runs per case and round")
    parser.add_argument("--http", action="store_true", help="measure whole services over HTTP")
    parser.add_argument("--s3", action="store_true", help="with --http: logs in S3 (moto)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--uid-base", type=int, default=68000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.http:
            src = None if args.worker == "new" else Path(os.environ["PYTHONPATH"])
            found = asyncio.run(http_worker(src, args.runs, args.uid_base))
        else:
            found = asyncio.run(worker(args.runs, args.uid_base))
        print(json.dumps(found))
        return
    with contextlib.ExitStack() as stack:
        if args.s3:
            os.environ["BENCH_S3_ENDPOINT"] = stack.enter_context(s3_server())
        compare(args)


def compare(args: argparse.Namespace) -> None:
    baseline = args.baseline or default_baseline()
    # Beside this checkout (bench/results/ is ignored by git), not under /tmp: revisions before
    # issue 7 cannot run JavaScript from a checkout there.
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="baseline-", dir=results) as temp:
        os.chmod(temp, 0o755)  # sandbox users read the engines in there
        sources = {f"old ({baseline})": export(baseline, Path(temp)), "new": ROOT / "src"}
        samples: dict[tuple[str, str], list[float]] = {}
        for round_number in range(args.rounds):
            order = list(sources.items())
            if round_number % 2:
                order.reverse()
            for offset, (label, src) in enumerate(order):
                env = {**os.environ, "PYTHONPATH": str(src)}
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        label,
                        "--runs",
                        str(args.runs),
                        "--uid-base",
                        str(68000 + 100 * offset),
                        *(["--http"] if args.http else []),
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode:
                    raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
                for language, values in json.loads(done.stdout.splitlines()[-1]).items():
                    samples.setdefault((label, language), []).extend(values)
    where = "over HTTP (whole service, SQLite)" if args.http else "runner alone"
    if args.s3:
        where += ", logs in S3"
    print(
        f"{where}; load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
        f"{args.rounds} rounds x {args.runs} runs per case, alternating"
    )
    labels = list(sources)
    for language in CASES:
        p50s = []
        for label in labels:
            values = samples[(label, language)]
            p50 = statistics.median(values) * 1000
            p50s.append(p50)
            print(
                f"{language:<11} {label:<22} p50={p50:7.3f} ms  p90={percentile(values, 0.9) * 1000:7.3f} ms"
            )
        print(f"{language:<11} {'new/old p50':<22} {p50s[1] / p50s[0]:.3f}")


if __name__ == "__main__":
    main()
