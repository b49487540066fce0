"""No run stays `started`; OPTIONS never executes and CORS follows the configured origins."""

from __future__ import annotations

from datetime import timedelta

from codeactions.config import ServerSettings
from codeactions.db.models import utcnow
from codeactions.db.session import SESSIONMAKER
from codeactions.runs.reaper import LOST, reap_stale_runs
from tests.runs.conftest import Api, StartApi


async def test_reaper_fails_runs_left_started(api: Api) -> None:
    # An hour ahead, so the app's own reaper (a pass at start-up, then every minute) leaves
    # these runs to the pass below.
    now = utcnow() + timedelta(hours=1)
    code = await api.add_code()
    lost = await api.add_run(
        code_id=code.id, status="started", created_at=now - timedelta(seconds=400)
    )
    recent = await api.add_run(
        code_id=code.id, status="started", created_at=now - timedelta(seconds=30)
    )
    done = await api.add_run(
        code_id=code.id, status="completed", created_at=now - timedelta(seconds=900)
    )
    assert await reap_stale_runs(api.app.state.parts[SESSIONMAKER], now=now) == 1
    reaped = await api.get_run(str(lost.id))
    assert reaped is not None and reaped.extra is not None
    assert (reaped.status, reaped.result, reaped.extra["reason"]) == ("failed", LOST, "runner")
    still = await api.get_run(str(recent.id))
    assert still is not None and still.status == "started"
    untouched = await api.get_run(str(done.id))
    assert untouched is not None and untouched.status == "completed"


async def test_options_is_204_and_never_executes(start_api: StartApi) -> None:
    api = await start_api(server=ServerSettings(cors_origins=["https://app.example"]))
    code = await api.add_code()
    allowed = await api.client.options(
        f"/action/endpoint/{code.id}",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert allowed.headers["Access-Control-Allow-Headers"] == "content-type"
    other = await api.client.options(
        f"/endpoint/{code.id}", headers={"Origin": "https://evil.example"}
    )
    assert other.status_code == 204
    assert "Access-Control-Allow-Origin" not in other.headers
    assert (await api.client.options("/no/such/path")).status_code == 204
    assert api.runner.calls == []


async def test_cors_headers_on_answers_for_allowed_origins(start_api: StartApi) -> None:
    api = await start_api(server=ServerSettings(cors_origins=["https://app.example"]))
    code = await api.add_code()
    allowed = await api.client.get(
        f"/action/endpoint/{code.id}", headers={"Origin": "https://app.example"}
    )
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in allowed.headers["Vary"]
    other = await api.client.get(
        f"/action/endpoint/{code.id}", headers={"Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Origin" in other.headers["Vary"]


async def test_any_origin_with_star(start_api: StartApi) -> None:
    api = await start_api(server=ServerSettings(cors_origins=["*"]))
    response = await api.client.options("/code", headers={"Origin": "https://x.example"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
