"""Runner supervisor: owns the sandbox slots and runs each request in a pre-forked sandboxed child.

Stdlib only, started by the API as `python -I supervisor.py <fd>` with an empty environment.
Talks to the API over the stream socket <fd> in frames of runner/wire.py (a JSON object and a
blob), multiplexed by request id.

  API -> supervisor   {"op": "init", "settings": {...}, "max_log_chars": n}   (first frame)
                      {"op": "run", "id": str, "run": {language, timeout, warm_key, source?}}
                          + blob: the child's request (wire.child_request), never parsed here
                      {"op": "compile", "id": str, "source": str}
  supervisor -> API   {"op": "ready", "status": wire.SupervisorStatus}   (once each language
                          has started or failed to: the first status the API sees is true)
                      {"op": "status", "status": wire.SupervisorStatus}  (a language's changed)
                      {"op": "done", "id": str, "outcome": {...}}
                      {"op": "compiled", "id": str, "error": str|null, "runner_error": str|null}
                      {"op": "warning", "message": str}

Per slot: a uid, a private dir, cgroups (memory, pids, cpu) where the kernel allows, and one
spare child forked by the zygote ahead of demand. A run only hands its request to that spare.

Node slots hold a booted Node process. After a JavaScript run that ended normally (a result or
an ordinary exception) the process stays as the warm worker of that code (code id + sha256 of
the source), Lambda-style: engine.js ends the run with {"t": "done"} instead of exiting, the
supervisor kills every other process of the slot, wipes its temp dirs and hands the next run of
the same code to it. Any other ending (timeout, memory, CPU, output, signal, a run leaving work
behind in the event loop) retires the process: slot killed, dir wiped, a fresh spare booted.
Python children in general slots are kept the same way (python_engine ends a run with
{"t": "done", "keep": bool}; it says no when the run left threads or child processes behind,
exited, or failed with a limit), and also retired when their memory grew too much. The `reuse`
setting turns warm workers off for every language: then each run gets a fresh process.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import json
import math
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

ENGINES_DIR = os.path.dirname(os.path.abspath(__file__))
# `python -I` puts no script dir on the path: our siblings, and runner/ for the wire format.
sys.path[:0] = [ENGINES_DIR, os.path.dirname(ENGINES_DIR)]

import network  # noqa: E402
import wire  # noqa: E402
from linux import (  # noqa: E402
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_REC,
    PR_SET_NO_NEW_PRIVS,
    check,
    entered,
    libc,
    mount,
    read_text,
    write_text,
)

CHILD_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
CLEAN_STEP = 0.002
IDLE_NAP = 0.00002  # a warm worker that said "done" is looked at every IDLE_NAP seconds
IDLE_WAIT_NOW = 0.002  # ... for this long, then by the loop's timers every IDLE_STEP,
IDLE_STEP = 0.001  # ... doubling up to IDLE_STEP_MAX, until it is idle (or the run times out)
IDLE_STEP_MAX = 0.05
# System calls a worker waits in between runs: Python reads its request pipe, Node polls.
SYS_READ = {"x86_64": 0, "aarch64": 63}.get(platform.machine(), -1)
SYS_EPOLL_WAITS = {"x86_64": {"232", "281", "441"}, "aarch64": {"22", "441"}}.get(
    platform.machine(), set()
)
BROKEN_AFTER = 3  # consecutive failed starts after which a language cannot run
BOOT_DELAY_FIRST = 0.1  # back-off after a failed start, doubling up to BOOT_DELAY_MAX
BOOT_DELAY_MAX = 30.0
BOOT_TIMEOUT = 30.0  # a spare not ready by then (sandboxed; a Node spare: its engine booted) failed
BOOT_SETTLE = 30.0  # "ready" goes to the API once every language started or failed, or by then
LANGUAGE_NAMES = {"python": "Python", "javascript": "JavaScript", "go": "Go"}
SANDBOX_GO_DIR = "/run/codeactions-go"
BUILD_CACHE = "/run/codeactions-go-cache"  # where a Go compile job sees the cache
PROC_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC
MB = 1024 * 1024
READ_SIZE = 65536
WARM_IDLE_TTL = 60.0  # an idle warm Node worker is retired after this many seconds
WARM_STOP_AFTER = 0.02  # ... and stopped (SIGSTOP) after this many, until its next run
WARM_MAX_RUNS = 500  # ... and after this many runs
FRESH = "*"  # in _dispatch: Node spares being booted (no warm key is ever "*")
FRESH_GENERAL = "**"  # ... and general spares being forked
# A warm Python worker retires when its RSS grew by this share of memory_mb since its first run
# (which may import libraries), or reaches WARM_RSS_MAX of it: the next run needs room.
WARM_RSS_GROWTH = 0.25
WARM_RSS_MAX = 0.5
CPU_POLL = 0.1  # per-run CPU accounting period when RLIMIT_CPU cannot be lowered from here
NODE_CPU_BUDGET = 3600  # RLIMIT_CPU (seconds) of a Node process over all the runs it serves
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def log(message: str) -> None:
    """Diagnostics for operators go to stderr (the API logs them); never user data."""
    sys.stderr.write(f"codeactions-supervisor: {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- cgroups


class Cgroups:
    """Per-slot cgroups: v1 (memory, pids, cpu hierarchies) or v2 (unified), or none."""

    def __init__(self, slots: int, memory_mb: int, max_processes: int) -> None:
        self.version = "none"
        self.bases: list[str] = []
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.slots = slots
        self.slot_dirs: list[dict[str, str]] = []  # controller -> dir
        self.controllers: list[str] = []
        self.error = ""

    def setup(self) -> None:
        name = f"codeactions-{os.getpid()}"
        try:
            if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
                self._setup_v2(name)
            elif os.path.isdir("/sys/fs/cgroup/memory") or os.path.isdir("/sys/fs/cgroup/pids"):
                self._setup_v1(name)
        except OSError as exc:
            self.error = str(exc)
            self.remove()
            self.version, self.controllers, self.slot_dirs = "none", [], []

    @staticmethod
    def _own_paths() -> dict[str, str]:
        paths = {}
        with open("/proc/self/cgroup") as handle:
            for line in handle:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for controller in controllers.split(","):
                    paths[controller or "unified"] = path
        return paths

    @staticmethod
    def _sweep_stale(parent: str) -> None:
        """Remove cgroups left by supervisors that died without cleaning up."""
        for entry in os.listdir(parent):
            if not entry.startswith("codeactions-"):
                continue
            pid = entry.split("-", 1)[1]
            if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
                continue
            base = os.path.join(parent, entry)
            for slot in sorted(os.listdir(base)) if os.path.isdir(base) else []:
                path = os.path.join(base, slot)
                if os.path.isdir(path):
                    _kill_cgroup(path)
                    with contextlib.suppress(OSError):
                        os.rmdir(path)
            with contextlib.suppress(OSError):
                os.rmdir(base)

    def _setup_v1(self, name: str) -> None:
        own = self._own_paths()
        for controller in ("memory", "pids", "cpu"):
            root = f"/sys/fs/cgroup/{controller}"
            if not os.path.isdir(root) or not os.access(root, os.W_OK):
                continue
            parent = root + own.get(controller, "/").rstrip("/")
            try:
                self._sweep_stale(parent)
                base = os.path.join(parent, name)
                os.makedirs(base, exist_ok=True)
            except OSError:
                continue
            self.bases.append(base)
            self.controllers.append(controller)
            if controller == "cpu":
                # All sandboxes together weigh as much as one ordinary process: a hog or a fork
                # bomb cannot starve the API, and slots share fairly among themselves.
                write_text(os.path.join(base, "cpu.shares"), "1024")
        if not self.controllers:
            return
        self.version = "v1"
        for index in range(self.slots):
            self.add_group(f"slot-{index}", self.memory_mb, self.max_processes)

    def add_group(self, name: str, memory_mb: int, max_processes: int) -> int:
        """A cgroup (in each controller) with these limits; its index for procs_files & co."""
        dirs = {}
        v1 = self.version == "v1"
        places = (
            zip(self.controllers, self.bases, strict=True) if v1 else [("unified", self.bases[0])]
        )
        for controller, base in places:
            path = os.path.join(base, name)
            os.makedirs(path, exist_ok=True)
            dirs[controller] = path
            if controller in ("memory", "unified") and self.has_memory():
                limit = str(memory_mb * MB)
                write_text(
                    os.path.join(path, "memory.limit_in_bytes" if v1 else "memory.max"), limit
                )
                swap = "memory.memsw.limit_in_bytes" if v1 else "memory.swap.max"
                with contextlib.suppress(OSError):
                    write_text(os.path.join(path, swap), limit if v1 else "0")
                if v1:
                    with contextlib.suppress(OSError):
                        write_text(os.path.join(path, "memory.swappiness"), "0")
            if controller in ("pids", "unified") and "pids" in self.controllers:
                write_text(os.path.join(path, "pids.max"), str(max_processes))
            if controller == "cpu":
                write_text(os.path.join(path, "cpu.shares"), "1024")
        self.slot_dirs.append(dirs)
        return len(self.slot_dirs) - 1

    def _setup_v2(self, name: str) -> None:
        own = self._own_paths().get("unified", "/")
        parent = "/sys/fs/cgroup" + own.rstrip("/")
        # A v2 cgroup with processes cannot delegate controllers ("no internal processes"):
        # create a sibling tree under our parent when ours is not the root.
        if own != "/":
            parent = os.path.dirname(parent)
        self._sweep_stale(parent)
        base = os.path.join(parent, name)
        os.makedirs(base, exist_ok=True)
        self.bases.append(base)
        available = read_text(os.path.join(base, "cgroup.controllers")).split()
        wanted = [c for c in ("memory", "pids", "cpu") if c in available]
        if wanted:
            write_text(
                os.path.join(base, "cgroup.subtree_control"), " ".join("+" + c for c in wanted)
            )
        self.controllers = wanted
        self.version = "v2"
        for index in range(self.slots):
            self.add_group(f"slot-{index}", self.memory_mb, self.max_processes)

    # What the child writes its pid into while still root.
    def procs_files(self, index: int) -> list[str]:
        if self.version == "none":
            return []
        return [os.path.join(path, "cgroup.procs") for path in self.slot_dirs[index].values()]

    def has_memory(self) -> bool:
        return "memory" in self.controllers

    def has_any(self) -> bool:
        return bool(self.slot_dirs)

    def pids(self, index: int) -> set[int]:
        found: set[int] = set()
        for path in self.slot_dirs[index].values():
            found |= _cgroup_pids(path)
        return found

    def oom_kills(self, index: int) -> int:
        if not self.has_memory():
            return 0
        dirs = self.slot_dirs[index]
        if self.version == "v1":
            text = read_text(os.path.join(dirs["memory"], "memory.oom_control"))
        else:
            text = read_text(os.path.join(dirs["unified"], "memory.events"))
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        for dirs in self.slot_dirs:
            for path in dirs.values():
                _kill_cgroup(path)
                with contextlib.suppress(OSError):
                    os.rmdir(path)
        for base in self.bases:
            with contextlib.suppress(OSError):
                os.rmdir(base)


def _cgroup_pids(path: str) -> set[int]:
    try:
        return {int(line) for line in read_text(os.path.join(path, "cgroup.procs")).split()}
    except OSError:
        return set()


def _kill_cgroup(path: str) -> None:
    for _ in range(200):
        pids = _cgroup_pids(path)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


def _chown_tree(top: str, uid: int) -> None:
    """Give `top` and everything under it to `uid` (skipping what it owns already)."""
    for root, dirs, files in os.walk(top):
        for name in [root, *(os.path.join(root, entry) for entry in dirs + files)]:
            with contextlib.suppress(OSError):
                if os.lstat(name).st_uid != uid:
                    os.lchown(name, uid, uid)


def _uid_pids(uid: int) -> set[int]:
    """Processes whose real uid is `uid` (the fallback when there is no cgroup to ask)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                for line in handle:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            found.add(int(entry))
                        break
        except (OSError, ValueError, IndexError):
            continue
    return found


