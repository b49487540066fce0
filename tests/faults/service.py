"""The service as its users run it (`codeactions serve` in its own process), for fault drills, and
the bounded load they drive through keep-alive connections."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN, ADMIN_TOKEN
from tests.faults.processes import free_port

# A code that writes three log lines and takes a little while, so outages land mid-run.
LOGGING_CODE = """
import time
def Run(engine):
    for n in range(3):
        engine.log.info(f"line {n}")
    time.sleep(0.02)
    engine.result.set("ok")
"""
LINES_PER_RUN = 3


class Service:
    """`codeactions serve` with the given settings (environment), started and stopped at will;
    its spool directory outlives restarts."""

    def __init__(
        self, work: Path, env: dict[str, str], *, uid_base: int, cwd: Path | None = None
    ) -> None:
        self.work = work
        self.cwd = cwd  # where it is started from (a checkout); the test's own by default
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "service.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CODEACTIONS_")},
            "CODEACTIONS_PORT": str(self.port),
            "CODEACTIONS_AUTH_TOKEN": ADMIN_TOKEN,
            "CODEACTIONS_SPOOL_DIR": str(work / "spool"),
            "CODEACTIONS_RUNNER_SLOTS": "3",
            "CODEACTIONS_RUNNER_NODE_SPARES": "0",
            "CODEACTIONS_RUNNER_NODE_WARM_WORKERS": "0",
            "CODEACTIONS_RUNNER_UID_BASE": str(uid_base),
            "CODEACTIONS_RUNNER_WORK_DIR": str(work / "runner"),
            "CODEACTIONS_CLEANER_ENABLED": "false",
            "CODEACTIONS_LOG_JSON": "true",
            "CODEACTIONS_SHUTDOWN_GRACE_SECONDS": "10",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from codeactions.cli import app; app()", "serve"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.cwd,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited at start:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code in (200, 503):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the service did not answer in {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM: in-flight runs drain, the service exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: nothing gets to finish."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def create_code(self, source: str = LOGGING_CODE) -> str:
        response = httpx.post(
            f"{self.url}/code",
            params={
                "project_uuid": "drill",
                "name": "drill",
                "language": "python",
                "type": "endpoint",
            },
            content=source,
            headers=ADMIN,
            timeout=60,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, headers=ADMIN, timeout=30)


@dataclass
class Load:
    """Clients calling a code over keep-alive connections until stopped."""

    url: str
    clients: int = 4
    method: str = "POST"
    answers: list[tuple[int, str, float]] = field(default_factory=list)  # status, run id, seconds
    retry_after_missing: int = 0
    connection_errors: list[str] = field(default_factory=list)
    new_connections: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _client(self) -> None:
        with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=1)) as client:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    response = client.request(self.method, self.url, headers=ADMIN)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.connection_errors.append(f"{type(exc).__name__}: {exc}")
                    time.sleep(0.05)
                    continue
                seconds = time.monotonic() - began
                with self._lock:
                    self.answers.append(
                        (response.status_code, response.headers.get("x-run-id", ""), seconds)
                    )
                    if response.status_code == 503 and "retry-after" not in response.headers:
                        self.retry_after_missing += 1
                if response.status_code != 200:
                    time.sleep(0.05)

    def statuses(self) -> Counter[int]:
        return Counter(status for status, _, _ in self.answers)

    def answered(self) -> list[str]:
        """Run ids of the runs answered 200."""
        return [run_id for status, run_id, _ in self.answers if status == 200]

    def during(self, count: int) -> None:
        """Wait until `count` more answers came."""
        target = len(self.answers) + count
        deadline = time.monotonic() + 60
        while len(self.answers) < target and time.monotonic() < deadline:
            time.sleep(0.02)
