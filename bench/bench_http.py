"""End-to-end latency and throughput of `GET /action/endpoint/<id>` on the real service and runner.

Starts `codeactions serve` on a free port with a temporary SQLite database, creates trivial
Python, JavaScript and Go codes, and measures p50/p99 latency and runs/s at concurrency 1 and 8.
For comparison, it also measures what the original paid per run: a fresh `python3` importing
boto3, requests and psycopg2.

    .venv/bin/python bench/bench_http.py [--requests 300] [--concurrency 1,8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
PROJECT = "5b1d6c1e-0000-4000-8000-000000000001"
RUNTIME_PYTHON = ROOT / ".venv-runtime" / "bin" / "python"

CODES = {
    # Each writes one log line, so a run persists its record and a log.
    "python": 'def Run(engine):\n    engine.log.info("hi")\n    engine.result.set("ok")\n',
    "javascript": 'function Run(engine) {\n  engine.log.info("hi");\n  engine.result.set("ok");\n}\n',
    "go": 'package main\n\nfunc Run(engine *Engine) {\n\tengine.Log.Info("hi")\n\tengine.Result.Set("ok", 200, "text")\n}\n',
}


@dataclass
class Figures:
    name: str
    concurrency: int
    count: int
    errors: int
    p50_ms: float
    p99_ms: float
    per_second: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def measure(
    name: str, call: Callable[[], Awaitable[bool]], *, count: int, concurrency: int
) -> Figures:
    latencies: list[float] = []
    errors = 0
    remaining = count

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            ok = await call()
            latencies.append((time.perf_counter() - started) * 1000)
            errors += 0 if ok else 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return Figures(
        name,
        concurrency,
        count,
        errors,
        statistics.median(latencies),
        percentile(latencies, 0.99),
        count / elapsed,
    )


class Server:
    """`codeactions serve` in a subprocess, on its own database and work dir; with `src`, the
    `codeactions` package of another checkout's `src` dir (bench_layers.py compares two)."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        database_url: str,
        *,
        src: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        env = {
            **os.environ,
            "CODEACTIONS_HOST": "127.0.0.1",
            "CODEACTIONS_PORT": str(port),
            "CODEACTIONS_DATABASE_URL": database_url or f"sqlite:///{workdir / 'bench.db'}",
            "CODEACTIONS_AUTH_TOKEN": TOKEN,
            "CODEACTIONS_RATELIMIT_MAX_REQUESTS": "100000000",
            # One code is measured: let it use every slot, as the figures always did.
            "CODEACTIONS_PROJECT_MAX_CONCURRENCY": "64",
            "CODEACTIONS_PROJECT_MAX_QUEUED": "1000",
            "CODEACTIONS_RUNNER_WORK_DIR": str(workdir / "runner"),
            "CODEACTIONS_LOG_LEVEL": "warning",
            "CODEACTIONS_CLEANER_ENABLED": "false",
            "CODEACTIONS_RUNNER_PYTHON": str(RUNTIME_PYTHON),
            **(env or {}),
        }
        argv = [str(ROOT / ".venv" / "bin" / "codeactions"), "serve"]
        if src is not None:
            env["PYTHONPATH"] = str(src)
            argv = [sys.executable, "-m", "codeactions.cli", "serve"]
        self.process = subprocess.Popen(
            argv,
            env=env,
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, within: float = 90) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the service exited with {self.process.returncode}")
                try:
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("the service did not start in time")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


