"""Secrets handed to runs, and masked in whatever the service keeps about a run (its record and
its logs, in the database or S3), while the caller gets what the code made."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from codeactions.config import DatabaseSettings, Settings
from codeactions.db.session import create_engine
from codeactions.logs.store import LOG_STORE
from codeactions.main import create_app
from codeactions.parts import SETTINGS
from codeactions.runner.base import RunLogLine, RunOutcome, RunRequest
from codeactions.runs.journal import JOURNAL
from codeactions.runs.repository import RUN_BOOK
from codeactions.secrets.crypto import SecretBox, new_key
from codeactions.secrets.repository import ProjectValues
from codeactions.secrets.service import SECRET_VAULT, SecretVault
from tests.conftest import ADMIN
from tests.logs.conftest import s3_settings
from tests.runs.conftest import OTHER_PROJECT, PROJECT, Api, StartApi, bearer
from tests.secrets.conftest import insert_secret

TOKEN = "tok-4f9a2c71-live"  # what the tests' code leaks
MASKED = "********"


async def _secret(api: Api, name: str, value: str, project_uuid: str = PROJECT) -> str:
    response = await api.client.post(
        "/secret",
        json={"name": name, "value": value, "project_uuid": project_uuid},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _leaky(request: RunRequest) -> RunOutcome:
    """A code that writes its secret to a log line and to its result."""
    secret = request.secrets["TOKEN"]
    return RunOutcome(
        ok=True,
        result=f'{{"token": "{secret}"}}',
        content_type="json",
        logs=[
            RunLogLine(type="info", content=f"calling the API with {secret}", at=0),
            RunLogLine(type="debug", content="nothing secret here", at=0),
        ],
    )


async def _failing(request: RunRequest) -> RunOutcome:
    """A code whose exception carries its secret."""
    secret = request.secrets["TOKEN"]
    trace = f'Traceback (most recent call last):\n  File "main.py"\nValueError: bad token {secret}'
    return RunOutcome(
        ok=False,
        reason="exception",
        error=trace,
        logs=[RunLogLine(type="error", content=f"rejected {secret}", at=0)],
    )


async def _logs(api: Api, run_id: str) -> list[str]:
    response = await api.client.get("/codelog", params={"run_id": run_id}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return [line["content"] for line in response.json()["data"]]


async def _stored_run(api: Api, run_id: str) -> dict[str, Any]:
    await api.settle()
    response = await api.client.get(f"/coderun/{run_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- handing secrets to runs ------------------------------------------------------------------


async def test_a_run_gets_its_projects_secrets_in_plaintext(api: Api) -> None:
    await _secret(api, "TOKEN", TOKEN)
    await _secret(api, "URL", "https://example.com/hook")
    await _secret(api, "FOREIGN", "another-projects-value", project_uuid=OTHER_PROJECT)
    code = await api.add_code()

    response = await api.client.post(f"/action/endpoint/{code.id}")
    assert response.status_code == 200, response.text
    assert api.runner.calls[0].secrets == {"TOKEN": TOKEN, "URL": "https://example.com/hook"}


async def test_a_project_without_secrets_runs_with_none(api: Api) -> None:
    await _secret(api, "FOREIGN", "another-projects-value", project_uuid=OTHER_PROJECT)
    code = await api.add_code()
    assert (await api.client.post(f"/action/endpoint/{code.id}")).status_code == 200
    assert api.runner.calls[0].secrets == {}


async def test_a_run_gets_the_secrets_as_they_are_when_it_starts(api: Api) -> None:
    secret_id = await _secret(api, "TOKEN", "first-value")
    code = await api.add_code()
    await api.client.post(f"/action/endpoint/{code.id}")
    await api.client.patch(f"/secret/{secret_id}", json={"value": "second-value"}, headers=ADMIN)
    await api.client.post(f"/action/endpoint/{code.id}")
    await api.client.delete(f"/secret/{secret_id}", headers=ADMIN)
    await api.client.post(f"/action/endpoint/{code.id}")
    assert [call.secrets for call in api.runner.calls] == [
        {"TOKEN": "first-value"},
        {"TOKEN": "second-value"},
        {},
    ]


async def test_a_secret_the_original_wrote_in_plaintext_is_handed_to_runs(api: Api) -> None:
    await insert_secret(api.app, name="LEGACY", value="plaintext-from-go", project_uuid=PROJECT)
    code = await api.add_code()
    await api.client.post(f"/action/endpoint/{code.id}")
    assert api.runner.calls[0].secrets == {"LEGACY": "plaintext-from-go"}


# --- masking ----------------------------------------------------------------------------------


async def test_the_caller_gets_the_secret_but_the_stored_run_and_logs_mask_it(api: Api) -> None:
    await _secret(api, "TOKEN", TOKEN)
    api.runner.behaviour = _leaky
    code = await api.add_code()

    response = await api.client.post(f"/action/endpoint/{code.id}")
    assert response.status_code == 200
    assert response.json() == {"token": TOKEN}  # as the code made it

    run_id = response.headers["X-Run-Id"]
    stored = await _stored_run(api, run_id)
    assert stored["result"] == f'{{"token": "{MASKED}"}}'
    listed = await api.client.get("/coderun", params={"code_id": str(code.id)}, headers=ADMIN)
    assert TOKEN not in listed.text
    logs = await _logs(api, run_id)
    assert sorted(logs) == [f"calling the API with {MASKED}", "nothing secret here"]


async def test_run_answers_with_the_result_unmasked_and_stores_it_masked(api: Api) -> None:
    await _secret(api, "TOKEN", TOKEN)
    api.runner.behaviour = _leaky
    code = await api.add_code()

    response = await api.client.post(f"/run/{code.id}", headers=bearer("internal-token"))
    assert response.status_code == 200, response.text
    assert TOKEN in response.json()["result"]["result"]
    stored = await _stored_run(api, response.json()["result"]["id"])
    assert TOKEN not in str(stored) and MASKED in stored["result"]


async def test_an_exception_carrying_a_secret_is_masked_for_the_caller_and_the_record(
    api: Api,
) -> None:
    await _secret(api, "TOKEN", TOKEN)
    api.runner.behaviour = _failing
    code = await api.add_code()

    response = await api.client.post(f"/action/endpoint/{code.id}")
    assert response.status_code == 500
    assert TOKEN not in response.text
    assert f"ValueError: bad token {MASKED}" in response.json()["message"]

    run_id = response.headers["X-Run-Id"]
    stored = await _stored_run(api, run_id)
    assert stored["status"] == "failed"
    assert TOKEN not in str(stored)
    assert stored["extra"]["error"] == f"ValueError: bad token {MASKED}"
    assert stored["result"].endswith(f"ValueError: bad token {MASKED}")
    logs = await _logs(api, run_id)
    assert logs and all(TOKEN not in line for line in logs)
    assert f"rejected {MASKED}" in logs


async def test_overlapping_and_nested_secrets_are_masked_whole(api: Api) -> None:
    await _secret(api, "TOKEN", "abcdef-1234")
    await _secret(api, "LONGER", "abcdef-1234-5678")  # contains TOKEN
    await _secret(api, "OVERLAP", "5678-wxyz")  # overlaps LONGER's end

    async def behaviour(request: RunRequest) -> RunOutcome:
        return RunOutcome(ok=True, result="a abcdef-1234-5678-wxyz b abcdef-1234 c")

    api.runner.behaviour = behaviour
    code = await api.add_code()
    response = await api.client.post(f"/action/endpoint/{code.id}")
    stored = await _stored_run(api, response.headers["X-Run-Id"])
    assert stored["result"] == f"a {MASKED} b {MASKED} c"


async def test_values_shorter_than_four_characters_are_not_masked(api: Api) -> None:
    await _secret(api, "PIN", "123")
    await _secret(api, "BLANKISH", "  x ")

    async def behaviour(request: RunRequest) -> RunOutcome:
        return RunOutcome(ok=True, result="order 1234 of 123 items;  x  done")

    api.runner.behaviour = behaviour
    code = await api.add_code()
    response = await api.client.post(f"/action/endpoint/{code.id}")
    stored = await _stored_run(api, response.headers["X-Run-Id"])
    assert stored["result"] == "order 1234 of 123 items;  x  done"


async def test_a_secret_escaped_inside_a_json_result_is_masked(api: Api) -> None:
    await _secret(api, "TOKEN", 'quote"and\\backslash-é')

    async def behaviour(request: RunRequest) -> RunOutcome:
        import json

        return RunOutcome(ok=True, result=json.dumps({"t": request.secrets["TOKEN"]}))

    api.runner.behaviour = behaviour
    code = await api.add_code()
    response = await api.client.post(f"/action/endpoint/{code.id}")
    assert response.json() == {"t": 'quote"and\\backslash-é'}
    stored = await _stored_run(api, response.headers["X-Run-Id"])
    assert stored["result"] == f'{{"t": "{MASKED}"}}'


async def test_logs_kept_in_s3_are_masked(
    make_settings: Callable[..., Settings], s3_endpoint: str
) -> None:
    import boto3  # type: ignore[import-untyped]

    bucket = f"codeactions-{uuid.uuid4().hex[:10]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket=bucket)

    class Runner:
        async def run(self, request: RunRequest) -> RunOutcome:
            return await _leaky(request)

        async def close(self) -> None:
            return None

    app = create_app(make_settings(logs=s3_settings(s3_endpoint, bucket)), runner=Runner())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            created = await client.post(
                "/secret",
                json={"name": "TOKEN", "value": TOKEN, "project_uuid": PROJECT},
                headers=ADMIN,
            )
            assert created.status_code == 201
            api = Api(app, client, runner=None)  # type: ignore[arg-type]
            code = await api.add_code()
            response = await client.post(f"/action/endpoint/{code.id}")
            assert response.json() == {"token": TOKEN}
            await app.state.parts[LOG_STORE].flush()
            logs = await _logs(api, response.headers["X-Run-Id"])
    assert f"calling the API with {MASKED}" in logs
    assert all(TOKEN not in line for line in logs)


async def test_an_outcome_journaled_while_the_database_is_down_is_stored_masked(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _secret(api, "TOKEN", TOKEN)
    api.runner.behaviour = _leaky
    code = await api.add_code()
    book = api.app.state.parts[RUN_BOOK]
    real_finish = book.finish
    failures = 1

    async def failing_finish(*args: Any, **kwargs: Any) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise OperationalError("UPDATE", {}, ConnectionRefusedError("database down"))
        await real_finish(*args, **kwargs)

    monkeypatch.setattr(book, "finish", failing_finish)
    response = await api.client.post(f"/action/endpoint/{code.id}")
    assert response.json() == {"token": TOKEN}
    await api.app.state.parts[JOURNAL].spool.wait_empty()
    stored = await _stored_run(api, response.headers["X-Run-Id"])
    assert stored["result"] == f'{{"token": "{MASKED}"}}'
    logs = await _logs(api, response.headers["X-Run-Id"])
    assert f"calling the API with {MASKED}" in logs and all(TOKEN not in line for line in logs)


# --- when the secrets cannot be loaded ------------------------------------------------------


async def test_a_database_outage_while_loading_secrets_fails_the_run_cleanly(
    start_api: StartApi,
) -> None:
    # The run record goes to the real database; the secrets come from one that is down.
    down = create_engine(
        DatabaseSettings(url="postgresql://nobody@127.0.0.1:9/none", connect_timeout=2)
    )
    vault = SecretVault(ProjectValues(down), SecretBox(new_key()), timeout=5)
    api = await start_api(parts={"secret_vault": vault})
    code = await api.add_code()
    try:
        response = await api.client.post(f"/action/endpoint/{code.id}")
    finally:
        await down.dispose()
    assert response.status_code == 503
    assert response.json() == {"message": "could not load the project's secrets"}
    assert api.runner.calls == []
    await _nothing_recorded(api, str(code.id), response)


async def test_a_secret_under_an_unknown_key_fails_the_run_instead_of_running_without_it(
    api: Api,
) -> None:
    await insert_secret(
        api.app, name="TOKEN", value=SecretBox(new_key()).seal("lost"), project_uuid=PROJECT
    )
    code = await api.add_code()
    response = await api.client.post(f"/action/endpoint/{code.id}")
    assert response.status_code == 503
    assert "cannot be decrypted" in response.json()["message"]
    assert api.runner.calls == []
    await _nothing_recorded(api, str(code.id), response)


async def _nothing_recorded(api: Api, code_id: str, response: httpx.Response) -> None:
    """The secrets are read before the run is recorded: a run that cannot have them leaves no
    record behind (nor one stuck `started`)."""
    assert "x-run-id" not in response.headers
    await api.settle()
    runs = await api.client.get("/coderun", params={"code_id": code_id}, headers=ADMIN)
    assert runs.status_code == 200 and runs.json() == []


@pytest.mark.parametrize("count", [0, 20])
async def test_many_secrets_or_none_the_run_answers(api: Api, count: int) -> None:
    for i in range(count):
        await _secret(api, f"S{i}", f"value-number-{i}")
    code = await api.add_code()
    response = await api.client.post(f"/action/endpoint/{code.id}")
    assert response.status_code == 200
    assert len(api.runner.calls[0].secrets) == count


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_on_sqlite_secrets_are_read_while_another_writer_holds_the_database(
    api: Api,
) -> None:
    path = api.app.state.parts[SETTINGS].database.sqlite_path
    assert path is not None
    await _secret(api, "TOKEN", TOKEN)
    writer = sqlite3.connect(path, timeout=1)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM secrets")  # not committed: readers still see the secret
        values = await api.app.state.parts[SECRET_VAULT].for_run(PROJECT)
    finally:
        writer.rollback()
        writer.close()
    assert values == {"TOKEN": TOKEN}