def probe_namespaces() -> tuple[bool, bool, bool, bool]:
    """What a child may do, tried in throwaway forks: (mount ns, network ns, private /proc,
    IPC and cgroup ns)."""

    def private_proc() -> bool:
        return (
            libc.unshare(CLONE_NEWNS) == 0
            and libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0
            and libc.mount(b"proc", b"/proc", b"proc", PROC_FLAGS, b"hidepid=invisible") == 0
        )

    probes: list[Callable[[], bool]] = [
        lambda: libc.unshare(CLONE_NEWNS) == 0,
        lambda: libc.unshare(CLONE_NEWNET) == 0,
        private_proc,
        lambda: libc.unshare(CLONE_NEWIPC | CLONE_NEWCGROUP) == 0,
    ]
    results = []
    for probe in probes:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if probe() else 1)
        _, status = os.waitpid(pid, 0)
        results.append(os.waitstatus_to_exitcode(status) == 0)
    return results[0], results[1], results[2], results[3]


# --------------------------------------------------------------------------- runs


class Child:
    def __init__(self, pid: int, kind: str, fds: list[int]) -> None:
        self.pid = pid
        self.kind = kind
        self.stdin, self.stdout, self.stderr, self.proto = fds
        self.exit_status: int | None = None
        self.cpu = 0.0
        self.warm = False  # serves several runs: its stdin stays open between them
        self.rss_base = 0  # resident bytes after its first run (a warm Python worker)
        self.stopped = False  # SIGSTOPped while it waits, warm, for the next run of its code
        # How /proc names its request pipe (the one whose write end we hold as `stdin`).
        self.request_pipe = f"pipe:[{os.fstat(self.stdin).st_ino}]" if self.stdin >= 0 else ""
        self.proc_fds: tuple[int, int] | None = None  # its /proc syscall and stat, kept open
        self.boot = bytearray()  # what a spare said on its protocol fd before it was ready
        self.boot_timer: list[Any] | None = None


class Run:
    def __init__(self, run_id: str, meta: dict[str, Any], payload: bytes) -> None:
        self.id = run_id
        self.payload = payload  # what the child reads on stdin (wire.child_request)
        self.language = meta.get("language", "python")
        self.timeout = float(meta.get("timeout") or 60)
        self.source = str(meta.get("source", ""))  # Go only: compiled here, not sent to the child
        # code id + source hash: which warm worker may run it (JavaScript and Python)
        self.warm_key = str(meta.get("warm_key", "")) if self.language != "go" else ""
        # A program's stdout is its result (text), as the original ran codes: a Go `main`, or
        # JavaScript without Run (engine.js says {"t": "script"} once it knows, so its raw stdout
        # is kept until then, and the log lines made of it are dropped if it is one).
        self.program = False
        self.stdout: bytearray | None = bytearray() if self.language == "javascript" else None
        self.stdout_logs: list[list[Any]] = []
        self.argv: list[str] | None = None  # exec'd program (Go binary, or Node without a spare)
        self.slot: Slot | None = None
        self.child: Child | None = None
        self.started = 0.0
        self.logs: list[list[Any]] = []
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.reason: str | None = None
        self.reason_message = ""
        self.output = 0
        self.buffers: dict[int, bytearray] = {}
        self.pending_stdin = memoryview(b"")
        self.oom_before = 0
        self.timer: list[Any] | None = None
        self.finished = False
        self.done_code: int | None = None  # the child said it is done (before its exit)
        self.done_checking = False  # ... and we wait to see it idle (a warm worker)
        self.done_keep = False  # ... and that its process may serve another run
        self.cpu_base = 0.0  # CPU seconds the child had used before this run
        self.engine_ready = False  # Node started for this run (no spare): its engine booted


class Slot:
    def __init__(self, index: int, uid: int, directory: str, kind: str) -> None:
        self.index = index
        self.uid = uid
        self.dir = directory
        self.kind = kind  # "general" (Python, exec) or "node" (a booted Node spare)
        self.state = "new"  # spawning | starting | ready | busy | cleaning | parked
        self.child: Child | None = None
        self.run: Run | None = None
        self.clean_deadline = 0.0
        self.cleaning = False
        # A warm Node worker (state "warm" when idle, "recycling" while cleaned between runs).
        self.warm_key = ""
        self.warm_runs = 0
        self.warm_used = 0.0


class Boot:
    """The starts of one kind of sandbox (or of a toolchain), and their back-off.

    After a failed start the next waits BOOT_DELAY_FIRST, doubling up to BOOT_DELAY_MAX, and no
    more once a start works. Failures within one step count once (every slot of a kind failing
    together is one failure): one log line per step, not per attempt, and no spinning.
    """

    def __init__(self, key: str, what: str) -> None:
        self.key = key
        self.what = what
        self.failures = 0
        self.error = ""
        self.certain = False  # the last failure is something missing for sure (a program)
        self.retry_at = 0.0
        self.timer: list[Any] | None = None  # the pending Supervisor._retry
        self.started = False  # a start worked since the supervisor started

    def ready(self) -> bool:
        return self.failures < BROKEN_AFTER

    def waiting(self) -> bool:
        """In a back-off step: nothing is tried until it ends."""
        return self.failures > 0 and time.monotonic() < self.retry_at

    def failed(self, error: str, certain: bool) -> bool:
        """Count a failed start; False when this step already counted one."""
        if self.waiting():
            return False
        self.failures = max(self.failures + 1, BROKEN_AFTER if certain else 0)
        self.error, self.certain = error, certain
        delay = min(BOOT_DELAY_MAX, BOOT_DELAY_FIRST * 2 ** min(self.failures - 1, 16))
        self.retry_at = time.monotonic() + delay
        log(f"{self.what} failed to start ({self.failures} in a row): {error}; next in {delay:g} s")
        return True

    def worked(self) -> bool:
        """A start worked; True when that ends a run of failures."""
        self.started = True
        if not self.failures:
            return False
        log(f"{self.what} started again after {self.failures} failed starts")
        self.failures, self.error, self.certain, self.retry_at = 0, "", False, 0.0
        return True

    def describe(self) -> str:
        return f"{self.what} cannot start: {self.error}"


