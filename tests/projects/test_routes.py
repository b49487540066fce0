"""Projects admin API: every route for no credentials, another project, too low a role, allowed."""

from __future__ import annotations

import httpx
import pytest

from tests.auth.provider import FakeProvider, bearer
from tests.conftest import ADMIN

P = "proj-p"  # the project under test
Q = "proj-q"  # another project

MEMBERS = {
    "mod@example.org": (P, 3),
    "contrib@example.org": (P, 2),
    "viewer@example.org": (P, 1),
    "outsider@example.org": (Q, 3),
}


@pytest.fixture
async def api(oidc_client: httpx.AsyncClient, provider: FakeProvider) -> httpx.AsyncClient:
    for uuid in (P, Q):
        response = await oidc_client.post(
            "/projects", json={"uuid": uuid, "name": f"Project {uuid}"}, headers=ADMIN
        )
        assert response.status_code == 201
    for email, (project, role) in MEMBERS.items():
        response = await oidc_client.put(
            f"/projects/{project}/permissions/{email}", json={"role": role}, headers=ADMIN
        )
        assert response.status_code == 200
    return oidc_client


def as_user(provider: FakeProvider, email: str) -> dict[str, str]:
    return bearer(provider.token(email))


# --- POST /projects ---------------------------------------------------------------------


async def test_admin_creates_a_project(api: httpx.AsyncClient) -> None:
    response = await api.post("/projects", json={"uuid": "new", "name": "New"}, headers=ADMIN)
    assert response.status_code == 201
    body = response.json()
    assert (body["uuid"], body["name"]) == ("new", "New")
    assert body["created_at"].endswith("Z") and body["updated_at"]


