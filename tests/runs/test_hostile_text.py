"""Text no database stores, sent by a caller or produced by a run (lone UTF-16 surrogates, NUL,
NaN and Infinity): the run is recorded with U+FFFD in their place, and every read still answers."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from sqlalchemy import literal_column, update

from codeactions.db.models import CodeRun
from codeactions.db.session import SESSIONMAKER
from codeactions.runner.base import RunLogLine, RunOutcome, RunRequest
from tests.conftest import ADMIN
from tests.runs.conftest import Api

# As a caller writes them in JSON: `json.loads` turns the escapes into a str with a lone surrogate.
HOSTILE_JSON = r"a\ud800b\u0000c\udfff"
STORED = "a\ufffdb\ufffdc\ufffd"
HOSTILE = "a\ud800b\x00c\udfff"  # the same, as a run produces it


async def read_back(api: Api, code_id: str, run_id: str) -> dict[str, Any]:
    """The run through both read routes, which must agree."""
    await api.settle()
    one = await api.client.get(f"/coderun/{run_id}", headers=ADMIN)
    assert one.status_code == 200, one.text
    listed = await api.client.get("/coderun", params={"code_id": code_id}, headers=ADMIN)
    assert listed.status_code == 200, listed.text
    assert [run["id"] for run in listed.json()] == [run_id]
    assert listed.json()[0] == one.json()
    run: dict[str, Any] = one.json()
    return run


async def test_run_inputs_with_lone_surrogates_and_nul_are_stored_replaced(api: Api) -> None:
    code = await api.add_code()
    request = (
        f'{{"body": "{HOSTILE_JSON}", "params": {{"p{HOSTILE_JSON}": "{HOSTILE_JSON}"}}, '
        f'"headers": {{"X-H": ["{HOSTILE_JSON}", "pair \\ud83d\\ude00"]}}}}'
    )
    response = await api.client.post(f"/run/{code.id}", content=request, headers=ADMIN)
    assert response.status_code == 200, response.text
    answered = response.json()["result"]
    assert api.runner.calls[0].body == HOSTILE  # the code gets what was sent
    assert answered["body"] == STORED
    assert answered["params"] == {f"p{STORED}": STORED}
    assert answered["headers"] == {"X-H": [STORED, "pair \U0001f600"]}  # a pair is one character
    stored = await read_back(api, str(code.id), answered["id"])
    assert stored == answered


async def test_endpoint_inputs_with_nul_are_stored_replaced(api: Api) -> None:
    code = await api.add_code()
    response = await api.client.post(
        f"/action/endpoint/{code.id}?q=%00x", content=b"body\x00", headers={"X-Nul": "n"}
    )
    assert response.status_code == 200
    stored = await read_back(api, str(code.id), api.runner.calls[0].run_id)
    assert stored["params"] == {"q": "\ufffdx"}
    assert stored["body"] == "body\ufffd"


@pytest.mark.parametrize(
    "status_code",
    [float("nan"), float("inf"), -math.inf, {"code": 404}, [404], True, None, 10**40, "4" * 5000],
    ids=["nan", "inf", "-inf", "dict", "list", "bool", "none", "huge-int", "huge-string"],
)
async def test_an_outcome_with_hostile_text_and_status_is_stored_completed_with_its_logs(
    api: Api, status_code: Any
) -> None:
    code = await api.add_code()

    async def hostile(request: RunRequest) -> RunOutcome:
        return RunOutcome(
            ok=True,
            result=HOSTILE,
            status_code=status_code,
            content_type="json",
            logs=[
                RunLogLine(type="info", content=HOSTILE, at=time.time()),
                RunLogLine(type="error", content="nul\x00", at=time.time()),
            ],
        )

    api.runner.behaviour = hostile
    response = await api.client.post(f"/run/{code.id}", headers=ADMIN)
    assert response.status_code == 200, response.text  # the default status, not the code's
    run_id = response.json()["result"]["id"]
    assert response.json()["result"]["result"] == STORED
    stored = await read_back(api, str(code.id), run_id)
    assert (stored["status"], stored["result"]) == ("completed", STORED)
    assert stored["extra"] == {"status_code": 200, "content_type": "json"}
    logs = await api.client.get("/codelog", params={"run_id": run_id}, headers=ADMIN)
    assert logs.status_code == 200, logs.text
    assert sorted(line["content"] for line in logs.json()["data"]) == [STORED, "nul\ufffd"]
    endpoint = await api.client.get(f"/action/endpoint/{code.id}")
    assert endpoint.status_code == 200


@pytest.mark.parametrize(("status_code", "kept"), [(404, 404), (" 201 ", " 201 "), (999, 999)])
async def test_a_status_set_as_an_int_or_a_numeric_string_is_kept(
    api: Api, status_code: Any, kept: Any
) -> None:
    code = await api.add_code()

    async def answer(request: RunRequest) -> RunOutcome:
        return RunOutcome(ok=True, result="r", status_code=status_code)

    api.runner.behaviour = answer
    await api.client.get(f"/action/endpoint/{code.id}")
    stored = await read_back(api, str(code.id), api.runner.calls[0].run_id)
    assert stored["extra"]["status_code"] == kept


async def test_runs_stored_with_nan_still_read(api: Api, database_url: str) -> None:
    code = await api.add_code()
    run = await api.add_run(code_id=code.id)
    async with api.app.state.parts[SESSIONMAKER]() as session, session.begin():
        stored = await session.get(CodeRun, run.id)
        assert stored is not None
        stored.extra = {"status_code": math.nan, "content_type": "text", "elapsed": math.inf}
    if database_url.startswith("sqlite"):
        # Rows written before values were cleaned: SQLite kept NaN, and escaped lone surrogates.
        async with api.app.state.parts[SESSIONMAKER]() as session, session.begin():
            await session.execute(
                update(CodeRun)
                .where(CodeRun.id == run.id)
                .values(
                    extra=literal_column(
                        '\'{"status_code": NaN, "content_type": "text", '
                        '"elapsed": Infinity, "note": "\\ud800"}\''
                    )
                )
            )
    read = await read_back(api, str(code.id), str(run.id))
    assert read["extra"]["status_code"] is None
    assert read["extra"]["elapsed"] is None
    assert read["extra"].get("note", "\ufffd") == "\ufffd"
