"""The drill controls do to clients what a real failure does: a crash, a hang, a restart."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

import asyncpg
import botocore.exceptions  # type: ignore[import-untyped]
import psycopg2
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.faults.conftest import need_installed
from tests.faults.processes import Database, RedisServer, S3Server, ServerFailed


def one_shot_redis(server: RedisServer) -> redis.Redis:
    """A client that reports the first failure instead of retrying it."""
    return redis.Redis.from_url(server.url, socket_timeout=1, retry=Retry(NoBackoff(), 0))


def test_postgres_crash_keeps_committed_rows_and_loses_open_transactions(pg: Database) -> None:
    cluster = pg.cluster
    with contextlib.closing(cluster.connect(pg.name)) as conn:
        with conn, conn.cursor() as cursor:  # commits on leaving
            cursor.execute("CREATE TABLE runs (id int PRIMARY KEY)")
            cursor.execute("INSERT INTO runs VALUES (1), (2)")
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO runs VALUES (3)")  # left open at the crash

        cluster.kill()

        with pytest.raises(psycopg2.OperationalError), conn.cursor() as cursor:
            cursor.execute("COMMIT")
    with pytest.raises(psycopg2.OperationalError):
        cluster.connect(pg.name)

    cluster.restart()

    with contextlib.closing(cluster.connect(pg.name)) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT id FROM runs ORDER BY id")
        assert cursor.fetchall() == [(1,), (2,)]


async def test_frozen_postgres_times_clients_out_until_thawed(pg: Database) -> None:
    pg.cluster.freeze()

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncpg.connect(pg.url, timeout=1)
    assert time.monotonic() - started < 3

    pg.cluster.thaw()

    engine = create_async_engine(pg.async_url)
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT 1")) == 1
    await engine.dispose()


def test_redis_kill_drops_clients_and_restart_serves_the_same_url_empty(
    redis_server: RedisServer,
) -> None:
    client = one_shot_redis(redis_server)
    client.set("key", "value")

    redis_server.kill()
    with pytest.raises(redis.ConnectionError):
        client.ping()

    redis_server.restart()
    assert client.ping()
    assert client.get("key") is None  # no persistence: a restarted Redis is empty
    client.close()


def test_frozen_redis_times_clients_out_until_thawed(redis_server: RedisServer) -> None:
    client = one_shot_redis(redis_server)
    assert client.ping()

    redis_server.freeze()
    with pytest.raises(redis.TimeoutError):
        client.ping()

    redis_server.thaw()
    assert client.ping()
    client.close()


def test_s3_restart_forgets_buckets_until_the_test_recreates_them(s3_server: S3Server) -> None:
    s3_server.create_bucket("run-logs")
    client = s3_server.client(timeout=1)
    client.put_object(Bucket="run-logs", Key="a.log", Body=b"before")

    s3_server.kill()
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        client.list_buckets()

    s3_server.restart()
    assert client.list_buckets()["Buckets"] == []
    s3_server.create_bucket("run-logs")
    client.put_object(Bucket="run-logs", Key="a.log", Body=b"after")
    assert client.get_object(Bucket="run-logs", Key="a.log")["Body"].read() == b"after"


def test_frozen_s3_times_clients_out_until_thawed(s3_server: S3Server) -> None:
    client = s3_server.client(timeout=1)

    s3_server.freeze()
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        client.list_buckets()

    s3_server.thaw()
    assert client.list_buckets()["Buckets"] == []


def test_a_server_that_cannot_start_says_why_from_its_log(tmp_path: Path) -> None:
    need_installed(RedisServer)
    server = RedisServer(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.port))
        squatter.listen()
        with pytest.raises(ServerFailed, match="Address already in use"):
            server.start(timeout=5)
    assert not server.running
    server.close()


def test_close_leaves_no_process_or_directory_behind_even_when_frozen(
    redis_server: RedisServer,
) -> None:
    pid = redis_server.pid
    assert pid is not None
    redis_server.freeze()

    redis_server.close()

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not redis_server.dir.exists()