async def _admin_sql(postgres_url: str, sql: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from codeactions.config import DatabaseSettings

    engine = create_async_engine(
        DatabaseSettings(url=postgres_url).async_url, isolation_level="AUTOCOMMIT"
    )
    async with engine.connect() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


async def create_database(postgres_url: str) -> str:
    """A fresh database next to `postgres_url`, for this bench only."""
    name = f"codeactions_bench_{os.getpid()}"
    await _admin_sql(postgres_url, f'CREATE DATABASE "{name}"')
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(postgres_url: str, name: str) -> None:
    await _admin_sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def create_code(client: httpx.AsyncClient, language: str) -> str | None:
    response = await client.post(
        "/code",
        params={
            "name": f"bench {language}",
            "language": language,
            "type": "endpoint",
            "project_uuid": PROJECT,
        },
        content=CODES[language],
        headers={"Authorization": f"Token {TOKEN}", "Content-Type": "text/plain"},
    )
    if response.status_code != 201:
        print(f"  creating the {language} code failed: {response.status_code} {response.text}")
        return None
    code_id: str = response.json()["id"]
    check = await client.get(f"/action/endpoint/{code_id}")
    if check.status_code != 200 or check.text != "ok":
        print(f"  {language} code answers {check.status_code} {check.text[:200]!r}; skipped")
        return None
    return code_id


async def bench_service(
    counts: int, concurrencies: list[int], postgres_url: str = ""
) -> list[Figures]:
    figures: list[Figures] = []
    workdir = Path(tempfile.mkdtemp(prefix="codeactions-bench-"))
    database_url = await create_database(postgres_url) if postgres_url else ""
    backend = "postgresql" if postgres_url else "sqlite"
    server = Server(workdir, free_port(), database_url)
    try:
        await server.wait_ready()
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
            # The floor: HTTP, middlewares and the client itself, no database, no runner.
            async def healthz() -> bool:
                return (await client.get("/healthz")).status_code == 200

            await measure("warm up", healthz, count=20, concurrency=2)
            for concurrency in concurrencies:
                figures.append(
                    await measure(
                        f"service ({backend}), GET /healthz",
                        healthz,
                        count=counts,
                        concurrency=concurrency,
                    )
                )
            for language in CODES:
                code_id = await create_code(client, language)
                if code_id is None:
                    continue
                path = f"/action/endpoint/{code_id}"

                async def call(path: str = path) -> bool:
                    response = await client.get(path)
                    return response.status_code == 200 and response.text == "ok"

                # Slower languages get fewer requests, so the whole bench stays short.
                count = counts if language != "javascript" else max(40, counts // 5)
                await measure(language, call, count=min(20, count), concurrency=2)  # warm up
                for concurrency in concurrencies:
                    figures.append(
                        await measure(
                            f"service ({backend}), {language}",
                            call,
                            count=count,
                            concurrency=concurrency,
                        )
                    )
    finally:
        server.stop()
        if database_url:
            await drop_database(postgres_url, database_url.rsplit("/", 1)[1])
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"  kept {workdir}")
    return figures


async def bench_fresh_interpreter(count: int, concurrencies: list[int]) -> list[Figures]:
    """What the original paid per run before user code: a new interpreter importing its libraries."""
    python = str(RUNTIME_PYTHON if RUNTIME_PYTHON.exists() else sys.executable)
    argv = [python, "-c", "import boto3, requests, psycopg2; print('ok')"]

    async def call() -> bool:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await process.communicate()
        return process.returncode == 0 and out.strip() == b"ok"

    if not await call():
        print(f"  {python} cannot import boto3, requests and psycopg2; baseline skipped")
        return []
    return [
        await measure("fresh python3 + imports", call, count=count, concurrency=c)
        for c in concurrencies
    ]


def table(rows: list[Figures]) -> str:
    lines = [
        "| what | concurrency | requests | errors | p50 ms | p99 ms | runs/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f in rows:
        lines.append(
            f"| {f.name} | {f.concurrency} | {f.count} | {f.errors} | {f.p50_ms:.1f} | "
            f"{f.p99_ms:.1f} | {f.per_second:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per measurement")
    parser.add_argument("--concurrency", default="1,8", help="comma list of client counts")
    parser.add_argument("--baseline-requests", type=int, default=40)
    parser.add_argument(
        "--postgres",
        default="",
        help="also run against PostgreSQL, e.g. postgresql://postgres@127.0.0.1:5432/test "
        "(a temporary database is created next to it)",
    )
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]

    rows = asyncio.run(bench_service(args.requests, concurrencies))
    if args.postgres:
        rows += asyncio.run(bench_service(args.requests, concurrencies, args.postgres))
    rows += asyncio.run(bench_fresh_interpreter(args.baseline_requests, concurrencies))
    print(table(rows))


if __name__ == "__main__":
    main()
