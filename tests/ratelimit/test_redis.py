"""The Redis limiter: one window shared by replicas, exact under concurrency, and its failure modes."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from codeactions.config import RateLimitSettings, Settings
from codeactions.db.models import Code
from codeactions.db.session import SESSIONMAKER
from codeactions.errors import Unavailable
from codeactions.main import create_app
from codeactions.ratelimit.base import LIMITER
from codeactions.ratelimit.factory import build_rate_limiter
from codeactions.ratelimit.redis import RedisRateLimiter
from codeactions.runner.base import RunOutcome
from tests.conftest import need_service

REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
async def make_limiter() -> AsyncIterator[Callable[..., RedisRateLimiter]]:
    need_service("Redis", "127.0.0.1", 6379)
    made: list[RedisRateLimiter] = []

    def make(**overrides: object) -> RedisRateLimiter:
        values: dict[str, object] = {"redis_url": REDIS_URL, "max_requests": 5}
        values.update(overrides)
        limiter = RedisRateLimiter(RateLimitSettings(**values))  # type: ignore[arg-type]
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


def key() -> str:
    return f"test-{uuid.uuid4()}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_two_replicas_allow_exactly_the_limit_under_concurrent_hits(
    make_limiter: Callable[..., RedisRateLimiter],
) -> None:
    limit = 40
    replicas = [make_limiter(max_requests=limit), make_limiter(max_requests=limit)]
    code = key()
    decisions = await asyncio.gather(*(replicas[i % 2].hit(code) for i in range(limit + 50)))
    assert sum(d.allowed for d in decisions) == limit
    denied = [d for d in decisions if not d.allowed]
    assert len(denied) == 50
    assert all(d.remaining == 0 and d.reset_seconds >= 1 for d in denied)
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(limit))


async def test_remaining_counts_down_and_denial_has_retry_after(
    make_limiter: Callable[..., RedisRateLimiter],
) -> None:
    limiter = make_limiter(max_requests=3, window_seconds=60)
    code = key()
    first, second, third, fourth = [await limiter.hit(code) for _ in range(4)]
    assert [first.remaining, second.remaining, third.remaining] == [2, 1, 0]
    assert first.allowed and third.allowed and not fourth.allowed
    assert first.headers()["RateLimit-Limit"] == "3"
    assert 59 <= fourth.reset_seconds <= 60
    assert fourth.headers()["Retry-After"] == str(fourth.reset_seconds)
    # Another code has its own bucket.
    assert (await limiter.hit(key())).allowed


async def test_hits_expire_after_the_window(
    make_limiter: Callable[..., RedisRateLimiter],
) -> None:
    limiter = make_limiter(max_requests=2, window_seconds=1)
    code = key()
    assert (await limiter.hit(code)).allowed
    assert (await limiter.hit(code)).allowed
    assert not (await limiter.hit(code)).allowed
    await asyncio.sleep(1.1)
    again = await limiter.hit(code)
    assert again.allowed and again.remaining == 1


async def test_url_without_database_and_original_url_work(
    make_limiter: Callable[..., RedisRateLimiter],
) -> None:
    for url in ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379/10"):
        limiter = make_limiter(redis_url=url, max_requests=1)
        await limiter.ping()
        code = key()
        assert (await limiter.hit(code)).allowed
        assert not (await limiter.hit(code)).allowed


async def test_key_left_by_the_original_service_is_replaced(
    make_limiter: Callable[..., RedisRateLimiter],
) -> None:
    limiter = make_limiter(max_requests=2)
    code = key()
    await limiter._redis.hset(f"ratelimit:{code}", mapping={"count": 999, "timestamp": 1})
    decision = await limiter.hit(code)
    assert decision.allowed and decision.remaining == 1


def test_limiter_is_chosen_by_redis_url() -> None:
    assert type(build_rate_limiter(RateLimitSettings(redis_url=REDIS_URL))).__name__ == (
        "RedisRateLimiter"
    )
    assert type(build_rate_limiter(RateLimitSettings())).__name__ == "MemoryRateLimiter"


async def test_unreachable_redis_fails_open_with_one_warning(
    make_limiter: Callable[..., RedisRateLimiter], caplog: pytest.LogCaptureFixture
) -> None:
    limiter = make_limiter(redis_url=f"redis://127.0.0.1:{closed_port()}", fail_open=True)
    with caplog.at_level(logging.WARNING, logger="codeactions.ratelimit.redis"):
        decisions = [await limiter.hit(key()) for _ in range(3)]
    assert all(d.allowed and d.remaining == 5 for d in decisions)
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    with pytest.raises(Exception):  # noqa: B017 - the health check only needs "it raised"
        await limiter.ping()


async def test_unreachable_redis_fails_closed_with_503(
    make_limiter: Callable[..., RedisRateLimiter],
) -> None:
    limiter = make_limiter(redis_url=f"redis://127.0.0.1:{closed_port()}", fail_open=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Unavailable) as raised:
        await limiter.hit(key())
    assert raised.value.status_code == 503
    assert raised.value.message == "rate limiter unavailable"
    assert loop.time() - started < 2


async def test_two_app_instances_share_one_limit(
    make_settings: Callable[..., Settings],
) -> None:
    need_service("Redis", "127.0.0.1", 6379)
    settings = make_settings(ratelimit=RateLimitSettings(redis_url=REDIS_URL, max_requests=7))
    apps = [create_app(settings), create_app(settings)]
    code = key()
    async with (
        apps[0].router.lifespan_context(apps[0]),
        apps[1].router.lifespan_context(apps[1]),
    ):
        decisions = await asyncio.gather(
            *(apps[i % 2].state.parts[LIMITER].hit(code) for i in range(20))
        )
    assert sum(d.allowed for d in decisions) == 7


class OkRunner:
    """Answers every run with "ok" at once: these tests are about the limiter, not execution."""

    async def run(self, request: object) -> RunOutcome:
        return RunOutcome(ok=True, result="ok")

    async def close(self) -> None:
        return None


async def test_two_app_replicas_answer_429_past_the_shared_limit(
    make_settings: Callable[..., Settings],
) -> None:
    need_service("Redis", "127.0.0.1", 6379)
    settings = make_settings(ratelimit=RateLimitSettings(redis_url=REDIS_URL, max_requests=6))
    apps = [create_app(settings, runner=OkRunner()), create_app(settings, runner=OkRunner())]
    async with (
        apps[0].router.lifespan_context(apps[0]),
        apps[1].router.lifespan_context(apps[1]),
    ):
        async with apps[0].state.parts[SESSIONMAKER]() as session, session.begin():
            code = Code(
                name="limited",
                type="endpoint",
                source="def Run(engine): engine.result.set('ok')",
                language="python",
                project_uuid=str(uuid.uuid4()),
            )
            session.add(code)
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
            for app in apps
        ]
        async with clients[0], clients[1]:
            responses = await asyncio.gather(
                *(clients[i % 2].get(f"/action/endpoint/{code.id}") for i in range(10))
            )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 6 + [429] * 4
    denied = next(r for r in responses if r.status_code == 429)
    assert denied.json() == {"message": "Too Many Requests"}
    assert denied.headers["RateLimit-Limit"] == "6"
    assert denied.headers["RateLimit-Remaining"] == "0"
    assert int(denied.headers["Retry-After"]) >= 1
    allowed = [r for r in responses if r.status_code == 200]
    assert all(r.text == "ok" for r in allowed)
    assert sorted(r.headers["RateLimit-Remaining"] for r in allowed) == [str(n) for n in range(6)]
