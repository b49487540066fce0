"""Fault drills: the service (its own process, the real sandbox) under load while its database,
Redis or S3 server is killed or frozen and brought back, and while the service itself is killed.

Each drill checks by run id that every run answered 200 ends `completed` with its result and all
its log lines, that no run is left `started`, that no answer was a 500 and every 503 says when to
retry, and that keep-alive connections stayed usable.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import needs_runtime
from tests.faults.processes import Database, RedisServer, S3Server
from tests.faults.service import LINES_PER_RUN, LOGGING_CODE, Load, Service

pytestmark = [pytest.mark.sandbox, needs_runtime]

UID_BASE = 64000  # sandbox uids of its own: drills run one at a time
SLOW_CODE = LOGGING_CODE.replace("time.sleep(0.02)", "time.sleep(0.3)")
FREEZE_SECONDS = 9
BOUNDED = {
    "CODEACTIONS_DATABASE_CONNECT_TIMEOUT": "2",
    "CODEACTIONS_DATABASE_COMMAND_TIMEOUT": "2",
}


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    services: list[Service] = []

    def make(env: dict[str, str]) -> Service:
        service = Service(tmp_path, env, uid_base=UID_BASE)
        services.append(service)
        return service

    yield make
    for service in services:
        service.kill()


def loaded(
    make: Callable[..., Service],
    env: dict[str, str],
    *,
    source: str = LOGGING_CODE,
    clients: int = 3,
) -> tuple[Service, str, Load]:
    """A started service with one code, and `clients` calling it until stopped."""
    service = make(env)
    service.start()
    code = service.create_code(source)
    load = Load(f"{service.url}/action/endpoint/{code}", clients=clients)
    load.start()
    return service, code, load


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def stored_runs(db: Database) -> dict[str, tuple[str, str, int]]:
    """Every run: id -> (status, result, number of log lines)."""
    with contextlib.closing(db.cluster.connect(db.name)) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT r.id::text, r.status, r.result, count(l.id) FROM coderuns r "
            "LEFT JOIN codelogs l ON l.run_id = r.id GROUP BY r.id, r.status, r.result"
        )
        return {row[0]: (row[1], row[2], int(row[3])) for row in cursor.fetchall()}


def assert_clean_answers(load: Load) -> None:
    statuses = load.statuses()
    assert set(statuses) <= {200, 503}, statuses
    assert load.retry_after_missing == 0
    assert load.connection_errors == [], load.connection_errors[:5]
    assert statuses[200] > 0


def assert_every_answered_run_kept(db: Database, answered: list[str]) -> None:
    """All runs answered 200 completed with their logs, none left `started`."""

    def settled() -> bool:
        runs = stored_runs(db)
        return all(runs.get(run_id, ("",))[0] == "completed" for run_id in answered) and not any(
            status == "started" for status, _, _ in runs.values()
        )

    with contextlib.suppress(AssertionError):
        wait_for(settled, 30, "the journal to be written")
    runs = stored_runs(db)
    wrong = {
        run_id: runs.get(run_id)
        for run_id in answered
        if runs.get(run_id) != ("completed", "ok", LINES_PER_RUN)
    }
    assert wrong == {}, f"{len(wrong)} of {len(answered)} answered runs not kept: {wrong}"
    started = [run_id for run_id, (status, _, _) in runs.items() if status == "started"]
    assert started == []


def test_a_database_killed_mid_traffic_loses_no_answered_run(
    pg: Database, service_factory: Callable[..., Service]
) -> None:
    env = {"CODEACTIONS_DATABASE_URL": pg.url, **BOUNDED}
    service, code, load = loaded(service_factory, env, source=SLOW_CODE, clients=4)
    reads = Load(f"{service.url}/code/{code}", clients=1, method="GET")
    reads.start()
    load.during(8)
    pg.cluster.kill()  # runs are executing: their outcomes can no longer be stored
    load.during(20)
    time.sleep(1)
    pg.cluster.start()
    load.during(12)
    load.stop()
    reads.stop()

    assert_clean_answers(load)
    assert set(reads.statuses()) <= {200, 503}, reads.statuses()
    assert reads.connection_errors == [] and reads.retry_after_missing == 0
    assert "journaling it" in service.log_tail(10_000), "no outcome had to be journaled"
    assert_every_answered_run_kept(pg, load.answered())


def test_a_frozen_database_holds_nobody_and_loses_nothing(
    pg: Database, service_factory: Callable[..., Service]
) -> None:
    env = {"CODEACTIONS_DATABASE_URL": pg.url, **BOUNDED}
    _, _, load = loaded(service_factory, env, source=SLOW_CODE, clients=4)
    load.during(8)
    pg.cluster.freeze()
    time.sleep(FREEZE_SECONDS)
    pg.cluster.thaw()
    load.during(12)
    load.stop()

    assert_clean_answers(load)
    # Bounded by the database timeouts (2 s each) plus the run, not by how long the freeze lasted.
    slowest = max(seconds for _, _, seconds in load.answers)
    assert slowest < FREEZE_SECONDS - 2, slowest
    assert_every_answered_run_kept(pg, load.answered())


def test_journaled_outcomes_survive_a_killed_service(
    pg: Database, service_factory: Callable[..., Service]
) -> None:
    service = service_factory({"CODEACTIONS_DATABASE_URL": pg.url, **BOUNDED})
    service.start()
    code = service.create_code(LOGGING_CODE.replace("time.sleep(0.02)", "time.sleep(1.5)"))
    answers: list[httpx.Response] = []

    def call() -> None:
        answers.append(httpx.post(f"{service.url}/action/endpoint/{code}", timeout=30))

    callers = [threading.Thread(target=call) for _ in range(3)]
    for caller in callers:
        caller.start()
    time.sleep(0.7)  # the runs are executing
    pg.cluster.kill()
    for caller in callers:
        caller.join(30)
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    service.kill()  # SIGKILL: the outcomes exist only in the journal on disk
    pg.cluster.start()
    service.start()
    assert_every_answered_run_kept(pg, [a.headers["x-run-id"] for a in answers])


def test_s3_frozen_mid_traffic_neither_slows_runs_nor_loses_lines(
    pg: Database, s3_server: S3Server, service_factory: Callable[..., Service]
) -> None:
    s3_server.create_bucket("drill-logs")
    env = {
        "CODEACTIONS_DATABASE_URL": pg.url,
        "CODEACTIONS_S3_ENABLED": "true",
        "CODEACTIONS_S3_BUCKET": "drill-logs",
        "CODEACTIONS_S3_ENDPOINT": s3_server.endpoint,
        "CODEACTIONS_S3_ACCESS_KEY_ID": "test",
        "CODEACTIONS_S3_SECRET_ACCESS_KEY": "test",
        "CODEACTIONS_S3_READ_TIMEOUT": "2",
        "CODEACTIONS_S3_WRITE_TIMEOUT": "2",
    }
    service, code, load = loaded(service_factory, env)
    load.during(20)
    s3_server.freeze()
    before = len(load.answers)
    load.during(40)
    frozen = load.answers[before:]
    began = time.monotonic()
    read = service.get("/codelog", code_id=code)
    read_seconds = time.monotonic() - began
    s3_server.thaw()
    load.during(20)
    load.stop()

    assert_clean_answers(load)
    assert {status for status, _, _ in frozen} == {200}
    # Runs answered at their usual pace: uploads wait in the spool, not in the answer path.
    assert statistics.median(seconds for _, _, seconds in frozen) < 1.0
    assert read.status_code == 503 and "retry-after" in read.headers, read.text
    assert read_seconds < 4
    assert_logs_in_s3(service, load.answered())

    # The service stopped (SIGTERM) while S3 is down keeps what it could not upload on disk,
    # and uploads it when it is started again.
    s3_server.freeze()
    late = [httpx.post(f"{service.url}/action/endpoint/{code}", timeout=30) for _ in range(5)]
    assert [a.status_code for a in late] == [200] * 5
    service.kill()
    s3_server.thaw()
    service.start()
    assert_logs_in_s3(service, [a.headers["x-run-id"] for a in late])


def assert_logs_in_s3(service: Service, run_ids: list[str]) -> None:
    def count(run_id: str) -> Any:
        response = service.get("/codelog", run_id=run_id)
        return response.json().get("total") if response.status_code == 200 else response.text

    def all_there() -> bool:
        return all(count(run_id) == LINES_PER_RUN for run_id in run_ids)

    with contextlib.suppress(AssertionError):
        wait_for(all_there, 30, "the spooled logs to be uploaded")
    missing = {run_id: count(run_id) for run_id in run_ids if count(run_id) != LINES_PER_RUN}
    assert missing == {}, f"{len(missing)} of {len(run_ids)} runs miss log lines"
    # In S3 itself, not only in the service's spool.
    spool = service.work / "spool"
    assert not any(path.stat().st_size for path in spool.rglob("*.seg"))


def test_redis_down_fails_closed_with_503_and_recovers(
    pg: Database, redis_server: RedisServer, service_factory: Callable[..., Service]
) -> None:
    env = {
        "CODEACTIONS_DATABASE_URL": pg.url,
        "CODEACTIONS_REDIS_URL": redis_server.url,
        "CODEACTIONS_RATELIMIT_FAIL_OPEN": "false",
        "CODEACTIONS_RATELIMIT_MAX_REQUESTS": "100000",
    }
    _, _, load = loaded(service_factory, env)
    load.during(10)
    redis_server.kill()
    before = len(load.answers)
    load.during(10)
    refused = load.answers[before:]
    redis_server.start()
    load.during(20)
    load.stop()

    assert_clean_answers(load)
    assert 503 in {status for status, _, _ in refused}
    assert load.answers[-1][0] == 200
    assert_every_answered_run_kept(pg, load.answered())
