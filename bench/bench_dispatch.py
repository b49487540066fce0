"""Runs dispatched to `codeactions worker` processes over RabbitMQ: throughput, affinity, latency.

Starts an API replica under `rabbitmq` dispatch (temporary SQLite database) and 1, 2 and 4
workers (2 slots each), and measures:

1. runs/s of a Python action that sleeps 50 ms, at a client concurrency of 2 x the slots, against
   the ideal (slots x 20/s), with the CPU seconds each part (API, workers, broker) spent per run;
2. the affinity hit rate (the API's `codeactions_dispatch_affinity_total`) over those runs, and
   with 8 codes called round-robin on 2 workers;
3. what dispatch adds to a trivial action: sequential requests to an API running codes itself
   (`local`) and to one handing them to 1 worker, alternated in rounds.

    .venv/bin/python bench/bench_dispatch.py [--requests 400] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import TOKEN, free_port, percentile

ROOT = Path(__file__).resolve().parents[1]
CODEACTIONS = str(ROOT / ".venv" / "bin" / "codeactions")
RUNTIME_PYTHON = ROOT / ".venv-runtime" / "bin" / "python"
RABBITMQ_URL = os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
PROJECT = "5b1d6c1e-0000-4000-8000-000000000002"
SLOTS = 2
# Sandbox uids: one range per worker, and one for the API in `local` mode; clear of the tests'.
WORKER_UID_BASES = (57000, 57200, 57400, 57600)
LOCAL_UID_BASE = 57800

SLEEPY = 'import time\n\n\ndef Run(engine):\n    time.sleep(0.05)\n    engine.result.set("ok")\n'
TRIVIAL = 'def Run(engine):\n    engine.result.set("ok")\n'

STARTED: list[subprocess.Popen[bytes]] = []  # every process this bench started and not stopped


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child in a session of its own."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    STARTED.append(process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to its process group, then SIGKILL to the group and to every descendant left
    (a worker's supervisor and sandboxes run in sessions of their own)."""
    if process not in STARTED:
        return  # stopped already: its group id may be another's by now
    descendants = [pid for pid in processes() if is_under(pid, {process.pid})]
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for pid in descendants:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()
    STARTED.remove(process)


def processes() -> dict[int, tuple[int, int]]:
    """Every process: its parent and the CPU ticks it and its waited-for children used."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the name: state, ppid, ...; utime, stime, cutime, cstime are fields 11..14.
        found[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return found


def is_under(pid: int, roots: set[int], table: dict[int, tuple[int, int]] | None = None) -> bool:
    """Whether `pid` is one of `roots` or descends from one."""
    table = processes() if table is None else table
    while pid > 1 and pid not in roots:
        pid = table.get(pid, (0, 0))[0]
    return pid in roots


def cpu_seconds(roots: set[int]) -> float:
    """User + system CPU of these processes and their descendants (alive, or ended and waited
    for); the sandboxes run in sessions of their own, so a process group would miss them."""
    table = processes()
    ticks = sum(used for pid, (_, used) in table.items() if is_under(pid, roots, table))
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """Busy and total CPU ticks of the whole machine (first line of /proc/stat)."""
    counters = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = counters[3] + counters[4]  # idle, iowait
    return sum(counters) - idle, sum(counters)


def broker_pids() -> set[int]:
    """The local RabbitMQ's Erlang VM (to read its CPU time; it is not ours to stop)."""
    found = set()
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and Path(entry.path, "comm").read_text().strip() == "beam.smp":
                found.add(int(entry.name))
        except OSError:
            continue
    return found


