"""Live channel limits: exact message windows and connection counts, in process and across replicas."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from codeactions.live.limits import (
    CONNECTION_TTL,
    ConnectionLimiter,
    MemoryConnectionLimiter,
    MemoryMessageLimiter,
    MessageLimiter,
    RedisConnectionLimiter,
    RedisMessageLimiter,
    build_live_limits,
)
from tests.conftest import need_service

REDIS_URL = "redis://127.0.0.1:6379/15"

MakeConnections = Callable[..., ConnectionLimiter]
MakeMessages = Callable[..., MessageLimiter]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        need_service("Redis", "127.0.0.1", 6379)
    name: str = request.param
    return name


@pytest.fixture
async def made() -> AsyncIterator[list[ConnectionLimiter | MessageLimiter]]:
    limiters: list[ConnectionLimiter | MessageLimiter] = []
    yield limiters
    for limiter in limiters:
        await limiter.close()


@pytest.fixture
def key_prefix() -> str:
    """Every limiter of one test shares it (so they count together); other tests never see it."""
    return f"test-live-{uuid.uuid4().hex}"


@pytest.fixture
def make_connections(
    backend: str, key_prefix: str, made: list[ConnectionLimiter | MessageLimiter]
) -> MakeConnections:
    def make(max_connections: int = 5, ttl: float = CONNECTION_TTL) -> ConnectionLimiter:
        limiter: ConnectionLimiter
        if backend == "redis":
            limiter = RedisConnectionLimiter(
                REDIS_URL, max_connections=max_connections, ttl=ttl, key_prefix=key_prefix
            )
        else:
            limiter = MemoryConnectionLimiter(max_connections=max_connections)
        made.append(limiter)
        return limiter

    return make


@pytest.fixture
def make_messages(
    backend: str, key_prefix: str, made: list[ConnectionLimiter | MessageLimiter]
) -> MakeMessages:
    def make(limit: int = 20, window: float = 60.0) -> MessageLimiter:
        limiter: MessageLimiter
        if backend == "redis":
            limiter = RedisMessageLimiter(
                REDIS_URL, limit=limit, window=window, key_prefix=key_prefix
            )
        else:
            limiter = MemoryMessageLimiter(limit=limit, window=window)
        made.append(limiter)
        return limiter

    return make


redis_only = pytest.mark.parametrize("backend", ["redis"], indirect=True)


def principal() -> str:
    return f"user-{uuid.uuid4().hex}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_twenty_messages_pass_and_the_twenty_first_is_refused(
    make_messages: MakeMessages,
) -> None:
    limiter = make_messages(limit=20, window=60)
    alice = principal()
    answers = [await limiter.hit(alice) for _ in range(21)]
    assert answers == [True] * 20 + [False]
    assert not await limiter.hit(alice)
    assert await limiter.hit(principal())


async def test_messages_are_allowed_again_as_the_oldest_leave_the_window(
    make_messages: MakeMessages,
) -> None:
    limiter = make_messages(limit=20, window=1)
    alice = principal()
    assert all([await limiter.hit(alice) for _ in range(10)])
    await asyncio.sleep(0.5)
    assert all([await limiter.hit(alice) for _ in range(10)])
    assert not await limiter.hit(alice)
    # The first ten have left the window, the last ten have not: a sliding window, not a fixed one.
    await asyncio.sleep(0.6)
    answers = [await limiter.hit(alice) for _ in range(11)]
    assert answers == [True] * 10 + [False]


@redis_only
async def test_two_replicas_share_one_exact_message_window(make_messages: MakeMessages) -> None:
    replicas = [make_messages(limit=20), make_messages(limit=20)]
    alice = principal()
    answers = await asyncio.gather(*(replicas[i % 2].hit(alice) for i in range(50)))
    assert sum(answers) == 20
    assert not await replicas[0].hit(alice)
    assert not await replicas[1].hit(alice)


async def test_principals_idle_for_a_window_are_forgotten() -> None:
    limiter = MemoryMessageLimiter(limit=5, window=0.1)
    for name in ("alice", "bob"):
        assert await limiter.hit(name)
    await asyncio.sleep(0.15)
    assert await limiter.hit("carol")
    assert set(limiter._hits) == {"carol"}


async def test_sixth_connection_is_refused(make_connections: MakeConnections) -> None:
    limiter = make_connections(max_connections=5)
    alice = principal()
    admitted = [await limiter.acquire(alice, f"ws-{i}") for i in range(6)]
    assert admitted == [True] * 5 + [False]
    # An admitted connection asking again is still admitted; another principal has its own places.
    assert await limiter.acquire(alice, "ws-0")
    assert await limiter.acquire(principal(), "ws-0")


async def test_release_frees_a_place(make_connections: MakeConnections) -> None:
    limiter = make_connections(max_connections=5)
    alice = principal()
    for i in range(5):
        assert await limiter.acquire(alice, f"ws-{i}")
    assert not await limiter.acquire(alice, "ws-5")
    await limiter.release(alice, "ws-2")
    assert await limiter.acquire(alice, "ws-5")
    assert not await limiter.acquire(alice, "ws-6")
    # Releasing what is not counted changes nothing.
    await limiter.release(alice, "ws-unknown")
    await limiter.release(principal(), "ws-0")
    assert not await limiter.acquire(alice, "ws-6")


@redis_only
async def test_two_replicas_count_connections_together(
    make_connections: MakeConnections,
) -> None:
    first, second = make_connections(), make_connections()
    alice = principal()
    for i in range(5):
        assert await first.acquire(alice, f"ws-{i}")
    assert not await second.acquire(alice, "ws-5")
    await first.release(alice, "ws-0")
    assert await second.acquire(alice, "ws-5")
    assert not await first.acquire(alice, "ws-6")


@redis_only
async def test_connections_of_a_dead_replica_stop_counting_after_the_ttl(
    make_connections: MakeConnections,
) -> None:
    dead, alive = make_connections(ttl=0.5), make_connections(ttl=0.5)
    alice = principal()
    for i in range(5):
        assert await dead.acquire(alice, f"dead-{i}")
    assert not await alive.acquire(alice, "ws-0")
    await asyncio.sleep(0.6)
    admitted = [await alive.acquire(alice, f"ws-{i}") for i in range(6)]
    assert admitted == [True] * 5 + [False]


@redis_only
async def test_refreshed_connections_keep_counting(make_connections: MakeConnections) -> None:
    running, other = make_connections(ttl=1), make_connections(ttl=1)
    alice = principal()
    for i in range(5):
        assert await running.acquire(alice, f"ws-{i}")
    for _ in range(2):
        await asyncio.sleep(0.6)
        for i in range(5):
            await running.refresh(alice, f"ws-{i}")
    # 1.2 s after they were admitted, past the TTL, they still count.
    assert not await other.acquire(alice, "ws-5")


@redis_only
async def test_a_refresh_counts_a_connection_the_set_lost(
    make_connections: MakeConnections,
) -> None:
    limiter = make_connections(max_connections=1)
    alice = principal()
    # As for a connection admitted while Redis was down: the first refresh counts it.
    await limiter.refresh(alice, "ws-0")
    assert not await limiter.acquire(alice, "ws-1")


@redis_only
async def test_concurrent_acquires_on_two_replicas_admit_exactly_five(
    make_connections: MakeConnections,
) -> None:
    replicas = [make_connections(), make_connections()]
    alice = principal()
    admitted = await asyncio.gather(*(replicas[i % 2].acquire(alice, f"ws-{i}") for i in range(10)))
    assert sum(admitted) == 5
    assert not await replicas[0].acquire(alice, "ws-late")


async def test_unreachable_redis_admits_and_warns_once_per_limiter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://127.0.0.1:{closed_port()}"
    connections = RedisConnectionLimiter(url, max_connections=1)
    messages = RedisMessageLimiter(url, limit=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with caplog.at_level(logging.WARNING, logger="codeactions.live.limits"):
            assert all([await connections.acquire("alice", f"ws-{i}") for i in range(3)])
            await connections.refresh("alice", "ws-0")
            await connections.release("alice", "ws-0")
            assert all([await messages.hit("alice") for _ in range(3)])
    finally:
        await connections.close()
        await messages.close()
    assert loop.time() - started < 5
    warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 2
    assert any("connection limit" in w for w in warnings)
    assert any("message limit" in w for w in warnings)


async def test_limits_are_chosen_by_redis_url() -> None:
    kinds: dict[str, tuple[type[Any], type[Any]]] = {}
    for url in ("", REDIS_URL):
        limits = build_live_limits(url, max_connections=3, message_limit=7, message_window=5)
        kinds[url] = (type(limits.connections), type(limits.messages))
        await limits.close()
    assert kinds[""] == (MemoryConnectionLimiter, MemoryMessageLimiter)
    assert kinds[REDIS_URL] == (RedisConnectionLimiter, RedisMessageLimiter)
