"""Time of the console's read routes on a big database: `GET /coderun/stats` over 100,000 runs
and `GET /code?last_run=true` on a page of 1,000 codes whose runs number 100,000 each way.

Creates a database (a temp SQLite file, or with `--postgres URL` a temp database next to it)
holding 1,000 codes: one with `--runs` runs (100,000 by default, spread over the last 24 hours,
completed and failed, the last minutes' also started), the others with `--other-runs` each (100 by default); then
starts the app in process (no HTTP server: the figures are the route's own) and asks each
route `--repeat` times. Prints the median and worst seconds of each.

    .venv/bin/python bench/bench_console.py [--runs 100000] [--postgres postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))
from bench_http import PROJECT, TOKEN, create_database, drop_database  # noqa: E402

from codeactions.config import (  # noqa: E402
    AuthSettings,
    DatabaseSettings,
    RunnerSettings,
    ServerSettings,
    Settings,
    SpoolSettings,
)
from codeactions.db.migrate import upgrade  # noqa: E402
from codeactions.db.models import Code, CodeRun  # noqa: E402
from codeactions.db.session import create_engine  # noqa: E402
from codeactions.main import create_app  # noqa: E402

HEADERS = {"Authorization": f"Token {TOKEN}"}
INSERT_BATCH = 10_000
CODES = 1000
STATUSES = ("completed", "completed", "completed", "failed", "started")


def _run(code_id: uuid.UUID, stamp: datetime, i: int, now: datetime) -> dict[str, object]:
    status = STATUSES[i % len(STATUSES)]
    if status == "started" and now - stamp > timedelta(minutes=4):
        status = "failed"  # as the reaper leaves them: it would rewrite them during the bench
    return {
        "id": uuid.uuid4(),
        "code_id": code_id,
        "status": status,
        "result": "ok",
        "extra": {"status_code": 200, "content_type": "text"},
        "params": {},
        "body": "",
        "headers": {},
        "created_at": stamp,
        "updated_at": stamp + timedelta(milliseconds=5 + (i * 37) % 900),
    }


async def fill(database: DatabaseSettings, runs: int, other_runs: int, now: datetime) -> str:
    """The codes and their runs; the id of the code with `runs` runs."""
    engine = create_engine(database)
    codes = [uuid.uuid4() for _ in range(CODES)]
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(Code),
                [
                    {
                        "id": code_id,
                        "name": f"bench {n}",
                        "type": "endpoint",
                        "source": "def Run(engine):\n    engine.result.set('ok')\n",
                        "language": "python",
                        "project_uuid": PROJECT,
                        "timeout": 60,
                        "created_at": now - timedelta(seconds=n),
                        "updated_at": now - timedelta(seconds=n),
                    }
                    for n, code_id in enumerate(codes)
                ],
            )
        step = timedelta(hours=24) / runs
        rows = [_run(codes[0], now - step * (i + 1), i, now) for i in range(runs)]
        rows += [
            _run(code_id, now - timedelta(minutes=i + 1), i, now)
            for code_id in codes[1:]
            for i in range(other_runs)
        ]
        for start in range(0, len(rows), INSERT_BATCH):
            async with engine.begin() as conn:
                await conn.execute(insert(CodeRun), rows[start : start + INSERT_BATCH])
    finally:
        await engine.dispose()
    return str(codes[0])


async def timed(client: httpx.AsyncClient, url: str, repeat: int) -> tuple[list[float], object]:
    seconds = []
    body: object = None
    for _ in range(repeat):
        started = time.perf_counter()
        response = await client.get(url, headers=HEADERS)
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        body = response.json()
    return seconds, body


async def bench(database: DatabaseSettings, runs: int, other_runs: int, repeat: int) -> None:
    await upgrade(database)
    now = datetime.now(UTC)
    started = time.perf_counter()
    code_id = await fill(database, runs, other_runs, now)
    total = runs + (CODES - 1) * other_runs
    print(f"  {total:,} runs of {CODES} codes written in {time.perf_counter() - started:.1f} s")
    with tempfile.TemporaryDirectory() as work:
        settings = Settings(
            server=ServerSettings(log_level="warning"),
            database=database,
            auth=AuthSettings(token=TOKEN),
            spool=SpoolSettings(dir=f"{work}/spool"),
            runner=RunnerSettings(enabled=False, work_dir=f"{work}/runner"),
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                before = (now + timedelta(seconds=1)).isoformat()
                after = (now - timedelta(hours=24)).isoformat()
                cases = {
                    f"GET /coderun/stats ({runs:,} runs, hour)": "/coderun/stats?"
                    + str(httpx.QueryParams(code_id=code_id, after=after, before=before)),
                    f"GET /coderun/stats ({runs:,} runs, day)": "/coderun/stats?"
                    + str(
                        httpx.QueryParams(code_id=code_id, after=after, before=before, bucket="day")
                    ),
                    f"GET /code page of {CODES} with last_run": "/code?"
                    + str(
                        httpx.QueryParams(project_uuid=PROJECT, page_size=CODES, last_run="true")
                    ),
                    f"GET /code page of {CODES} without": "/code?"
                    + str(httpx.QueryParams(project_uuid=PROJECT, page_size=CODES)),
                }
                for name, url in cases.items():
                    seconds, body = await timed(client, url, repeat)
                    if isinstance(body, dict):
                        counted = sum(
                            b["completed"] + b["failed"] + b["started"] for b in body["buckets"]
                        )
                        detail = f"{len(body['buckets'])} buckets, {counted:,} runs"
                    else:
                        assert isinstance(body, list)
                        detail = f"{len(body)} codes"
                    print(
                        f"  {name}: median {statistics.median(seconds):.3f} s, "
                        f"worst {max(seconds):.3f} s ({detail})"
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--other-runs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", default="")
    args = parser.parse_args()
    if args.postgres:
        url = asyncio.run(create_database(args.postgres))
        print(f"PostgreSQL ({url.rsplit('/', 1)[1]})")
        try:
            asyncio.run(bench(DatabaseSettings(url=url), args.runs, args.other_runs, args.repeat))
        finally:
            asyncio.run(drop_database(args.postgres, url.rsplit("/", 1)[1]))
        return
    folder = tempfile.mkdtemp(prefix="codeactions-bench-console-")
    print(f"SQLite ({folder})")
    try:
        database = DatabaseSettings(url=f"sqlite:///{folder}/bench.db")
        asyncio.run(bench(database, args.runs, args.other_runs, args.repeat))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
