"""What callers get when a dependency fails, when headers are too large, and whose quota a run
counts against."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from codeactions.config import RateLimitSettings, ServerSettings
from codeactions.db.session import SESSIONMAKER
from codeactions.ratelimit.base import LIMITER
from codeactions.runner.base import RunLogLine, RunOutcome, RunRequest
from codeactions.runs.journal import JOURNAL
from codeactions.runs.reaper import reap_stale_runs
from codeactions.runs.repository import RUN_BOOK
from tests.conftest import ADMIN, Sessions
from tests.runs.conftest import Api, StartApi


async def test_every_spelling_of_a_code_id_shares_one_quota(start_api: StartApi) -> None:
    api = await start_api(ratelimit=RateLimitSettings(max_requests=3, window_seconds=60))
    code = await api.add_code()
    spellings = [str(code.id), str(code.id).upper(), str(code.id)[:8].upper() + str(code.id)[8:]]
    statuses = [
        (await api.client.post(f"/action/endpoint/{spelling}")).status_code
        for spelling in spellings * 2
    ]
    assert statuses == [200, 200, 200, 429, 429, 429]
    assert len(api.runner.calls) == 3


async def test_ids_that_name_no_code_leave_no_limiter_state(start_api: StartApi) -> None:
    api = await start_api(ratelimit=RateLimitSettings(max_requests=3, window_seconds=60))
    for _ in range(20):
        missing = await api.client.post(f"/action/endpoint/{uuid.uuid4()}")
        assert missing.status_code == 404
    assert api.app.state.parts[LIMITER]._hits == {}


async def test_headers_over_the_limit_get_431(start_api: StartApi) -> None:
    api = await start_api(server=ServerSettings(max_header_bytes=4096))
    code = await api.add_code()
    fine = await api.client.post(f"/action/endpoint/{code.id}", headers={"X-Pad": "a" * 3000})
    assert fine.status_code == 200
    big = await api.client.post(f"/action/endpoint/{code.id}", headers={"X-Pad": "a" * 5000})
    assert big.status_code == 431
    assert "request headers are too large" in big.json()["message"]
    assert len(api.runner.calls) == 1  # the oversized request ran nothing and stored nothing


async def test_a_database_outage_answers_503_with_retry_after(
    start_api: StartApi, sessions: Sessions
) -> None:
    api = await start_api(parts={"sessionmaker": sessions})
    code = await api.add_code()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    sessions.failing = broken
    for method, path in (
        ("GET", f"/code/{code.id}"),
        ("GET", "/coderun"),
        ("POST", f"/action/endpoint/{uuid.uuid4()}"),
        ("GET", f"/codelog?code_id={code.id}"),
    ):
        response = await api.client.request(method, path, headers=ADMIN)
        assert response.status_code == 503, (path, response.text)
        assert response.json() == {"message": "Service Unavailable"}
        assert response.headers["Retry-After"] == "5"


async def test_an_unexpected_error_is_a_500_body_not_a_dropped_connection(
    start_api: StartApi, sessions: Sessions
) -> None:
    api = await start_api(parts={"sessionmaker": sessions})

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    sessions.failing = broken
    response = await api.client.get(f"/code/{uuid.uuid4()}", headers=ADMIN)
    assert response.status_code == 500
    assert response.json() == {"message": "Internal Server Error"}


async def test_an_outcome_the_database_refuses_is_journaled_and_written_later(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = await api.add_code()
    book = api.app.state.parts[RUN_BOOK]
    real_finish = book.finish
    failures = 3

    async def failing_finish(*args: Any, **kwargs: Any) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise OperationalError("UPDATE", {}, ConnectionRefusedError("database down"))
        await real_finish(*args, **kwargs)

    async def logging(request: RunRequest) -> RunOutcome:
        lines = [RunLogLine(type="info", content=f"line {n}", at=0) for n in range(2)]
        return RunOutcome(ok=True, result="kept", logs=lines)

    monkeypatch.setattr(book, "finish", failing_finish)
    api.runner.behaviour = logging
    response = await api.client.post(f"/action/endpoint/{code.id}")
    assert response.status_code == 200
    assert response.text == "kept"
    run_id = response.headers["X-Run-Id"]
    await api.app.state.parts[JOURNAL].spool.wait_empty()
    run = await api.get_run(run_id)
    assert run is not None
    assert (run.status, run.result) == ("completed", "kept")
    logs = await api.client.get("/codelog", params={"run_id": run_id}, headers=ADMIN)
    assert logs.json()["total"] == 2
    # Long after, the reaper has nothing to say about it.
    assert await reap_stale_runs(api.app.state.parts[SESSIONMAKER]) == 0
