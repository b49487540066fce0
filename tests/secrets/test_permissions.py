"""Who may do what with secrets: members read them, Moderators change them, others see nothing.

As for codes, a route that names the project (create, list) answers a non-member 403 (it
learns nothing it did not send); a route that names a secret answers 404 for another project's.
"""

from __future__ import annotations

import httpx
import pytest

from tests.codes.support import CONTRIBUTOR, MODERATOR, OUTSIDER, PROJECT, VIEWER, as_user
from tests.conftest import ADMIN
from tests.secrets.conftest import create_secret

pytestmark = pytest.mark.usefixtures("users")

NO_CREDENTIALS: list[dict[str, str]] = [{}, {"Authorization": "Token wrong"}]


async def _secret_id(client: httpx.AsyncClient) -> str:
    return str((await create_secret(client)).json()["id"])


# --- create ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", NO_CREDENTIALS)
async def test_create_needs_credentials(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    assert (await create_secret(client, headers=headers)).status_code == 401


async def test_a_non_member_cannot_create_a_secret_in_the_project(
    client: httpx.AsyncClient,
) -> None:
    response = await create_secret(client, headers=as_user(OUTSIDER))
    assert response.status_code == 403


@pytest.mark.parametrize("user", [VIEWER, CONTRIBUTOR])
async def test_viewers_and_contributors_cannot_create_secrets(
    client: httpx.AsyncClient, user: str
) -> None:
    response = await create_secret(client, headers=as_user(user))
    assert response.status_code == 403
    assert response.json() == {"message": "have'nt permission to access this resource"}


async def test_a_moderator_creates_secrets(client: httpx.AsyncClient) -> None:
    assert (await create_secret(client, headers=as_user(MODERATOR))).status_code == 201


# --- list -----------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", NO_CREDENTIALS)
async def test_list_needs_credentials(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.get("/secret", params={"project_uuid": PROJECT}, headers=headers)
    assert response.status_code == 401


async def test_a_non_member_cannot_list_the_projects_secrets(client: httpx.AsyncClient) -> None:
    await create_secret(client)
    response = await client.get(
        "/secret", params={"project_uuid": PROJECT}, headers=as_user(OUTSIDER)
    )
    assert response.status_code == 403
    assert "API_KEY" not in response.text


async def test_a_viewer_lists_secrets(client: httpx.AsyncClient) -> None:
    await create_secret(client)
    response = await client.get(
        "/secret", params={"project_uuid": PROJECT}, headers=as_user(VIEWER)
    )
    assert response.status_code == 200
    assert [s["name"] for s in response.json()] == ["API_KEY"]


# --- get ------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", NO_CREDENTIALS)
async def test_get_needs_credentials(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    secret_id = await _secret_id(client)
    assert (await client.get(f"/secret/{secret_id}", headers=headers)).status_code == 401


async def test_another_projects_secret_is_not_found(client: httpx.AsyncClient) -> None:
    secret_id = await _secret_id(client)
    response = await client.get(f"/secret/{secret_id}", headers=as_user(OUTSIDER))
    assert response.status_code == 404
    assert response.json() == {"message": "secret not found"}


async def test_a_viewer_gets_a_secret_masked(client: httpx.AsyncClient) -> None:
    secret_id = await _secret_id(client)
    response = await client.get(f"/secret/{secret_id}", headers=as_user(VIEWER))
    assert response.status_code == 200
    assert response.json()["value"] == "********"


# --- update ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", NO_CREDENTIALS)
async def test_update_needs_credentials(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    secret_id = await _secret_id(client)
    response = await client.patch(f"/secret/{secret_id}", json={"name": "X"}, headers=headers)
    assert response.status_code == 401


async def test_another_project_cannot_update_the_secret(client: httpx.AsyncClient) -> None:
    secret_id = await _secret_id(client)
    response = await client.patch(
        f"/secret/{secret_id}", json={"name": "X"}, headers=as_user(OUTSIDER)
    )
    assert response.status_code == 404


@pytest.mark.parametrize("user", [VIEWER, CONTRIBUTOR])
async def test_viewers_and_contributors_cannot_update_secrets(
    client: httpx.AsyncClient, user: str
) -> None:
    secret_id = await _secret_id(client)
    response = await client.patch(f"/secret/{secret_id}", json={"name": "X"}, headers=as_user(user))
    assert response.status_code == 403
    assert (await client.get(f"/secret/{secret_id}", headers=ADMIN)).json()["name"] == "API_KEY"


async def test_a_moderator_updates_secrets(client: httpx.AsyncClient) -> None:
    secret_id = await _secret_id(client)
    response = await client.patch(
        f"/secret/{secret_id}", json={"name": "X", "value": "v2"}, headers=as_user(MODERATOR)
    )
    assert response.status_code == 200
    assert response.json()["name"] == "X"


# --- delete ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", NO_CREDENTIALS)
async def test_delete_needs_credentials(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    secret_id = await _secret_id(client)
    assert (await client.delete(f"/secret/{secret_id}", headers=headers)).status_code == 401


async def test_another_project_cannot_delete_the_secret(client: httpx.AsyncClient) -> None:
    secret_id = await _secret_id(client)
    response = await client.delete(f"/secret/{secret_id}", headers=as_user(OUTSIDER))
    assert response.status_code == 404
    assert (await client.get(f"/secret/{secret_id}", headers=ADMIN)).status_code == 200


@pytest.mark.parametrize("user", [VIEWER, CONTRIBUTOR])
async def test_viewers_and_contributors_cannot_delete_secrets(
    client: httpx.AsyncClient, user: str
) -> None:
    secret_id = await _secret_id(client)
    response = await client.delete(f"/secret/{secret_id}", headers=as_user(user))
    assert response.status_code == 403
    assert (await client.get(f"/secret/{secret_id}", headers=ADMIN)).status_code == 200


async def test_a_moderator_deletes_secrets(client: httpx.AsyncClient) -> None:
    secret_id = await _secret_id(client)
    response = await client.delete(f"/secret/{secret_id}", headers=as_user(MODERATOR))
    assert response.status_code == 200
    assert (await client.get(f"/secret/{secret_id}", headers=ADMIN)).status_code == 404
