"""NUL, other control characters and lone surrogates in every input, on SQLite and PostgreSQL.

Identifiers (project uuids, emails) holding them are refused with a 400 that says why: `p\\x00`
and `p\\ufffd` must not name one project. Free text (names, run params, bodies and headers) is
stored with U+FFFD in their place and read back so. Code sources are refused: replacing a
character would change the program. Ids that only name existing rows (code and run ids) answer
404. Never a 500 or a 503, and the same answer on both databases.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from codeactions.access import repository as access_repository
from codeactions.auth.principals import Principal
from codeactions.config import Settings
from codeactions.db.models import Project, UserPermission
from codeactions.db.session import SESSIONMAKER
from codeactions.errors import BadRequest
from codeactions.main import create_app
from codeactions.projects import consumers, repository, service
from tests.conftest import ADMIN
from tests.runs.conftest import USERS, Api, FakeRunner, FakeVerifier, bearer

PROJECT = "11111111-1111-1111-1111-111111111111"
MODERATOR = "moderator@example.com"
SOURCE = "def Run(engine):\n    engine.result.set('ok')\n"
# Escapes as a caller writes them in JSON; json.loads turns them into NUL and a lone surrogate.
NUL_JSON, LONE_JSON = r"\u0000", r"\ud800"
# Identifier spellings that are refused, as JSON escapes and as the text a caller means.
BAD_IDENTIFIERS = {"nul": "\x00", "unit-separator": "\x1f", "del": "\x7f", "c1": "\x85"}


@pytest.fixture
async def api(make_settings: Callable[..., Settings]) -> AsyncIterator[Api]:
    runner = FakeRunner()
    verifier = FakeVerifier(
        {
            **USERS,
            "moderator-token": Principal(kind="user", email=MODERATOR),
            "nul-email-token": Principal(kind="user", email="moderator\x00@example.com"),
        }
    )
    app = create_app(make_settings(), runner=runner, oidc=verifier)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            api = Api(app, client, runner)
            response = await client.post(
                "/projects", json={"uuid": PROJECT, "name": "P"}, headers=ADMIN
            )
            assert response.status_code == 201, response.text
            response = await client.put(
                f"/projects/{PROJECT}/permissions/{MODERATOR}", json={"role": 3}, headers=ADMIN
            )
            assert response.status_code == 200, response.text
            yield api


def message(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"message"}, body
    text: str = body["message"]
    assert text
    return text


def assert_refused(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 400, response.text
    text = message(response)
    for word in words:
        assert word in text, text


async def add_code(api: Api, **params: str) -> dict[str, Any]:
    query = {"project_uuid": PROJECT, "name": "n", "language": "python", "type": "endpoint"}
    response = await api.client.post(
        "/code", params={**query, **params}, content=SOURCE, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    code: dict[str, Any] = response.json()
    return code


async def read_run(api: Api, run_id: str) -> dict[str, Any]:
    await api.settle()
    response = await api.client.get(f"/coderun/{run_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    return run


# --- projects and members -----------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_IDENTIFIERS.values(), ids=BAD_IDENTIFIERS.keys())
async def test_a_project_uuid_with_a_control_character_is_400(api: Api, bad: str) -> None:
    response = await api.client.post(
        "/projects", json={"uuid": f"p{bad}q", "name": "n"}, headers=ADMIN
    )
    assert_refused(response, "uuid", "control characters")


async def test_a_project_uuid_or_name_with_a_lone_surrogate_is_400(api: Api) -> None:
    for body in (
        f'{{"uuid": "p{LONE_JSON}", "name": "n"}}',
        f'{{"uuid": "p", "name": "n{LONE_JSON}"}}',
    ):
        response = await api.client.post(
            "/projects", content=body, headers={**ADMIN, "content-type": "application/json"}
        )
        assert_refused(response)


async def test_a_project_name_with_nul_is_stored_replaced(api: Api) -> None:
    response = await api.client.post(
        "/projects",
        content=f'{{"uuid": "p", "name": "a{NUL_JSON}b"}}',
        headers={**ADMIN, "content-type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "a\ufffdb"
    read = await api.client.get("/projects/p", headers=ADMIN)
    assert read.json()["name"] == "a\ufffdb"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/projects/{p}"),
        ("GET", "/projects/{p}/permissions"),
        ("PUT", "/projects/{p}/permissions/member@example.com"),
        ("DELETE", "/projects/{p}/permissions/member@example.com"),
    ],
)
@pytest.mark.parametrize("who", ["admin", "moderator"])
async def test_project_routes_refuse_a_project_uuid_with_nul(
    api: Api, method: str, path: str, who: str
) -> None:
    headers = ADMIN if who == "admin" else bearer("moderator-token")
    response = await api.client.request(
        method, path.format(p=f"{PROJECT}%00"), json={"role": 1}, headers=headers
    )
    assert_refused(response, "project uuid", "control characters")


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
@pytest.mark.parametrize("who", ["admin", "moderator"])
async def test_permission_routes_refuse_an_email_with_nul(api: Api, method: str, who: str) -> None:
    headers = ADMIN if who == "admin" else bearer("moderator-token")
    response = await api.client.request(
        method,
        f"/projects/{PROJECT}/permissions/member%00@example.com",
        json={"role": 1},
        headers=headers,
    )
    assert_refused(response, "email", "control characters")
    members = await api.client.get(f"/projects/{PROJECT}/permissions", headers=ADMIN)
    assert [m["email"] for m in members.json()] == [MODERATOR]


async def test_a_caller_whose_email_has_a_nul_is_no_member(api: Api) -> None:
    """Not the member whose email differs by the NUL, and not a database error either."""
    headers = bearer("nul-email-token")
    assert (await api.client.get(f"/projects/{PROJECT}", headers=headers)).status_code == 404
    listed = await api.client.get("/code", params={"project_uuid": PROJECT}, headers=headers)
    assert listed.status_code == 403, listed.text


# --- codes --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_IDENTIFIERS.values(), ids=BAD_IDENTIFIERS.keys())
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_code_project_uuid_with_a_control_character_is_400(
    api: Api, bad: str, method: str
) -> None:
    response = await api.client.request(
        method,
        "/code",
        params={"project_uuid": f"{PROJECT}{bad}", "language": "python", "type": "endpoint"},
        content=SOURCE if method == "POST" else None,
        headers=ADMIN,
    )
    assert_refused(response, "project_uuid", "control characters")


async def test_a_code_name_with_nul_is_stored_replaced_on_create_and_update(api: Api) -> None:
    created = await add_code(api, name="a\x00b")
    assert created["name"] == "a\ufffdb"
    read = await api.client.get(f"/code/{created['id']}", headers=ADMIN)
    assert read.json()["name"] == "a\ufffdb"

    updated = await api.client.patch(
        f"/code/{created['id']}", params={"name": "c\x00d"}, headers=ADMIN
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["name"] == "c\ufffdd"
    listed = await api.client.get("/code", params={"project_uuid": PROJECT}, headers=ADMIN)
    assert [c["name"] for c in listed.json()] == ["c\ufffdd"]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_code_source_with_nul_is_400(api: Api, method: str) -> None:
    if method == "POST":
        path, params = "/code", {"project_uuid": PROJECT, "language": "python", "type": "flow"}
    else:
        path, params = f"/code/{(await add_code(api))['id']}", {}
    response = await api.client.request(
        method, path, params=params, content=b"print(1)\x00", headers=ADMIN
    )
    assert_refused(response, "source code", "NUL")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("language", ("language",)),
        ("type", ("type",)),
        ("timeout", ("timeout",)),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_code_fields_with_nul_are_400(
    api: Api, name: str, words: tuple[str, ...], method: str
) -> None:
    query = {"project_uuid": PROJECT, "language": "python", "type": "endpoint"}
    path = "/code" if method == "POST" else f"/code/{(await add_code(api))['id']}"
    response = await api.client.request(
        method, path, params={**query, name: "5\x00"}, content=SOURCE, headers=ADMIN
    )
    assert_refused(response, *words)


@pytest.mark.parametrize("name", ["page", "page_size"])
async def test_code_pages_with_nul_are_400(api: Api, name: str) -> None:
    response = await api.client.get(
        "/code", params={"project_uuid": PROJECT, name: "1\x00"}, headers=ADMIN
    )
    assert_refused(response, name)


async def test_a_code_type_filter_with_nul_is_the_originals_404(api: Api) -> None:
    response = await api.client.get(
        "/code", params={"project_uuid": PROJECT, "code_type": "flow\x00"}, headers=ADMIN
    )
    assert response.status_code == 404
    assert "code type" in message(response)


# --- runs, public endpoints and logs ------------------------------------------------------


async def test_a_run_request_with_nul_and_lone_surrogates_runs_and_is_stored_replaced(
    api: Api,
) -> None:
    code = await add_code(api)
    hostile = f"a{NUL_JSON}b{LONE_JSON}"
    body = (
        f'{{"body": "{hostile}", "params": {{"k{hostile}": "{hostile}"}}, '
        f'"headers": {{"X-H{hostile}": ["{hostile}"]}}, "method": "P{NUL_JSON}"}}'
    )
    response = await api.client.post(f"/run/{code['id']}", content=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    sent = api.runner.calls[0]
    assert (sent.body, sent.method) == ("a\x00b\ud800", "P\x00")  # the code gets what was sent
    stored = "a\ufffdb\ufffd"
    run = await read_run(api, response.json()["result"]["id"])
    assert run["body"] == stored
    assert run["params"] == {f"k{stored}": stored}
    assert run["headers"] == {f"X-H{stored}": [stored]}
    assert run == response.json()["result"]


@pytest.mark.parametrize("prefix", ["/action/endpoint", "/endpoint"])
@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
async def test_a_public_endpoint_called_with_nul_runs_and_records_the_run(
    api: Api, prefix: str, method: str
) -> None:
    code = await add_code(api)
    response = await api.client.request(
        method,
        f"{prefix}/{code['id']}?k%00=v%00&bad=%ED%A0%80",
        content=b"body\x00\xed\xa0\x80" if method != "GET" else None,
        headers={"X-Nul": "a\x00b"},
    )
    assert response.status_code == 200, response.text
    sent = api.runner.calls[0]
    assert sent.params["k\x00"] == "v\x00"
    run = await read_run(api, sent.run_id)
    assert run["status"] == "completed"
    assert run["params"] == {"k\ufffd": "v\ufffd", "bad": "\ufffd" * 3}
    assert run["headers"]["X-Nul"] == ["a\ufffdb"]
    if method != "GET":
        assert run["body"] == "body\ufffd" + "\ufffd" * 3


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/run/x%00", 404),
        ("GET", "/endpoint/x%00", 404),
        ("POST", "/action/endpoint/x%00", 404),
        ("GET", "/code/x%00", 404),
        ("PATCH", "/code/x%00", 404),
        ("DELETE", "/code/x%00", 404),
        ("GET", "/coderun/x%00", 404),
        ("GET", "/codelog/x%00", 404),
        ("GET", "/coderun?code_id=x%00", 200),  # an admin asking for an unknown code's runs
        ("GET", "/codelog?code_id=x%00", 200),
        ("GET", "/codelog?run_id=x%00", 400),  # the original's `coderun not found`
    ],
)
async def test_ids_with_nul_name_nothing(api: Api, method: str, path: str, status: int) -> None:
    response = await api.client.request(method, path, headers=ADMIN)
    assert response.status_code == status, response.text
    if status == 200:
        body = response.json()
        assert body == [] or body["data"] == []
    else:
        message(response)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/coderun", "after"),
        ("/coderun", "before"),
        ("/coderun", "page"),
        ("/coderun", "page_size"),
        ("/codelog", "page"),
    ],
)
async def test_run_and_log_query_values_with_nul_are_400(api: Api, path: str, name: str) -> None:
    code = await add_code(api)
    response = await api.client.get(
        path, params={"code_id": code["id"], name: "2024-12-10\x00"}, headers=ADMIN
    )
    assert_refused(response, name)


# --- the service layer the RabbitMQ consumers use -----------------------------------------


@pytest.mark.parametrize("bad", [*BAD_IDENTIFIERS.values(), "\ud800"])
async def test_services_refuse_identifiers_with_control_characters(api: Api, bad: str) -> None:
    async with api.app.state.parts[SESSIONMAKER]() as session:
        calls = [
            service.create_project(session, uuid=f"p{bad}q", name="n"),
            service.add_permission(session, project_uuid=f"p{bad}q", email="a@x.org", role=1),
            service.add_permission(session, project_uuid="p", email=f"a{bad}b@x.org", role=1),
            service.grant_role(session, project_uuid=f"p{bad}q", email="a@x.org", role=1),
            service.grant_role(session, project_uuid="p", email=f"a{bad}b@x.org", role=1),
            service.revoke_role(session, project_uuid="p", email=f"a{bad}b@x.org"),
            service.get_project(session, uuid=f"p{bad}q"),
            service.list_permissions(session, project_uuid=f"p{bad}q"),
        ]
        for call in calls:
            with pytest.raises(BadRequest, match="control characters"):
                await call


async def test_services_store_names_with_nul_and_lone_surrogates_replaced(api: Api) -> None:
    async with api.app.state.parts[SESSIONMAKER]() as session:
        project = await service.create_project(session, uuid="p", name="a\x00b\ud800")
        assert project.name == "a\ufffdb\ufffd"
        await session.commit()
    async with api.app.state.parts[SESSIONMAKER]() as session:
        assert await session.scalar(select(Project.name).where(Project.uuid == "p")) == (
            "a\ufffdb\ufffd"
        )


async def test_consumer_events_with_nul_are_refused_or_stored(api: Api) -> None:
    async with api.app.state.parts[SESSIONMAKER]() as session:
        with pytest.raises(BadRequest, match="control characters"):
            await consumers.apply_project_created(
                session, json.dumps({"uuid": "p\x00", "name": "n"}).encode()
            )
        await session.rollback()
        # A bad authorization is set aside on its own; the project would be applied.
        body = {"uuid": "p", "name": "n", "authorizations": [{"user_email": "a\x00", "role": 1}]}
        set_aside = await consumers.apply_project_created(session, json.dumps(body).encode())
        assert len(set_aside) == 1 and "control characters" in set_aside[0].reason
        await session.rollback()
        event = {"action": "create", "project": "p", "user": "a\x00@x.org", "role": 1}
        with pytest.raises(BadRequest, match="control characters"):
            await consumers.apply_permission_changed(session, json.dumps(event).encode())
        await session.rollback()

        await consumers.apply_project_created(
            session, json.dumps({"uuid": "p", "name": "n\x00"}).encode()
        )
        await session.commit()
    async with api.app.state.parts[SESSIONMAKER]() as session:
        assert await session.scalar(select(Project.name).where(Project.uuid == "p")) == "n\ufffd"
        permissions = select(UserPermission).where(UserPermission.project_uuid == "p")
        assert (await session.scalars(permissions)).all() == []


async def test_repository_lookups_with_unstorable_text_find_nothing(api: Api) -> None:
    """What no row can hold matches no row, on both databases, without reaching the query."""
    async with api.app.state.parts[SESSIONMAKER]() as session:
        await repository.insert_project_if_missing(session, uuid="p\ufffd", name="n")
        await repository.upsert_permission(
            session, project_uuid="p\ufffd", email="a\ufffd@x.org", role=1
        )
        for unstorable in ("\x00", "\ud800"):
            assert await repository.get_project(session, uuid=f"p{unstorable}") is None
            assert (
                await access_repository.get_permission(
                    session, project_uuid=f"p{unstorable}", email="a\ufffd@x.org"
                )
                is None
            )
            assert (
                await access_repository.get_permission(
                    session, project_uuid="p\ufffd", email=f"a{unstorable}@x.org"
                )
                is None
            )
            assert await repository.list_permissions(session, project_uuid=f"p{unstorable}") == []
            assert not await repository.delete_permission(
                session, project_uuid="p\ufffd", email=f"a{unstorable}@x.org"
            )
        assert await repository.get_project(session, uuid="p\ufffd") is not None
