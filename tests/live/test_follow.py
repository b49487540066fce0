"""Following runs and projects: stored lines, live lines, resuming after a reconnect or after
falling behind, project events, masked secrets, and the same over Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from codeactions.config import LiveSettings, RunnerSettings
from codeactions.runner.base import RunLogLine, RunOutcome, RunRequest
from tests.conftest import ADMIN, needs_runtime
from tests.live.conftest import Live, StartLive
from tests.runs.conftest import PROJECT


def lines(*contents: str) -> list[RunLogLine]:
    return [RunLogLine("info", content, time.time()) for content in contents]


class Scripted:
    """A fake runner's behaviour: streams `first`, waits until released, then ends with
    `first + rest` as the run's lines."""

    def __init__(self, first: list[RunLogLine], rest: list[RunLogLine]) -> None:
        self.first, self.rest = first, rest
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, request: RunRequest) -> RunOutcome:
        assert request.on_logs is not None
        request.on_logs(self.first)
        self.started.set()
        await self.release.wait()
        return RunOutcome(ok=True, result="done", logs=[*self.first, *self.rest])


def contents(events: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(e["seq"], e["content"]) for e in events if e["event"] == "log"]


async def test_following_a_finished_run_sends_its_stored_lines_after_after_seq(
    live: Live,
) -> None:
    live.api.runner.behaviour = Scripted(lines("a", "b"), lines("c"))
    live.api.runner.behaviour.release.set()
    code = await live.api.add_code()
    async with live.socket() as sock:
        req = await sock.send(5, {"id": str(code.id)})
        run_id = (await sock.next(req))["data"]["run_id"]
        await sock.events_until(req)
        req = await sock.send(8, {"run_id": run_id, "after_seq": 1})
        assert (await sock.next(req))["data"] == {}
        events = await sock.events_until(req)
    assert contents(events) == [(2, "b"), (3, "c")]
    assert events[-1]["run"]["status"] == "completed"


async def test_a_follower_joining_mid_run_gets_the_lines_so_far_then_live_ones(
    live: Live,
) -> None:
    script = Scripted(lines("one", "two"), lines("three"))
    live.api.runner.behaviour = script
    code = await live.api.add_code()
    async with live.socket() as runner_side, live.socket("viewer-token") as outsider:
        req = await runner_side.send(5, {"id": str(code.id)})
        run_id = (await runner_side.next(req))["data"]["run_id"]
        await script.started.wait()
        # Not a member: no peeking at a run of another project.
        assert (await outsider.request(8, {"run_id": run_id}))["status_code"] in (3, 4)
        async with live.socket() as follower:
            follow = await follower.send(8, {"run_id": run_id})
            assert (await follower.next(follow))["status_code"] == 0
            first = [await follower.next(follow), await follower.next(follow)]
            assert [(f["data"]["seq"], f["data"]["content"]) for f in first] == [
                (1, "one"),
                (2, "two"),
            ]
            script.release.set()
            rest = await follower.events_until(follow)
    assert contents(rest) == [(3, "three")]
    assert rest[-1]["event"] == "run"


async def test_a_client_that_reconnects_resumes_after_the_last_seq_it_saw(live: Live) -> None:
    script = Scripted(lines("1", "2", "3"), lines("4", "5"))
    live.api.runner.behaviour = script
    code = await live.api.add_code()
    async with live.socket() as sock:
        req = await sock.send(5, {"id": str(code.id)})
        run_id = (await sock.next(req))["data"]["run_id"]
        seen = [await sock.next(req), await sock.next(req)]
    assert [f["data"]["seq"] for f in seen] == [1, 2]
    script.release.set()
    async with live.socket() as again:
        follow = await again.send(8, {"run_id": run_id, "after_seq": 2})
        await again.next(follow)
        events = await again.events_until(follow)
    assert contents(events) == [(3, "3"), (4, "4"), (5, "5")]


async def test_a_lagging_follower_is_told_where_to_resume_and_loses_nothing(
    start_live: StartLive,
) -> None:
    live = await start_live(live=LiveSettings(follower_queue=3))
    go, release = asyncio.Event(), asyncio.Event()
    burst = lines(*(f"line {n}" for n in range(2, 22)))

    async def bursting(request: RunRequest) -> RunOutcome:
        assert request.on_logs is not None
        request.on_logs(lines("line 1"))
        await go.wait()
        request.on_logs(burst)  # more at once than the follower may have waiting
        await release.wait()
        return RunOutcome(ok=True, result="done", logs=[*lines("line 1"), *burst, *lines("last")])

    live.api.runner.behaviour = bursting
    code = await live.api.add_code()
    async with live.socket() as sock:
        req = await sock.send(5, {"id": str(code.id)})
        await sock.next(req)
        assert (await sock.next(req))["data"]["seq"] == 1  # following live now
        go.set()
        events = await sock.events_until(req)
        lagged = events[-1]
        assert lagged["event"] == "lagged"
        assert contents(events) == [(n, f"line {n}") for n in range(2, 5)]
        assert lagged["resume_after_seq"] == 4
        follow = await sock.send(
            8, {"run_id": lagged["run_id"], "after_seq": lagged["resume_after_seq"]}
        )
        await sock.next(follow)
        caught_up = [await sock.next(follow) for _ in range(17)]
        release.set()
        rest = await sock.events_until(follow)
    got = contents([f["data"] for f in caught_up]) + contents(rest)
    assert got == [(n, f"line {n}") for n in range(5, 22)] + [(22, "last")]
    assert rest[-1]["event"] == "run"
    async with httpx.AsyncClient(base_url=f"http://{live.host}") as client:
        metrics = (await client.get("/metrics")).text
    assert "codeactions_ws_lagged_total 1.0" in metrics


