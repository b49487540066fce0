"""GET /code/{id}, GET /code (list) and DELETE /code/{id}."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from codeactions.db.models import Code, CodeRun
from codeactions.db.session import SESSIONMAKER
from tests.codes.conftest import create_code
from tests.codes.support import (
    CONTRIBUTOR,
    GO_TIME,
    MODERATOR,
    OTHER_PROJECT,
    OUTSIDER,
    PROJECT,
    VIEWER,
    as_user,
)
from tests.conftest import ADMIN

OBJECT_ID = "5f8d0d55b54764421b7156c9"


async def _adopted_code(app: FastAPI) -> Code:
    """A code as the import from the original's MongoDB leaves it: with its legacy ObjectID."""
    code = Code(
        mongo_object_id=OBJECT_ID,
        name="legacy",
        type="flow",
        source="print(1)",
        language="python",
        project_uuid=PROJECT,
        timeout=60,
        created_at=datetime(2024, 5, 1, 12, 0, 0, 120000, tzinfo=UTC),
        updated_at=datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC),
    )
    async with app.state.parts[SESSIONMAKER]() as session, session.begin():
        session.add(code)
    return code


# GET /code/{id}


async def test_get_returns_the_code_with_its_timeout(client: httpx.AsyncClient) -> None:
    created = (await create_code(client, timeout="45")).json()
    response = await client.get(f"/code/{created['id']}", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == created
    assert response.json()["timeout"] == 45


@pytest.mark.parametrize(
    "code_id",
    [
        "00000000-0000-4000-8000-000000000000",
        "ffffffffffffffffffffffff",
        "zzzzzzzzzzzzzzzzzzzzzzzz",
        "1234",
        "00000000000040008000000000000000",  # a UUID without dashes is not the original's UUID
    ],
)
async def test_get_unknown_or_malformed_id_is_404(client: httpx.AsyncClient, code_id: str) -> None:
    response = await client.get(f"/code/{code_id}", headers=ADMIN)
    assert response.status_code == 404
    assert response.json() == {"message": "code not found"}


async def test_adopted_code_is_found_by_its_object_id(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    code = await _adopted_code(app)
    response = await client.get(f"/code/{OBJECT_ID}", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(code.id)
    assert body["mongo_object_id"] == OBJECT_ID
    assert body["created_at"] == "2024-05-01T12:00:00.12Z"
    assert body["updated_at"] == "2024-05-01T12:00:00Z"
    assert GO_TIME.match(body["created_at"])

    patched = await client.patch(f"/code/{OBJECT_ID}", params={"name": "renamed"}, headers=ADMIN)
    assert patched.status_code == 200
    assert patched.json()["name"] == "renamed"
    assert patched.json()["mongo_object_id"] == OBJECT_ID

    assert (await client.delete(f"/code/{OBJECT_ID}", headers=ADMIN)).status_code == 200
    assert (await client.get(f"/code/{code.id}", headers=ADMIN)).status_code == 404


async def test_get_without_credentials_is_401(client: httpx.AsyncClient) -> None:
    code_id = (await create_code(client)).json()["id"]
    response = await client.get(f"/code/{code_id}")
    assert response.status_code == 401


@pytest.mark.usefixtures("users")
async def test_get_of_another_projects_code_is_404(client: httpx.AsyncClient) -> None:
    code_id = (await create_code(client)).json()["id"]
    response = await client.get(f"/code/{code_id}", headers=as_user(OUTSIDER))
    assert response.status_code == 404
    assert response.json() == {"message": "code not found"}


@pytest.mark.usefixtures("users")
async def test_viewer_can_get_code(client: httpx.AsyncClient) -> None:
    code_id = (await create_code(client)).json()["id"]
    response = await client.get(f"/code/{code_id}", headers=as_user(VIEWER))
    assert response.status_code == 200


# GET /code


async def test_list_of_a_project_without_codes_is_an_empty_array(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/code", params={"project_uuid": PROJECT}, headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == []
    assert response.headers["X-Total-Count"] == "0"
    assert "Link" not in response.headers


async def test_list_is_newest_first_and_filters_by_type(client: httpx.AsyncClient) -> None:
    first = (await create_code(client, name="a", type="flow")).json()
    second = (await create_code(client, name="b", type="endpoint")).json()
    third = (await create_code(client, name="c", type="flow")).json()
    await create_code(client, name="elsewhere", project_uuid=OTHER_PROJECT)

    response = await client.get("/code", params={"project_uuid": PROJECT}, headers=ADMIN)
    assert [c["id"] for c in response.json()] == [third["id"], second["id"], first["id"]]
    assert response.json()[0] == third  # full objects, with source and timeout

    flows = await client.get(
        "/code", params={"project_uuid": PROJECT, "code_type": "flow"}, headers=ADMIN
    )
    assert [c["id"] for c in flows.json()] == [third["id"], first["id"]]


async def test_list_requires_project_uuid(client: httpx.AsyncClient) -> None:
    response = await client.get("/code", headers=ADMIN)
    assert response.status_code == 400
    assert response.json() == {"message": "valid project_uuid is required"}


async def test_list_with_invalid_code_type_is_404_as_the_original(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/code", params={"project_uuid": PROJECT, "code_type": "job"}, headers=ADMIN
    )
    assert response.status_code == 404
    assert response.json() == {"message": "code type of (job) is not valid"}


async def test_list_pages_with_total_and_next_link(client: httpx.AsyncClient) -> None:
    ids = [(await create_code(client, name=f"c{i}")).json()["id"] for i in range(5)]
    ids.reverse()
    page1 = await client.get(
        "/code", params={"project_uuid": PROJECT, "page_size": "2"}, headers=ADMIN
    )
    assert [c["id"] for c in page1.json()] == ids[:2]
    assert page1.headers["X-Total-Count"] == "5"
    link = page1.headers["Link"]
    assert link.endswith('>; rel="next"')
    next_url = httpx.URL(link[1 : link.index(">")])
    assert next_url.params["page"] == "2"
    assert next_url.params["project_uuid"] == PROJECT
    page2 = await client.get(next_url.copy_with(scheme="http"), headers=ADMIN)
    assert [c["id"] for c in page2.json()] == ids[2:4]
    page3 = await client.get(
        "/code", params={"project_uuid": PROJECT, "page_size": "2", "page": "3"}, headers=ADMIN
    )
    assert [c["id"] for c in page3.json()] == ids[4:]
    assert "Link" not in page3.headers
    beyond = await client.get("/code", params={"project_uuid": PROJECT, "page": "9"}, headers=ADMIN)
    assert beyond.json() == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"page": "0"}, "invalid page parameter"),
        ({"page": "-1"}, "invalid page parameter"),
        ({"page": "two"}, "invalid page parameter"),
        ({"page": "1_0"}, "invalid page parameter"),
        ({"page": "9" * 30}, "invalid page parameter"),
        ({"page_size": "0"}, "invalid page_size parameter"),
        ({"page_size": "1001"}, "invalid page_size parameter"),
    ],
)
async def test_list_with_invalid_paging_is_400(
    client: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    response = await client.get("/code", params={"project_uuid": PROJECT, **params}, headers=ADMIN)
    assert response.status_code == 400
    assert response.json() == {"message": message}


async def test_list_without_credentials_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/code", params={"project_uuid": PROJECT})
    assert response.status_code == 401


@pytest.mark.usefixtures("users")
async def test_list_of_another_project_is_403(client: httpx.AsyncClient) -> None:
    await create_code(client)
    response = await client.get(
        "/code", params={"project_uuid": PROJECT}, headers=as_user(OUTSIDER)
    )
    assert response.status_code == 403


@pytest.mark.usefixtures("users")
async def test_viewer_can_list_codes(client: httpx.AsyncClient) -> None:
    created = (await create_code(client)).json()
    response = await client.get("/code", params={"project_uuid": PROJECT}, headers=as_user(VIEWER))
    assert response.status_code == 200
    assert response.json() == [created]


# DELETE /code/{id}


async def test_delete_answers_200_with_an_empty_body_and_keeps_runs(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    code_id = (await create_code(client)).json()["id"]
    async with app.state.parts[SESSIONMAKER]() as session, session.begin():
        session.add(CodeRun(code_id=uuid.UUID(code_id), status="completed"))
    response = await client.delete(f"/code/{code_id}", headers=ADMIN)
    assert response.status_code == 200
    assert response.content == b""
    assert (await client.get(f"/code/{code_id}", headers=ADMIN)).status_code == 404
    async with app.state.parts[SESSIONMAKER]() as session:
        runs = (await session.scalars(select(CodeRun))).all()
    assert [r.code_id for r in runs] == [uuid.UUID(code_id)]


@pytest.mark.parametrize("code_id", ["00000000-0000-4000-8000-000000000000", "nope"])
async def test_delete_of_unknown_code_is_404(client: httpx.AsyncClient, code_id: str) -> None:
    response = await client.delete(f"/code/{code_id}", headers=ADMIN)
    assert response.status_code == 404
    assert response.json() == {"message": "code not found"}


async def test_delete_without_credentials_is_401(client: httpx.AsyncClient) -> None:
    code_id = (await create_code(client)).json()["id"]
    assert (await client.delete(f"/code/{code_id}")).status_code == 401


@pytest.mark.usefixtures("users")
async def test_delete_of_another_projects_code_is_404(client: httpx.AsyncClient) -> None:
    code_id = (await create_code(client)).json()["id"]
    response = await client.delete(f"/code/{code_id}", headers=as_user(OUTSIDER))
    assert response.status_code == 404


@pytest.mark.usefixtures("users")
async def test_contributor_cannot_delete_code(client: httpx.AsyncClient) -> None:
    code_id = (await create_code(client)).json()["id"]
    response = await client.delete(f"/code/{code_id}", headers=as_user(CONTRIBUTOR))
    assert response.status_code == 403
    assert (await client.get(f"/code/{code_id}", headers=ADMIN)).status_code == 200


@pytest.mark.usefixtures("users")
async def test_moderator_can_delete_code(client: httpx.AsyncClient) -> None:
    code_id = (await create_code(client)).json()["id"]
    response = await client.delete(f"/code/{code_id}", headers=as_user(MODERATOR))
    assert response.status_code == 200


def test_go_time_keeps_fraction_digits_as_go_does() -> None:
    from codeactions.codes.schemas import go_time

    moment = datetime(2026, 1, 23, 10, 0, 0, 123456, tzinfo=UTC)
    assert go_time(moment) == "2026-01-23T10:00:00.123456Z"
    assert go_time(moment.astimezone(UTC) + timedelta(microseconds=-123456)) == (
        "2026-01-23T10:00:00Z"
    )
    assert go_time(datetime(2026, 1, 23, 10, 0, 0, 100000)) == "2026-01-23T10:00:00.1Z"
