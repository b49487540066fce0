"""The /secret routes as a client sees them: the original's bodies, fields and error texts, and
values that never come back."""

from __future__ import annotations

import httpx
import pytest

from tests.codes.support import GO_TIME, OTHER_PROJECT, PROJECT
from tests.conftest import ADMIN
from tests.secrets.conftest import create_secret

MASKED = "********"


async def test_create_answers_201_with_the_secret_and_its_value_masked(
    client: httpx.AsyncClient,
) -> None:
    response = await create_secret(client, name="API_KEY", value="s3cr3t-value")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "name", "value", "project_uuid", "created_at", "updated_at"}
    assert body["name"] == "API_KEY"
    assert body["value"] == MASKED
    assert body["project_uuid"] == PROJECT
    assert GO_TIME.match(body["created_at"]) and GO_TIME.match(body["updated_at"])
    assert "s3cr3t-value" not in response.text


async def test_get_and_list_show_the_secret_with_its_value_masked(
    client: httpx.AsyncClient,
) -> None:
    created = (await create_secret(client)).json()

    got = await client.get(f"/secret/{created['id']}", headers=ADMIN)
    assert got.status_code == 200
    assert got.json() == created

    listed = await client.get("/secret", params={"project_uuid": PROJECT}, headers=ADMIN)
    assert listed.status_code == 200
    assert listed.json() == [created]
    assert "s3cr3t-value" not in got.text + listed.text


async def test_list_is_newest_first_and_only_the_projects(client: httpx.AsyncClient) -> None:
    first = (await create_secret(client, name="FIRST")).json()
    second = (await create_secret(client, name="SECOND")).json()
    await create_secret(client, name="ELSEWHERE", project_uuid=OTHER_PROJECT)

    listed = await client.get("/secret", params={"project_uuid": PROJECT}, headers=ADMIN)
    assert [s["id"] for s in listed.json()] == [second["id"], first["id"]]


async def test_a_project_without_secrets_lists_an_empty_array(client: httpx.AsyncClient) -> None:
    response = await client.get("/secret", params={"project_uuid": PROJECT}, headers=ADMIN)
    assert response.status_code == 200
    assert response.text == "[]"


async def test_patch_renames_and_replaces_the_value(client: httpx.AsyncClient) -> None:
    created = (await create_secret(client)).json()

    renamed = await client.patch(
        f"/secret/{created['id']}", json={"name": "NEW_NAME"}, headers=ADMIN
    )
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "NEW_NAME"
    assert renamed.json()["value"] == MASKED
    assert renamed.json()["created_at"] == created["created_at"]

    revalued = await client.patch(
        f"/secret/{created['id']}", json={"value": "another-value"}, headers=ADMIN
    )
    assert revalued.status_code == 200
    assert revalued.json()["name"] == "NEW_NAME"
    assert "another-value" not in revalued.text


