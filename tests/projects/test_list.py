"""GET /projects: the projects the caller sees, newest first, each with the caller's role."""

from __future__ import annotations

import httpx
import pytest

from codeactions.projects import service
from tests.auth.provider import FakeProvider, bearer
from tests.conftest import ADMIN, Sessions

# Created in this order: listed newest first, so the other way round.
PROJECTS = {"proj-a": "Alpha Billing", "proj-b": "beta", "proj-c": "Gamma BILLING", "proj-d": "d"}
MEMBERS = {
    "mod@example.org": [("proj-a", 3), ("proj-c", 1)],
    "contrib@example.org": [("proj-b", 2)],
    "odd@example.org": [("proj-a", 7), ("proj-b", 0), ("proj-c", -1)],
}


@pytest.fixture
async def api(oidc_client: httpx.AsyncClient, sessions: Sessions) -> httpx.AsyncClient:
    for uuid, name in PROJECTS.items():
        response = await oidc_client.post(
            "/projects", json={"uuid": uuid, "name": name}, headers=ADMIN
        )
        assert response.status_code == 201
    # As RabbitMQ events store them: any role, and projects known only through permissions.
    async with sessions() as session, session.begin():
        for email, roles in {
            **MEMBERS,
            "mod@example.org": [*MEMBERS["mod@example.org"], ("ghost", 3)],
        }.items():
            for project, role in roles:
                await service.grant_role(
                    session, project_uuid=project, email=email, role=role, role_as_given=True
                )
    return oidc_client


def as_user(provider: FakeProvider, email: str) -> dict[str, str]:
    return bearer(provider.token(email))


def listed(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.text
    return [(p["uuid"], p["role"]) for p in response.json()]


async def test_listing_projects_needs_credentials(api: httpx.AsyncClient) -> None:
    response = await api.get("/projects")
    assert response.status_code == 401
    assert response.json() == {"message": "invalid token"}


async def test_admin_sees_every_project_newest_first(api: httpx.AsyncClient) -> None:
    response = await api.get("/projects", headers=ADMIN)
    assert listed(response) == [(u, "admin") for u in ("proj-d", "proj-c", "proj-b", "proj-a")]
    assert response.headers["X-Total-Count"] == "4"
    assert "Link" not in response.headers
    one = await api.get("/projects/proj-a", headers=ADMIN)
    assert response.json()[-1] == {**one.json(), "role": "admin"}


async def test_service_account_sees_every_project_as_admin(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    token = provider.token(None, can_communicate_internally=True)
    response = await api.get("/projects", headers=bearer(token))
    assert [role for _, role in listed(response)] == ["admin"] * 4


async def test_a_user_sees_only_the_projects_where_it_has_a_role(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await api.get("/projects", headers=as_user(provider, "Mod@Example.org"))
    assert listed(response) == [("proj-c", "viewer"), ("proj-a", "moderator")]
    assert response.headers["X-Total-Count"] == "2"
    contrib = await api.get("/projects", headers=as_user(provider, "contrib@example.org"))
    assert listed(contrib) == [("proj-b", "contributor")]


async def test_roles_that_grant_nothing_hide_the_project_and_high_ones_read_as_moderator(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await api.get("/projects", headers=as_user(provider, "odd@example.org"))
    assert listed(response) == [("proj-a", "moderator")]
    assert response.headers["X-Total-Count"] == "1"


async def test_a_user_without_permissions_sees_an_empty_list(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await api.get("/projects", headers=as_user(provider, "nobody@example.org"))
    assert listed(response) == []
    assert response.headers["X-Total-Count"] == "0"


async def test_search_matches_a_substring_of_the_name_in_any_case(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    found = await api.get("/projects", params={"search": "billing"}, headers=ADMIN)
    assert [uuid for uuid, _ in listed(found)] == ["proj-c", "proj-a"]
    mine = await api.get(
        "/projects", params={"search": "GAMMA"}, headers=as_user(provider, "mod@example.org")
    )
    assert listed(mine) == [("proj-c", "viewer")]
    none = await api.get("/projects", params={"search": "%"}, headers=ADMIN)
    assert listed(none) == []
    too_long = await api.get("/projects", params={"search": "x" * 256}, headers=ADMIN)
    assert too_long.status_code == 400
    assert too_long.json() == {"message": "search is too long (max 255 characters)"}


async def test_pages_with_total_and_next_link(api: httpx.AsyncClient) -> None:
    first = await api.get("/projects", params={"page_size": "3", "search": "a"}, headers=ADMIN)
    assert [uuid for uuid, _ in listed(first)] == ["proj-c", "proj-b", "proj-a"]
    first = await api.get("/projects", params={"page_size": "2"}, headers=ADMIN)
    assert [uuid for uuid, _ in listed(first)] == ["proj-d", "proj-c"]
    assert first.headers["X-Total-Count"] == "4"
    link = first.headers["Link"]
    assert link.endswith('>; rel="next"')
    next_url = httpx.URL(link[1 : link.index(">")])
    assert (next_url.params["page"], next_url.params["page_size"]) == ("2", "2")
    second = await api.get(next_url.copy_with(scheme="http"), headers=ADMIN)
    assert [uuid for uuid, _ in listed(second)] == ["proj-b", "proj-a"]
    assert "Link" not in second.headers


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"page": "0"}, "invalid page parameter"),
        ({"page": "x"}, "invalid page parameter"),
        ({"page_size": "1001"}, "invalid page_size parameter"),
    ],
)
async def test_invalid_paging_is_400(
    api: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    response = await api.get("/projects", params=params, headers=ADMIN)
    assert response.status_code == 400
    assert response.json() == {"message": message}