class Supervisor:
    def __init__(self, sock: socket.socket) -> None:
        self.api = sock
        self.api.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.api_in = wire.FrameReader()
        self.api_out = bytearray()
        self.timers: list[list[Any]] = []
        self.counter = itertools.count()
        self.slots: list[Slot] = []
        self.pending: deque[Run] = deque()
        self.running = 0
        self.fd_owner: dict[int, tuple[Run, str]] = {}
        self.pid_slot: dict[int, Slot] = {}
        self.go_cache: dict[str, str] = {}
        self.go_jobs: dict[str, list[Callable[[str | None, str | None], None]]] = {}
        self.go_waiting: deque[tuple[str, str]] = deque()  # compiles waiting for a builder
        self.go_builders: list[int] = []  # free build cgroups (-1: none, limits only)
        self.go_touched: dict[str, float] = {}
        self.zygote: subprocess.Popen[bytes] | None = None
        self.zsock: socket.socket | None = None
        self.status: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.engines_dir = ENGINES_DIR  # until start() copies them where sandboxes can read
        self.boots = {
            "zygote": Boot("zygote", "the zygote"),
            "python": Boot("python", "Python sandboxes"),
            "javascript": Boot("javascript", "Node.js"),
            "go": Boot("go", "the Go toolchain"),
        }
        self.node_slots = False
        self.announced = False  # "ready" sent
        self.reported: dict[str, tuple[bool, str, int]] = {}  # languages as last sent
        self.owner_filter: network.OwnerFilter | None = None
        self.slot_networks: network.SlotNetworks | None = None

    # ---------------------------------------------------------------- start

    def start(self, init: dict[str, Any]) -> None:
        s = init["settings"]
        self.s = s
        self.max_log_chars = int(init.get("max_log_chars", 8000))
        self.root = os.geteuid() == 0
        self.reuse = bool(s.get("reuse", True))
        ca_file = s.get("ca_file") or ""
        if ca_file and os.path.isfile(ca_file):
            # Public CA certificates, not secrets: HTTPS from user code behind a custom CA.
            for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
                CHILD_ENV[name] = ca_file
        node_spares = int(s["node_spares"]) if self.root and not self._missing("javascript") else 0
        self.node_slots = node_spares > 0
        if node_spares and self.reuse:
            node_spares += int(s.get("node_warm_workers", 0))
        total = int(s["slots"]) + node_spares
        self.capacity = int(s["slots"])
        work = os.path.abspath(s["work_dir"])
        os.makedirs(work, exist_ok=True)
        os.chmod(work, 0o711)
        self.go_cache_dir = os.path.join(work, "go-cache")
        # Binaries land in <cache>/bin (runner/engines/golang.py); sandboxes see that dir
        # at SANDBOX_GO_DIR, also when the work dir is hidden under their private /tmp.
        self.go_bin_dir = os.path.join(self.go_cache_dir, "bin")
        for path in (self.go_cache_dir, self.go_bin_dir):
            os.makedirs(path, mode=0o711, exist_ok=True)
            os.chmod(path, 0o711)
        uid_base = int(s["uid_base"])
        # Go compiles run as their own unprivileged user (just past the slots' uids), which
        # owns the Go cache: sandboxes may only execute the binaries they are given.
        self.build_uid = uid_base + total if self.root else os.geteuid()
        if self.root:
            _chown_tree(self.go_cache_dir, self.build_uid)
        self._sweep_stale_dirs(work)
        self.base_dir = os.path.join(work, f"sandbox-{os.getpid()}")
        os.makedirs(self.base_dir, mode=0o711, exist_ok=True)
        os.chmod(self.base_dir, 0o711)
        self.engines_dir = _install_engines(os.path.join(self.base_dir, "engines"))
        sys.path.insert(0, self.engines_dir)  # Go compiles import golang from there too
        for index in range(total):
            kind = "general" if index < self.capacity else "node"
            uid = uid_base + index if self.root else os.geteuid()
            slot = Slot(index, uid, os.path.join(self.base_dir, str(index)), kind)
            self._prepare_dir(slot)
            self.slots.append(slot)

        self.cgroups = Cgroups(total, int(s["memory_mb"]), int(s["max_processes"]))
        if self.root:
            self.cgroups.setup()
        builds = int(s["go_build_jobs"])
        if self.cgroups.has_any():
            self.go_builders = [
                self.cgroups.add_group(f"build-{index}", int(s["go_build_memory_mb"]), 512)
                for index in range(builds)
            ]
        else:
            self.go_builders = [-1] * builds
            self.warnings.append("Go compiles have no memory limit (no cgroups)")
        if self.cgroups.version == "none":
            self.warnings.append(
                "no cgroups: memory falls back to RLIMIT_AS/RLIMIT_DATA, process count to "
                + ("RLIMIT_NPROC per slot uid" if self.root else "nothing (not root)")
                + "; CPU is not shared fairly"
                + (f" ({self.cgroups.error})" if self.cgroups.error else "")
            )
        mountns, netns, hide_pids, ipcns = (
            probe_namespaces() if self.root else (False, False, False, False)
        )
        if not mountns:
            self.warnings.append(
                "no mount namespaces: /tmp, /dev/shm and /run are shared with the host"
                + ("; Go compiles run as root" if self.root else "")
            )
        # Where seccomp cannot refuse SysV IPC, a warm worker is kept only when its run left no
        # object in its IPC namespace (where they show in /proc/sysvipc).
        self.count_ipc = ipcns and platform.machine() != "x86_64" and os.path.isdir("/proc/sysvipc")
        # A warm Python worker is kept only when /proc shows it waiting for its next request.
        self.python_reuse = self.reuse and SYS_READ >= 0 and os.path.exists("/proc/self/syscall")
        if self.reuse and not self.python_reuse:
            self.warnings.append("warm Python workers are off: /proc/<pid>/syscall is missing")
        if not ipcns:
            self.warnings.append(
                "no IPC namespaces: SysV shared memory, semaphores and queues are shared with "
                "the host and may outlive a run"
            )
        net_desc, use_netns = self._choose_network(netns, (uid_base, uid_base + total), total)

        rlimits = {
            "RLIMIT_NPROC": int(s["max_processes"]),
            "RLIMIT_FSIZE": int(s["file_size_mb"]) * MB,
            "RLIMIT_CORE": 0,
            "RLIMIT_NOFILE": 256,
            "RLIMIT_MSGQUEUE": 0,  # no POSIX message queue (seccomp refuses them too)
        }
        if not self.cgroups.has_memory():
            rlimits["RLIMIT_AS"] = int(s["memory_mb"]) * MB  # the child adds its current size
            rlimits["RLIMIT_DATA"] = int(s["memory_mb"]) * MB
        if not self.root:
            rlimits.pop("RLIMIT_NPROC")  # would count every process of the service's own uid
        self.child_cfg = {
            "op": "config",
            "slots": [
                {
                    "uid": slot.uid,
                    "dir": slot.dir,
                    "cgroup_procs": self.cgroups.procs_files(slot.index),
                    "netns": use_netns,
                    "netns_path": (
                        self.slot_networks.path(slot.index) if self.slot_networks else ""
                    ),
                }
                for slot in self.slots
            ],
            "rlimits": rlimits,
            "mountns": mountns,
            "ipcns": ipcns,
            "hide_pids": mountns and hide_pids,
            "work_dir": work,
            "tmpfs_mb": int(s["file_size_mb"]),
            "env": CHILD_ENV,
            "node_argv": [s["node"], os.path.join(self.engines_dir, "engine.js")],
            # A Node process may serve many runs: its RLIMIT_CPU is a budget for its whole
            # life, each run's own limit is enforced by the supervisor (_limit_node_cpu).
            "node_cpu": NODE_CPU_BUDGET,
            "python_reuse": self.python_reuse,
            "go_bin_dir": self.go_bin_dir,
            "sandbox_go_dir": SANDBOX_GO_DIR,
            "root": self.root,
            "seccomp": True,
        }
        layers = []
        if self.root:
            layers.append(f"uid per slot ({uid_base}-{uid_base + total - 1})")
        if self.cgroups.version != "none":
            layers.append(f"cgroup {self.cgroups.version} ({', '.join(self.cgroups.controllers)})")
        if mountns:
            layers.append(
                "mount namespace (private tmpfs /tmp, /var/tmp, /dev/shm, empty /run, "
                "no host cgroup tree)"
            )
        if ipcns:
            layers.append("own IPC and cgroup namespaces")
        if mountns and hide_pids:
            layers.append("/proc shows only the run's own processes")
        if platform.machine() == "x86_64":
            layers.append(
                "seccomp deny-list (namespaces, mount, ptrace, bpf, perf, io_uring, keyrings, "
                "modules, SysV IPC, message queues; sockets of unix, inet, inet6 and route "
                "netlink only)"
            )
        else:
            self.warnings.append(f"no seccomp filter for {platform.machine()}")
        layers.append("rlimits, own session, no_new_privs, empty env, private dir")
        layers.append(
            "warm worker per code between its runs (other processes killed, temp dirs wiped)"
            if self.reuse
            else "a fresh process for every run"
        )
        self.status = {
            "isolation": "; ".join(layers),
            "network": net_desc,
            "cgroups": self.cgroups.version,
            "slots": self.capacity,
            "node_spares": node_spares,
            "root": self.root,
            "warnings": self.warnings,
        }
        self._start_zygote()
        # One spare of each kind first, the others once it started (_boot_worked): it comes up
        # soonest, and a language that cannot start costs one try per back-off step.
        for slot in self.slots:
            slot.state = "parked"
        for kind in ("general", "node"):
            first = next((slot for slot in self.slots if slot.kind == kind), None)
            if first is not None:
                self._spawn(first)
        self.selector.register(self.api, selectors.EVENT_READ, ("api", None))
        for key in ("javascript", "go"):
            problem = self._missing(key)
            if problem:
                self._boot_failed(key, problem, certain=True)
        self.call_later(BOOT_SETTLE, lambda: self._report(force=True))

    def _choose_network(self, netns: bool, uids: tuple[int, int], total: int) -> tuple[str, bool]:
        """How sandboxes reach the network: (what /health says, an empty namespace per child).

        `uids` are the slots' and the build uid, filtered when namespaces per slot cannot be had.
        """
        if not self.root:
            self.warnings.append(
                "not running as root: runs share the service's uid (its files and processes) "
                "and network; processes that leave their process group are not tracked"
            )
            return "unrestricted (not root: no packet filter, no namespace)", False
        if self.s["network"] == "off":
            if not netns:
                self.warnings.append("network=off requested but network namespaces are unavailable")
                return "unrestricted (network namespaces unavailable)", False
            return "off (empty network namespace)", True
        why = "turned off by the network_namespaces setting"
        if netns and self.s["network_namespaces"]:
            self.slot_networks = network.SlotNetworks(total)
            why = self.slot_networks.setup()
            if not why:
                return (
                    "public egress from a network namespace per slot (NAT); loopback, private, "
                    "link-local and the host's own addresses refused; no inbound connections",
                    False,
                )
            self.slot_networks = None
        self.owner_filter = network.OwnerFilter(*uids)
        error = self.owner_filter.install()
        if not error:
            self.warnings.append(
                f"no network namespace per slot ({why}): sandboxes share the host's network "
                "namespace (its sockets are listed in /proc/net)"
            )
            return (
                "public egress; loopback, private, link-local and the host's own addresses "
                "refused, no inbound connections (iptables owner match)",
                False,
            )
        if netns:
            self.warnings.append(f"egress filter not installed ({error}): user code has no network")
            return "off (empty network namespace: packet filter unavailable)", True
        self.warnings.append(f"egress filter not installed ({error}) and no network namespaces")
        return "unrestricted (no packet filter, no namespaces)", False

    def _sweep_stale_dirs(self, work: str) -> None:
        for entry in os.listdir(work):
            if entry.startswith("sandbox-"):
                pid = entry.split("-", 1)[1]
                if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                    shutil.rmtree(os.path.join(work, entry), ignore_errors=True)

    def _prepare_dir(self, slot: Slot) -> None:
        os.makedirs(slot.dir, mode=0o700, exist_ok=True)
        os.chmod(slot.dir, 0o700)
        if self.root:
            os.chown(slot.dir, slot.uid, slot.uid)

    def _start_zygote(self) -> None:
        if self.zsock is not None:
            self.selector.unregister(self.zsock)
            self.zsock.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.zygote = subprocess.Popen(
            [
                sys.executable,
                "-I",
                os.path.join(self.engines_dir, "zygote.py"),
                str(theirs.fileno()),
            ],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=CHILD_ENV,
        )
        theirs.close()
        self.zsock = ours
        ours.send(json.dumps(self.child_cfg).encode())
        self.selector.register(ours, selectors.EVENT_READ, ("zygote", None))

    # ---------------------------------------------------------------- loop plumbing

    def call_later(self, delay: float, callback: Callable[[], None]) -> list[Any]:
        entry = [time.monotonic() + delay, next(self.counter), callback]
        heapq.heappush(self.timers, entry)
        return entry

    def send_api(self, message: dict[str, Any]) -> None:
        was_empty = not self.api_out
        self.api_out += wire.encode_frame(message)
        if was_empty:
            self._flush_api()

    def _flush_api(self) -> None:
        sent_total = 0
        try:
            with memoryview(self.api_out) as view:
                while sent_total < len(view):
                    sent_total += self.api.send(view[sent_total:])
        except BlockingIOError:
            pass
        finally:
            del self.api_out[:sent_total]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.api_out else 0)
        with contextlib.suppress(KeyError):
            self.selector.modify(self.api, events, ("api", None))

    def loop(self) -> None:
        while True:
            timeout = None
            if self.timers:
                timeout = max(0.0, self.timers[0][0] - time.monotonic())
            for key, events in self.selector.select(timeout):
                kind, owner = key.data
                try:
                    if kind == "api":
                        if events & selectors.EVENT_WRITE:
                            self._flush_api()
                        if events & selectors.EVENT_READ and not self._read_api():
                            return
                    elif kind == "zygote":
                        self._read_zygote()
                    elif kind == "out":
                        self._read_child(key.fd)
                    elif kind == "in":
                        self._write_stdin(owner)
                    elif kind == "compile":
                        owner()
                    elif kind == "spare":
                        self._spare_ready(owner)
                except Exception as exc:  # one broken run must not take the others down
                    log(f"error handling {kind}: {exc!r}")
                    if kind == "spare" and owner.state == "starting":
                        self._retire_spare(owner, f"runner error: {exc!r}")
                    if kind in ("out", "in"):
                        run = (
                            owner
                            if isinstance(owner, Run)
                            else self.fd_owner.get(key.fd, (None,))[0]
                        )
                        if run is not None and not run.finished:
                            self._kill_run(run, "runner", f"runner error: {exc}")
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, callback = heapq.heappop(self.timers)
                if callback is not None:
                    try:
                        callback()
                    except Exception as exc:
                        log(f"error in timer: {exc!r}")

    def _read_api(self) -> bool:
        try:
            data = self.api.recv(1 << 20)
        except BlockingIOError:
            return True
        if not data:
            return False
        for frame, blob in self.api_in.feed(data):
            self._handle_api(frame, blob)
        return True

    def _handle_api(self, frame: dict[str, Any], blob: bytes) -> None:
        op = frame.get("op")
        if op == "run":
            run = Run(frame["id"], frame["run"], blob)
            if run.language not in LANGUAGE_NAMES:
                self._finish_early(run, "runner", f"unsupported language {run.language!r}")
            elif refusal := self._refusal(run.language):
                self._finish_early(run, "runner", refusal)
            elif run.language == "go":
                self._prepare_go(run)
            else:
                self.pending.append(run)
                self._dispatch()
        elif op == "compile":
            request_id = frame["id"]

            def reply(path: str | None, error: str | None) -> None:
                runner_error = None
                if error and error.startswith("runner: "):
                    error, runner_error = None, error.removeprefix("runner: ")
                self.send_api(
                    {
                        "op": "compiled",
                        "id": request_id,
                        "error": error,
                        "runner_error": runner_error,
                    }
                )

            self._compile(frame["source"], reply)
        elif op == "ping":
            self.send_api({"op": "pong", "id": frame["id"]})
        elif op == "shutdown":
            raise SystemExit(0)

    # ---------------------------------------------------------------- zygote and spares

    def _spawn(self, slot: Slot) -> None:
        slot.child = None
        slot.warm_key, slot.warm_runs = "", 0
        if self.zsock is None or self._boot_of(slot).waiting():
            slot.state = "parked"  # until the zygote is back or the back-off step ends (_retry)
            return
        slot.state = "spawning"
        kind = "node" if slot.kind == "node" else "python"
        with contextlib.suppress(OSError):  # the zygote is gone: _zygote_died parks the slot
            self.zsock.send(json.dumps({"op": "spawn", "slot": slot.index, "kind": kind}).encode())

    def _read_zygote(self) -> None:
        assert self.zsock is not None
        try:
            data, fds, _, _ = socket.recv_fds(self.zsock, 1 << 16, 8)
        except BlockingIOError:
            return
        except ConnectionError:  # it died before reading what we sent
            data, fds = b"", []
        if not data:
            self._zygote_died()
            return
        message = json.loads(data)
        op = message["op"]
        if op == "spawned":
            slot = self.slots[message["slot"]]
            child = Child(message["pid"], message["kind"], fds)
            for fd in fds:
                os.set_blocking(fd, False)
            self.pid_slot[child.pid] = slot
            slot.child = child
            slot.state = "starting"
            self.selector.register(child.proto, selectors.EVENT_READ, ("spare", slot))
            child.boot_timer = self.call_later(
                BOOT_TIMEOUT, lambda: self._boot_timed_out(slot, child)
            )
        elif op == "spawn_failed":
            slot = self.slots[message["slot"]]
            slot.state = "cleaning"
            self._boot_failed(self._boot_of(slot).key, f"cannot fork: {message['error']}")
            self._spawn(slot)  # parked until the back-off step ends
        elif op == "exit":
            slot = self.pid_slot.pop(message["pid"], None)
            if slot is None:
                return
            status = message["status"]
            run = slot.run
            if run is not None and run.child is not None and run.child.pid == message["pid"]:
                run.child.exit_status = status
                run.child.cpu = float(message.get("cpu", 0.0))
                if not run.finished:
                    self._finish(run)
            elif (
                slot.child is not None
                and slot.child.pid == message["pid"]
                and slot.state == "ready"
            ):
                self._retire_spare(slot, f"it ended before its first run (status {status})")
            elif (
                slot.child is not None
                and slot.child.pid == message["pid"]
                and slot.state in ("warm", "recycling")
            ):
                self._retire_warm(slot)

    def _spare_ready(self, slot: Slot) -> None:
        """The spare says it is sandboxed ({"t": "ready"}), a Node spare then that its engine
        booted (a second one); a spare that failed says why ({"t": "error"}), or just ends."""
        child = slot.child
        if child is None:
            return
        try:
            data = os.read(child.proto, 4096)
        except BlockingIOError:
            return
        child.boot += data
        events = [_event(line) for line in bytes(child.boot).split(b"\n")[:-1]]
        readies = sum(1 for event in events if event.get("t") == "ready")
        if data and readies == len(events) and len(child.boot) < READ_SIZE:
            if readies < (2 if child.kind == "node" else 1):
                return  # Node is still booting
            self.selector.unregister(child.proto)
            if child.boot_timer is not None:
                child.boot_timer[2] = None
            slot.state = "ready"
            self._boot_worked("zygote")
            self._boot_worked(self._boot_of(slot).key)
            self._dispatch()
            return
        errors = [str(event.get("message", "")) for event in events if event.get("t") == "error"]
        self._retire_spare(slot, errors[0] if errors else _gist(_read_available(child.stderr)))

    def _boot_timed_out(self, slot: Slot, child: Child) -> None:
        if slot.child is child and slot.state == "starting":
            self._retire_spare(slot, f"not ready after {BOOT_TIMEOUT:g} s")

    def _retire_spare(self, slot: Slot, error: str) -> None:
        """A spare that failed to start, or ended before its first run: its language backs off;
        the slot is cleaned and waits for the end of the step (parked)."""
        if slot.child is not None:
            with contextlib.suppress(OSError):
                os.killpg(slot.child.pid, signal.SIGKILL)
            self._close_child(slot.child)
        slot.child = None
        slot.state = "cleaning"
        self._boot_failed(self._boot_of(slot).key, error)
        self._clean(slot)

    def _zygote_died(self) -> None:
        status = None
        if self.zygote is not None:
            with contextlib.suppress(Exception):
                self.zygote.kill()
                status = self.zygote.wait(5)
        if self.zsock is not None:
            self.selector.unregister(self.zsock)
            self.zsock.close()
            self.zsock = None  # slots park until _retry starts it again
        self.pid_slot.clear()
        self._boot_failed("zygote", f"it ended (status {status})")
        for slot in self.slots:
            if slot.run is not None and not slot.run.finished:
                self._kill_run(slot.run, "runner", "the runner's zygote died")
            elif slot.state != "cleaning":
                if slot.child is not None:
                    self._kill_slot(slot)
                    self._close_child(slot.child)
                    slot.child = None
                slot.state = "cleaning"
                self._clean(slot)

    # ---------------------------------------------------------------- languages

    def _boot_of(self, slot: Slot) -> Boot:
        return self.boots["javascript" if slot.kind == "node" else "python"]

    def _needs(self, language: str) -> list[Boot]:
        """What must start for a run of `language`, the cause first: the zygote forks every
        sandbox; Go binaries, and Node where there is no Node slot, run in general slots."""
        boots = self.boots
        if language == "python":
            return [boots["zygote"], boots["python"]]
        if language == "javascript":
            general = [] if self.node_slots else [boots["python"]]
            return [boots["zygote"], *general, boots["javascript"]]
        return [boots["zygote"], boots["python"], boots["go"]]

    def _probes_itself(self, boot: Boot) -> bool:
        """Whether the next start of `boot` is tried by us (the zygote, a spare) when its back-off
        step ends; else (Go, Node without Node slots) the next run or compile is that try."""
        return boot.key in ("zygote", "python") or (boot.key == "javascript" and self.node_slots)

    def _missing(self, key: str) -> str:
        """What a language lacks here for sure (its program, its engine), or ""."""
        if key == "javascript":
            engine = os.path.join(self.engines_dir, "engine.js")
            return _not_executable(self.s["node"]) or (
                "" if os.path.isfile(engine) else f"{engine} is missing"
            )
        if key == "go":
            return _not_executable(self.s["go"])
        return ""

    def _refusal(self, language: str) -> str:
        """Why a run of `language` is refused now ("" when it is taken): something it needs
        failed to start BROKEN_AFTER times in a row. A run refused ends at once (reason
        "runner") instead of waiting for its timeout."""
        for boot in self._needs(language):
            if boot.ready() or (not self._probes_itself(boot) and not boot.waiting()):
                continue
            return f"{LANGUAGE_NAMES[language]} cannot run on this runner now: {boot.describe()}"
        return ""

    def _language_status(self, language: str) -> wire.LanguageStatus:
        boots = self._needs(language)
        broken = [boot for boot in boots if not boot.ready()]
        failing = broken or [boot for boot in boots if boot.failures]
        if not failing:
            return {"ready": True, "error": "", "failures": 0, "retry_in": 0.0}
        boot = failing[0]
        return {
            "ready": not broken,
            "error": boot.describe() if broken else "",
            "failures": boot.failures,
            "retry_in": round(max(0.0, boot.retry_at - time.monotonic()), 3),
        }

    def _settled(self, language: str) -> bool:
        """At start-up: whether `language` has shown that it runs, or that it cannot."""
        boots = self._needs(language)
        if any(not boot.ready() for boot in boots):
            return True
        return all(boot.started for boot in boots if self._probes_itself(boot))

    def _report(self, force: bool = False) -> None:
        """Tell the API: "ready" once every language has started or failed to (or BOOT_SETTLE
        passed), then a "status" frame whenever a language's status changes."""
        languages = {name: self._language_status(name) for name in wire.LANGUAGES}
        status: wire.SupervisorStatus = {**self.status, "languages": languages}
        seen = {
            name: (language["ready"], language["error"], language["failures"])
            for name, language in status["languages"].items()
        }
        if not self.announced:
            if not force and not all(self._settled(name) for name in wire.LANGUAGES):
                return
            self.announced = True
            self.send_api({"op": "ready", "status": status})
        elif seen != self.reported:
            self.send_api({"op": "status", "status": status})
        self.reported = seen

    def _boot_failed(self, key: str, error: str, *, certain: bool = False) -> None:
        boot = self.boots[key]
        counted = boot.failed(error, certain)
        if boot.timer is None:
            delay = max(0.0, boot.retry_at - time.monotonic())
            boot.timer = self.call_later(delay, lambda: self._retry(key))
        if counted:
            self._fail_refused()
            self._report()

    def _boot_worked(self, key: str) -> None:
        boot = self.boots[key]
        first = not boot.started
        if boot.worked():
            self._unpark(None if key == "zygote" else key)
            self._report()
        elif first:
            if key != "zygote":
                self._unpark(key)  # the rest of its spares
            self._report()  # may complete the start-up

    def _retry(self, key: str) -> None:
        """A back-off step ended: try one start (a spare, the zygote, a look for a missing
        program); how it ends decides the next step."""
        boot = self.boots[key]
        boot.timer = None
        problem = self._missing(key)
        if problem:
            self._boot_failed(key, problem, certain=True)
        elif boot.certain:
            self._boot_worked(key)  # what was missing is there now
        elif key == "zygote":
            try:
                self._start_zygote()
            except OSError as exc:
                self._boot_failed(key, f"cannot start it: {exc}")
                return
            self._unpark()
        else:
            kind = "node" if key == "javascript" else "general"
            parked = [slot for slot in self.slots if slot.kind == kind and slot.state == "parked"]
            if parked:
                self._spawn(parked[0])

    def _unpark(self, key: str | None = None) -> None:
        for slot in self.slots:
            if slot.state == "parked" and key in (None, self._boot_of(slot).key):
                self._spawn(slot)  # parks it again while its language backs off

    def _fail_refused(self) -> None:
        """Runs waiting for a language that cannot run now end at once."""
        waiting, self.pending = self.pending, deque()
        for run in waiting:
            refusal = self._refusal(run.language)
            if refusal:
                self._finish_early(run, "runner", refusal)
            else:
                self.pending.append(run)

    def _node_started_for(self, run: Run, outcome: dict[str, Any]) -> None:
        """Node started for this run in a general slot (no Node spare was free): a start of
        Node like a spare's. One that ended before its engine booted fails as the runner's."""
        if run.engine_ready:
            self._boot_worked("javascript")
            return
        if outcome["reason"] not in ("exception", "killed"):
            return  # a limit of the run's (timeout, memory, ...), or the runner's already
        error = _gist("\n".join(str(entry[1]) for entry in run.logs if entry[0] == "error"))
        self._boot_failed("javascript", error)
        why = f"Node.js cannot start: {error}"
        outcome["reason"] = "runner"
        outcome["error"] = f"JavaScript cannot run on this runner now: {why}"

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self) -> None:
        if not self.pending:
            return
        remaining: deque[Run] = deque()
        # Warm workers being cleaned between runs: each may be awaited by one run of its code;
        # Node spares being booted ("*"): each may be awaited by one JavaScript run.
        recycling: dict[str, int] = {FRESH: 0, FRESH_GENERAL: 0}
        for candidate in self.slots:
            if candidate.state == "recycling":
                recycling[candidate.warm_key] = recycling.get(candidate.warm_key, 0) + 1
            elif candidate.state in ("new", "spawning", "starting", "cleaning"):
                recycling[FRESH_GENERAL if candidate.kind == "general" else FRESH] += 1
        while self.pending:
            run = self.pending.popleft()
            slot = self._pick(run, recycling) if self.running < self.capacity else None
            if slot is None:
                remaining.append(run)
                continue
            self._start_run(run, slot)
        self.pending = remaining

    def _pick(self, run: Run, recycling: dict[str, int]) -> Slot | None:
        if self.reuse and run.language in ("javascript", "python"):
            kind = "node" if run.language == "javascript" else "general"
            for slot in self.slots:
                if slot.state == "warm" and slot.kind == kind and slot.warm_key == run.warm_key:
                    assert slot.child is not None
                    used = _process_cpu(slot.child.pid)
                    if used + self._cpu_limit(run) + 2 < NODE_CPU_BUDGET:
                        return slot
                    # Its RLIMIT_CPU could end this run early, blaming it: retire it instead.
                    self._retire_warm(slot)
            if recycling.get(run.warm_key, 0) > 0:
                recycling[run.warm_key] -= 1
                return None  # its warm worker is ready in a few ms: cheaper than a cold one
        ready = [slot for slot in self.slots if slot.state == "ready"]
        if run.language == "javascript":
            for slot in ready:
                if slot.kind == "node":
                    return slot
            # No Node process for this code: let the least recently used warm worker of
            # another code make room for a fresh spare (booted in the background).
            if self._keep_a_fresh_spare(run.warm_key):
                recycling[FRESH] += 1
            if recycling[FRESH] > 0:
                # Waiting for a booting spare costs about what starting Node in a general
                # slot does, and leaves a warm worker for the next run.
                recycling[FRESH] -= 1
                return None
        for slot in ready:
            if slot.kind == "general":
                return slot
        # Every general slot may hold a warm Python worker: the least recently used one of
        # another code makes room (a fresh spare forks in a few ms).
        if self._keep_a_fresh_spare(run.warm_key, "general"):
            recycling[FRESH_GENERAL] += 1
        if recycling[FRESH_GENERAL] > 0:
            recycling[FRESH_GENERAL] -= 1
        return None

    def _keep_a_fresh_spare(self, key: str, kind: str = "node") -> bool:
        """Retire the least recently used idle warm worker not of `key` when no slot of `kind`
        is (or is becoming) a fresh spare, so a code without a warm worker still finds one soon."""
        node = [slot for slot in self.slots if slot.kind == kind]
        if any(slot.state not in ("busy", "warm", "recycling") for slot in node):
            return False
        idle = [slot for slot in node if slot.state == "warm" and slot.warm_key != key]
        if not idle:
            return False
        self._retire_warm(min(idle, key=lambda slot: slot.warm_used))
        return True

    def _retire_warm(self, slot: Slot) -> None:
        """End a warm worker: the usual cleaning kills the slot, wipes it, boots a spare."""
        slot.warm_key, slot.warm_runs = "", 0
        if slot.child is not None:
            with contextlib.suppress(OSError):
                os.killpg(slot.child.pid, signal.SIGKILL)
            self._close_child(slot.child)
        slot.child = None
        slot.state = "cleaning"
        self._kill_slot_pids(slot)
        self._clean(slot)

    def _start_run(self, run: Run, slot: Slot) -> None:
        child = slot.child
        assert child is not None
        slot.state = "busy"
        slot.run = run
        run.slot = slot
        run.child = child
        self.running += 1
        run.oom_before = self.cgroups.oom_kills(slot.index)
        # The child lowers its own RLIMIT_CPU from the header: prlimit() on another uid's
        # process needs CAP_SYS_RESOURCE, which a container's root often lacks.
        cpu = self._cpu_limit(run)
        python_warm = self.python_reuse and run.language == "python" and slot.kind == "general"
        if child.kind == "node":
            # engine.js reports {"t": "done"} instead of exiting (the request says `reuse`)
            child.warm = self.reuse
            self._drain_stale(child)
            self._limit_node_cpu(run, child, cpu)
        elif python_warm:
            self._drain_stale(child)
            self._limit_node_cpu(run, child, cpu)
        if child.stopped:  # a warm worker: stopped since its last run
            child.stopped = False
            os.kill(child.pid, signal.SIGCONT)
        if child.kind == "node" or child.warm:
            header = b""  # a warm worker awaits just the next request line
        else:
            if run.language == "javascript":
                run.argv = self.child_cfg["node_argv"]
            mode: dict[str, Any] = (
                {"mode": "exec", "argv": run.argv} if run.argv else {"mode": "python"}
            )
            mode["cpu"] = cpu
            if python_warm:
                mode["reuse"] = True  # python_engine serves request lines until one retires it
                child.warm = True
            encoded = json.dumps(mode).encode()
            header = struct.pack(">I", len(encoded)) + encoded
        run.pending_stdin = memoryview(header + run.payload)
        run.payload = b""
        run.started = time.monotonic()
        run.timer = self.call_later(run.timeout, lambda: self._timeout(run))
        for fd, name in (
            (child.stdout, "stdout"),
            (child.stderr, "stderr"),
            (child.proto, "proto"),
        ):
            self.fd_owner[fd] = (run, name)
            self.selector.register(fd, selectors.EVENT_READ, ("out", run))
        self._write_stdin(run, first=True)

    def _write_stdin(self, run: Run, first: bool = False) -> None:
        child = run.child
        if child is None or child.stdin < 0:
            return
        try:
            while run.pending_stdin:
                written = os.write(child.stdin, run.pending_stdin)
                run.pending_stdin = run.pending_stdin[written:]
        except BlockingIOError:
            if first:
                self.selector.register(child.stdin, selectors.EVENT_WRITE, ("in", run))
            return
        except BrokenPipeError:
            run.pending_stdin = memoryview(b"")
        if not first:
            self.selector.unregister(child.stdin)
        if child.warm:
            return  # a warm worker may get further requests on this pipe
        os.close(child.stdin)
        child.stdin = -1

    def _drain_stale(self, child: Child) -> None:
        """Discard what a warm worker's pipes hold from before this run (killed leftovers)."""
        for fd in (child.stdout, child.stderr, child.proto):
            with contextlib.suppress(OSError):
                while os.read(fd, READ_SIZE):
                    pass

    def _limit_node_cpu(self, run: Run, child: Child, seconds: int) -> None:
        """Per-run CPU limit for a warm worker, whose RLIMIT_CPU counts every run it served.

        With CAP_SYS_RESOURCE the supervisor moves the worker's RLIMIT_CPU to what it used so
        far plus this run's allowance (prlimit). A container's root often lacks it (prlimit on
        another uid's process: EPERM); then a timer samples the worker's CPU time from
        /proc/<pid>/stat every CPU_POLL seconds and kills the run with reason "cpu" past the
        allowance. The worker's own RLIMIT_CPU (NODE_CPU_BUDGET) stays as a backstop.
        """
        run.cpu_base = _process_cpu(child.pid)
        soft = int(run.cpu_base + seconds + 0.999)
        try:
            resource.prlimit(child.pid, resource.RLIMIT_CPU, (soft, soft + 1))
        except (OSError, ValueError):
            self._poll_cpu(run, seconds)

    def _poll_cpu(self, run: Run, seconds: int) -> None:
        if run.finished or run.child is None:
            return
        if _process_cpu(run.child.pid) - run.cpu_base >= seconds:
            self._kill_run(run, "cpu", "CPU time limit exceeded")
            return
        self.call_later(CPU_POLL, lambda: self._poll_cpu(run, seconds))

    # ---------------------------------------------------------------- output

    def _read_child(self, fd: int) -> None:
        owner = self.fd_owner.get(fd)
        if owner is None:
            return
        run, name = owner
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            self._flush_partial(run, fd, name)
            self.selector.unregister(fd)
            del self.fd_owner[fd]
            return
        self._consume(run, fd, name, data)
        if run.reason == "output":
            self._kill_run(run, "output", run.reason_message)
        elif run.done_code is not None and not run.finished and not run.done_checking:
            self._on_done(run)

    def _on_done(self, run: Run) -> None:
        """The child wrote "done". A single-use child ends here (killed right after). A warm
        worker's word is checked against /proc first: user code can write the same line, then
        go on running; such a run goes on (under its limits) until the worker is really idle."""
        child = run.child
        if child is None or not (child.warm and run.done_keep):
            self._finish(run)
            return
        # It is usually microseconds from its wait, but may need the CPU we are on to get there:
        # nap (not spin) a little before falling back to the loop's timers (1 ms resolution).
        deadline = time.monotonic() + IDLE_WAIT_NOW
        while not _is_idle(child):
            if time.monotonic() > deadline:
                run.done_checking = True
                self._recheck_done(run, IDLE_STEP)
                return
            time.sleep(IDLE_NAP)
        self._finish(run)

    def _recheck_done(self, run: Run, delay: float) -> None:
        def check() -> None:
            if run.finished or run.child is None:
                return
            if _is_idle(run.child):
                self._finish(run)
            else:
                self._recheck_done(run, min(delay * 2, IDLE_STEP_MAX))

        self.call_later(delay, check)

    def _consume(self, run: Run, fd: int, name: str, data: bytes) -> None:
        if run.reason is not None:
            return  # killed: what comes after does not count
        run.output += len(data)
        if run.output > int(self.s["output_bytes"]):
            run.reason = "output"
            run.reason_message = f"output over the limit of {self.s['output_bytes']} bytes"
            return
        if name == "stdout" and run.stdout is not None:
            run.stdout += data
            if run.program:
                return
        # Only the new bytes are searched for line ends; a partial line is moved once per line.
        buffer = run.buffers.setdefault(fd, bytearray())
        start = 0
        newline = data.find(b"\n")
        if newline >= 0:
            buffer += data[: newline + 1]
            self._line(run, name, bytes(buffer[:-1]))
            buffer.clear()
            start = newline + 1
            while (newline := data.find(b"\n", start)) >= 0:
                self._line(run, name, data[start:newline])
                start = newline + 1
        buffer += data[start:] if start else data

    def _flush_partial(self, run: Run, fd: int, name: str) -> None:
        rest = run.buffers.pop(fd, None)
        if rest and run.reason is None:
            self._line(run, name, bytes(rest))

    def _line(self, run: Run, name: str, raw: bytes) -> None:
        now = time.time()
        if name != "proto":
            if name == "stdout" and run.program:
                return
            text = raw.decode("utf-8", "replace")
            entry = ["info" if name == "stdout" else "error", text[: self.max_log_chars], now]
            run.logs.append(entry)
            if name == "stdout" and run.stdout is not None:
                run.stdout_logs.append(entry)
            return
        try:
            message = wire.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("t")
        if kind == "log":
            level = message.get("level")
            level = level if level in ("debug", "info", "error") else "info"
            run.logs.append([level, str(message.get("msg", ""))[: self.max_log_chars], now])
        elif kind == "result":
            code = message.get("status_code", 200)
            if isinstance(code, bool) or not isinstance(code, int | str):
                message["status_code"] = 200  # the engines send ints or strings; nothing else
            run.result = message
        elif kind == "error":
            run.error = message
        elif kind == "ready":
            run.engine_ready = True  # Node booted in this run's slot
        elif kind == "script" and run.language == "javascript":
            run.program = True
        elif kind == "done":
            code = message.get("code", 0)
            run.done_code = code if isinstance(code, int) and not isinstance(code, bool) else 1
            run.done_keep = message.get("keep", True) is True

    # ---------------------------------------------------------------- ending a run

    def _timeout(self, run: Run) -> None:
        if not run.finished:
            self._kill_run(run, "timeout", f"execution took longer than {run.timeout:g} s")

    def _kill_run(self, run: Run, reason: str, message: str) -> None:
        if run.finished:
            return
        run.reason = run.reason or reason
        run.reason_message = run.reason_message or message
        if run.slot is None:
            self._finish_early(run, reason, message)
            return
        self._kill_slot(run.slot)
        self._finish(run)

    def _kill_slot(self, slot: Slot) -> None:
        if slot.child is not None:
            with contextlib.suppress(OSError):
                os.killpg(slot.child.pid, signal.SIGKILL)
        self._kill_slot_pids(slot)

    def _kill_slot_pids(self, slot: Slot, spare: int = 0) -> None:
        for pid in self._slot_pids(slot) - {spare}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def _slot_pids(self, slot: Slot) -> set[int]:
        if self.cgroups.has_any():
            return self.cgroups.pids(slot.index)
        if self.root:
            return _uid_pids(slot.uid)
        return set()

    def _finish(self, run: Run) -> None:
        if run.finished:
            return
        run.finished = True
        slot = run.slot
        child = run.child
        if run.timer is not None:
            run.timer[2] = None
        if child is not None:
            # Everything the child wrote before it ended is in the pipes: read it all.
            for fd, name in (
                (child.proto, "proto"),
                (child.stdout, "stdout"),
                (child.stderr, "stderr"),
            ):
                while fd in self.fd_owner and run.reason is None:
                    try:
                        data = os.read(fd, READ_SIZE)
                    except OSError:
                        break
                    if not data:
                        break
                    self._consume(run, fd, name, data)
                self._flush_partial(run, fd, name)
        outcome = self._outcome(run)
        if run.argv is not None and run.argv == self.child_cfg["node_argv"]:
            self._node_started_for(run, outcome)
        self.send_api({"op": "done", "id": run.id, "outcome": outcome})
        self.running -= 1
        if slot is not None and child is not None and self._reusable(run, slot, outcome):
            slot.run = None
            self._recycle(slot, run.warm_key)
            self._dispatch()
            return
        if slot is not None:
            slot.warm_key, slot.warm_runs = "", 0
            if child is not None:
                self._close_child(child)
            if child is not None and (child.exit_status is None or not self.cgroups.has_any()):
                # The child may be gone while its process group lives on.
                with contextlib.suppress(OSError):
                    os.killpg(child.pid, signal.SIGKILL)
            slot.child = None
            slot.run = None
            slot.state = "cleaning"
            self._kill_slot_pids(slot)
            self._clean(slot)
        self._dispatch()

    def _reusable(self, run: Run, slot: Slot, outcome: dict[str, Any]) -> bool:
        """Whether the worker may serve the next run of the same code."""
        child = run.child
        if child is None or not child.warm or not self.reuse:
            return False
        if child.kind != "node":
            # A Python worker whose memory grew much would leave the next run little room.
            rss, limit = _process_rss(child.pid), int(self.s["memory_mb"]) * MB
            child.rss_base = child.rss_base or rss
            if rss - child.rss_base > WARM_RSS_GROWTH * limit or rss > WARM_RSS_MAX * limit:
                return False
        return (
            (slot.kind == "node") == (child.kind == "node")
            and child.exit_status is None
            and run.done_code is not None
            and run.done_keep
            and run.reason is None
            and outcome["reason"] in (None, "exception")
            and (run.error is None or run.error.get("kind") == "exception")
            and slot.warm_runs + 1 < WARM_MAX_RUNS
        )

    def _recycle(self, slot: Slot, key: str) -> None:
        """Between two runs of a warm worker: kill the slot's other processes, wipe its temp dirs."""
        child = slot.child
        assert child is not None
        for fd in (child.stdout, child.stderr, child.proto):
            self.fd_owner.pop(fd, None)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)
        slot.state = "recycling"
        slot.warm_key = key
        slot.warm_runs += 1
        slot.clean_deadline = time.monotonic() + 10
        self._recycle_step(slot, child)

    def _recycle_step(self, slot: Slot, child: Child) -> None:
        if slot.state != "recycling" or slot.child is not child:
            return  # retired meanwhile (the worker died)
        others = self._slot_pids(slot) - {child.pid}
        if others:
            for pid in others:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > slot.clean_deadline:
                log(f"slot {slot.index}: processes {sorted(others)[:5]} do not die; retired")
                self._retire_warm(slot)
                return
            self.call_later(CLEAN_STEP, lambda: self._recycle_step(slot, child))
            return
        slot.clean_deadline = 0.0
        if self.count_ipc:
            try:
                objects = _ipc_objects(child.pid)
            except OSError as exc:
                log(f"slot {slot.index}: cannot look at a warm worker's IPC objects: {exc}")
                objects = -1
            if objects:  # SysV objects of a run must not reach the next (nor count against it)
                self._retire_warm(slot)
                return
        try:
            if self.child_cfg["mountns"]:
                # The worker's private /tmp, /var/tmp, /dev/shm, seen through its mount namespace.
                for directory in ("tmp", "var/tmp", "dev/shm"):
                    _wipe_owned(f"/proc/{child.pid}/root/{directory}", slot.uid)
            else:
                _wipe(slot.dir)
                if self.root:
                    _sweep_shared_tmp(slot.uid)
        except OSError as exc:
            log(f"slot {slot.index}: cannot wipe a warm worker's dirs: {exc}")
            self._retire_warm(slot)
            return
        slot.state = "warm"
        slot.warm_used = time.monotonic()
        runs = slot.warm_runs
        self.call_later(WARM_STOP_AFTER, lambda: self._stop_idle(slot, child, runs))
        self.call_later(WARM_IDLE_TTL, lambda: self._warm_expired(slot, child, runs))
        self._keep_a_fresh_spare(slot.warm_key, slot.kind)
        self._dispatch()

    def _stop_idle(self, slot: Slot, child: Child, runs: int) -> None:
        """Stop (SIGSTOP) a warm worker still waiting since that run, until its next run: what
        the code left scheduled (timers, signal handlers) cannot run in between. Not at once:
        back-to-back runs would pay for stopping and continuing it every time."""
        if slot.state == "warm" and slot.child is child and slot.warm_runs == runs:
            try:
                os.kill(child.pid, signal.SIGSTOP)
            except OSError:
                self._retire_warm(slot)
                return
            child.stopped = True

    def _warm_expired(self, slot: Slot, child: Child, runs: int) -> None:
        # Still idle since that run (no later run re-armed its own timer): retire it.
        if slot.state == "warm" and slot.child is child and slot.warm_runs == runs:
            self._retire_warm(slot)

    def _close_child(self, child: Child) -> None:
        for fd in (child.stdin, child.stdout, child.stderr, child.proto):
            if fd < 0:
                continue
            self.fd_owner.pop(fd, None)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        child.stdin = child.stdout = child.stderr = child.proto = -1
        for fd in child.proc_fds or ():
            with contextlib.suppress(OSError):
                os.close(fd)
        child.proc_fds = None

    def _outcome(self, run: Run) -> dict[str, Any]:
        slot = run.slot
        reason, error = run.reason, run.reason_message
        status = run.child.exit_status if run.child is not None else None
        oom = slot is not None and self.cgroups.oom_kills(slot.index) > run.oom_before
        if reason in (None, "timeout", "cpu") and oom:
            reason, error = "memory", f"memory limit of {self.s['memory_mb']} MB exceeded"
        elif reason is None and status is None and run.done_code is not None:
            if run.error is not None:
                reason, error = self._error_reason(run)
            elif run.done_code != 0:
                reason, error = "exception", f"exited with status {run.done_code}"
        elif reason is None and status is not None:
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                if sig == signal.SIGXCPU or (sig == signal.SIGKILL and self._cpu_exhausted(run)):
                    reason, error = "cpu", "CPU time limit exceeded"
                elif sig == signal.SIGXFSZ:
                    reason, error = (
                        "file_size",
                        f"file size limit of {self.s['file_size_mb']} MB exceeded",
                    )
                else:
                    reason, error = "killed", f"killed by signal {_signal_name(sig)}"
            elif run.error is not None:
                reason, error = self._error_reason(run)
            elif os.WEXITSTATUS(status) != 0:
                code = os.WEXITSTATUS(status)
                reason = "exception"
                tail = "\n".join(line[1] for line in run.logs if line[0] == "error")[-2000:]
                error = f"exited with status {code}" + (f": {tail}" if tail else "")
        duration = time.monotonic() - run.started if run.started else 0.0
        result = run.result or {}
        logs = run.logs
        if run.program and run.stdout is not None:
            result = {"value": run.stdout.decode("utf-8", "replace")}
            dropped = {id(entry) for entry in run.stdout_logs}
            logs = [entry for entry in logs if id(entry) not in dropped]
        return {
            "ok": reason is None,
            "result": str(result.get("value", "")),
            "status_code": result.get("status_code", 200),
            "content_type": str(result.get("content_type", "text")),
            "reason": reason,
            "error": error,
            "logs": logs,
            "duration": duration,
        }

    @staticmethod
    def _error_reason(run: Run) -> tuple[str, str]:
        assert run.error is not None
        kind = run.error.get("kind")
        reason = kind if kind in ("exception", "memory", "file_size", "runner") else "exception"
        error = str(run.error.get("message", ""))
        if reason == "memory" and "memory" not in error.lower():
            error = "MemoryError: " + error
        return reason, error

    def _cpu_limit(self, run: Run) -> int:
        # Without cpu_seconds, RLIMIT_CPU only backs up the wall-clock timeout: set above it
        # (with room for the spare's own start-up CPU and a late timer), so a plain busy loop
        # ends as "timeout" and only many busy threads end as "cpu".
        return int(self.s["cpu_seconds"]) or math.ceil(run.timeout) + 2

    def _cpu_exhausted(self, run: Run) -> bool:
        # The hard RLIMIT_CPU (soft + 1 s) ends with SIGKILL when SIGXCPU was ignored.
        cpu = self._cpu_limit(run)
        return run.child is not None and run.child.cpu - run.cpu_base >= cpu

    def _finish_early(self, run: Run, reason: str, message: str) -> None:
        run.finished = True
        self.send_api(
            {
                "op": "done",
                "id": run.id,
                "outcome": {
                    "ok": False,
                    "result": "",
                    "status_code": 200,
                    "content_type": "text",
                    "reason": reason,
                    "error": message,
                    "logs": [],
                    "duration": 0.0,
                },
            }
        )

    # ---------------------------------------------------------------- cleanup

    def _clean(self, slot: Slot) -> None:
        """Kill every process of the slot until none is left, wipe its dir, fork a new spare."""
        if slot.state != "cleaning" or slot.cleaning:
            return  # one cleaning at a time per slot, or it would get two spares
        slot.cleaning = True
        self._clean_step(slot)

    def _clean_step(self, slot: Slot) -> None:
        if not slot.clean_deadline:
            slot.clean_deadline = time.monotonic() + 10
        pids = self._slot_pids(slot)
        if pids:
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > slot.clean_deadline:
                log(f"slot {slot.index}: processes {sorted(pids)[:5]} do not die; slot paused")
                slot.clean_deadline = time.monotonic() + 10
                self.call_later(1.0, lambda: self._clean_step(slot))
            else:
                self.call_later(CLEAN_STEP, lambda: self._clean_step(slot))
            return
        slot.clean_deadline = 0.0
        slot.cleaning = False
        try:
            _wipe(slot.dir)
            self._prepare_dir(slot)
            if not self.child_cfg["mountns"] and self.root:
                _sweep_shared_tmp(slot.uid)
        except OSError as exc:
            log(f"slot {slot.index}: cannot wipe its dir: {exc}")
        self._spawn(slot)

    # ---------------------------------------------------------------- Go

    def _prepare_go(self, run: Run) -> None:
        def compiled(path: str | None, error: str | None) -> None:
            if path is None:
                reason = "exception" if error and not error.startswith("runner:") else "runner"
                self._finish_early(run, reason, (error or "").removeprefix("runner: "))
                return
            if self.child_cfg["mountns"] and os.path.dirname(path) == self.go_bin_dir:
                path = os.path.join(SANDBOX_GO_DIR, os.path.basename(path))
            run.argv = [path]
            import golang  # there: it just compiled the source

            if golang.is_program(run.source):
                # No engine reads a request (nor its secrets): the program gets an empty stdin.
                run.program, run.stdout, run.payload = True, bytearray(), b""
            self.pending.append(run)
            self._dispatch()

        self._compile(run.source, compiled)

    def _compile(self, source: str, done: Callable[[str | None, str | None], None]) -> None:
        key = hashlib.sha256(source.encode()).hexdigest()
        cached = self.go_cache.get(key)
        if cached and os.path.exists(cached):
            self._used_binary(key, cached)
            done(cached, None)
            return
        if key in self.go_jobs:
            self.go_jobs[key].append(done)
            return
        go = self.boots["go"]
        if not go.ready() and go.waiting():
            done(None, f"runner: Go cannot compile on this runner now: {go.describe()}")
            return
        self.go_jobs[key] = [done]
        self.go_waiting.append((key, source))
        self._start_builds()

    def _used_binary(self, key: str, path: str) -> None:
        """Binaries are evicted least recently used first: mark this one used (once a minute)."""
        now = time.monotonic()
        if now - self.go_touched.get(key, 0.0) > 60:
            self.go_touched[key] = now
            with contextlib.suppress(OSError):
                os.utime(path)

    def _start_builds(self) -> None:
        """A few compiles at once (go_build_jobs), each in its own limited cgroup; others wait."""
        while self.go_waiting and self.go_builders:
            key, source = self.go_waiting.popleft()
            self._build(key, source, self.go_builders.pop())

    def _build(self, key: str, source: str, group: int) -> None:
        read_fd, write_fd = os.pipe()
        oom_before = self.cgroups.oom_kills(group) if group >= 0 else 0
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_fd)
                try:
                    answer = self._build_in_child(source, group)
                except BaseException as exc:
                    answer = {"error": f"runner: cannot start the Go compiler: {exc}"}
                os.write(write_fd, json.dumps(answer).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        chunks: list[bytes] = []
        # The compile kills itself at go_build_seconds; this is the backstop for the whole job.
        backstop = self.call_later(
            float(self.s["go_build_seconds"]) + 15, lambda: self._kill_build(pid, group)
        )

        def on_readable() -> None:
            data = os.read(read_fd, 65536)
            if data:
                chunks.append(data)
                return
            self.selector.unregister(read_fd)
            os.close(read_fd)
            backstop[2] = None
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            # The job is reaped (its pid may be reused): only what is left in its cgroup dies.
            self._empty_build_group(group)
            try:
                answer = json.loads(b"".join(chunks))
            except ValueError:
                answer = {"error": "runner: the Go compiler job died"}
            path = answer.get("path")
            error = answer.get("error")
            if path:
                self.go_cache[key] = path
                self._boot_worked("go")
            elif error and error.startswith("runner: "):
                self._boot_failed("go", error.removeprefix("runner: "))
            elif group >= 0 and self.cgroups.oom_kills(group) > oom_before:
                error = (
                    f"the code needs more than {self.s['go_build_memory_mb']} MB to compile "
                    "(memory limit of a Go compile)"
                )
            self.go_builders.append(group)
            for callback in self.go_jobs.pop(key, []):
                callback(path, error)
            self._start_builds()

        self.selector.register(read_fd, selectors.EVENT_READ, ("compile", on_readable))

    def _kill_build(self, pid: int, group: int) -> None:
        """The backstop: the job (not reaped yet, so the pid is still ours) and its cgroup."""
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        self._empty_build_group(group)

    def _empty_build_group(self, group: int) -> None:
        if group >= 0:
            for path in self.cgroups.slot_dirs[group].values():
                _kill_cgroup(path)

    def _build_in_child(self, source: str, group: int) -> dict[str, Any]:
        """In the forked job: limits and an unprivileged uid, then the compile (no user code
        runs here, but the compiler itself can be made to use unbounded memory and disk)."""
        os.setsid()
        for path in self.cgroups.procs_files(group) if group >= 0 else []:
            write_text(path, str(os.getpid()))
        # Read as root: the engines' copy may sit where the build user cannot go (a work dir
        # under a private tmp).
        import golang

        engine_go = golang.ENGINE_GO.read_bytes()
        cache_dir = self.go_cache_dir
        drop = self.root and self.child_cfg["mountns"]
        if drop:
            # The cache's parent dirs may be closed to other users (a work dir under a private
            # tmp): show the cache alone at a fixed path, in a mount namespace of the job's own.
            check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")  # and no network
            mount("none", "/", None, MS_REC | MS_PRIVATE, None)
            mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
            os.mkdir(BUILD_CACHE, 0o711)
            mount(self.go_cache_dir, BUILD_CACHE, None, MS_BIND, None)
            cache_dir = BUILD_CACHE
        seconds = int(self.s["go_build_seconds"])
        limits = {
            resource.RLIMIT_CPU: seconds,  # per process of the toolchain
            resource.RLIMIT_FSIZE: int(self.s["go_build_output_mb"]) * MB,
            resource.RLIMIT_CORE: 0,
        }
        for limit, value in limits.items():
            resource.setrlimit(limit, (value, value))
        if drop:
            os.setgroups([])
            os.setresgid(self.build_uid, self.build_uid, self.build_uid)
            os.setresuid(self.build_uid, self.build_uid, self.build_uid)
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        try:
            path = golang.compile(
                source, go=self.s["go"], cache_dir=cache_dir, timeout=seconds, engine_go=engine_go
            )
        except golang.CompileFailed as exc:
            return {"error": exc.message}
        except Exception as exc:
            return {"error": f"runner: Go compiler failed: {exc}"}
        with contextlib.suppress(OSError):
            golang.trim_cache(cache_dir, int(self.s["go_cache_mb"]) * MB, keep=path)
        return {"path": os.path.join(self.go_bin_dir, os.path.basename(path))}

    # ---------------------------------------------------------------- stop

    def shutdown(self) -> None:
        if not hasattr(self, "cgroups"):
            return  # start-up failed before anything was created
        for slot in self.slots:
            self._kill_slot(slot)
        if self.zygote is not None:
            with contextlib.suppress(Exception):
                self.zygote.kill()
                self.zygote.wait(5)
        for slot in self.slots:
            for _ in range(200):
                pids = self._slot_pids(slot)
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.005)
        self.cgroups.remove()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        if self.owner_filter is not None:
            self.owner_filter.remove()
        if self.slot_networks is not None:
            self.slot_networks.remove()
        if self.zsock is not None:
            self.zsock.close()


