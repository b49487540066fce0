"""POST /code and POST /admin/code."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from codeactions.ops.metrics import METRICS
from codeactions.runner.base import RUNNER
from tests.codes.conftest import SOURCE, create_code
from tests.codes.support import (
    CONTRIBUTOR,
    GO_TIME,
    OUTSIDER,
    PROJECT,
    VIEWER,
    FakeRunner,
    as_user,
)
from tests.conftest import ADMIN


async def test_create_answers_201_with_the_original_code_object(client: httpx.AsyncClient) -> None:
    response = await create_code(client)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "id",
        "name",
        "type",
        "source",
        "language",
        "project_uuid",
        "created_at",
        "updated_at",
        "timeout",
    }
    assert body["name"] == "hello"
    assert body["type"] == "endpoint"
    assert body["language"] == "python"
    assert body["source"] == SOURCE
    assert body["project_uuid"] == PROJECT
    assert body["timeout"] == 60
    assert GO_TIME.match(body["created_at"]), body["created_at"]
    assert GO_TIME.match(body["updated_at"]), body["updated_at"]


async def test_admin_alias_creates_the_same_way(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/admin/code",
        params={"project_uuid": PROJECT, "name": "n", "language": "go", "type": "flow"},
        content="package main",
        headers=ADMIN,
    )
    assert response.status_code == 201
    got = await client.get(f"/code/{response.json()['id']}", headers=ADMIN)
    assert got.json()["language"] == "go"
    assert got.json()["type"] == "flow"


async def test_source_is_taken_raw_whatever_the_content_type(client: httpx.AsyncClient) -> None:
    source = '{"not": "json for us"}\n<b>&</b>'
    response = await create_code(
        client, source, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status_code == 201
    assert response.json()["source"] == source


async def test_create_without_credentials_is_401(client: httpx.AsyncClient) -> None:
    response = await create_code(client, headers={})
    assert response.status_code == 401
    response = await create_code(client, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401


@pytest.mark.usefixtures("users")
async def test_member_of_another_project_cannot_create_code(client: httpx.AsyncClient) -> None:
    response = await create_code(client, headers=as_user(OUTSIDER))
    assert response.status_code == 403
    assert response.json() == {"message": "have'nt permission to access this resource"}


@pytest.mark.usefixtures("users")
async def test_viewer_cannot_create_code(client: httpx.AsyncClient) -> None:
    response = await create_code(client, headers=as_user(VIEWER))
    assert response.status_code == 403


@pytest.mark.usefixtures("users")
async def test_contributor_can_create_code(client: httpx.AsyncClient) -> None:
    response = await create_code(client, headers=as_user(CONTRIBUTOR))
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"type": "job"}, "code type of (job) is not valid"),
        ({"type": None}, "code type of () is not valid"),
        ({"type": "Flow"}, "code type of (Flow) is not valid"),
        ({"language": "ruby"}, "language type (ruby) is not valid"),
        ({"language": None}, "language type () is not valid"),
        # type is checked before language, as the original
        ({"type": "x", "language": "y"}, "code type of (x) is not valid"),
        ({"project_uuid": None}, "valid project_uuid is required"),
        ({"project_uuid": ""}, "valid project_uuid is required"),
        ({"project_uuid": "p" * 256}, "valid project_uuid is required"),
        ({"name": "n" * 256}, "name is too long (max 255 characters)"),
    ],
)
async def test_invalid_fields_are_400_with_the_original_messages(
    client: httpx.AsyncClient, params: dict[str, Any], message: str
) -> None:
    response = await create_code(client, **params)
    assert response.status_code == 400
    assert response.json() == {"message": message}


@pytest.mark.parametrize("name", [None, "", "  "])
async def test_empty_name_is_accepted_as_in_the_original(
    client: httpx.AsyncClient, name: str | None
) -> None:
    response = await create_code(client, name=name)
    assert response.status_code == 201
    assert response.json()["name"] == (name or "")


async def test_name_of_255_characters_is_accepted(client: httpx.AsyncClient) -> None:
    response = await create_code(client, name="é" * 255)
    assert response.status_code == 201
    assert response.json()["name"] == "é" * 255


@pytest.mark.parametrize(("given", "stored"), [(None, 60), ("0", 60), ("5", 5), ("300", 300)])
async def test_timeout_accepted_values(
    client: httpx.AsyncClient, given: str | None, stored: int
) -> None:
    response = await create_code(client, timeout=given)
    assert response.status_code == 201
    assert response.json()["timeout"] == stored
    got = await client.get(f"/code/{response.json()['id']}", headers=ADMIN)
    assert got.json()["timeout"] == stored


@pytest.mark.parametrize("given", ["4", "301", "-5", "abc", "10.5", "1_0", " 60", "9" * 40])
async def test_timeout_outside_5_to_300_is_400(client: httpx.AsyncClient, given: str) -> None:
    response = await create_code(client, timeout=given)
    assert response.status_code == 400
    assert response.json() == {"message": "timeout must be between 5 and 300 seconds"}


async def test_create_records_the_metric(client: httpx.AsyncClient, app: FastAPI) -> None:
    calls: list[dict[str, str]] = []
    app.state.parts[METRICS].code_created = lambda **kw: calls.append(kw)
    response = await create_code(client)
    assert calls == [{"project_uuid": PROJECT, "code_id": response.json()["id"]}]


@pytest.mark.parametrize("app_parts", [{"runner": FakeRunner}], indirect=True)
async def test_go_compile_errors_are_400_with_the_compiler_message(
    client: httpx.AsyncClient,
) -> None:
    response = await create_code(client, "func main() {}", language="go")
    assert response.status_code == 400
    assert response.json() == {"message": "./main.go:1:1: expected 'package', found 'EOF'"}
    assert (await create_code(client, "package main", language="go")).status_code == 201


@pytest.mark.parametrize("app_parts", [{"runner": FakeRunner}], indirect=True)
async def test_only_go_sources_go_through_the_compiler(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runner = app.state.parts[RUNNER]
    assert (await create_code(client, "print(1)", language="python")).status_code == 201
    assert (await create_code(client, "x()", language="javascript")).status_code == 201
    assert runner.checked == []


async def test_openapi_documents_the_raw_source_body(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path, method in (
        ("/code", "post"),
        ("/admin/code", "post"),
        ("/code/{id}", "patch"),
        ("/admin/code/{id}", "patch"),
    ):
        body = spec["paths"][path][method]["requestBody"]
        assert "text/plain" in body["content"], (path, method)
