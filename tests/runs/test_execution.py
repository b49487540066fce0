"""`/action/endpoint` and `/endpoint`: what the code gets, what the caller gets, what is recorded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from codeactions.config import RateLimitSettings, RunnerSettings, ServerSettings
from codeactions.logs.store import LOG_STORE, LogQuery
from codeactions.runner.base import RunLogLine, RunOutcome, RunRequest
from codeactions.runs import repository as run_repository
from codeactions.runs import service as run_service
from tests.conftest import ADMIN
from tests.runs.conftest import OTHER_PROJECT, PROJECT, Api, StartApi


async def logs_of(api: Api, query: LogQuery) -> tuple[list[Any], int]:
    await api.settle()
    found: tuple[list[Any], int] = await api.app.state.parts[LOG_STORE].list(query)
    return found


def answer(**fields: Any) -> Any:
    async def behaviour(request: RunRequest) -> RunOutcome:
        return RunOutcome(**fields)

    return behaviour


@pytest.mark.parametrize(
    ("status_code", "content_type", "expected_status", "expected_type"),
    [
        (201, "json", 201, "application/json; charset=UTF-8"),
        ("404", "html", 404, "text/html; charset=UTF-8"),
        (" 422 ", "text", 422, "text/plain; charset=UTF-8"),
        (999, "xml", 200, "text/plain; charset=UTF-8"),
        ("abc", None, 200, "text/plain; charset=UTF-8"),
        (True, "json", 200, "application/json; charset=UTF-8"),
        (102, "text", 200, "text/plain; charset=UTF-8"),
    ],
)
async def test_result_status_and_content_type_come_from_the_code(
    api: Api, status_code: Any, content_type: Any, expected_status: int, expected_type: str
) -> None:
    code = await api.add_code()
    api.runner.behaviour = answer(
        ok=True, result='{"a": 1}', status_code=status_code, content_type=content_type
    )
    response = await api.client.get(f"/action/endpoint/{code.id}")
    assert response.status_code == expected_status
    assert response.headers["content-type"] == expected_type
    assert response.text == '{"a": 1}'


async def test_run_is_started_before_execution_and_completed_after(api: Api) -> None:
    code = await api.add_code()
    seen: list[str | None] = []

    async def behaviour(request: RunRequest) -> RunOutcome:
        run = await api.get_run(request.run_id, settle=False)
        seen.append(run.status if run else None)
        return RunOutcome(ok=True, result="hi", status_code="201", content_type="json")

    api.runner.behaviour = behaviour
    response = await api.client.post(f"/action/endpoint/{code.id}", content="payload")
    assert response.status_code == 201
    assert seen == ["started"]
    run = await api.get_run(api.runner.calls[0].run_id)
    assert run is not None
    assert run.status == "completed"
    assert run.result == "hi"
    assert run.extra == {"status_code": "201", "content_type": "json"}
    assert run.code_id == code.id
    assert run.body == "payload"


async def test_inputs_reach_the_code_with_go_header_names_and_first_query_values(
    api: Api,
) -> None:
    code = await api.add_code()
    response = await api.client.put(
        f"/action/endpoint/{code.id}?a=1&a=2&b=x",
        content="héllo".encode() + b"\xff",
        headers=[
            ("x-api-key", "secret-key"),
            ("x-custom", "one"),
            ("x-custom", "two"),
            ("authorization", "Bearer abc"),
            ("x-my-token", "t"),
        ],
    )
    assert response.status_code == 200
    request = api.runner.calls[0]
    assert request.params == {"a": "1", "b": "x"}
    assert request.method == "PUT"
    assert request.body == "héllo\ufffd"
    assert request.headers["X-Api-Key"] == ["secret-key"]
    assert request.headers["X-Custom"] == ["one", "two"]
    assert request.headers["Authorization"] == ["Bearer abc"]
    assert "Host" not in request.headers and "host" not in request.headers
    assert request.code_id == str(code.id)
    assert request.language == "python"
    assert 0 < request.timeout <= 60


async def test_stored_headers_hide_credentials(api: Api) -> None:
    code = await api.add_code()
    await api.client.get(
        f"/action/endpoint/{code.id}",
        headers={
            "Authorization": "Bearer abc",
            "Cookie": "s=1",
            "X-Api-Key": "k",
            "X-Hub-Signature": "sha1=x",
            "X-Db-Password": "p",
            "X-Visible": "v",
        },
    )
    run = await api.get_run(api.runner.calls[0].run_id)
    assert run is not None and run.headers is not None
    for name in ("Authorization", "Cookie", "X-Api-Key", "X-Hub-Signature", "X-Db-Password"):
        assert run.headers[name] == ["[REDACTED]"], name
    assert run.headers["X-Visible"] == ["v"]


async def test_exception_answers_500_with_the_last_line_only_and_keeps_the_traceback(
    api: Api,
) -> None:
    code = await api.add_code()
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/srv/sandbox/action.py", line 2, in Run\n'
        "ZeroDivisionError: division by zero\n"
    )
    api.runner.behaviour = answer(
        ok=False,
        reason="exception",
        error=traceback,
        logs=[RunLogLine(type="info", content="before", at=time.time())],
    )
    response = await api.client.get(f"/action/endpoint/{code.id}")
    assert response.status_code == 500
    run_id = api.runner.calls[0].run_id
    assert response.json() == {
        "message": f"error on executing code: ZeroDivisionError: division by zero (run {run_id})"
    }
    assert "/srv" not in response.text
    run = await api.get_run(run_id)
    assert run is not None
    assert run.status == "failed"
    assert run.result == traceback
    assert run.extra is not None
    assert run.extra["reason"] == "exception"
    assert run.extra["status_code"] == 500
    assert run.extra["error"] == "ZeroDivisionError: division by zero"
    entries, _ = await logs_of(api, LogQuery(run_id=run_id))
    contents = {e.content for e in entries}
    assert "before" in contents and traceback in contents
    assert all(e.code_id == str(code.id) for e in entries)


async def test_limit_failures_answer_500_with_the_reason_explained(api: Api) -> None:
    code = await api.add_code()
    api.runner.behaviour = answer(ok=False, reason="memory", error="killed: oom")
    response = await api.client.get(f"/endpoint/{code.id}")
    assert response.status_code == 500
    assert response.json()["message"].startswith(
        "error on executing code: memory limit exceeded (run "
    )
    run = await api.get_run(api.runner.calls[0].run_id)
    assert run is not None and run.extra is not None
    assert (run.status, run.extra["reason"]) == ("failed", "memory")


async def test_runner_failure_answers_503(api: Api) -> None:
    code = await api.add_code()

    async def broken(request: RunRequest) -> RunOutcome:
        raise RuntimeError("supervisor died")

    api.runner.behaviour = broken
    response = await api.client.get(f"/action/endpoint/{code.id}")
    assert response.status_code == 503
    assert "supervisor" not in response.text
    run = await api.get_run(api.runner.calls[0].run_id)
    assert run is not None and run.extra is not None
    assert (run.status, run.extra["reason"]) == ("failed", "runner")


async def test_disabled_runner_answers_503(start_api: StartApi) -> None:
    from codeactions.runner.disabled import DisabledRunner

    api = await start_api(parts={"runner": DisabledRunner()})
    code = await api.add_code()
    response = await api.client.get(f"/action/endpoint/{code.id}")
    assert response.status_code == 503
    assert response.json() == {"message": "code runner is disabled"}


async def test_logs_are_written_with_the_invoked_id(api: Api) -> None:
    await api.add_code(mongo_object_id="65a1b2c3d4e5f60718293a4b")
    api.runner.behaviour = answer(
        ok=True,
        result="x",
        logs=[
            RunLogLine(type="info", content="one", at=time.time()),
            RunLogLine(type="error", content="two", at=time.time()),
        ],
    )
    response = await api.client.get("/action/endpoint/65a1b2c3d4e5f60718293a4b")
    assert response.status_code == 200
    run_id = api.runner.calls[0].run_id
    entries, total = await logs_of(api, LogQuery(run_id=run_id))
    assert total == 2
    assert sorted(e.content for e in entries) == ["one", "two"]
    assert {e.code_id for e in entries} == {"65a1b2c3d4e5f60718293a4b"}


async def test_object_id_invocation_records_both_ids(api: Api) -> None:
    code = await api.add_code(mongo_object_id="65a1b2c3d4e5f60718293a4c")
    response = await api.client.post("/action/endpoint/65a1b2c3d4e5f60718293a4c")
    assert response.status_code == 200
    run = await api.get_run(api.runner.calls[0].run_id)
    assert run is not None
    assert run.code_id == code.id
    assert run.code_mongo_id == "65a1b2c3d4e5f60718293a4c"
    assert api.runner.calls[0].code_id == str(code.id)


async def test_flow_codes_execute_too(api: Api) -> None:
    code = await api.add_code(type="flow")
    response = await api.client.get(f"/action/endpoint/{code.id}")
    assert response.status_code == 200
    assert response.text == "ok"


@pytest.mark.parametrize(
    "code_id",
    ["00000000-0000-0000-0000-000000000000", "65a1b2c3d4e5f60718293a4d", "nope", "1" * 40],
)
async def test_unknown_or_malformed_ids_are_404(api: Api, code_id: str) -> None:
    for path in (f"/action/endpoint/{code_id}", f"/endpoint/{code_id}"):
        response = await api.client.get(path)
        assert response.status_code == 404
        assert response.json() == {"message": "Not Found"}
    assert api.runner.calls == []


async def test_head_and_other_methods_execute(api: Api) -> None:
    code = await api.add_code()
    for method in ("HEAD", "DELETE", "PATCH", "PROPFIND", "REPORT"):
        response = await api.client.request(method, f"/action/endpoint/{code.id}")
        assert response.status_code == 200, method
    assert [c.method for c in api.runner.calls] == ["HEAD", "DELETE", "PATCH", "PROPFIND", "REPORT"]


async def test_rate_limit_answers_429_with_headers(start_api: StartApi) -> None:
    api = await start_api(ratelimit=RateLimitSettings(max_requests=2, window_seconds=60))
    code = await api.add_code()
    first = await api.client.get(f"/action/endpoint/{code.id}")
    assert first.status_code == 200
    assert first.headers["RateLimit-Limit"] == "2"
    assert first.headers["RateLimit-Remaining"] == "1"
    await api.client.get(f"/action/endpoint/{code.id}")
    third = await api.client.get(f"/action/endpoint/{code.id}")
    assert third.status_code == 429
    assert third.json() == {"message": "Too Many Requests"}
    assert third.headers["RateLimit-Remaining"] == "0"
    assert int(third.headers["Retry-After"]) >= 1
    # The X- spellings too, with the same values.
    for name in ("Limit", "Remaining", "Reset"):
        assert first.headers[f"X-RateLimit-{name}"] == first.headers[f"RateLimit-{name}"]
        assert third.headers[f"X-RateLimit-{name}"] == third.headers[f"RateLimit-{name}"]
    assert len(api.runner.calls) == 2
    # /endpoint shares the code's bucket
    assert (await api.client.get(f"/endpoint/{code.id}")).status_code == 429


async def test_full_queue_answers_503(start_api: StartApi) -> None:
    api = await start_api(runner=RunnerSettings(enabled=False, slots=1, queue_size=0))
    code = await api.add_code()
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: RunRequest) -> RunOutcome:
        entered.set()
        await release.wait()
        return RunOutcome(ok=True, result="slow")

    api.runner.behaviour = slow
    first = asyncio.create_task(api.client.get(f"/action/endpoint/{code.id}"))
    await asyncio.wait_for(entered.wait(), 10)
    second = await api.client.get(f"/action/endpoint/{code.id}")
    assert second.status_code == 503
    assert second.json() == {"message": "workerpool queue is full"}
    release.set()
    assert (await first).text == "slow"
    assert len(api.runner.calls) == 1
    # the slot is free again
    assert (await api.client.get(f"/action/endpoint/{code.id}")).status_code == 200


async def test_a_project_over_its_waiting_cap_gets_429_while_others_still_run(
    start_api: StartApi,
) -> None:
    # 2 slots and 8 waiting places: a project may run 1 and keep 2 waiting.
    api = await start_api(runner=RunnerSettings(enabled=False, slots=2, queue_size=8))
    flooded = await api.add_code(project_uuid=PROJECT)
    other = await api.add_code(project_uuid=OTHER_PROJECT)
    release = asyncio.Event()

    async def behaviour(request: RunRequest) -> RunOutcome:
        if request.code_id == str(flooded.id):
            await release.wait()
        return RunOutcome(ok=True, result=request.code_id)

    api.runner.behaviour = behaviour
    flood = [
        asyncio.create_task(api.client.get(f"/action/endpoint/{flooded.id}")) for _ in range(20)
    ]
    pending = set(flood)
    async with asyncio.timeout(10):
        while len(pending) > 3:  # all answered but the 1 running and the 2 waiting
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    answer = await api.client.get(f"/action/endpoint/{other.id}")
    assert (answer.status_code, answer.text) == (200, str(other.id))
    release.set()
    responses = await asyncio.gather(*flood)
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 17
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json() == {"message": "too many runs of this project waiting"}
    assert refused.headers["Retry-After"] == "1"
    assert len(api.runner.calls) == 4


async def test_timeout_answers_408_and_fails_the_run(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_service, "code_timeout_seconds", lambda code: 0.3)
    monkeypatch.setattr(run_service, "RUNNER_GRACE_SECONDS", 0.2)
    code = await api.add_code()

    async def hangs(request: RunRequest) -> RunOutcome:
        assert request.timeout <= 0.3
        await asyncio.sleep(30)
        return RunOutcome(ok=True)

    api.runner.behaviour = hangs
    started = time.monotonic()
    response = await api.client.get(f"/action/endpoint/{code.id}")
    assert time.monotonic() - started < 5
    assert response.status_code == 408
    assert response.json() == {"message": "timeout: request context timeout limit exceeded"}
    run = await api.get_run(api.runner.calls[0].run_id)
    assert run is not None and run.extra is not None
    assert (run.status, run.extra["reason"], run.extra["status_code"]) == (
        "failed",
        "timeout",
        408,
    )


async def test_runner_reported_timeout_answers_408(api: Api) -> None:
    code = await api.add_code()
    api.runner.behaviour = answer(ok=False, reason="timeout", error="killed at deadline")
    response = await api.client.get(f"/endpoint/{code.id}")
    assert response.status_code == 408


async def test_waiting_for_a_slot_counts_against_the_timeout(
    start_api: StartApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_service, "code_timeout_seconds", lambda code: 0.3)
    api = await start_api(runner=RunnerSettings(enabled=False, slots=1, queue_size=5))
    code = await api.add_code()
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: RunRequest) -> RunOutcome:
        entered.set()
        await release.wait()
        return RunOutcome(ok=True, result="slow")

    api.runner.behaviour = slow
    first = asyncio.create_task(api.client.get(f"/action/endpoint/{code.id}"))
    await asyncio.wait_for(entered.wait(), 10)
    second = await api.client.get(f"/action/endpoint/{code.id}")
    assert second.status_code == 408
    release.set()
    await first
    await api.settle()
    assert len(api.runner.calls) == 1


async def test_body_over_the_limit_is_413(start_api: StartApi) -> None:
    api = await start_api(server=ServerSettings(max_body_bytes=100))
    code = await api.add_code()
    response = await api.client.post(f"/action/endpoint/{code.id}", content=b"x" * 101)
    assert response.status_code == 413
    assert (
        await api.client.post(f"/action/endpoint/{code.id}", content=b"x" * 100)
    ).status_code == 200

    async def chunks() -> Any:
        for _ in range(3):
            yield b"x" * 60

    streamed = await api.client.post(f"/action/endpoint/{code.id}", content=chunks())
    assert streamed.status_code == 413
    assert len(api.runner.calls) == 1


async def test_run_is_recorded_even_when_the_client_goes_away(api: Api) -> None:
    code = await api.add_code()
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: RunRequest) -> RunOutcome:
        entered.set()
        await release.wait()
        return RunOutcome(ok=True, result="late", logs=[RunLogLine("info", "l", time.time())])

    api.runner.behaviour = slow
    request = asyncio.create_task(api.client.get(f"/action/endpoint/{code.id}"))
    await asyncio.wait_for(entered.wait(), 10)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    release.set()
    await api.settle()
    run_id = api.runner.calls[0].run_id
    run = await api.get_run(run_id)
    assert run is not None
    assert (run.status, run.result) == ("completed", "late")
    _, total = await logs_of(api, LogQuery(run_id=run_id))
    assert total == 1


async def test_openapi_documents_the_execution_routes(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    action = schema["paths"]["/action/endpoint/{code_id}"]
    assert {"get", "post", "put", "patch", "delete", "head"} <= set(action)
    assert "text/plain" in action["post"]["requestBody"]["content"]
    assert "/endpoint/{code_id}" in schema["paths"]
    assert "post" in schema["paths"]["/run/{code_id}"]
    assert "get" in schema["paths"]["/coderun"]


async def test_a_failed_final_record_does_not_lose_the_answer(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = await api.add_code()

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(run_repository.RunBook, "finish", broken)
    api.runner.behaviour = answer(ok=True, result="still here", status_code=202)
    response = await api.client.get(f"/action/endpoint/{code.id}")
    assert (response.status_code, response.text) == (202, "still here")
    run = await api.get_run(api.runner.calls[0].run_id)
    assert run is not None and run.status == "started"  # the reaper will end it


async def test_no_execution_without_a_started_record(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = await api.add_code()

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(run_repository.RunBook, "start", broken)
    response = await api.client.get(f"/action/endpoint/{code.id}")
    assert response.status_code == 503
    assert response.json() == {"message": "could not record the run"}
    assert api.runner.calls == []


async def test_a_run_after_an_update_uses_the_new_source(api: Api) -> None:
    code = await api.add_code()
    await api.client.get(f"/action/endpoint/{code.id}")  # the code is now cached
    new_source = "def Run(engine):\n    engine.result.set('v2')\n"
    patched = await api.client.patch(f"/code/{code.id}", content=new_source, headers=ADMIN)
    assert patched.status_code == 200, patched.text
    await api.client.get(f"/action/endpoint/{code.id}")
    assert [call.source for call in api.runner.calls][-1] == new_source


async def test_a_deleted_code_is_not_run_from_the_cache(api: Api) -> None:
    code = await api.add_code()
    assert (await api.client.get(f"/action/endpoint/{code.id}")).status_code == 200
    assert (await api.client.delete(f"/code/{code.id}", headers=ADMIN)).status_code == 200
    response = await api.client.get(f"/action/endpoint/{code.id}")
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}