def _install_engines(target: str) -> str:
    """Copy the engines where every sandbox user may read them: the checkout may sit where they
    cannot (a private temp dir, /root, a umask of 077), and the rest of it is not theirs to read."""
    shutil.copytree(
        ENGINES_DIR, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
    )
    for root, _, files in os.walk(target):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    return target


def _event(line: bytes) -> dict[str, Any]:
    """One JSON line of a child's protocol fd ({} for anything else)."""
    try:
        event = wire.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def _read_available(fd: int) -> str:
    try:
        return os.read(fd, READ_SIZE).decode("utf-8", "replace")
    except OSError:
        return ""


def _gist(output: str) -> str:
    """What went wrong, from a program's error output: its first error line (Node prints
    "Error: Cannot find module ..." amid a stack), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.split(":", 1)[0].endswith(("Error", "Exception"))]
    found = errors[0] if errors else lines[-1] if lines else "it ended before it was ready"
    return found[:300]


def _not_executable(path: str) -> str:
    return "" if os.path.isfile(path) and os.access(path, os.X_OK) else f"{path} is not a program"


def _wipe(directory: str) -> None:
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a live process has used; 0 when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def _process_rss(pid: int) -> int:
    """Resident bytes of a live process; 0 when unknown."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def _is_idle(child: Child) -> bool:
    """What /proc says of a warm worker that reported the end of its run.

    Python: its only thread is blocked reading its request pipe, so nothing of the run goes on.
    Node: its main thread is blocked polling for events (not running code); its threads and
    event loop cannot be seen from outside, which is why a warm worker idle for WARM_STOP_AFTER
    is also stopped (SIGSTOP) until its next run.
    """
    pid = child.pid
    try:
        if child.proc_fds is None:  # read again for each run: pread on open files is cheap
            child.proc_fds = (
                os.open(f"/proc/{pid}/syscall", os.O_RDONLY),
                os.open(f"/proc/{pid}/stat", os.O_RDONLY),
            )
        syscall_fd, stat_fd = child.proc_fds
        fields = os.pread(syscall_fd, 512, 0).split()
        if child.kind == "node":
            return bool(fields) and fields[0].decode() in SYS_EPOLL_WAITS
        if len(fields) < 2 or fields[0] != str(SYS_READ).encode():
            return False  # "running", or another call
        threads = os.pread(stat_fd, 1024, 0).rsplit(b")", 1)[1].split()[17]
        if threads != b"1":
            return False
        return os.readlink(f"/proc/{pid}/fd/{int(fields[1], 16)}") == child.request_pipe
    except (OSError, ValueError, IndexError):
        return False


