"""`POST /run/{code_id}`: who may run a code, its optional JSON request, its answers."""

from __future__ import annotations

from typing import Any

import pytest

from codeactions.runner.base import RunOutcome, RunRequest
from tests.conftest import ADMIN
from tests.runs.conftest import OTHER_PROJECT, Api, bearer


async def test_run_requires_credentials(api: Api) -> None:
    code = await api.add_code()
    response = await api.client.post(f"/run/{code.id}")
    assert response.status_code == 401
    assert api.runner.calls == []


async def test_run_of_another_projects_code_is_404(api: Api) -> None:
    code = await api.add_code()
    await api.grant("outsider@example.com", 3, project_uuid=OTHER_PROJECT)
    response = await api.client.post(f"/run/{code.id}", headers=bearer("outsider-token"))
    assert response.status_code == 404
    assert response.json() == {"message": "code not found"}
    assert api.runner.calls == []


async def test_viewer_cannot_run_a_code(api: Api) -> None:
    code = await api.add_code()
    await api.grant("viewer@example.com", 1)
    response = await api.client.post(f"/run/{code.id}", headers=bearer("viewer-token"))
    assert response.status_code == 403
    assert api.runner.calls == []


@pytest.mark.parametrize(
    "headers",
    [bearer("contributor-token"), bearer("internal-token"), ADMIN],
    ids=["contributor", "internal", "admin"],
)
async def test_contributor_internal_and_admin_run_a_code(api: Api, headers: dict[str, str]) -> None:
    code = await api.add_code()
    await api.grant("contributor@example.com", 2)
    response = await api.client.post(f"/run/{code.id}", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["code_id"] == str(code.id)
    run = body["result"]
    assert run["status"] == "completed"
    assert run["result"] == "ok"
    assert run["code_id"] == str(code.id)
    assert run["id"] == api.runner.calls[0].run_id
    assert "code_mongo_id" not in run and "mongo_object_id" not in run
    assert run["created_at"].endswith("Z")


async def test_run_of_unknown_code_is_404(api: Api) -> None:
    response = await api.client.post("/run/00000000-0000-0000-0000-000000000000", headers=ADMIN)
    assert response.status_code == 404
    assert response.json() == {"message": "code not found"}


async def test_run_passes_the_json_request_to_the_code(api: Api) -> None:
    code = await api.add_code(mongo_object_id="65a1b2c3d4e5f60718293a4e")
    response = await api.client.post(
        "/run/65a1b2c3d4e5f60718293a4e",
        headers=ADMIN,
        json={
            "params": {"q": "1"},
            "body": "hello",
            "headers": {"x-api-key": ["k"]},
            "method": "PATCH",
        },
    )
    assert response.status_code == 200
    assert response.json()["code_id"] == "65a1b2c3d4e5f60718293a4e"
    assert response.json()["result"]["code_mongo_id"] == "65a1b2c3d4e5f60718293a4e"
    request = api.runner.calls[0]
    assert (request.params, request.body, request.method) == ({"q": "1"}, "hello", "PATCH")
    assert request.headers == {"X-Api-Key": ["k"]}
    assert response.json()["result"]["headers"] == {"X-Api-Key": ["[REDACTED]"]}
    assert code.id is not None


@pytest.mark.parametrize(
    "content",
    [b"not json", b"[1, 2]", b'{"params": {"a": 1}}', b'{"headers": {"a": "b"}}', b'{"x": 1}'],
)
async def test_run_rejects_a_malformed_request_with_400(api: Api, content: bytes) -> None:
    code = await api.add_code()
    response = await api.client.post(f"/run/{code.id}", headers=ADMIN, content=content)
    assert response.status_code == 400
    assert response.json()["message"].startswith("invalid body")
    assert api.runner.calls == []


async def test_run_failure_is_500_without_traceback(api: Api) -> None:
    code = await api.add_code()

    async def raises(request: RunRequest) -> RunOutcome:
        return RunOutcome(
            ok=False,
            reason="exception",
            error="Traceback (most recent call last):\n  File \"/x/y.py\"\nKeyError: 'k'",
        )

    api.runner.behaviour = raises
    response = await api.client.post(f"/run/{code.id}", headers=ADMIN)
    assert response.status_code == 500
    run_id = api.runner.calls[0].run_id
    assert response.json() == {"message": f"error on executing code: KeyError: 'k' (run {run_id})"}
    run = await api.get_run(run_id)
    assert run is not None and run.status == "failed"


async def test_run_does_not_count_against_the_rate_limit(api: Api) -> None:
    code = await api.add_code()
    response: Any = await api.client.post(f"/run/{code.id}", headers=ADMIN)
    assert "RateLimit-Limit" not in response.headers
