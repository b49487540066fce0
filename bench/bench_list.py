"""Memory and time of `GET /coderun` listing every run of a code, read as a stream.

Creates a database (a temp SQLite file, or with `--postgres URL` a temp database next to it)
holding one code with `--runs` runs (100,000 by default, bulk inserted), starts the real service
(`codeactions serve`) on it, and lists the code's runs without `page`/`page_size`, reading the
answer as it arrives, while sampling the service process's RSS every few milliseconds. For
comparison, it lists one page of 1,000 runs the same way. Prints rows, seconds and the service's
RSS before each request and at its peak.

    .venv/bin/python bench/bench_list.py [--runs 100000] [--postgres postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_http import (  # noqa: E402
    PROJECT,
    TOKEN,
    Server,
    create_database,
    drop_database,
    free_port,
)

HEADERS = {"Authorization": f"Token {TOKEN}"}
INSERT_BATCH = 10_000


def rss_bytes(pid: int) -> int:
    """The process's resident set size (psutil when installed, else /proc)."""
    try:
        import psutil  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for process {pid}") from None
    return int(psutil.Process(pid).memory_info().rss)


class PeakRss:
    """Samples a process's RSS every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.002) -> None:
        self.pid = pid
        self.interval = interval
        self.before = rss_bytes(pid)
        self.peak = self.before
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))


async def fill(database_url: str, runs: int) -> str:
    """Migrate the database and add one code with `runs` runs; the code's id."""
    from sqlalchemy import insert, text
    from sqlalchemy.ext.asyncio import create_async_engine

    from codeactions.config import DatabaseSettings
    from codeactions.db.migrate import upgrade
    from codeactions.db.models import Code, CodeRun

    settings = DatabaseSettings(url=database_url)
    await upgrade(settings)
    code_id = uuid.uuid4()
    now = datetime.now(UTC)
    engine = create_async_engine(settings.async_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(Code),
                [
                    {
                        "id": code_id,
                        "name": "bench list",
                        "type": "endpoint",
                        "source": "def Run(engine):\n    engine.result.set('ok')\n",
                        "language": "python",
                        "project_uuid": PROJECT,
                        "timeout": 60,
                    }
                ],
            )
        for start in range(0, runs, INSERT_BATCH):
            rows = []
            for i in range(start, min(runs, start + INSERT_BATCH)):
                stamp = now - timedelta(milliseconds=250 * i)
                rows.append(
                    {
                        "id": uuid.uuid4(),
                        "code_id": code_id,
                        "status": "completed",
                        "result": '{"hello": "world"}',
                        "extra": {"status_code": 200, "content_type": "json"},
                        "params": {"name": f"user {i}"},
                        "body": "",
                        "headers": {
                            "Accept": ["*/*"],
                            "User-Agent": ["bench/1.0"],
                            "Authorization": ["[REDACTED]"],
                        },
                        "created_at": stamp,
                        "updated_at": stamp,
                    }
                )
            async with engine.begin() as conn:
                await conn.execute(insert(CodeRun), rows)
        if engine.dialect.name == "postgresql":
            # What autovacuum does within a minute of a bulk load: planner statistics.
            async with engine.begin() as conn:
                await conn.execute(text("ANALYZE coderuns"))
    finally:
        await engine.dispose()
    return str(code_id)


@dataclass
class Listing:
    what: str
    rows: int
    total: str
    seconds: float
    body_bytes: int
    rss_before: int
    rss_peak: int
    samples: int


async def list_runs(server: Server, path: str, what: str) -> Listing:
    """GET `path`, reading the answer as it comes, while sampling the service's RSS."""
    pid = server.process.pid
    async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:
        parts: list[bytes] = []
        with PeakRss(pid) as rss:
            started = time.perf_counter()
            async with client.stream("GET", path, headers=HEADERS) as response:
                response.raise_for_status()
                async for part in response.aiter_bytes():
                    parts.append(part)
            seconds = time.perf_counter() - started
        body = b"".join(parts)
        rows = json.loads(body)
        return Listing(
            what,
            len(rows),
            response.headers.get("X-Total-Count", ""),
            seconds,
            len(body),
            rss.before,
            rss.peak,
            rss.samples,
        )


async def bench(runs: int, postgres_url: str) -> list[Listing]:
    workdir = Path(tempfile.mkdtemp(prefix="codeactions-bench-list-"))
    database_url = (
        await create_database(postgres_url) if postgres_url else f"sqlite:///{workdir / 'bench.db'}"
    )
    try:
        started = time.perf_counter()
        code_id = await fill(database_url, runs)
        print(f"inserted {runs} runs in {time.perf_counter() - started:.1f} s")
        base = f"/coderun?code_id={code_id}"
        cases = [
            ("one page (page_size=1000)", f"{base}&page_size=1000"),
            ("every run (no paging)", base),
            ("every run (no paging), once more", base),
        ]
        listings = []
        for what, path in cases:
            # A fresh service for each, so every "before" is the same state.
            listings.append(await measured(workdir, database_url, base, what, path))
        return listings
    finally:
        if postgres_url:
            await drop_database(postgres_url, database_url.rsplit("/", 1)[1])
        shutil.rmtree(workdir, ignore_errors=True)


async def measured(workdir: Path, database_url: str, base: str, what: str, path: str) -> Listing:
    # The runner is not needed to list runs: only the API process is measured.
    server = Server(workdir, free_port(), database_url, env={"CODEACTIONS_RUNNER_ENABLED": "false"})
    try:
        await server.wait_ready()
        await list_runs(server, f"{base}&page_size=10", "warm up")
        return await list_runs(server, path, what)
    finally:
        server.stop()


def table(backend: str, listings: list[Listing]) -> str:
    mib = 1024 * 1024
    lines = [
        f"| {backend} | rows | X-Total-Count | seconds | MiB sent | API RSS before MiB "
        "| API RSS peak MiB | peak - before MiB | samples |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for item in listings:
        lines.append(
            f"| {item.what} | {item.rows} | {item.total} | {item.seconds:.2f} "
            f"| {item.body_bytes / mib:.1f} | {item.rss_before / mib:.1f} "
            f"| {item.rss_peak / mib:.1f} | {(item.rss_peak - item.rss_before) / mib:.1f} "
            f"| {item.samples} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="runs of the listed code")
    parser.add_argument(
        "--postgres",
        default="",
        help="use PostgreSQL instead of SQLite, e.g. postgresql://postgres@127.0.0.1:5432/test "
        "(a temporary database is created next to it)",
    )
    args = parser.parse_args()
    listings = asyncio.run(bench(args.runs, args.postgres))
    print(table("postgresql" if args.postgres else "sqlite", listings))


if __name__ == "__main__":
    main()