def _ipc_objects(pid: int) -> int:
    """SysV IPC objects (shared memory, queues, semaphores) in the IPC namespace of `pid`."""
    with entered(f"/proc/{pid}/ns/ipc", CLONE_NEWIPC):
        count = 0
        for kind in ("shm", "msg", "sem"):
            with open(f"/proc/sysvipc/{kind}") as handle:
                count += max(0, len(handle.readlines()) - 1)  # below a header line
        return count


def _sweep_shared_tmp(uid: int) -> None:
    """Without a private mount namespace, remove what the slot's user left in shared temp dirs."""
    for directory in ("/tmp", "/var/tmp", "/dev/shm"):
        _wipe_owned(directory, uid)


def _wipe_owned(directory: str, uid: int) -> None:
    """Remove the entries of `directory` owned by `uid` (a sandbox user writes no other)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            continue


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def _read_first_frame(sock: socket.socket) -> dict[str, Any]:
    reader = wire.FrameReader()
    while True:
        data = sock.recv(1 << 20)
        if not data:
            raise EOFError
        frames = reader.feed(data)
        if frames:
            return frames[0][0]  # the API sends nothing else before our "ready"


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(0)  # runs the `finally` that kills every sandbox


def main() -> None:
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the API process
    libc.prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK 1 µs: short naps (_on_done) stay short
    sock = socket.socket(fileno=int(sys.argv[1]))
    init = _read_first_frame(sock)
    supervisor = Supervisor(sock)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        supervisor.start(init)  # "ready" goes out from the loop (_report)
        supervisor.loop()
    finally:
        supervisor.shutdown()


if __name__ == "__main__":
    main()