async def test_a_project_follower_hears_codes_saved_and_deleted_and_runs(live: Live) -> None:
    await live.api.grant("viewer@example.com", 1)
    async with live.socket("viewer-token") as sock:
        follow = await sock.send(9, {"project_uuid": PROJECT})
        assert (await sock.next(follow))["status_code"] == 0
        async with httpx.AsyncClient(base_url=f"http://{live.host}") as client:
            created = await client.post(
                "/code",
                params={
                    "project_uuid": PROJECT,
                    "name": "x",
                    "language": "python",
                    "type": "endpoint",
                },
                content=b"def Run(engine):\n    pass\n",
                headers=ADMIN,
            )
            assert created.status_code == 201
            code_id = created.json()["id"]
            saved = (await sock.next(follow))["data"]
            assert saved["event"] == "code.saved" and saved["code"]["id"] == code_id
            ran = await client.post(f"/run/{code_id}", headers=ADMIN)
            assert ran.status_code == 200, ran.text
            started = (await sock.next(follow))["data"]
            finished = (await sock.next(follow))["data"]
            assert started["event"] == "run.started" and started["run"]["status"] == "started"
            assert finished["event"] == "run.finished"
            assert finished["run"]["id"] == started["run"]["id"]
            assert finished["run"]["status"] == "completed"
            assert (await client.delete(f"/code/{code_id}", headers=ADMIN)).status_code == 200
            deleted = (await sock.next(follow))["data"]
    assert deleted == {"event": "code.deleted", "code": saved["code"] | deleted["code"]}
    assert deleted["code"]["id"] == code_id


async def test_live_lines_hide_the_projects_secret_values(live: Live) -> None:
    async with httpx.AsyncClient(base_url=f"http://{live.host}") as client:
        made = await client.post(
            "/secret",
            json={"name": "API_KEY", "value": "s3cr3t-value", "project_uuid": PROJECT},
            headers=ADMIN,
        )
        assert made.status_code == 201, made.text
    script = Scripted(lines("key=s3cr3t-value"), lines("again s3cr3t-value"))
    live.api.runner.behaviour = script
    code = await live.api.add_code()
    async with live.socket() as sock:
        req = await sock.send(5, {"id": str(code.id)})
        await sock.next(req)
        live_line = (await sock.next(req))["data"]
        script.release.set()
        rest = await sock.events_until(req)
    text = json.dumps([live_line, *rest])
    assert "s3cr3t-value" not in text
    assert live_line["content"].startswith("key=") and live_line["content"] != "key=s3cr3t-value"


async def test_server_sent_events_follow_a_run_and_resume_by_last_event_id(live: Live) -> None:
    script = Scripted(lines("a", "b"), lines("c"))
    live.api.runner.behaviour = script
    code = await live.api.add_code()
    async with live.socket() as sock:
        req = await sock.send(5, {"id": str(code.id)})
        run_id = (await sock.next(req))["data"]["run_id"]
        await script.started.wait()
        async with httpx.AsyncClient(base_url=f"http://{live.host}", timeout=10) as client:
            async with client.stream("GET", f"/coderun/{run_id}/events", headers=ADMIN) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                received: list[str] = []
                async for line in response.aiter_lines():
                    received.append(line)
                    if line == "data: " + "" or (line.startswith("data:") and '"b"' in line):
                        script.release.set()
            resumed = await client.get(
                f"/coderun/{run_id}/events", headers={**ADMIN, "Last-Event-ID": "2"}
            )
            refused = await client.get(f"/coderun/{run_id}/events")
            unknown = await client.get(f"/coderun/{uuid.uuid4()}/events", headers=ADMIN)
    ids = [line for line in received if line.startswith("id:")]
    assert ids == ["id: 1", "id: 2", "id: 3"]
    events = [json.loads(line[5:]) for line in received if line.startswith("data:")]
    assert [e["event"] for e in events] == ["log", "log", "log", "run"]
    assert [line for line in resumed.text.splitlines() if line.startswith("id:")] == ["id: 3"]
    assert refused.status_code == 401
    assert unknown.status_code == 404


@needs_runtime
async def test_a_real_runs_first_line_arrives_while_it_still_runs(
    start_live: StartLive, tmp_path: Path
) -> None:
    live = await start_live(
        real_runner=True,
        runner=RunnerSettings(enabled=True, slots=2, node_spares=0, work_dir=str(tmp_path / "r")),
    )
    code = await live.api.add_code()
    source = (
        "import time\n"
        "def Run(engine):\n"
        "    engine.log.info('before')\n"
        "    time.sleep(1)\n"
        "    print('after')\n"
        "    engine.result.set('ok')\n"
    )
    async with live.socket() as sock:
        req = await sock.send(5, {"id": str(code.id), "source": source})
        assert (await sock.next(req))["status_code"] == 0
        first = await sock.next(req)
        first_at = time.monotonic()
        rest = await sock.events_until(req)
        ended_at = time.monotonic()
    assert first["data"]["content"] == "before"
    assert contents(rest) == [(2, "after")]
    assert rest[-1]["run"]["status"] == "completed", rest[-1]
    assert ended_at - first_at >= 0.8