@pytest.mark.parametrize("body", [{}, {"name": "", "value": ""}, {"name": None, "value": None}])
async def test_patch_with_nothing_to_change_keeps_the_secret(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    created = (await create_secret(client)).json()
    response = await client.patch(f"/secret/{created['id']}", json=body, headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["name"] == created["name"]


async def test_patch_with_an_empty_body_keeps_the_secret(client: httpx.AsyncClient) -> None:
    created = (await create_secret(client)).json()
    response = await client.patch(f"/secret/{created['id']}", headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["name"] == created["name"]


async def test_delete_answers_200_with_an_empty_body_and_the_secret_is_gone(
    client: httpx.AsyncClient,
) -> None:
    created = (await create_secret(client)).json()
    response = await client.delete(f"/secret/{created['id']}", headers=ADMIN)
    assert response.status_code == 200
    assert response.content == b""
    assert (await client.get(f"/secret/{created['id']}", headers=ADMIN)).status_code == 404
    listed = await client.get("/secret", params={"project_uuid": PROJECT}, headers=ADMIN)
    assert listed.json() == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": None}, "name is required"),
        ({"name": ""}, "name is required"),
        ({"value": None}, "value is required"),
        ({"value": ""}, "value is required"),
        ({"project_uuid": None}, "project_uuid is required"),
        ({"project_uuid": ""}, "project_uuid is required"),
        # All missing: the first in the original's order.
        ({"name": "", "value": "", "project_uuid": ""}, "name is required"),
    ],
)
async def test_create_without_a_field_answers_the_originals_400(
    client: httpx.AsyncClient, fields: dict[str, str | None], message: str
) -> None:
    response = await create_secret(client, **fields)
    assert response.status_code == 400
    assert response.json() == {"message": message}


async def test_create_with_an_empty_body_says_the_name_is_required(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/secret", headers=ADMIN)
    assert response.status_code == 400
    assert response.json() == {"message": "name is required"}


async def test_list_without_project_uuid_answers_the_originals_400(
    client: httpx.AsyncClient,
) -> None:
    for params in ({}, {"project_uuid": ""}):
        response = await client.get("/secret", params=params, headers=ADMIN)
        assert response.status_code == 400
        assert response.json() == {"message": "valid project_uuid is required"}


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_body_that_is_not_a_json_object_is_a_400(
    client: httpx.AsyncClient, body: bytes, method: str
) -> None:
    url = "/secret"
    if method == "PATCH":
        url = f"/secret/{(await create_secret(client)).json()['id']}"
    response = await client.request(method, url, content=body, headers=ADMIN)
    assert response.status_code == 400
    assert response.json()["message"].startswith("invalid body")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": 12}, "invalid body: name must be a string"),
        ({"value": ["x"]}, "invalid body: value must be a string"),
        ({"project_uuid": {"a": 1}}, "invalid body: project_uuid must be a string"),
        ({"name": "x" * 256}, "name is longer than 255 characters"),
        ({"name": "A\nB"}, "name must not contain control characters"),
        ({"value": "x" * (64 * 1024 + 1)}, "value is longer than 65536 characters"),
        ({"value": "a\x00b"}, "value must be text without NUL characters or lone surrogates"),
        ({"project_uuid": "p" * 256}, "valid project_uuid is required"),
        ({"project_uuid": "p\x00"}, "project_uuid must not contain control characters"),
    ],
)
async def test_invalid_fields_are_400s_saying_why(
    client: httpx.AsyncClient, fields: dict[str, object], message: str
) -> None:
    response = await create_secret(client, **fields)
    assert response.status_code == 400
    assert response.json() == {"message": message}


async def test_invalid_fields_on_patch_are_400s_and_change_nothing(
    client: httpx.AsyncClient,
) -> None:
    created = (await create_secret(client)).json()
    for body in ({"name": 1}, {"name": "x" * 256}, {"value": "\x00"}):
        response = await client.patch(f"/secret/{created['id']}", json=body, headers=ADMIN)
        assert response.status_code == 400, body
    got = await client.get(f"/secret/{created['id']}", headers=ADMIN)
    assert got.json() == created


async def test_a_second_secret_of_the_same_name_in_a_project_is_a_409(
    client: httpx.AsyncClient,
) -> None:
    assert (await create_secret(client, name="TOKEN")).status_code == 201
    response = await create_secret(client, name="TOKEN", value="other")
    assert response.status_code == 409
    assert response.json() == {"message": "secret with name 'TOKEN' already exists in this project"}
    # The same name in another project is another secret.
    assert (
        await create_secret(client, name="TOKEN", project_uuid=OTHER_PROJECT)
    ).status_code == 201


async def test_renaming_onto_another_secrets_name_is_a_409(client: httpx.AsyncClient) -> None:
    await create_secret(client, name="TAKEN")
    other = (await create_secret(client, name="FREE")).json()
    response = await client.patch(f"/secret/{other['id']}", json={"name": "TAKEN"}, headers=ADMIN)
    assert response.status_code == 409
    assert response.json() == {"message": "secret with name 'TAKEN' already exists in this project"}
    # Renaming to its own name is no conflict.
    same = await client.patch(f"/secret/{other['id']}", json={"name": "FREE"}, headers=ADMIN)
    assert same.status_code == 200


@pytest.mark.parametrize(
    "secret_id",
    ["00000000-0000-4000-8000-000000000000", "not-a-uuid", "65a1b2c3d4e5f60718293a4b", "%00"],
)
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_an_unknown_or_malformed_id_is_a_404(
    client: httpx.AsyncClient, secret_id: str, method: str
) -> None:
    response = await client.request(method, f"/secret/{secret_id}", json={}, headers=ADMIN)
    assert response.status_code == 404
    assert response.json() == {"message": "secret not found"}