async def test_creating_an_existing_project_returns_it_unchanged(api: httpx.AsyncClient) -> None:
    response = await api.post("/projects", json={"uuid": P, "name": "Other"}, headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["name"] == f"Project {P}"


async def test_service_account_creates_a_project(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    token = provider.token(None, can_communicate_internally=True)
    response = await api.post("/projects", json={"uuid": "svc", "name": "S"}, headers=bearer(token))
    assert response.status_code == 201


async def test_creating_a_project_needs_credentials(api: httpx.AsyncClient) -> None:
    response = await api.post("/projects", json={"uuid": "x", "name": "X"})
    assert response.status_code == 401


async def test_a_moderator_cannot_create_projects(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await api.post(
        "/projects", json={"uuid": "x", "name": "X"}, headers=as_user(provider, "mod@example.org")
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"uuid": "", "name": "n"},
        {"uuid": "   ", "name": "n"},
        {"uuid": "u", "name": ""},
        {"uuid": "u"},
        {"uuid": 42, "name": "n"},
        {"uuid": "u" * 256, "name": "n"},
        {"uuid": "u", "name": "n" * 256},
        ["u", "n"],
        None,
    ],
)
async def test_invalid_project_bodies_are_a_400(api: httpx.AsyncClient, body: object) -> None:
    response = await api.post("/projects", json=body, headers=ADMIN)
    assert response.status_code == 400
    assert response.json()["message"].startswith("invalid request")


async def test_malformed_json_is_a_400(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/projects",
        content=b'{"uuid": ',
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert response.status_code == 400


# --- GET /projects/{uuid} ---------------------------------------------------------------


async def test_get_project_needs_credentials(api: httpx.AsyncClient) -> None:
    assert (await api.get(f"/projects/{P}")).status_code == 401


async def test_get_another_project_is_not_found(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await api.get(f"/projects/{P}", headers=as_user(provider, "outsider@example.org"))
    assert response.status_code == 404
    assert response.json() == {"message": "project not found"}


async def test_viewer_reads_the_project(api: httpx.AsyncClient, provider: FakeProvider) -> None:
    response = await api.get(f"/projects/{P}", headers=as_user(provider, "viewer@example.org"))
    assert response.status_code == 200
    assert response.json()["uuid"] == P


async def test_admin_reads_any_project_and_missing_ones_are_404(api: httpx.AsyncClient) -> None:
    assert (await api.get(f"/projects/{Q}", headers=ADMIN)).status_code == 200
    missing = await api.get("/projects/nope", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.json() == {"message": "project not found"}


async def test_too_long_project_uuid_is_a_400(api: httpx.AsyncClient) -> None:
    assert (await api.get("/projects/" + "x" * 256, headers=ADMIN)).status_code == 400


# --- GET /projects/{uuid}/permissions ---------------------------------------------------


async def test_list_permissions_needs_credentials(api: httpx.AsyncClient) -> None:
    assert (await api.get(f"/projects/{P}/permissions")).status_code == 401


async def test_list_permissions_of_another_project_is_not_found(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    headers = as_user(provider, "outsider@example.org")
    assert (await api.get(f"/projects/{P}/permissions", headers=headers)).status_code == 404


@pytest.mark.parametrize("email", ["contrib@example.org", "viewer@example.org"])
async def test_list_permissions_needs_a_moderator(
    api: httpx.AsyncClient, provider: FakeProvider, email: str
) -> None:
    response = await api.get(f"/projects/{P}/permissions", headers=as_user(provider, email))
    assert response.status_code == 403


async def test_moderator_lists_the_members(api: httpx.AsyncClient, provider: FakeProvider) -> None:
    response = await api.get(
        f"/projects/{P}/permissions", headers=as_user(provider, "mod@example.org")
    )
    assert response.status_code == 200
    assert [(p["email"], p["role"]) for p in response.json()] == [
        ("contrib@example.org", 2),
        ("mod@example.org", 3),
        ("viewer@example.org", 1),
    ]
    assert set(response.json()[0]) == {"email", "role", "created_at", "updated_at"}


async def test_project_without_members_lists_an_empty_array(api: httpx.AsyncClient) -> None:
    response = await api.get("/projects/empty/permissions", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == []


# --- PUT /projects/{uuid}/permissions/{email} -------------------------------------------


async def test_put_permission_needs_credentials(api: httpx.AsyncClient) -> None:
    response = await api.put(f"/projects/{P}/permissions/a@x.org", json={"role": 1})
    assert response.status_code == 401


async def test_put_permission_in_another_project_is_not_found(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await api.put(
        f"/projects/{P}/permissions/outsider@example.org",
        json={"role": 3},
        headers=as_user(provider, "outsider@example.org"),
    )
    assert response.status_code == 404
    # and the outsider did not become a member
    listed = await api.get(f"/projects/{P}/permissions", headers=ADMIN)
    assert "outsider@example.org" not in [p["email"] for p in listed.json()]


async def test_contributor_cannot_grant_roles(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await api.put(
        f"/projects/{P}/permissions/contrib@example.org",
        json={"role": 3},
        headers=as_user(provider, "contrib@example.org"),
    )
    assert response.status_code == 403
    assert response.json() == {"message": "have'nt permission to access this resource"}


async def test_moderator_adds_a_member_who_then_gets_access(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await api.put(
        f"/projects/{P}/permissions/New.Person@Example.org",
        json={"role": 1},
        headers=as_user(provider, "mod@example.org"),
    )
    assert response.status_code == 200
    assert (response.json()["email"], response.json()["role"]) == ("new.person@example.org", 1)
    # Emails compare case-insensitively: the token's case does not matter.
    got = await api.get(f"/projects/{P}", headers=as_user(provider, "NEW.person@example.org"))
    assert got.status_code == 200


async def test_moderator_changes_a_role(api: httpx.AsyncClient, provider: FakeProvider) -> None:
    response = await api.put(
        f"/projects/{P}/permissions/viewer@example.org",
        json={"role": 3},
        headers=as_user(provider, "mod@example.org"),
    )
    assert response.status_code == 200
    assert response.json()["role"] == 3
    listed = await api.get(
        f"/projects/{P}/permissions", headers=as_user(provider, "viewer@example.org")
    )
    assert listed.status_code == 200


@pytest.mark.parametrize("role", [0, 4, -3, 100])
async def test_roles_out_of_range_are_a_400_with_a_message(
    api: httpx.AsyncClient, role: int
) -> None:
    response = await api.put(
        f"/projects/{P}/permissions/a@x.org", json={"role": role}, headers=ADMIN
    )
    assert response.status_code == 400
    assert response.json() == {
        "message": "role must be 1 (viewer), 2 (contributor) or 3 (moderator)"
    }


@pytest.mark.parametrize("body", [{"role": "2"}, {"role": True}, {"role": 2.5}, {}, [], None])
async def test_badly_typed_role_bodies_are_a_400(api: httpx.AsyncClient, body: object) -> None:
    response = await api.put(f"/projects/{P}/permissions/a@x.org", json=body, headers=ADMIN)
    assert response.status_code == 400
    assert "role" in response.json()["message"] or "invalid request" in response.json()["message"]


# --- DELETE /projects/{uuid}/permissions/{email} ----------------------------------------


async def test_delete_permission_needs_credentials(api: httpx.AsyncClient) -> None:
    response = await api.delete(f"/projects/{P}/permissions/viewer@example.org")
    assert response.status_code == 401


async def test_delete_permission_in_another_project_is_not_found(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await api.delete(
        f"/projects/{P}/permissions/viewer@example.org",
        headers=as_user(provider, "outsider@example.org"),
    )
    assert response.status_code == 404
    assert response.json() == {"message": "project not found"}


async def test_contributor_cannot_remove_members(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await api.delete(
        f"/projects/{P}/permissions/viewer@example.org",
        headers=as_user(provider, "contrib@example.org"),
    )
    assert response.status_code == 403


async def test_moderator_removes_a_member_who_then_loses_access(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await api.delete(
        f"/projects/{P}/permissions/Viewer@Example.org",
        headers=as_user(provider, "mod@example.org"),
    )
    assert response.status_code == 204
    assert response.content == b""
    got = await api.get(f"/projects/{P}", headers=as_user(provider, "viewer@example.org"))
    assert got.status_code == 404


async def test_deleting_an_absent_member_is_a_404(api: httpx.AsyncClient) -> None:
    response = await api.delete(f"/projects/{P}/permissions/nobody@example.org", headers=ADMIN)
    assert response.status_code == 404
    assert response.json() == {"message": "permission not found"}


# --- text no database stores ------------------------------------------------------------


async def test_nul_in_a_project_name_is_stored_replaced_and_in_its_uuid_refused(
    api: httpx.AsyncClient,
) -> None:
    json = {**ADMIN, "content-type": "application/json"}
    lone = await api.post("/projects", content=r'{"uuid": "u", "name": "\ud800"}', headers=json)
    assert lone.status_code == 400  # refused by the body model, never a 500
    # Identifiers: stored with U+FFFD, `nul\x00` and `nul\ufffd` would be one project.
    refused = await api.post(
        "/projects", content=r'{"uuid": "nul\u0000", "name": "n"}', headers=json
    )
    assert refused.json() == {"message": "uuid must not contain control characters"}
    assert (await api.get("/projects/nul%00", headers=ADMIN)).status_code == 400
    created = await api.post(
        "/projects", content=r'{"uuid": "nul", "name": "n\u0000"}', headers=json
    )
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "n\ufffd"
    granted = await api.put(
        "/projects/nul/permissions/a%00b@example.org", json={"role": 2}, headers=ADMIN
    )
    assert granted.json() == {"message": "email must not contain control characters"}
