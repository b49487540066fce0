"""Fixtures running PostgreSQL, Redis and S3 as real processes a test may kill, freeze and restart."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import need
from tests.faults.processes import (
    Database,
    PostgresCluster,
    RedisServer,
    S3Server,
    ServerProcess,
)


def need_installed(server: type[ServerProcess]) -> None:
    """Skip when a server program is missing, unless CI asked for every service (then fail).

    The same policy as tests.conftest.need_service, for a program to start rather than a port
    to reach."""
    need(server.installed(), f"{server.name} is not installed")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One cluster for the session (initdb costs a second). Use `pg` in tests: it puts the
    cluster back up after a drill."""
    need_installed(PostgresCluster)
    # The system temp dir, not tmp_path_factory: pytest's dirs are root-only and the server
    # runs as the postgres user.
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def pg(pg_cluster: PostgresCluster) -> Iterator[Database]:
    """A fresh database `t_<random>` on a running, thawed cluster; `.url`, `.async_url`, and
    `.cluster` for the drills."""
    pg_cluster.ensure_running()
    database = pg_cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")
    yield database
    # A drill may leave the cluster killed or frozen: the next test needs it up.
    pg_cluster.ensure_running()
    pg_cluster.drop_database(database.name)


S = TypeVar("S", bound=ServerProcess)


def running(kind: type[S], base_dir: Path) -> Iterator[S]:
    """A started server of `kind` for one test, closed after it."""
    need_installed(kind)
    server = kind(base_dir)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running(RedisServer, tmp_path)


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[S3Server]:
    """An empty moto S3 server; create_bucket() what the test needs, again after a restart."""
    yield from running(S3Server, tmp_path)
