"""An API replica under `rabbitmq` dispatch and real `codeactions worker` processes, each in its
own process group (killed whole, as a container dies), on the local RabbitMQ and PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN, need_service
from tests.faults.processes import free_port
from tests.faults.service import Service

RABBITMQ_URL = os.environ.get("CODEACTIONS_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("CODEACTIONS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Sandbox uids of the workers of these tests: 59000, 59200, ... (one range per worker).
UID_BASE = 59000
HEARTBEAT = "0.3"
LOST_AFTER = "2.5"


class WorkerProcess:
    """`codeactions worker` with its own uid range, work dir and probe port."""

    def __init__(self, work: Path, env: dict[str, str], *, name: str, uid_base: int) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / f"{name}.log"
        self.env = {
            **env,
            "CODEACTIONS_WORKER_ID": name,
            "CODEACTIONS_WORKER_PORT": str(self.port),
            "CODEACTIONS_RUNNER_UID_BASE": str(uid_base),
            "CODEACTIONS_RUNNER_WORK_DIR": str(work / name),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from codeactions.cli import app; app()", "worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited at start:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} not ready in {timeout} s:\n{self.log_tail()}")

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL of its whole process group: the worker, its supervisor, its sandboxes."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
        pattern = (
            rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? (\S+)$"
            if wanted
            else (rf"^{re.escape(name)} (\S+)$")
        )
        found = re.search(pattern, text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Stack:
    """One API replica and the workers a test starts; everything stopped at the end."""

    def __init__(self, work: Path, database_url: str, api_env: dict[str, str]) -> None:
        self.work = work
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.common = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CODEACTIONS_")},
            "CODEACTIONS_RABBITMQ_URL": RABBITMQ_URL,
            "CODEACTIONS_DISPATCH_PREFIX": self.prefix,
            "CODEACTIONS_WORKER_HEARTBEAT_SECONDS": HEARTBEAT,
            "CODEACTIONS_WORKER_LOST_SECONDS": LOST_AFTER,
            "CODEACTIONS_RUNNER_SLOTS": "2",
            "CODEACTIONS_RUNNER_NODE_SPARES": "1",
            "CODEACTIONS_RUNNER_NODE_WARM_WORKERS": "0",
            "CODEACTIONS_SHUTDOWN_GRACE_SECONDS": "20",
            "CODEACTIONS_LOG_JSON": "true",
        }
        self.api_env = {
            **{k: v for k, v in self.common.items() if k.startswith("CODEACTIONS_")},
            "CODEACTIONS_DATABASE_URL": database_url,
            "CODEACTIONS_RUNNER_DISPATCH": "rabbitmq",
            **api_env,
        }
        self.replicas: list[Service] = []
        self.api = self.replica()
        self.workers: list[WorkerProcess] = []

    def replica(self) -> Service:
        """One more API replica (not started), on the same database and broker."""
        work = self.work / f"api{len(self.replicas)}"
        work.mkdir(exist_ok=True)
        # The uid base is never used: an API replica under dispatch runs nothing.
        replica = Service(work, self.api_env, uid_base=UID_BASE - 500)
        self.replicas.append(replica)
        return replica

    def worker(self, **env: str) -> WorkerProcess:
        index = len(self.workers)
        worker = WorkerProcess(
            self.work,
            {**self.common, **env},
            name=f"w{index}-{self.prefix}",
            uid_base=UID_BASE + 200 * index,
        )
        self.workers.append(worker)
        return worker.start()

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        for replica in self.replicas:
            replica.kill()

    def create_code(self, source: str, *, language: str = "python", project: str = "p1") -> str:
        response = httpx.post(
            f"{self.api.url}/code",
            params={"project_uuid": project, "name": "c", "language": language, "type": "endpoint"},
            content=source,
            headers=ADMIN,
            timeout=120,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def call(self, code_id: str, timeout: float = 60, **params: str) -> httpx.Response:
        return httpx.get(f"{self.api.url}/endpoint/{code_id}", params=params, timeout=timeout)

    def workers_seen(self) -> int:
        """How many workers the API replica takes runs to, by its /metrics."""
        text = httpx.get(f"{self.api.url}/metrics", timeout=5).text
        found = re.search(r"^codeactions_dispatch_workers (\S+)$", text, re.MULTILINE)
        return int(float(found.group(1))) if found else 0

    def wait_for_workers(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.workers_seen() != count:
            assert time.monotonic() < deadline, f"the API sees {self.workers_seen()} workers"
            time.sleep(0.1)


StartStack = Callable[..., Stack]


@pytest.fixture
def start_stack(tmp_path: Path, postgresql_url: str) -> Iterator[StartStack]:
    need_service("RabbitMQ", "127.0.0.1", 5672)
    stacks: list[Stack] = []

    def start(**api_env: str) -> Stack:
        stack = Stack(tmp_path, postgresql_url, api_env)
        stacks.append(stack)
        stack.api.start()
        return stack

    yield start
    for stack in stacks:
        stack.close()
