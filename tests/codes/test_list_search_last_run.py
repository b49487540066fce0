"""GET /code's `search` (names, any case) and `last_run=true` (each listed code's newest run)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, text

from codeactions.db.models import CodeRun, UserPermission
from codeactions.db.session import ENGINE, SESSIONMAKER
from tests.codes.conftest import create_code
from tests.codes.support import GO_TIME, OUTSIDER, PROJECT, VIEWER, as_user
from tests.conftest import ADMIN

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


async def _add_run(app: FastAPI, code_id: str, *, minutes: int, status: str) -> CodeRun:
    created = T0 + timedelta(minutes=minutes)
    run = CodeRun(
        id=uuid.uuid4(),
        code_id=uuid.UUID(code_id),
        status=status,
        result="",
        created_at=created,
        updated_at=created + timedelta(seconds=2),
    )
    async with app.state.parts[SESSIONMAKER]() as session, session.begin():
        session.add(run)
    return run


async def _list(
    client: httpx.AsyncClient, headers: dict[str, str] = ADMIN, **params: str
) -> httpx.Response:
    return await client.get("/code", params={"project_uuid": PROJECT, **params}, headers=headers)


# --- search -----------------------------------------------------------------------------


async def test_search_keeps_codes_whose_name_contains_it_in_any_case(
    client: httpx.AsyncClient,
) -> None:
    names = ["Send Email", "email-digest", "Resize image", "100%_off"]
    ids = {name: (await create_code(client, name=name)).json()["id"] for name in names}
    found = await _list(client, search="EMAIL")
    assert found.status_code == 200
    assert [c["name"] for c in found.json()] == ["email-digest", "Send Email"]
    assert found.headers["X-Total-Count"] == "2"
    # LIKE's wildcards are taken literally.
    assert [c["id"] for c in (await _list(client, search="%_")).json()] == [ids["100%_off"]]
    assert (await _list(client, search="e_")).json() == []
    # Paged the same way, the filter kept in the next page's link.
    paged = await _list(client, search="e", page_size="2")
    assert paged.headers["X-Total-Count"] == "3"
    assert "search=e" in paged.headers["Link"]
    # Empty: no filter.
    assert len((await _list(client, search="")).json()) == 4


async def test_search_too_long_is_400(client: httpx.AsyncClient) -> None:
    response = await _list(client, search="x" * 256)
    assert response.status_code == 400
    assert response.json() == {"message": "search is too long (max 255 characters)"}


async def test_search_with_nul_finds_the_name_stored_with_its_replacement(
    client: httpx.AsyncClient,
) -> None:
    await create_code(client, name="a\x00b")
    response = await _list(client, search="A\x00B")
    assert response.status_code == 200
    assert [c["name"] for c in response.json()] == ["a\ufffdb"]


# --- last_run ---------------------------------------------------------------------------


async def test_without_last_run_the_answer_is_unchanged(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    code = (await create_code(client)).json()
    await _add_run(app, code["id"], minutes=0, status="completed")
    for params in ({}, {"page": "1"}, {"last_run": "false", "page": "1"}, {"last_run": ""}):
        response = await _list(client, **params)
        assert response.json() == [code], params


async def test_last_run_is_each_codes_newest_run_or_null(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    ran = (await create_code(client, name="ran")).json()
    idle = (await create_code(client, name="idle")).json()
    await _add_run(app, ran["id"], minutes=0, status="completed")
    newest = await _add_run(app, ran["id"], minutes=30, status="failed")
    await _add_run(app, ran["id"], minutes=10, status="started")
    response = await _list(client, last_run="true", page="1")
    assert response.status_code == 200
    by_name = {c["name"]: c for c in response.json()}
    assert by_name["idle"] == {**idle, "last_run": None}
    last = by_name["ran"]["last_run"]
    assert last == {
        "id": str(newest.id),
        "status": "failed",
        "created_at": "2025-03-01T12:30:00Z",
        "updated_at": "2025-03-01T12:30:02Z",
    }
    assert GO_TIME.match(last["created_at"])
    assert {k: v for k, v in by_name["ran"].items() if k != "last_run"} == ran


async def test_last_run_needs_a_page(client: httpx.AsyncClient) -> None:
    response = await _list(client, last_run="true")
    assert response.status_code == 400
    assert response.json() == {"message": "last_run=true needs page or page_size"}


@pytest.mark.parametrize("value", ["1", "yes", "True"])
async def test_last_run_other_values_are_400(client: httpx.AsyncClient, value: str) -> None:
    response = await _list(client, last_run=value, page="1")
    assert response.status_code == 400
    assert response.json() == {"message": "invalid last_run parameter: true or false"}


async def test_last_run_reads_only_the_page_in_one_query_with_the_index(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The newest run is found per code by walking `idx_coderuns_code_id_created_at` from its
    end, never by reading every run of the code."""
    code = (await create_code(client)).json()
    for minutes in range(5):
        await _add_run(app, code["id"], minutes=minutes, status="completed")
    engine = app.state.parts[ENGINE]
    statements: list[tuple[str, Any]] = []

    def seen(conn: object, cursor: object, statement: str, parameters: Any, *args: object) -> None:
        if "coderuns" in statement:
            statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        response = await _list(client, last_run="true", page_size="10")
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
    assert response.json()[0]["last_run"]["created_at"] == "2025-03-01T12:04:00Z"
    assert len(statements) == 1
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SET enable_seqscan = off"))  # a 5-row table: force the plan
        statement, parameters = statements[0]
        plan = await conn.exec_driver_sql(explain + statement, parameters)
        text_plan = " ".join(str(row) for row in plan)
    assert "idx_coderuns_code_id_created_at" in text_plan, text_plan


# --- who may ----------------------------------------------------------------------------


async def test_search_and_last_run_without_credentials_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/code", params={"project_uuid": PROJECT, "search": "a", "last_run": "true", "page": "1"}
    )
    assert response.status_code == 401


@pytest.mark.usefixtures("users")
async def test_search_and_last_run_of_another_project_is_403(client: httpx.AsyncClient) -> None:
    await create_code(client)
    response = await _list(client, as_user(OUTSIDER), search="h", last_run="true", page="1")
    assert response.status_code == 403


@pytest.mark.usefixtures("users")
async def test_a_project_member_without_a_role_cannot_list(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with app.state.parts[SESSIONMAKER]() as session, session.begin():
        session.add(UserPermission(project_uuid=PROJECT, email="none@example.com", role=0))
    response = await _list(client, as_user("none@example.com"), last_run="true", page="1")
    assert response.status_code == 403


@pytest.mark.usefixtures("users")
async def test_viewer_searches_and_sees_last_runs(app: FastAPI, client: httpx.AsyncClient) -> None:
    code = (await create_code(client)).json()
    run = await _add_run(app, code["id"], minutes=0, status="completed")
    response = await _list(client, as_user(VIEWER), search="HELL", last_run="true", page="1")
    assert response.status_code == 200
    assert [c["last_run"]["id"] for c in response.json()] == [str(run.id)]
