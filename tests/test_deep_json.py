"""A 200,000-deep JSON body (`[[[[...]]]]`) is a 4xx on every route, never a 500: the parser's
RecursionError is not the ValueError that malformed JSON raises."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from codeactions.config import Settings
from codeactions.main import create_app
from tests.auth.test_route_auth import routes
from tests.conftest import ADMIN
from tests.runs.conftest import PROJECT, FakeRunner

DEEP = "[" * 200_000 + "]" * 200_000
# Just under the parser's stack on its own, over it once the request's frames are counted.
NEAR_THE_LIMIT = "[" * 990 + "]" * 990
EMAIL = "member@example.com"


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    # The execution routes run, and answer what the fake runner says.
    app = create_app(make_settings(), runner=FakeRunner())
    async with app.router.lifespan_context(app):
        # A 500 is answered, not raised into the test.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


async def create_code(client: httpx.AsyncClient) -> str:
    response = await client.post(
        "/code",
        params={"project_uuid": PROJECT, "name": "n", "language": "python", "type": "endpoint"},
        content="def Run(engine):\n    engine.result.set('ok')\n",
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_no_route_answers_5xx_to_a_deep_json_body(client: httpx.AsyncClient) -> None:
    code_id = await create_code(client)
    created = await client.post("/projects", json={"uuid": PROJECT, "name": "p"}, headers=ADMIN)
    assert created.status_code == 201, created.text
    names = {"code_id": code_id, "id": code_id, "project_uuid": PROJECT, "email": EMAIL}
    tried, failures = [], []
    # Deletions last: the other routes need the code and the project.
    every = sorted(routes(create_app(Settings())), key=lambda route: route[0] == "DELETE")
    for method, path, _route in every:
        if method in ("GET", "*"):
            continue
        url = re.sub(r"\{([^}:]+)[^}]*\}", lambda m: names.get(m[1], "x"), path)
        for content_type in ("application/json", None):
            headers = {**ADMIN, **({"content-type": content_type} if content_type else {})}
            response = await client.request(method, url, content=DEEP, headers=headers)
            tried.append(f"{method} {path}")
            if response.status_code >= 500:
                failures.append(f"{method} {url} ({content_type}): {response.status_code}")
    assert failures == []
    # The walk reached the routes that parse JSON.
    assert {
        "POST /run/{code_id}",
        "POST /projects",
        "PUT /projects/{project_uuid}/permissions/{email}",
    } <= set(tried)


async def test_run_answers_400_to_a_deep_json_body(client: httpx.AsyncClient) -> None:
    code_id = await create_code(client)
    for content_type in ("application/json", "text/plain"):
        response = await client.post(
            f"/run/{code_id}", content=DEEP, headers={**ADMIN, "content-type": content_type}
        )
        assert response.status_code == 400
        assert response.json() == {"message": "invalid body: JSON nested too deeply"}
    # Parsed or not, depending on the stack in use: a 400 either way.
    response = await client.post(f"/run/{code_id}", content=NEAR_THE_LIMIT, headers=ADMIN)
    assert response.status_code == 400
    assert response.json()["message"].startswith("invalid body: ")


@pytest.mark.parametrize("body", [DEEP, NEAR_THE_LIMIT], ids=["200000", "990"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/projects"), ("PUT", f"/projects/{PROJECT}/permissions/{EMAIL}")],
)
async def test_routes_with_body_models_answer_400_to_a_deep_json_body(
    client: httpx.AsyncClient, method: str, path: str, body: str
) -> None:
    # FastAPI parses these bodies itself, before the route runs.
    response = await client.request(
        method, path, content=body, headers={**ADMIN, "content-type": "application/json"}
    )
    assert response.status_code == 400
    if body is DEEP:
        assert response.json() == {"message": "There was an error parsing the body"}
