"""GET /codelog/{id} and GET /codelog: run logs, readable by the code's project members only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from codeactions.db.models import Code, CodeRun
from codeactions.db.session import SESSIONMAKER
from codeactions.logs.store import LOG_STORE, LogEntry
from tests.codes.support import GO_TIME, OUTSIDER, PROJECT, VIEWER, as_user, enable_users
from tests.conftest import ADMIN

OBJECT_ID = "65a1b2c3d4e5f60718293a4b"
T0 = datetime(2026, 1, 23, 10, 0, 0, 123456, tzinfo=UTC)


@dataclass
class Fixture:
    code: Code
    run: CodeRun
    logs: list[LogEntry]  # oldest first


async def _seed(app: FastAPI, *, lines: int = 3, mongo_object_id: str | None = None) -> Fixture:
    code = Code(
        name="c",
        type="endpoint",
        source="x",
        language="python",
        project_uuid=PROJECT,
        timeout=60,
        mongo_object_id=mongo_object_id,
    )
    async with app.state.parts[SESSIONMAKER]() as session, session.begin():
        session.add(code)
        await session.flush()
        run = CodeRun(
            code_id=code.id,
            code_mongo_id=mongo_object_id,
            status="completed",
            created_at=T0,
        )
        session.add(run)
    # A run invoked by its ObjectID logs under the ObjectID, as the original's wrapper did.
    logged_id = mongo_object_id or str(code.id)
    entries = [
        LogEntry(
            run_id=str(run.id),
            code_id=logged_id,
            type="info",
            content=f"line {i}",
            seq=i,
            created_at=T0 + timedelta(milliseconds=i),
        )
        for i in range(lines)
    ]
    await app.state.parts[LOG_STORE].write(entries)
    return Fixture(code=code, run=run, logs=entries)


@pytest.fixture
async def users(app: FastAPI) -> None:
    await enable_users(app)


# GET /codelog/{id}


async def test_get_log_returns_the_codelog_object(client: httpx.AsyncClient, app: FastAPI) -> None:
    seeded = await _seed(app)
    entry = seeded.logs[1]
    response = await client.get(f"/codelog/{entry.id}", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {
        "id": entry.id,
        "run_id": str(seeded.run.id),
        "code_id": str(seeded.code.id),
        "type": "info",
        "content": "line 1",
        "created_at": "2026-01-23T10:00:00.124456Z",
        "updated_at": "2026-01-23T10:00:00.124456Z",
    }
    assert GO_TIME.match(response.json()["created_at"])


@pytest.mark.parametrize(
    "log_id", [str(uuid.UUID(int=0)), "aaaaaaaaaaaaaaaaaaaaaaaa", "nope", "abc.json"]
)
async def test_unknown_or_malformed_log_is_404(client: httpx.AsyncClient, log_id: str) -> None:
    response = await client.get(f"/codelog/{log_id}", headers=ADMIN)
    assert response.status_code == 404
    assert response.json() == {"message": "log not found"}


async def test_get_log_without_credentials_is_401(client: httpx.AsyncClient, app: FastAPI) -> None:
    seeded = await _seed(app)
    assert (await client.get(f"/codelog/{seeded.logs[0].id}")).status_code == 401


@pytest.mark.usefixtures("users")
async def test_log_of_another_projects_code_is_404(client: httpx.AsyncClient, app: FastAPI) -> None:
    seeded = await _seed(app)
    response = await client.get(f"/codelog/{seeded.logs[0].id}", headers=as_user(OUTSIDER))
    assert response.status_code == 404
    assert response.json() == {"message": "log not found"}


@pytest.mark.usefixtures("users")
async def test_viewer_can_read_a_log(client: httpx.AsyncClient, app: FastAPI) -> None:
    seeded = await _seed(app)
    response = await client.get(f"/codelog/{seeded.logs[0].id}", headers=as_user(VIEWER))
    assert response.status_code == 200
    assert response.json()["content"] == "line 0"


# GET /codelog


async def test_run_logs_are_newest_first_with_paging_fields(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    seeded = await _seed(app, lines=3)
    response = await client.get("/codelog", params={"run_id": str(seeded.run.id)}, headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert [d["content"] for d in body["data"]] == ["line 2", "line 1", "line 0"]
    assert body["total"] == 3
    assert body["page"] == 1
    assert body["last_page"] == 1
    assert set(body["data"][0]) == {
        "id",
        "run_id",
        "code_id",
        "type",
        "content",
        "created_at",
        "updated_at",
    }


async def test_logs_come_20_per_page(client: httpx.AsyncClient, app: FastAPI) -> None:
    seeded = await _seed(app, lines=25)
    params = {"code_id": str(seeded.code.id)}
    first = (await client.get("/codelog", params=params, headers=ADMIN)).json()
    assert len(first["data"]) == 20
    assert first["data"][0]["content"] == "line 24"
    assert (first["total"], first["page"], first["last_page"]) == (25, 1, 2)
    second = (await client.get("/codelog", params={**params, "page": "2"}, headers=ADMIN)).json()
    assert [d["content"] for d in second["data"]] == [f"line {i}" for i in range(4, -1, -1)]
    assert second["page"] == 2
    beyond = (await client.get("/codelog", params={**params, "page": "3"}, headers=ADMIN)).json()
    assert beyond["data"] == []
    assert beyond["total"] == 25


async def test_a_run_without_logs_gives_an_empty_data_array(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    seeded = await _seed(app, lines=0)
    response = await client.get("/codelog", params={"run_id": str(seeded.run.id)}, headers=ADMIN)
    assert response.json() == {"data": [], "total": 0, "page": 1, "last_page": 0}


async def test_logs_of_a_run_invoked_by_object_id_are_found_by_run_and_by_uuid(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    seeded = await _seed(app, lines=2, mongo_object_id=OBJECT_ID)
    by_run = await client.get("/codelog", params={"run_id": str(seeded.run.id)}, headers=ADMIN)
    assert by_run.json()["total"] == 2
    assert by_run.json()["data"][0]["code_id"] == OBJECT_ID
    by_uuid = await client.get("/codelog", params={"code_id": str(seeded.code.id)}, headers=ADMIN)
    assert by_uuid.json()["total"] == 2
    by_oid = await client.get("/codelog", params={"code_id": OBJECT_ID}, headers=ADMIN)
    assert by_oid.json()["total"] == 2


async def test_logs_of_other_runs_are_not_listed_for_a_run(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    seeded = await _seed(app, lines=2)
    other = await _seed(app, lines=4)
    response = await client.get("/codelog", params={"run_id": str(seeded.run.id)}, headers=ADMIN)
    assert {d["run_id"] for d in response.json()["data"]} == {str(seeded.run.id)}
    assert str(other.run.id) != str(seeded.run.id)


async def test_list_needs_a_run_or_a_code(client: httpx.AsyncClient) -> None:
    response = await client.get("/codelog", headers=ADMIN)
    assert response.status_code == 400
    assert response.json() == {"message": "valid run_id or code_id is required"}


@pytest.mark.parametrize("run_id", [str(uuid.UUID(int=1)), "nope"])
async def test_unknown_run_is_400_coderun_not_found_as_the_original(
    client: httpx.AsyncClient, run_id: str
) -> None:
    response = await client.get("/codelog", params={"run_id": run_id}, headers=ADMIN)
    assert response.status_code == 400
    assert response.json() == {"message": "coderun not found"}


@pytest.mark.parametrize("page", ["0", "-1", "x", "1.5", "9" * 30])
async def test_invalid_page_is_400(client: httpx.AsyncClient, app: FastAPI, page: str) -> None:
    seeded = await _seed(app, lines=1)
    response = await client.get(
        "/codelog", params={"run_id": str(seeded.run.id), "page": page}, headers=ADMIN
    )
    assert response.status_code == 400
    assert response.json() == {"message": "invalid page parameter"}


async def test_list_without_credentials_is_401(client: httpx.AsyncClient, app: FastAPI) -> None:
    seeded = await _seed(app)
    response = await client.get("/codelog", params={"run_id": str(seeded.run.id)})
    assert response.status_code == 401


@pytest.mark.usefixtures("users")
async def test_logs_of_another_projects_code_are_404(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    seeded = await _seed(app)
    for params in ({"run_id": str(seeded.run.id)}, {"code_id": str(seeded.code.id)}):
        response = await client.get("/codelog", params=params, headers=as_user(OUTSIDER))
        assert response.status_code == 404, params
        assert "line" not in response.text


@pytest.mark.usefixtures("users")
async def test_a_member_cannot_read_another_runs_logs_by_naming_their_own_code(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    mine = await _seed(app)
    theirs = await _seed(app)
    async with app.state.parts[SESSIONMAKER]() as session, session.begin():
        code = await session.get(Code, theirs.code.id)
        assert code is not None
        code.project_uuid = "another-project"
    response = await client.get(
        "/codelog",
        params={"run_id": str(theirs.run.id), "code_id": str(mine.code.id)},
        headers=as_user(VIEWER),
    )
    assert response.status_code == 404


@pytest.mark.usefixtures("users")
async def test_viewer_can_list_logs(client: httpx.AsyncClient, app: FastAPI) -> None:
    seeded = await _seed(app, lines=2)
    response = await client.get(
        "/codelog", params={"code_id": str(seeded.code.id)}, headers=as_user(VIEWER)
    )
    assert response.status_code == 200
    assert response.json()["total"] == 2
