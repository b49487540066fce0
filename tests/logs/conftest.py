"""A real S3-compatible server (moto's, in a thread) for the S3 log store's tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from moto.server import ThreadedMotoServer

from codeactions.config import LogSettings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def s3_settings(endpoint: str, bucket: str, prefix: str = "codeactions") -> LogSettings:
    return LogSettings(
        s3_enabled=True,
        s3_bucket=bucket,
        s3_prefix=prefix,
        s3_endpoint=endpoint,
        s3_access_key_id="test",
        s3_secret_access_key="test",
    )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def raw(s3_endpoint: str) -> Any:
    """A plain boto3 client: what other tools reading the bucket see."""
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
