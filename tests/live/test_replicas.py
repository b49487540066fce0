"""Two replicas sharing Redis (and the database): one connection count per principal, and a
follower on one replica hears runs and codes of the other."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from codeactions.config import LiveSettings, RateLimitSettings
from tests.conftest import ADMIN_TOKEN, need_service
from tests.live.conftest import StartLive
from tests.live.test_follow import Scripted, contents, lines
from tests.live.test_web import closed_code
from tests.runs.conftest import PROJECT

REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
async def redis_settings() -> RateLimitSettings:
    need_service("Redis", "127.0.0.1", 6379)
    client: Redis = Redis.from_url(REDIS_URL)
    try:
        # What an earlier, interrupted run left counted for the static token's principal.
        await client.delete("live:connections:admin:")
    finally:
        await client.aclose()
    return RateLimitSettings(redis_url=REDIS_URL)


async def test_the_connection_limit_counts_both_replicas(
    start_live: StartLive, redis_settings: RateLimitSettings
) -> None:
    settings = {"ratelimit": redis_settings, "live": LiveSettings(ws_max_connections=2)}
    one, two = await start_live(**settings), await start_live(**settings)
    async with one.socket(ADMIN_TOKEN) as first, two.socket(ADMIN_TOKEN) as second:
        for sock in (first, second):
            assert (await sock.request(2, {"id": "x"}))["status_code"] == 4
        async with one.socket(ADMIN_TOKEN) as third:
            assert await closed_code(third) == 1008
        async with two.socket(ADMIN_TOKEN) as fourth:
            assert await closed_code(fourth) == 1008
    async with two.socket(ADMIN_TOKEN) as after:  # both places were given back
        assert (await after.request(2, {"id": "x"}))["status_code"] == 4


async def test_a_follower_on_one_replica_hears_a_run_on_the_other(
    start_live: StartLive, redis_settings: RateLimitSettings
) -> None:
    one = await start_live(ratelimit=redis_settings)
    two = await start_live(ratelimit=redis_settings)
    script = Scripted(lines("one", "two"), lines("three"))
    one.api.runner.behaviour = script
    code = await one.api.add_code()
    async with one.socket() as running, two.socket() as watching:
        project = await watching.send(9, {"project_uuid": PROJECT})
        await watching.next(project)
        req = await running.send(5, {"id": str(code.id)})
        run_id = (await running.next(req))["data"]["run_id"]
        await script.started.wait()
        started = (await watching.next(project))["data"]
        assert started["event"] == "run.started" and started["run"]["id"] == run_id
        await asyncio.sleep(0.2)  # the lines so far reach Redis's backlog
        follow = await watching.send(8, {"run_id": run_id})
        await watching.next(follow)
        so_far = [await watching.next(follow), await watching.next(follow)]
        script.release.set()
        rest = await watching.events_until(follow)
        finished = (await watching.next(project))["data"]
    assert contents([f["data"] for f in so_far]) == [(1, "one"), (2, "two")]
    assert contents(rest) == [(3, "three")]
    assert rest[-1]["run"]["id"] == run_id
    assert finished["event"] == "run.finished" and finished["run"]["status"] == "completed"
