"""The real `codeactions serve` process: SIGTERM closes everything and exits 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from tests.conftest import reachable

CLI = Path(sys.executable).parent / "codeactions"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEACTIONS_", "FLOWS_"))}
    env.update(
        CODEACTIONS_DATABASE_URL=f"sqlite:///{tmp_path / 'serve.db'}",
        CODEACTIONS_RUNNER_ENABLED="false",
        CODEACTIONS_RUNNER_WORK_DIR=str(tmp_path / "runner"),
        CODEACTIONS_SPOOL_DIR=str(tmp_path / "spool"),
        CODEACTIONS_LOG_JSON="true",
        CODEACTIONS_SHUTDOWN_GRACE_SECONDS="10",
    )
    return env


def wait_until_live(process: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


def json_messages(output: str) -> list[str]:
    return [json.loads(line).get("message") for line in output.splitlines() if line.startswith("{")]


def test_sigterm_shuts_down_cleanly_and_exits_zero(tmp_path: Path) -> None:
    port = free_port()
    env = base_env(tmp_path)
    tag = f"test-{uuid.uuid4().hex[:10]}"
    with_rabbit = reachable("127.0.0.1", 5672)
    if with_rabbit:  # the consumers must close too
        env.update(
            CODEACTIONS_RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/",
            CODEACTIONS_PROJECT_EXCHANGE=f"{tag}.projects",
            CODEACTIONS_PROJECT_QUEUE=f"{tag}.projects.q",
            CODEACTIONS_PERMISSION_EXCHANGE=f"{tag}.permissions",
            CODEACTIONS_PERMISSION_QUEUE=f"{tag}.permissions.q",
            CODEACTIONS_DEAD_LETTER_EXCHANGE=f"{tag}.dlx",
        )
    process = subprocess.Popen(
        [str(CLI), "serve", "--port", str(port), "--host", "127.0.0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_live(process, port)
        deadline = time.monotonic() + 30
        if with_rabbit:
            while httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "consumers did not start"
                time.sleep(0.2)

        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=15)
        output = process.stdout.read() if process.stdout else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if with_rabbit:
            _cleanup(tag)

    assert returncode == 0, output
    messages = json_messages(output)
    assert "shutdown complete" in messages, output
    if with_rabbit:
        assert "rabbitmq consumers stopped" in messages, output


def _cleanup(tag: str) -> None:
    import asyncio

    import aio_pika

    async def run() -> None:
        connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        async with connection:
            for queue in ("projects.q", "permissions.q", "projects.q.dead", "permissions.q.dead"):
                channel = await connection.channel()
                await channel.queue_delete(f"{tag}.{queue}")
            for exchange in ("projects", "permissions", "dlx"):
                channel = await connection.channel()
                await channel.exchange_delete(f"{tag}.{exchange}")

    asyncio.run(run())


def test_a_request_in_flight_at_sigterm_is_answered_before_exit(tmp_path: Path) -> None:
    # A "database" that accepts connections and never answers makes /health take its full
    # timeout: a request still in flight when SIGTERM arrives.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = free_port()
    env = base_env(tmp_path)
    env.update(
        CODEACTIONS_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/x",
        CODEACTIONS_HEALTH_TIMEOUT_SECONDS="2",
    )
    process = subprocess.Popen(
        [str(CLI), "serve", "--port", str(port), "--host", "127.0.0.1", "--no-migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    result: dict[str, httpx.Response] = {}
    try:
        wait_until_live(process, port)
        slow = threading.Thread(
            target=lambda: result.setdefault(
                "health", httpx.get(f"http://127.0.0.1:{port}/health", timeout=20)
            )
        )
        slow.start()
        time.sleep(0.7)  # the request is in flight
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=15)
        slow.join(timeout=15)
        output = process.stdout.read() if process.stdout else ""
    finally:
        silent.close()
        if process.poll() is None:
            process.kill()
            process.wait()

    assert returncode == 0, output
    assert result["health"].status_code == 503  # answered in full, not cut off
    assert result["health"].json()["services"]["database"]["status"] == "unhealthy"
    assert "shutdown complete" in json_messages(output), output
