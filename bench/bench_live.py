"""The live channel (WebSocket `/web`): log-line latency, project fan-out, memory per connection.

Usage: .venv/bin/python bench/bench_live.py [--lines 200] [--connections 1000] [--runs 200]

Starts `codeactions serve` in a subprocess (temporary SQLite database, the sandbox runner on uid
base 69000, the static token, the per-principal connection and message limits raised) and, from
this process, over real WebSockets (the `websockets` asyncio client):

1. one run of a Python code that logs `time.time()` every 20 ms, followed on the socket that
   started it (pkg 5) and on a second one (pkg 8): receive time minus logged time per line;
2. the server's RSS before and after opening idle authenticated connections (and once they
   follow a project), per connection;
3. one `code.saved` event fanned out to every connection following the project (pkg 9): from
   just before `POST /code` until each follower received it, and the server's CPU time per
   event (/proc/<pid>/stat); once more with a big source (--big-kib); then `POST /run` of a
   trivial code of the followed project (each run sends run.started and run.finished to all);
4. a trivial run over pkg 5 (until its `run` event) against `POST /run/<id>`, alternating.

The clients run in this process, the server in its own; both share this machine's CPUs, so the
fan-out figures include the time this one client process takes to read every frame.
`--compression none`: the clients do not offer permessage-deflate (browsers do).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from codeactions.runner.host.runs import LIVE_FLUSH_SECONDS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import TOKEN, Server, free_port

UID_BASE = 69000
RUN_PROJECT = "5b1d6c1e-0000-4000-8000-0000000000a1"
FANOUT_PROJECT = "5b1d6c1e-0000-4000-8000-0000000000a2"
TRIVIAL = 'def Run(engine):\n    engine.result.set("ok")\n'
WAIT = 30.0
TICKS = os.sysconf("SC_CLK_TCK")
COMPRESSION: str | None = "deflate"  # what the clients offer; --compression none: nothing


def logging_source(lines: int, spacing: float) -> str:
    return (
        "import time\n\n\n"
        "def Run(engine):\n"
        f"    for _ in range({lines}):\n"
        "        engine.log.info(repr(time.time()))\n"
        f"        time.sleep({spacing})\n"
        '    engine.result.set("ok")\n'
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def summary(values_ms: list[float]) -> str:
    return (
        f"n={len(values_ms):<5} p50={statistics.median(values_ms):8.2f} ms  "
        f"p99={percentile(values_ms, 0.99):8.2f} ms  max={max(values_ms):8.2f} ms"
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_ms(pid: int) -> float:
    """User + system CPU time of a process so far (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICKS


@dataclass
class Socket:
    """A /web client whose frames are read as they come, each stamped with its arrival time."""

    ws: ClientConnection
    frames: dict[str, asyncio.Queue[tuple[float, dict[str, Any]]]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str) -> Socket:
        ws = await connect(
            url, max_size=None, ping_interval=None, open_timeout=WAIT, compression=COMPRESSION
        )
        socket = cls(ws)
        socket.reader = asyncio.create_task(socket._read())
        return socket

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                arrived = time.time()
                message = json.loads(raw)
                self.queue(message["req_id"]).put_nowait((arrived, message))
        except websockets.ConnectionClosed:
            pass

    def queue(self, req_id: str) -> asyncio.Queue[tuple[float, dict[str, Any]]]:
        return self.frames.setdefault(req_id, asyncio.Queue())

    async def send(self, pkg_id: int, data: dict[str, Any]) -> str:
        req_id = uuid.uuid4().hex
        await self.ws.send(json.dumps({"pkg_id": pkg_id, "req_id": req_id, "data": data}))
        return req_id

    async def next(self, req_id: str) -> tuple[float, dict[str, Any]]:
        async with asyncio.timeout(WAIT):
            arrived, message = await self.queue(req_id).get()
        if message["status_code"] != 0:
            raise RuntimeError(f"frame with status {message['status_code']}: {message}")
        return arrived, message

    async def close(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            await self.reader


async def create_code(client: httpx.AsyncClient, project: str, name: str, source: str) -> str:
    params = {"project_uuid": project, "name": name, "language": "python", "type": "endpoint"}
    response = await client.post("/code", params=params, content=source)
    if response.status_code != 201:
        raise RuntimeError(f"POST /code answered {response.status_code}: {response.text}")
    code_id: str = response.json()["id"]
    return code_id


async def log_latency(url: str, client: httpx.AsyncClient, lines: int, spacing: float) -> None:
    code_id = await create_code(
        client, RUN_PROJECT, "bench log lines", logging_source(lines, spacing)
    )
    runner, follower = await Socket.open(url), await Socket.open(url)
    try:
        sent = time.time()
        run_req = await runner.send(5, {"id": code_id})
        answered, answer = await runner.next(run_req)
        run_id = answer["data"]["run_id"]
        follow_req = await follower.send(8, {"run_id": run_id})
        follow_answered, _ = await follower.next(follow_req)

        async def events(socket: Socket, req_id: str) -> tuple[list[tuple[float, float]], float]:
            """(logged, received) per line, and when the `run` event came."""
            found = []
            while True:
                arrived, message = await socket.next(req_id)
                event = message["data"]
                if event["event"] == "log":
                    found.append((float(event["content"]), arrived))
                elif event["event"] == "run":
                    if event["run"]["status"] != "completed":
                        raise RuntimeError(f"the run did not complete: {event['run']}")
                    return found, arrived
                else:
                    raise RuntimeError(f"unexpected event {event}")

        (by_pkg5, run_at), (by_pkg8, run_at8) = await asyncio.gather(
            events(runner, run_req), events(follower, follow_req)
        )
    finally:
        await runner.close()
        await follower.close()
    if len(by_pkg5) != lines:
        raise RuntimeError(f"pkg 5 received {len(by_pkg5)} of {lines} lines")
    print(f"\n1. engine.log -> follower: {lines} lines {spacing * 1000:.0f} ms apart in one run")
    print(
        f"   (the supervisor sends a run's new lines {LIVE_FLUSH_SECONDS * 1000:.0f} ms after "
        "the first of them: that wait is part of every figure below)"
    )
    print(f"   pkg 5 answered {{run_id}} after {(answered - sent) * 1000:.1f} ms")
    latencies = [(received - logged) * 1000 for logged, received in by_pkg5]
    print(f"   pkg 5 (same socket)        {summary(latencies)}")
    # Lines logged before pkg 8 was answered may come from the backlog, not live: left out.
    live8 = [(r - lg) * 1000 for lg, r in by_pkg8 if lg > follow_answered]
    print(
        f"   pkg 8 (second socket)      {summary(live8)}"
        f"  (left out: {len(by_pkg8) - len(live8)} logged before pkg 8 was answered)"
    )
    first_logged, first_received = by_pkg5[0]
    last_logged, last_received = by_pkg5[-1]
    print(
        f"   first line: logged {(first_logged - sent) * 1000:.1f} ms after pkg 5 was sent, "
        f"received {(first_received - first_logged) * 1000:.1f} ms after it was logged, "
        f"{(run_at - first_received) * 1000:.0f} ms before the run event"
    )
    print(
        f"   last line: received {(last_received - last_logged) * 1000:.1f} ms after logged, "
        f"{(run_at - last_received) * 1000:.1f} ms before the run event "
        f"(pkg 8: {(run_at8 - by_pkg8[-1][1]) * 1000:.1f} ms)"
    )


async def run_latency(url: str, client: httpx.AsyncClient, runs: int) -> None:
    code_id = await create_code(client, RUN_PROJECT, "bench trivial", TRIVIAL)
    socket = await Socket.open(url)
    over_ws: list[float] = []
    answered_ws: list[float] = []
    over_http: list[float] = []

    async def by_pkg5() -> None:
        started = time.time()
        req_id = await socket.send(5, {"id": code_id})
        answered, _ = await socket.next(req_id)
        while True:
            arrived, message = await socket.next(req_id)
            if message["data"]["event"] == "run":
                break
        if message["data"]["run"]["status"] != "completed":
            raise RuntimeError(f"pkg 5 run failed: {message}")
        answered_ws.append((answered - started) * 1000)
        over_ws.append((arrived - started) * 1000)

    async def by_http() -> None:
        started = time.time()
        response = await client.post(f"/run/{code_id}")
        if response.status_code != 200:
            raise RuntimeError(f"POST /run answered {response.status_code}: {response.text}")
        over_http.append((time.time() - started) * 1000)

    try:
        for _ in range(20):  # warm worker, caches
            await by_pkg5()
            await by_http()
        over_ws.clear()
        answered_ws.clear()
        over_http.clear()
        for index in range(runs):  # alternating, so both see the same noise
            for call in (by_pkg5, by_http) if index % 2 else (by_http, by_pkg5):
                await call()
    finally:
        await socket.close()
    print(f"\n4. a trivial Python run, {runs} of each, alternating, one client")
    for name, values in (
        ("pkg 5, until the run event", over_ws),
        ("pkg 5, until {run_id}", answered_ws),
        ("POST /run/<id>", over_http),
    ):
        print(
            f"   {name:<28} median={statistics.median(values):6.2f} ms  "
            f"p90={percentile(values, 0.9):6.2f} ms"
        )


async def open_many(url: str, count: int, at_once: int = 50) -> list[Socket]:
    gate = asyncio.Semaphore(at_once)

    async def one() -> Socket:
        async with gate:
            return await Socket.open(url)

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    sockets = [s for s in results if isinstance(s, Socket)]
    failures = [r for r in results if not isinstance(r, Socket)]
    if failures:
        await close_all(sockets)
        raise RuntimeError(f"{len(failures)} of {count} connections failed: {failures[0]!r}")
    return sockets


async def close_all(sockets: list[Socket]) -> None:
    gate = asyncio.Semaphore(100)

    async def one(socket: Socket) -> None:
        async with gate:
            await socket.close()

    try:
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*(one(s) for s in sockets), return_exceptions=True)
    except TimeoutError:
        print("   (closing the connections timed out)")


@dataclass
class Fanout:
    answered_ms: float  # POST /code's answer
    arrivals_ms: list[float]  # per follower, from just before the request
    server_cpu_ms: float
    client_cpu_ms: float


async def fan_out(
    client: httpx.AsyncClient,
    sockets: list[Socket],
    follow_reqs: list[str],
    server_pid: int,
    name: str,
    source: str,
) -> Fanout:
    """Create a code in the followed project; every follower's `code.saved` arrival."""
    waiters = [asyncio.ensure_future(s.next(r)) for s, r in zip(sockets, follow_reqs, strict=True)]
    await asyncio.sleep(0)
    server_before, client_before = cpu_ms(server_pid), time.process_time()
    started_at = time.time()
    code_id = await create_code(client, FANOUT_PROJECT, name, source)
    answered = time.time()
    frames = await asyncio.gather(*waiters)
    server_cpu = cpu_ms(server_pid) - server_before
    client_cpu = (time.process_time() - client_before) * 1000
    arrivals = []
    for arrived, message in frames:
        event = message["data"]
        if event["event"] != "code.saved" or event["code"]["id"] != code_id:
            raise RuntimeError(f"unexpected event {event}")
        arrivals.append((arrived - started_at) * 1000)
    return Fanout((answered - started_at) * 1000, arrivals, server_cpu, client_cpu)


async def post_runs(client: httpx.AsyncClient, code_id: str, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.time()
        response = await client.post(f"/run/{code_id}")
        if response.status_code != 200:
            raise RuntimeError(f"POST /run answered {response.status_code}: {response.text}")
        latencies.append((time.time() - started) * 1000)
    return latencies


async def connections_and_fanout(
    url: str, client: httpx.AsyncClient, server_pid: int, count: int, rounds: int, big_kib: int
) -> None:
    unfollowed = []
    for index in range(rounds):  # the same request with nobody following
        started_at = time.time()
        await create_code(client, FANOUT_PROJECT, f"no followers {index}", TRIVIAL)
        unfollowed.append((time.time() - started_at) * 1000)
    big_source = TRIVIAL + "# " + "x" * (big_kib * 1024) + "\n"
    started_at = time.time()
    await create_code(client, FANOUT_PROJECT, "no followers, big", big_source)
    big_unfollowed = (time.time() - started_at) * 1000
    project_code = await create_code(client, FANOUT_PROJECT, "run while followed", TRIVIAL)
    await post_runs(client, project_code, 20)  # warm
    runs_unfollowed = await post_runs(client, project_code, 40)

    warm = await open_many(url, 20)  # warm up the paths a connection takes
    extensions = [type(e).__name__ for e in warm[0].ws.protocol.extensions]
    await close_all(warm)
    await asyncio.sleep(1)
    before = rss_kib(server_pid)
    started = time.perf_counter()
    sockets = await open_many(url, count)
    opened_in = time.perf_counter() - started
    try:
        await asyncio.sleep(1)  # a refused connection would have been closed (1008) by now
        refused = sum(1 for s in sockets if s.ws.state is not State.OPEN)
        if refused:
            raise RuntimeError(f"{refused} of {count} connections were closed by the server")
        idle = rss_kib(server_pid)
        follow_reqs = [await s.send(9, {"project_uuid": FANOUT_PROJECT}) for s in sockets]
        await asyncio.gather(*(s.next(r) for s, r in zip(sockets, follow_reqs, strict=True)))
        await asyncio.sleep(0.5)
        following = rss_kib(server_pid)
        print(f"\n2. server RSS (VmRSS of the API process, pid {server_pid})")
        print(
            f"   {count} connections opened in {opened_in:.2f} s ({count / opened_in:.0f}/s); "
            f"extensions: {', '.join(extensions) or 'none'}"
        )
        print(
            f"   before: {before / 1024:.1f} MiB, {count} idle connections: {idle / 1024:.1f} MiB"
        )
        print(f"   per idle connection:                   {(idle - before) / count:6.1f} KiB")
        print(
            f"   per connection once following (pkg 9): {(following - before) / count:6.1f} KiB"
            f"  (RSS {following / 1024:.1f} MiB)"
        )

        print(f"\n3. one code.saved event to {count} project followers, {rounds} rounds")
        print("   (clients: this one process, on the same 2 CPUs as the server)")
        print(
            f"   POST /code with no follower: median {statistics.median(unfollowed):.1f} ms "
            f"(of {rounds}); with a {big_kib} KiB source {big_unfollowed:.1f} ms"
        )
        done = []
        for round_number in range(rounds):
            found = await fan_out(
                client, sockets, follow_reqs, server_pid, f"fan-out {round_number}", TRIVIAL
            )
            done.append(found)
            arrivals = found.arrivals_ms
            print(
                f"   round {round_number + 1}: POST /code answered in {found.answered_ms:6.1f} ms;"
                f" arrival p50={statistics.median(arrivals):6.1f} ms"
                f" p99={percentile(arrivals, 0.99):6.1f} ms last={max(arrivals):6.1f} ms"
                f"  (first {min(arrivals):5.1f} ms)"
            )
            await asyncio.sleep(0.5)
        print(f"   all rounds           {summary([a for f in done for a in f.arrivals_ms])}")
        server_cpu = sum(f.server_cpu_ms for f in done) / rounds
        client_cpu = sum(f.client_cpu_ms for f in done) / rounds
        print(
            f"   CPU per event: server {server_cpu:.1f} ms ({server_cpu / count * 1000:.0f} us "
            f"per follower, POST /code included), client {client_cpu:.1f} ms"
        )
        big = await fan_out(client, sockets, follow_reqs, server_pid, "fan-out big", big_source)
        print(
            f"   with a {big_kib} KiB source: POST /code answered in {big.answered_ms:.1f} ms; "
            f"arrival p50={statistics.median(big.arrivals_ms):.1f} ms "
            f"last={max(big.arrivals_ms):.1f} ms; CPU server {big.server_cpu_ms:.0f} ms, "
            f"client {big.client_cpu_ms:.0f} ms"
        )

        # Each run now sends run.started and run.finished to every follower (read by the
        # clients' readers in the background; nothing waits for them).
        await asyncio.sleep(0.5)
        server_before = cpu_ms(server_pid)
        runs_followed = await post_runs(client, project_code, 40)
        server_cpu = (cpu_ms(server_pid) - server_before) / 40
        print("\n3b. POST /run of a trivial code of the project, 40 back to back")
        print(
            f"   nobody following:      median {statistics.median(runs_unfollowed):6.2f} ms  "
            f"p90 {percentile(runs_unfollowed, 0.9):6.2f} ms"
        )
        print(
            f"   {count} following:   median {statistics.median(runs_followed):6.2f} ms  "
            f"p90 {percentile(runs_followed, 0.9):6.2f} ms  (server CPU {server_cpu:.1f} ms "
            "per run: run.started and run.finished to every follower)"
        )
    finally:
        await close_all(sockets)


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="codeactions-bench-live-"))
    server: Server | None = None
    try:
        server = Server(
            workdir,
            free_port(),
            "",
            env={
                "CODEACTIONS_RUNNER_UID_BASE": str(UID_BASE),
                "CODEACTIONS_RUNNER_SLOTS": "4",
                "CODEACTIONS_WS_MAX_CONNECTIONS": str(args.connections * 2 + 100),
                "CODEACTIONS_WS_RATE_LIMIT": "100000000",
            },
        )
        await server.wait_ready()
        await asyncio.sleep(2)  # spares boot in the background: measure the steady state
        print(
            f"server: pid {server.process.pid} (codeactions serve, SQLite, sandbox runner, "
            f"uid base {UID_BASE}); client: websockets {websockets.__version__}"
        )
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        url = f"ws://127.0.0.1:{server.port}/web?token={TOKEN}"
        headers = {"Authorization": f"Token {TOKEN}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
            await log_latency(url, client, args.lines, args.spacing)
            await connections_and_fanout(
                url, client, server.process.pid, args.connections, args.rounds, args.big_kib
            )
            await run_latency(url, client, args.runs)
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    finally:
        if server is not None:
            server.stop()
        if os.environ.get("BENCH_KEEP") == "1":
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def raise_file_limit(needed: int) -> None:
    """This process holds every client socket, the server (which inherits it) every other end."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard > 0 else needed, hard))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200, help="log lines in the one run")
    parser.add_argument("--spacing", type=float, default=0.02, help="seconds between lines")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="fan-out events")
    parser.add_argument("--runs", type=int, default=200, help="trivial runs of each kind")
    parser.add_argument("--big-kib", type=int, default=64, help="source size of the big event")
    parser.add_argument(
        "--compression",
        choices=("deflate", "none"),
        default="deflate",
        help="permessage-deflate offered by the clients (browsers offer it)",
    )
    arguments = parser.parse_args()
    COMPRESSION = None if arguments.compression == "none" else "deflate"
    raise_file_limit(arguments.connections * 2 + 1000)
    asyncio.run(main(arguments))