class Api:
    """`codeactions serve` on a temporary SQLite database, in `local` or `rabbitmq` dispatch."""

    def __init__(self, work: Path, common: dict[str, str], mode: str) -> None:
        work.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / "api.log"
        env = {
            **common,
            "CODEACTIONS_RUNNER_DISPATCH": mode,
            "CODEACTIONS_HOST": "127.0.0.1",
            "CODEACTIONS_PORT": str(self.port),
            "CODEACTIONS_DATABASE_URL": f"sqlite:///{work / 'bench.db'}",
            "CODEACTIONS_AUTH_TOKEN": TOKEN,
            "CODEACTIONS_SPOOL_DIR": str(work / "spool"),
            "CODEACTIONS_RUNNER_WORK_DIR": str(work / "runner"),
            # Unused under dispatch (the API runs nothing there).
            "CODEACTIONS_RUNNER_UID_BASE": str(LOCAL_UID_BASE),
            "CODEACTIONS_RATELIMIT_MAX_REQUESTS": "100000000",
            # One project is measured: let it use every slot and queue as deep as the clients.
            "CODEACTIONS_PROJECT_MAX_CONCURRENCY": "64",
            "CODEACTIONS_PROJECT_MAX_QUEUED": "1000",
            "CODEACTIONS_RUNNER_QUEUE_SIZE": "1000",
        }
        if mode == "local":  # default runner settings, as the embedded runner ships
            for name in ("CODEACTIONS_RUNNER_SLOTS", "CODEACTIONS_RUNNER_NODE_SPARES"):
                env.pop(name, None)
        self.process = start([CODEACTIONS, "serve"], env, self.log)

    async def wait_ready(self, client: httpx.AsyncClient, within: float = 90) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API exited with {self.process.returncode}: {self.log}")
            try:
                if (await client.get(f"{self.url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the API did not start in {within} s: {self.log}")

    async def metrics(self, client: httpx.AsyncClient) -> str:
        return (await client.get(f"{self.url}/metrics")).text

    async def wait_for_workers(self, client: httpx.AsyncClient, count: int) -> None:
        deadline = time.monotonic() + 60
        seen = 0.0
        while time.monotonic() < deadline:
            seen = metric(await self.metrics(client), "codeactions_dispatch_workers")
            if seen == count:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the API sees {seen:.0f} workers, not {count}")

    async def create_code(self, client: httpx.AsyncClient, source: str, name: str) -> str:
        response = await client.post(
            f"{self.url}/code",
            params={
                "name": name,
                "language": "python",
                "type": "endpoint",
                "project_uuid": PROJECT,
            },
            content=source,
            headers={"Authorization": f"Token {TOKEN}", "Content-Type": "text/plain"},
        )
        if response.status_code != 201:
            raise RuntimeError(f"creating a code failed: {response.status_code} {response.text}")
        return str(response.json()["id"])


def start_worker(work: Path, common: dict[str, str], index: int) -> subprocess.Popen[bytes]:
    name = f"w{index}"
    env = {
        **common,
        "CODEACTIONS_WORKER_ID": f"{name}-{common['CODEACTIONS_DISPATCH_PREFIX']}",
        "CODEACTIONS_WORKER_PORT": str(free_port()),
        "CODEACTIONS_RUNNER_UID_BASE": str(WORKER_UID_BASES[index]),
        "CODEACTIONS_RUNNER_WORK_DIR": str(work / name),
    }
    return start([CODEACTIONS, "worker"], env, work / f"{name}.log")


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    suffix = rf"\{{{re.escape(wanted)}\}}" if wanted else ""
    found = re.search(rf"^{re.escape(name)}{suffix} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def histogram(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of a histogram, by upper bound."""
    buckets = {}
    for bound, count in re.findall(
        rf'^{re.escape(name)}_bucket\{{le="([^"]+)"\}} (\S+)$', text, re.M
    ):
        buckets[float(bound)] = float(count)
    return buckets


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Prometheus-style estimate (linear within the bucket) from two snapshots' deltas."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank, lower, below = q * counts[-1], 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return float("nan")


@dataclass
class Load:
    count: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


async def drive(call: Callable[[int], Awaitable[bool]], *, count: int, concurrency: int) -> Load:
    """`count` calls from `concurrency` clients; each call gets its sequence number."""
    numbers = iter(range(count))
    latencies: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        for n in numbers:
            began = time.perf_counter()
            ok = await call(n)
            latencies.append((time.perf_counter() - began) * 1000)
            errors += 0 if ok else 1

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return Load(count, errors, time.perf_counter() - began, latencies)


def caller(
    client: httpx.AsyncClient, url: str, codes: list[str]
) -> Callable[[int], Awaitable[bool]]:
    async def call(n: int) -> bool:
        response = await client.get(f"{url}/action/endpoint/{codes[n % len(codes)]}")
        return response.status_code == 200 and response.text == "ok"

    return call


@dataclass
class Stack:
    api: Api
    workers: list[subprocess.Popen[bytes]]

    def pids(self) -> tuple[set[int], set[int]]:
        return {self.api.process.pid}, {w.pid for w in self.workers}

    def stop(self) -> None:
        for process in [*self.workers, self.api.process]:
            stop(process)


def common_env(prefix: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CODEACTIONS_")},
        "CODEACTIONS_RABBITMQ_URL": RABBITMQ_URL,
        "CODEACTIONS_DISPATCH_PREFIX": prefix,
        "CODEACTIONS_RUNNER_SLOTS": str(SLOTS),
        "CODEACTIONS_RUNNER_NODE_SPARES": "0",
        "CODEACTIONS_RUNNER_PYTHON": str(RUNTIME_PYTHON),
        "CODEACTIONS_LOG_LEVEL": "warning",
        "CODEACTIONS_CLEANER_ENABLED": "false",
        "CODEACTIONS_SHUTDOWN_GRACE_SECONDS": "5",
    }


async def start_stack(work: Path, client: httpx.AsyncClient, workers: int) -> Stack:
    """A fresh API replica under `rabbitmq` dispatch and `workers` workers, on their own prefix."""
    common = common_env(f"bench{uuid.uuid4().hex[:10]}")
    stack = Stack(Api(work / "api", common, "rabbitmq"), [])
    stack.workers = [start_worker(work, common, i) for i in range(workers)]
    await stack.api.wait_ready(client)
    await stack.api.wait_for_workers(client, workers)
    return stack


@dataclass
class Phase:
    name: str
    workers: int
    concurrency: int
    load: Load
    hits: float
    misses: float
    cpu: dict[str, float]  # seconds per part
    machine_busy: float  # of all CPUs, from anything on the machine
    dispatch_p50_ms: float
    dispatch_p90_ms: float

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else float("nan")


async def measure_phase(
    name: str,
    stack: Stack,
    client: httpx.AsyncClient,
    codes: list[str],
    *,
    count: int,
    concurrency: int,
) -> Phase:
    call = caller(client, stack.api.url, codes)
    # Warm up: every code run at least twice, every slot in use.
    await drive(call, count=max(2 * concurrency, 2 * len(codes)), concurrency=concurrency)
    api_pids, worker_pids = stack.pids()
    broker = broker_pids()
    before = await stack.api.metrics(client)
    parts = {"api": api_pids, "workers": worker_pids, "broker": broker}
    cpu_before = {part: cpu_seconds(pids) for part, pids in parts.items()}
    client_before, machine_before = time.process_time(), machine_ticks()
    load = await drive(call, count=count, concurrency=concurrency)
    cpu = {part: cpu_seconds(pids) - cpu_before[part] for part, pids in parts.items()}
    cpu["client"] = time.process_time() - client_before
    machine_after = machine_ticks()
    busy = (machine_after[0] - machine_before[0]) / max(1, machine_after[1] - machine_before[1])
    after = await stack.api.metrics(client)
    affinity = "codeactions_dispatch_affinity_total"
    hits = metric(after, affinity, result="hit") - metric(before, affinity, result="hit")
    misses = metric(after, affinity, result="miss") - metric(before, affinity, result="miss")
    dispatch = [
        1000
        * histogram_quantile(
            histogram(before, "codeactions_dispatch_seconds"),
            histogram(after, "codeactions_dispatch_seconds"),
            q,
        )
        for q in (0.5, 0.9)
    ]
    return Phase(name, len(stack.workers), concurrency, load, hits, misses, cpu, busy, *dispatch)


async def bench_throughput(
    work: Path, client: httpx.AsyncClient, worker_counts: list[int], count: int
) -> list[Phase]:
    phases = []
    for workers in worker_counts:
        stack = await start_stack(work / f"throughput-{workers}", client, workers)
        try:
            code = await stack.api.create_code(client, SLEEPY, "sleepy")
            phases.append(
                await measure_phase(
                    "sleep 50 ms, 1 code",
                    stack,
                    client,
                    [code],
                    count=count,
                    concurrency=2 * SLOTS * workers,
                )
            )
            if workers == 2:
                codes = [
                    await stack.api.create_code(client, f"# code {n}\n{SLEEPY}", f"sleepy {n}")
                    for n in range(8)
                ]
                phases.append(
                    await measure_phase(
                        "sleep 50 ms, 8 codes round-robin",
                        stack,
                        client,
                        codes,
                        count=count,
                        concurrency=2 * SLOTS * workers,
                    )
                )
        finally:
            stack.stop()
    return phases


@dataclass
class Latency:
    name: str
    latencies: list[float]
    errors: int
    dispatch_p50_ms: float = float("nan")


async def bench_latency(
    work: Path, client: httpx.AsyncClient, count: int, rounds: int = 6
) -> list[Latency]:
    """Sequential calls of a trivial code, local vs dispatched, alternated round by round."""
    local = Api(work / "local", common_env(f"bench{uuid.uuid4().hex[:10]}"), "local")
    stack: Stack | None = None
    try:
        stack = await start_stack(work / "latency", client, 1)
        await local.wait_ready(client)
        apis = {"local (embedded runner)": local, "rabbitmq, 1 worker": stack.api}
        codes = {
            name: await api.create_code(client, TRIVIAL, "trivial") for name, api in apis.items()
        }
        results = {name: Latency(name, [], 0) for name in apis}
        for name, api in apis.items():  # warm up
            await drive(caller(client, api.url, [codes[name]]), count=20, concurrency=1)
        before = histogram(await stack.api.metrics(client), "codeactions_dispatch_seconds")
        per_round = max(1, count // rounds)
        for _ in range(rounds):
            for name, api in apis.items():
                load = await drive(
                    caller(client, api.url, [codes[name]]), count=per_round, concurrency=1
                )
                results[name].latencies += load.latencies
                results[name].errors += load.errors
        after = histogram(await stack.api.metrics(client), "codeactions_dispatch_seconds")
        results["rabbitmq, 1 worker"].dispatch_p50_ms = (
            histogram_quantile(before, after, 0.5) * 1000
        )
        return list(results.values())
    finally:
        if stack is not None:
            stack.stop()
        stop(local.process)


def print_throughput(phases: list[Phase]) -> None:
    base = next((p.load.per_second for p in phases if p.workers == 1 and "1 code" in p.name), None)
    print(
        "| what | workers | slots | clients | requests | errors | runs/s | ideal | of ideal "
        "| vs 1 worker | p50 ms | p90 ms | affinity hits |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in phases:
        slots = SLOTS * p.workers
        rate = p.load.per_second
        ratio = f"{rate / base:.2f}x" if base else "-"
        print(
            f"| {p.name} | {p.workers} | {slots} | {p.concurrency} | {p.load.count} | "
            f"{p.load.errors} | {rate:.1f} | {slots * 20} | {rate / (slots * 20):.0%} | {ratio} | "
            f"{statistics.median(p.load.latencies):.1f} | "
            f"{percentile(p.load.latencies, 0.9):.1f} | "
            f"{p.hit_rate:.0%} ({p.hits:.0f}/{p.hits + p.misses:.0f}) |"
        )
    print(
        "\nWhere the time goes (slot ms/run: how long each run held a slot, 50 of it asleep; "
        "CPU ms per run of each part; machine busy: all CPUs, other load included):\n"
    )
    print(
        "| what | workers | slot ms/run | dispatch p50 ms | p90 ms | CPU API | workers | broker "
        "| bench client | machine busy |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in phases:
        per_run = {part: 1000 * s / p.load.count for part, s in p.cpu.items()}
        print(
            f"| {p.name} | {p.workers} | {1000 * SLOTS * p.workers / p.load.per_second:.1f} | "
            f"{p.dispatch_p50_ms:.1f} | {p.dispatch_p90_ms:.1f} | "
            f"{per_run['api']:.1f} | {per_run['workers']:.1f} | "
            f"{per_run['broker']:.1f} | {per_run['client']:.1f} | {p.machine_busy:.0%} |"
        )


def print_latency(results: list[Latency]) -> None:
    print(
        "| trivial action, concurrency 1 | requests | errors | p50 ms | p90 ms | dispatch p50 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.name} | {len(r.latencies)} | {r.errors} | "
            f"{statistics.median(r.latencies):.2f} | "
            f"{percentile(r.latencies, 0.9):.2f} | {r.dispatch_p50_ms:.2f} |"
        )
    if len(results) == 2:
        local, remote = results
        p50 = statistics.median(remote.latencies) - statistics.median(local.latencies)
        p90 = percentile(remote.latencies, 0.9) - percentile(local.latencies, 0.9)
        print(f"\ndispatch adds: p50 {p50:+.2f} ms, p90 {p90:+.2f} ms")


async def run(work: Path, worker_counts: list[int], count: int, latency_count: int) -> None:
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n")
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        phases = await bench_throughput(work, client, worker_counts, count)
        print_throughput(phases)
        print()
        print_latency(await bench_latency(work, client, latency_count))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per throughput phase")
    parser.add_argument("--workers", default="1,2,4", help="comma list of worker counts (max 4)")
    parser.add_argument("--latency-requests", type=int, default=300, help="per API, sequential")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if not worker_counts or max(worker_counts) > len(WORKER_UID_BASES) or min(worker_counts) < 1:
        parser.error(f"--workers: between 1 and {len(WORKER_UID_BASES)}")

    # SIGTERM ends the bench like Ctrl-C, so the cleanup below runs.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="codeactions-bench-dispatch-"))
    try:
        asyncio.run(run(work, worker_counts, args.requests, args.latency_requests))
    except KeyboardInterrupt:
        print("interrupted: stopping what was started")
    finally:
        for process in list(reversed(STARTED)):
            stop(process)
        if os.environ.get("BENCH_KEEP") == "1":
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
