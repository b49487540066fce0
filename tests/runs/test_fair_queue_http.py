"""One tenant flooding its slow public endpoint on the real sandbox: its extra calls are refused at
once (429, never 500), and another project's endpoint keeps answering meanwhile."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from codeactions.config import AuthSettings, DatabaseSettings, RunnerSettings, Settings
from codeactions.main import create_app
from tests.conftest import ADMIN, ADMIN_TOKEN, needs_runtime

pytestmark = [pytest.mark.sandbox, needs_runtime]

SLOW = "import time\ndef Run(engine):\n    time.sleep(3)\n    engine.result.set('slow')\n"
QUICK = "def Run(engine):\n    engine.result.set('quick')\n"
# 2 slots and 4 waiting places: a project may run 1 and keep 1 waiting.
RUNNER = {"slots": 2, "queue_size": 4}
FLOOD = 12  # more than slots + queue_size


@pytest.fixture
async def client(sqlite_url: str, tmp_path: os.PathLike[str]) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database=DatabaseSettings(url=sqlite_url),
        auth=AuthSettings(token=ADMIN_TOKEN),
        runner=RunnerSettings(
            **RUNNER, node_spares=0, uid_base=61000, work_dir=os.path.join(tmp_path, "runner")
        ),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


async def create(client: httpx.AsyncClient, project: str, source: str) -> str:
    response = await client.post(
        "/code",
        params={
            "project_uuid": project,
            "name": "fair",
            "language": "python",
            "type": "endpoint",
            "timeout": "30",
        },
        content=source,
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def timed_get(client: httpx.AsyncClient, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.get(path)
    return response, time.monotonic() - started


async def test_a_flooded_endpoint_does_not_starve_another_project(
    client: httpx.AsyncClient,
) -> None:
    slow = await create(client, "flooding-project", SLOW)
    quick = await create(client, "other-project", QUICK)
    warm = await client.get(f"/action/endpoint/{quick}")
    assert (warm.status_code, warm.text) == (200, "quick")

    flood = [
        asyncio.create_task(timed_get(client, f"/action/endpoint/{slow}")) for _ in range(FLOOD)
    ]
    await asyncio.sleep(0.5)  # the flood is in: one run executing, one waiting, the rest refused
    for _ in range(3):
        response, seconds = await timed_get(client, f"/action/endpoint/{quick}")
        assert (response.status_code, response.text) == (200, "quick")
        assert seconds < 2.5, seconds  # never queued behind the 3-second runs
    # The other project was answered while the flooding project's runs were still in flight.
    assert not all(task.done() for task in flood)

    answers = await asyncio.gather(*flood)
    statuses = sorted(response.status_code for response, _ in answers)
    assert statuses == [200] * 2 + [429] * (FLOOD - 2), statuses
    for response, seconds in answers:
        if response.status_code == 429:
            assert response.json() == {"message": "too many runs of this project waiting"}
            assert response.headers["Retry-After"] == "1"
            assert seconds < 2.5, seconds  # refused at once, not after waiting
        else:
            assert response.text == "slow"
