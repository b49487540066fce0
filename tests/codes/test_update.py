"""PATCH /code/{id} and PATCH /admin/code/{id}."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from codeactions.ops.metrics import METRICS
from tests.codes.conftest import SOURCE, create_code
from tests.codes.support import CONTRIBUTOR, OUTSIDER, PROJECT, VIEWER, FakeRunner, as_user
from tests.conftest import ADMIN


async def _code_id(client: httpx.AsyncClient) -> str:
    response = await create_code(client, type="flow", timeout="30")
    assert response.status_code == 201
    return str(response.json()["id"])


async def test_patch_applies_name_type_language_timeout_and_source(
    client: httpx.AsyncClient,
) -> None:
    code_id = await _code_id(client)
    response = await client.patch(
        f"/code/{code_id}",
        params={"name": "renamed", "type": "endpoint", "language": "javascript", "timeout": "120"},
        content="module.exports = 1",
        headers=ADMIN,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "renamed"
    assert body["type"] == "endpoint"
    assert body["language"] == "javascript"
    assert body["timeout"] == 120
    assert body["source"] == "module.exports = 1"
    stored = (await client.get(f"/code/{code_id}", headers=ADMIN)).json()
    assert {k: stored[k] for k in ("name", "type", "language", "timeout", "source")} == {
        "name": "renamed",
        "type": "endpoint",
        "language": "javascript",
        "timeout": 120,
        "source": "module.exports = 1",
    }
    assert stored["updated_at"] >= stored["created_at"]


async def test_patch_without_parameters_or_body_keeps_everything(
    client: httpx.AsyncClient,
) -> None:
    code_id = await _code_id(client)
    before = (await client.get(f"/code/{code_id}", headers=ADMIN)).json()
    response = await client.patch(f"/admin/code/{code_id}", headers=ADMIN)
    assert response.status_code == 200
    after = response.json()
    for key in ("name", "type", "language", "timeout", "source", "project_uuid", "created_at"):
        assert after[key] == before[key]
    assert after["source"] == SOURCE
    assert after["timeout"] == 30


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"type": "job"}, "code type of (job) is not valid"),
        ({"language": "ruby"}, "language type (ruby) is not valid"),
        ({"timeout": "301"}, "timeout must be between 5 and 300 seconds"),
        ({"timeout": "4"}, "timeout must be between 5 and 300 seconds"),
        ({"timeout": "soon"}, "timeout must be between 5 and 300 seconds"),
        ({"name": "n" * 256}, "name is too long (max 255 characters)"),
    ],
)
async def test_patch_with_invalid_values_is_400_and_changes_nothing(
    client: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    code_id = await _code_id(client)
    response = await client.patch(
        f"/code/{code_id}", params=params, content="changed", headers=ADMIN
    )
    assert response.status_code == 400
    assert response.json() == {"message": message}
    stored = (await client.get(f"/code/{code_id}", headers=ADMIN)).json()
    assert stored["source"] == SOURCE
    assert stored["type"] == "flow"


@pytest.mark.parametrize(
    "code_id",
    [
        "00000000-0000-4000-8000-000000000000",
        "aaaaaaaaaaaaaaaaaaaaaaaa",
        "not-a-uuid",
        "00000000-0000-4000-8000-00000000000",
    ],
)
async def test_patch_of_unknown_code_is_404(client: httpx.AsyncClient, code_id: str) -> None:
    response = await client.patch(f"/code/{code_id}", content="x", headers=ADMIN)
    assert response.status_code == 404
    assert response.json() == {"message": "code not found"}


async def test_patch_without_credentials_is_401(client: httpx.AsyncClient) -> None:
    code_id = await _code_id(client)
    assert (await client.patch(f"/code/{code_id}", content="x")).status_code == 401


@pytest.mark.usefixtures("users")
async def test_patch_of_another_projects_code_is_404(client: httpx.AsyncClient) -> None:
    code_id = await _code_id(client)
    response = await client.patch(f"/code/{code_id}", content="x", headers=as_user(OUTSIDER))
    assert response.status_code == 404
    assert response.json() == {"message": "code not found"}


@pytest.mark.usefixtures("users")
async def test_viewer_cannot_patch_code(client: httpx.AsyncClient) -> None:
    code_id = await _code_id(client)
    response = await client.patch(f"/code/{code_id}", content="x", headers=as_user(VIEWER))
    assert response.status_code == 403


@pytest.mark.usefixtures("users")
async def test_contributor_can_patch_code(client: httpx.AsyncClient) -> None:
    code_id = await _code_id(client)
    response = await client.patch(
        f"/code/{code_id}", content="print(2)", headers=as_user(CONTRIBUTOR)
    )
    assert response.status_code == 200
    assert response.json()["source"] == "print(2)"


async def test_patch_records_the_update_metric(client: httpx.AsyncClient, app: FastAPI) -> None:
    code_id = await _code_id(client)
    calls: list[dict[str, str]] = []
    app.state.parts[METRICS].code_updated = lambda **kw: calls.append(kw)
    await client.patch(f"/code/{code_id}", content="x", headers=ADMIN)
    assert calls == [{"project_uuid": PROJECT, "code_id": code_id}]


@pytest.mark.parametrize("app_parts", [{"runner": FakeRunner}], indirect=True)
async def test_switching_a_code_to_go_compiles_its_stored_source(
    client: httpx.AsyncClient,
) -> None:
    code_id = await _code_id(client)
    response = await client.patch(f"/code/{code_id}", params={"language": "go"}, headers=ADMIN)
    assert response.status_code == 400
    response = await client.patch(
        f"/code/{code_id}", params={"language": "go"}, content="package main", headers=ADMIN
    )
    assert response.status_code == 200
    assert response.json()["language"] == "go"
