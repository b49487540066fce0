"""The WebSocket /web: authentication, connection and message limits, frames, and every package
with its error statuses (as a client sees them over a real connection)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from codeactions.config import LiveSettings
from codeactions.runner.base import RunLogLine, RunOutcome, RunRequest
from tests.live.conftest import Live, Socket, StartLive
from tests.runs.conftest import OTHER_PROJECT, PROJECT

VIEWER = "viewer@example.com"
CONTRIBUTOR = "contributor@example.com"


async def closed_code(sock: Socket) -> int:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await sock.ws.recv()
    assert info.value.rcvd is not None
    return info.value.rcvd.code


# --- connecting ---------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "not-a-token"])
async def test_a_missing_or_bad_token_is_accepted_then_closed_with_1008(
    live: Live, token: str | None
) -> None:
    async with live.socket(token) as sock:
        assert await closed_code(sock) == 1008


async def test_a_user_token_connects_like_the_static_token(live: Live) -> None:
    async with live.socket("viewer-token") as sock:
        answer = await sock.request(2, {"id": str(uuid.uuid4())})
    assert answer["status_code"] == 4


async def test_the_connection_over_the_limit_is_closed_with_1008(start_live: StartLive) -> None:
    live = await start_live(live=LiveSettings(ws_max_connections=2))
    async with live.socket() as first, live.socket() as second:
        for sock in (first, second):
            assert (await sock.request(2, {"id": "x"}))["status_code"] == 4
        async with live.socket() as third:
            assert await closed_code(third) == 1008
        # Another principal has its own count.
        async with live.socket("viewer-token") as other:
            assert (await other.request(2, {"id": "x"}))["status_code"] == 4
    # Closing one gives its place back.
    async with live.socket() as again:
        assert (await again.request(2, {"id": "x"}))["status_code"] == 4


# --- frames -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"req_id": "r"}', "pkg_id"),
        ('{"pkg_id": 1}', "req_id"),
        ('{"pkg_id": "1", "req_id": "r"}', "pkg_id"),
        ('{"pkg_id": 1, "req_id": "r", "data": [1]}', "data"),
        ('{"pkg_id": 99, "req_id": "r"}', "unknown pkg_id"),
        ('{"pkg_id": 1, "req_id": "r", "data": {"project_uuid": 5}}', "project_uuid"),
        (
            '{"pkg_id": 1, "req_id": "r", "data": {"project_uuid": "p", "per_page": 101}}',
            "per_page",
        ),
        ('{"pkg_id": 1, "req_id": "r", "data": {"project_uuid": "p", "page": "1"}}', "page"),
        ('{"pkg_id": 2, "req_id": "r", "data": {"id": "x", "extra": 1}}', "extra"),
    ],
)
async def test_a_bad_frame_is_answered_status_2_and_the_connection_stays(
    live: Live, raw: str, reason: str
) -> None:
    async with live.socket() as sock:
        await sock.ws.send(raw)
        answer = json.loads(await sock.ws.recv())
        assert answer["status_code"] == 2
        assert reason in answer["msg"]
        assert (await sock.request(2, {"id": "x"}))["status_code"] == 4


async def test_the_rate_limit_is_exact(start_live: StartLive) -> None:
    live = await start_live(live=LiveSettings(ws_rate_limit=20))
    async with live.socket() as sock:
        ids = [await sock.send(2, {"id": "x"}) for _ in range(21)]
        answers = [await sock.next(req_id) for req_id in ids]
    assert [a["status_code"] for a in answers[:20]] == [4] * 20
    assert answers[20]["status_code"] == 1
    assert answers[20]["msg"] == "Rate limit exceeded"
    assert answers[20]["req_id"] == ids[20]
    async with httpx.AsyncClient(base_url=f"http://{live.host}") as client:
        metrics = (await client.get("/metrics")).text
    assert 'codeactions_ws_frames_total{pkg_id="2",status_code="4"} 20.0' in metrics
    assert 'codeactions_ws_frames_total{pkg_id="2",status_code="1"} 1.0' in metrics
    assert "\ncodeactions_ws_connections " in metrics


async def test_the_schema_is_public_documentation(live: Live) -> None:
    async with httpx.AsyncClient(base_url=f"http://{live.host}") as client:
        response = await client.get("/web/schema")
    assert response.status_code == 200
    document = response.json()
    assert sorted(document["packages"], key=int) == [str(n) for n in range(1, 11)]
    schema = document["packages"]["1"]["data"]
    assert schema["properties"]["per_page"]["maximum"] == 100
    assert schema["required"] == ["project_uuid"]
    assert set(document["status_codes"]) == {"0", "1", "2", "3", "4"}


# --- codes --------------------------------------------------------------------------------


async def test_list_codes_pages_with_meta(live: Live) -> None:
    for _ in range(3):
        await live.api.add_code()
    await live.api.add_code(project_uuid=OTHER_PROJECT)
    async with live.socket() as sock:
        first = await sock.request(1, {"project_uuid": PROJECT, "per_page": 2})
        second = await sock.request(1, {"project_uuid": PROJECT, "per_page": 2, "page": 2})
        flows = await sock.request(1, {"project_uuid": PROJECT, "code_type": "flow"})
    assert first["status_code"] == 0
    assert first["meta"] == {"page": 1, "per_page": 2, "total": 3, "pages": 2}
    assert len(first["data"]) == 2 and len(second["data"]) == 1
    assert {c["project_uuid"] for c in first["data"] + second["data"]} == {PROJECT}
    assert flows["data"] == [] and flows["meta"]["total"] == 0


async def test_project_roles_decide_what_each_package_may_do(live: Live) -> None:
    code = await live.api.add_code()
    await live.api.grant(VIEWER, 1)
    await live.api.grant(CONTRIBUTOR, 2)
    save = {
        "project_uuid": PROJECT,
        "name": "n",
        "language": "python",
        "type": "endpoint",
        "source": "def Run(engine):\n    pass\n",
    }
    async with live.socket("outsider-token") as outsider:
        assert (await outsider.request(1, {"project_uuid": PROJECT}))["status_code"] == 3
        assert (await outsider.request(2, {"id": str(code.id)}))["status_code"] in (3, 4)
        assert (await outsider.request(9, {"project_uuid": PROJECT}))["status_code"] == 3
    async with live.socket("viewer-token") as viewer:
        assert (await viewer.request(1, {"project_uuid": PROJECT}))["status_code"] == 0
        assert (await viewer.request(2, {"id": str(code.id)}))["status_code"] == 0
        assert (await viewer.request(3, save))["status_code"] == 3
        assert (await viewer.request(5, {"id": str(code.id)}))["status_code"] == 3
        assert (await viewer.request(6, {"code_id": str(code.id)}))["status_code"] == 0
    async with live.socket("contributor-token") as contributor:
        assert (await contributor.request(3, save))["status_code"] == 0
        assert (await contributor.request(4, {"id": str(code.id)}))["status_code"] == 3


async def test_save_get_and_delete_a_code(live: Live) -> None:
    async with live.socket() as sock:
        created = await sock.request(
            3,
            {
                "project_uuid": PROJECT,
                "name": "greeter",
                "language": "python",
                "type": "endpoint",
                "source": "def Run(engine):\n    engine.result.set('hi')\n",
                "timeout": 30,
            },
        )
        assert created["status_code"] == 0, created
        code = created["data"]
        assert code["name"] == "greeter" and code["timeout"] == 30
        updated = await sock.request(
            3,
            {
                "id": code["id"],
                "project_uuid": PROJECT,
                "name": "renamed",
                "language": "python",
                "type": "flow",
                "source": "def Run(engine):\n    engine.result.set('bye')\n",
            },
        )
        assert updated["status_code"] == 0, updated
        got = await sock.request(2, {"id": code["id"]})
        assert got["data"]["name"] == "renamed" and got["data"]["type"] == "flow"
        assert "bye" in got["data"]["source"]
        moved = await sock.request(
            3,
            {**updated["data"], "project_uuid": OTHER_PROJECT, "id": code["id"]}
            | {k: updated["data"][k] for k in ("name", "language", "type", "source")},
        )
        assert moved["status_code"] == 2
        assert (await sock.request(4, {"id": code["id"]}))["data"] == {}
        assert (await sock.request(2, {"id": code["id"]}))["status_code"] == 4
        assert (await sock.request(4, {"id": code["id"]}))["status_code"] == 4


def _strip(code: dict[str, Any]) -> dict[str, Any]:
    return {k: code[k] for k in ("project_uuid", "name", "language", "type", "source")}


async def test_a_bad_code_is_status_2_with_the_reason(live: Live) -> None:
    base = {
        "project_uuid": PROJECT,
        "name": "n",
        "language": "python",
        "type": "endpoint",
        "source": "x",
    }
    async with live.socket() as sock:
        for bad, reason in (
            ({"language": "cobol"}, "language"),
            ({"timeout": 1}, "timeout"),
            ({"source": "a\x00b"}, "NUL"),
        ):
            answer = await sock.request(3, {**base, **bad})
            assert answer["status_code"] == 2, answer
            assert reason in answer["msg"], answer


# --- runs ---------------------------------------------------------------------------------


async def streaming(request: RunRequest) -> RunOutcome:
    """A code that writes a line, works a little, and writes another."""
    lines = [RunLogLine("info", "first", 1.0e9), RunLogLine("error", "second", 1.0e9)]
    assert request.on_logs is not None
    request.on_logs(lines[:1])
    await asyncio.sleep(0.3)
    request.on_logs(lines[1:])
    return RunOutcome(
        ok=True, result=request.source[:5], logs=[*lines, RunLogLine("debug", "third", 1.0e9)]
    )


async def test_run_code_answers_its_run_id_then_its_lines_then_the_run(live: Live) -> None:
    live.api.runner.behaviour = streaming
    code = await live.api.add_code()
    async with live.socket() as sock:
        req_id = await sock.send(5, {"id": str(code.id), "params": {"a": "1"}})
        answer = await sock.next(req_id)
        assert answer["status_code"] == 0
        run_id = answer["data"]["run_id"]
        events = await sock.events_until(req_id)
    assert [(e["event"], e.get("seq"), e.get("content")) for e in events] == [
        ("log", 1, "first"),
        ("log", 2, "second"),
        ("log", 3, "third"),
        ("run", None, None),
    ]
    assert {e["run_id"] for e in events[:3]} == {run_id}
    assert events[-1]["run"]["id"] == run_id
    assert events[-1]["run"]["status"] == "completed"
    assert events[-1]["run"]["params"] == {"a": "1"}
    stored = await live.api.get_run(run_id)
    assert stored is not None and stored.status == "completed"


async def test_a_draft_source_runs_as_a_run_of_the_code(live: Live) -> None:
    live.api.runner.behaviour = streaming
    code = await live.api.add_code()
    async with live.socket() as sock:
        req_id = await sock.send(5, {"id": str(code.id), "source": "DRAFT source"})
        run_id = (await sock.next(req_id))["data"]["run_id"]
        events = await sock.events_until(req_id)
    assert events[-1]["run"]["result"] == "DRAFT"
    assert events[-1]["run"]["code_id"] == str(code.id)
    assert live.api.runner.calls[-1].source == "DRAFT source"
    stored = await live.api.get_run(run_id)
    assert stored is not None and stored.code_id == code.id


async def test_run_code_of_an_unknown_code_is_status_4(live: Live) -> None:
    async with live.socket() as sock:
        assert (await sock.request(5, {"id": str(uuid.uuid4())}))["status_code"] == 4


async def test_list_runs_filters_and_pages(live: Live) -> None:
    code = await live.api.add_code()
    for status in ("completed", "failed", "completed"):
        await live.api.add_run(code_id=code.id, status=status)
    async with live.socket() as sock:
        every = await sock.request(6, {"code_id": str(code.id), "per_page": 2})
        failed = await sock.request(6, {"code_id": str(code.id), "status": "failed"})
        bad = await sock.request(6, {"code_id": str(code.id), "after": "yesterday"})
    async with live.socket("viewer-token") as viewer:  # (admins may list a deleted code's runs)
        unknown = await viewer.request(6, {"code_id": str(uuid.uuid4())})
    assert every["meta"] == {"page": 1, "per_page": 2, "total": 3, "pages": 2}
    assert len(every["data"]) == 2
    assert [r["status"] for r in failed["data"]] == ["failed"]
    assert failed["meta"]["total"] == 1
    assert bad["status_code"] == 2
    assert unknown["status_code"] == 4


async def test_get_run_has_its_logs_in_order(live: Live) -> None:
    live.api.runner.behaviour = streaming
    code = await live.api.add_code()
    async with live.socket() as sock:
        req_id = await sock.send(5, {"id": str(code.id)})
        run_id = (await sock.next(req_id))["data"]["run_id"]
        await sock.events_until(req_id)
        got = await sock.request(7, {"id": run_id})
        missing = await sock.request(7, {"id": str(uuid.uuid4())})
    assert got["data"]["id"] == run_id
    assert [line["content"] for line in got["data"]["logs"]] == ["first", "second", "third"]
    assert missing["status_code"] == 4


async def test_stop_following_ends_a_subscription(live: Live) -> None:
    async with live.socket() as sock:
        follow = await sock.send(9, {"project_uuid": PROJECT})
        assert (await sock.next(follow))["status_code"] == 0
        again = await sock.send(9, {"project_uuid": PROJECT}, req_id=follow)
        assert (await sock.next(again))["status_code"] == 2
        assert (await sock.request(10, {"req_id": follow}))["status_code"] == 0
        assert (await sock.request(10, {"req_id": follow}))["status_code"] == 4
        await live.api.add_code()  # not through the API: no event anyway
        response = await sock.request(2, {"id": "x"})
        assert response["status_code"] == 4
        assert [f for f in sock.frames if f["req_id"] == follow and f["data"].get("event")] == []
