"""Settings of run dispatch: execute here, or publish runs to `codeactions worker` processes."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import field_validator

from codeactions.config.fields import Group, env


class DispatchSettings(Group):
    mode: Literal["local", "rabbitmq"] = env(
        "RUNNER_DISPATCH",
        default="local",
        description="`local`: this process runs codes in its own sandbox runner. `rabbitmq`: it "
        "starts no runner and publishes each run to the workers (`codeactions worker`) through "
        "the broker of `CODEACTIONS_RABBITMQ_URL`, waiting for the outcome as before.",
    )
    prefix: str = env(
        "DISPATCH_PREFIX",
        default="codeactions",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="First part of the names of the dispatch's exchanges and queues; services "
        "sharing a broker with different prefixes never see each other's runs.",
    )
    worker_id: str = env(
        "WORKER_ID",
        default="",
        pattern=r"^[A-Za-z0-9_.-]{0,100}$",
        description="Name of a worker (in its queue's name and the metrics); empty: host name "
        "and process id.",
    )
    worker_host: str = env(
        "WORKER_HOST",
        default="127.0.0.1",
        description="Listen address of a worker's `/healthz`, `/health` and `/metrics`.",
    )
    worker_port: int = env(
        "WORKER_PORT",
        default=8051,
        ge=0,
        le=65535,
        description="Port of a worker's `/healthz`, `/health` and `/metrics`; 0: none.",
    )
    heartbeat_seconds: float = env(
        "WORKER_HEARTBEAT_SECONDS",
        default=1.0,
        gt=0,
        le=60,
        description="How often a worker tells the API replicas its free slots and warm codes.",
    )
    lost_seconds: float = env(
        "WORKER_LOST_SECONDS",
        default=5.0,
        gt=0,
        le=600,
        description="A worker silent this long is lost: the runs handed to it fail with "
        "reason `worker lost` (503); none is handed to another worker, which could run it twice.",
    )
    compile_wait_seconds: float = env(
        "DISPATCH_COMPILE_WAIT_SECONDS",
        default=30.0,
        gt=0,
        description="How long saving a Go code waits for a worker to compile it when none is "
        "alive; then 503.",
    )

    @field_validator("worker_id")
    @classmethod
    def _default_id(cls, value: str) -> str:
        return value or f"{socket.gethostname()}-{os.getpid()}"[:100]
