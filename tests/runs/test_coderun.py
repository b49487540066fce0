"""`GET /coderun/{id}` and `GET /coderun`: the CodeRun object, members only, filters, pages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import ADMIN
from tests.runs.conftest import OTHER_PROJECT, Api, bearer

DAY = datetime(2024, 12, 10, 12, 0, 0, 123000, tzinfo=UTC)


async def test_run_object_has_the_original_shape(api: Api) -> None:
    code = await api.add_code()
    response = await api.client.get(f"/action/endpoint/{code.id}?x=1")
    assert response.status_code == 200
    run_id = api.runner.calls[0].run_id
    await api.settle()
    body = (await api.client.get(f"/coderun/{run_id}", headers=ADMIN)).json()
    assert list(body) == [
        "id",
        "code_id",
        "status",
        "result",
        "extra",
        "params",
        "body",
        "headers",
        "created_at",
        "updated_at",
    ]
    assert body["id"] == run_id
    assert body["code_id"] == str(code.id)
    assert body["status"] == "completed"
    assert body["extra"] == {"status_code": 200, "content_type": "text"}
    assert body["params"] == {"x": "1"}
    assert body["created_at"].endswith("Z") and body["updated_at"].endswith("Z")


async def test_run_object_shows_legacy_ids_when_set(api: Api) -> None:
    code = await api.add_code(mongo_object_id="65a1b2c3d4e5f60718293a50")
    run = await api.add_run(code_id=code.id, code_mongo_id="65a1b2c3d4e5f60718293a50")
    body = (await api.client.get(f"/coderun/{run.id}", headers=ADMIN)).json()
    assert body["code_mongo_id"] == "65a1b2c3d4e5f60718293a50"


async def test_get_run_access_matrix(api: Api) -> None:
    code = await api.add_code()
    run = await api.add_run(code_id=code.id)
    await api.grant("viewer@example.com", 1)
    await api.grant("outsider@example.com", 3, project_uuid=OTHER_PROJECT)
    path = f"/coderun/{run.id}"
    assert (await api.client.get(path)).status_code == 401
    outsider = await api.client.get(path, headers=bearer("outsider-token"))
    assert outsider.status_code == 404
    assert outsider.json() == {"message": "coderun not found"}
    assert (await api.client.get(path, headers=bearer("viewer-token"))).status_code == 200
    assert (await api.client.get(path, headers=ADMIN)).status_code == 200


async def test_runs_of_a_deleted_code_are_for_admins_only(api: Api) -> None:
    gone = uuid.uuid4()
    run = await api.add_run(code_id=gone)
    await api.grant("viewer@example.com", 1)
    path = f"/coderun/{run.id}"
    assert (await api.client.get(path, headers=bearer("viewer-token"))).status_code == 404
    assert (await api.client.get(path, headers=ADMIN)).status_code == 200
    listed = await api.client.get(f"/coderun?code_id={gone}", headers=ADMIN)
    assert [r["id"] for r in listed.json()] == [str(run.id)]
    hidden = await api.client.get(f"/coderun?code_id={gone}", headers=bearer("viewer-token"))
    assert hidden.status_code == 404


@pytest.mark.parametrize("run_id", ["00000000-0000-0000-0000-000000000000", "bad", "a" * 24])
async def test_unknown_run_is_404(api: Api, run_id: str) -> None:
    response = await api.client.get(f"/coderun/{run_id}", headers=ADMIN)
    assert response.status_code == 404
    assert response.json() == {"message": "coderun not found"}


async def test_list_requires_code_id(api: Api) -> None:
    response = await api.client.get("/coderun", headers=ADMIN)
    assert response.status_code == 400
    assert response.json() == {"message": "valid code_id is required"}


async def test_list_is_an_empty_array_when_there_are_no_runs(api: Api) -> None:
    code = await api.add_code()
    response = await api.client.get(f"/coderun?code_id={code.id}", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == []
    assert response.headers["X-Total-Count"] == "0"
    assert "Link" not in response.headers


async def test_list_access_matrix(api: Api) -> None:
    code = await api.add_code()
    await api.add_run(code_id=code.id)
    await api.grant("viewer@example.com", 1)
    await api.grant("outsider@example.com", 3, project_uuid=OTHER_PROJECT)
    path = f"/coderun?code_id={code.id}"
    assert (await api.client.get(path)).status_code == 401
    assert (await api.client.get(path, headers=bearer("outsider-token"))).status_code == 404
    viewer = await api.client.get(path, headers=bearer("viewer-token"))
    assert viewer.status_code == 200 and len(viewer.json()) == 1


async def test_list_by_object_id_finds_the_codes_runs(api: Api) -> None:
    code = await api.add_code(mongo_object_id="65a1b2c3d4e5f60718293a51")
    by_oid = await api.add_run(code_id=code.id, code_mongo_id="65a1b2c3d4e5f60718293a51")
    legacy = await api.add_run(code_id=None, code_mongo_id="65a1b2c3d4e5f60718293a51")
    response = await api.client.get("/coderun?code_id=65a1b2c3d4e5f60718293a51", headers=ADMIN)
    assert {r["id"] for r in response.json()} == {str(by_oid.id), str(legacy.id)}
    legacy_body = next(r for r in response.json() if r["id"] == str(legacy.id))
    assert legacy_body["code_id"] == ""


async def test_list_filters_by_dates_inclusively_newest_first(api: Api) -> None:
    code = await api.add_code()
    old = await api.add_run(code_id=code.id, created_at=DAY - timedelta(days=2))
    mid = await api.add_run(code_id=code.id, created_at=DAY)
    new = await api.add_run(code_id=code.id, created_at=DAY + timedelta(days=2))

    async def ids(query: str) -> list[str]:
        response = await api.client.get(f"/coderun?code_id={code.id}&{query}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()]

    assert await ids("") == [str(new.id), str(mid.id), str(old.id)]
    assert await ids("after=2024-12-10") == [str(new.id), str(mid.id)]
    assert await ids("after=2024-12-10T00:00:00&before=2024-12-11") == [str(mid.id)]
    assert await ids("after=2024-12-10 12:00:00.123&before=2024-12-10 12:00:00.123") == [
        str(mid.id)
    ]
    assert await ids("before=2024-12-10T14:00:01%2B02:00") == [str(mid.id), str(old.id)]
    assert await ids("before=2024-12-10T11:59:59Z") == [str(old.id)]
    assert await ids("after=") == [str(new.id), str(mid.id), str(old.id)]


@pytest.mark.parametrize("name", ["after", "before"])
@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "10/12/2024"])
async def test_invalid_dates_are_400(api: Api, name: str, value: str) -> None:
    code = await api.add_code()
    response = await api.client.get(
        "/coderun", params={"code_id": str(code.id), name: value}, headers=ADMIN
    )
    assert response.status_code == 400
    assert response.json() == {"message": f"invalid {name} parameter"}


async def test_list_pages_with_total_and_next_link(api: Api) -> None:
    code = await api.add_code()
    for i in range(5):
        await api.add_run(code_id=code.id, created_at=DAY + timedelta(minutes=i))
    first = await api.client.get(f"/coderun?code_id={code.id}&page_size=2", headers=ADMIN)
    assert len(first.json()) == 2
    assert first.headers["X-Total-Count"] == "5"
    assert 'rel="next"' in first.headers["Link"] and "page=2" in first.headers["Link"]
    last = await api.client.get(f"/coderun?code_id={code.id}&page_size=2&page=3", headers=ADMIN)
    assert len(last.json()) == 1
    assert "Link" not in last.headers
    seen = [r["id"] for r in first.json()]
    second = await api.client.get(f"/coderun?code_id={code.id}&page_size=2&page=2", headers=ADMIN)
    assert not set(seen) & {r["id"] for r in second.json()}


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("page=0", "page"),
        ("page=x", "page"),
        ("page_size=0", "page_size"),
        ("page_size=1001", "page_size"),
    ],
)
async def test_invalid_pages_are_400(api: Api, query: str, name: str) -> None:
    code = await api.add_code()
    response = await api.client.get(f"/coderun?code_id={code.id}&{query}", headers=ADMIN)
    assert response.status_code == 400
    assert response.json() == {"message": f"invalid {name} parameter"}
