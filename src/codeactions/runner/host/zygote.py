"""Zygote: a warm interpreter that forks pre-sandboxed children for the supervisor.

Stdlib only, started by the supervisor on the runtime interpreter with an empty environment as
`python -I <src>/codeactions/runner/host/zygote.py <fd> <engines dir>`. It never sees request data
(requests go from the supervisor straight to the child's stdin), so a child's inherited memory
holds nothing of other tenants. A Python child serves one run, or with reuse several runs of the
same code (the supervisor keeps it as that code's warm worker). Each child is sandboxed before it
waits for its request: own session, cgroups, namespaces, rlimits, uid, private dir.

Messages on the SOCK_SEQPACKET socket <fd> (one JSON object per message):
  supervisor -> zygote  {"op": "config", ...} once, then {"op": "spawn", "slot": i, "kind": "python"|"node"}
  zygote -> supervisor  {"op": "spawned", "slot": i, "pid": n} with fds [stdin_w, stdout_r, stderr_r, proto_r]
                        {"op": "spawn_failed", "slot": i, "error": str}
                        {"op": "exit", "pid": n, "status": raw wait status}
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import resource
import selectors
import signal
import socket
import struct
import sys
from typing import Any

# `python -I` puts no script dir on the path, and the runtime interpreter has no codeactions
# installed: the host package comes from this checkout's src/ (taken out again in each child).
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if __name__ == "__main__":
    sys.path.insert(0, SRC)

from codeactions.runner.host import namespaces, seccomp  # noqa: E402
from codeactions.runner.host.linux import (  # noqa: E402
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    PR_SET_NO_NEW_PRIVS,
    check,
    libc,
)

# Light libraries user code commonly imports, loaded once here so a run does not pay for them.
# Heavy ones (pandas, numpy) stay out: fork cost grows with the zygote's memory.
PRELOAD = (
    "json",
    "re",
    "datetime",
    "urllib.parse",
    "urllib.request",
    "base64",
    "hashlib",
    "uuid",
    "random",
    "math",
    "time",
    "tempfile",
    "requests",
)
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

python_engine: Any = None  # the engines' python_engine, imported by main() from their copy
# Read-only material the sandbox needs at its real path: the engines (node runs engine.js by
# path) and the interpreter's prefix (user code imports libraries lazily). Set by main().
KEEP_VISIBLE: list[str] = []


def _enter_cgroups(paths: list[str]) -> None:
    pid = str(os.getpid())
    for path in paths:
        with open(path, "w") as handle:
            handle.write(pid)


def _become_sandbox(cfg: dict[str, Any], slot: dict[str, Any], kind: str) -> None:
    """Runs in the fresh child as root; returns as the slot's unprivileged user."""
    os.setsid()
    _enter_cgroups(slot["cgroup_procs"])
    if cfg.get("ipcns"):
        # Own SysV IPC objects (gone with the child's last process) and a cgroup view rooted at
        # the slot: nothing shared with other runs or the host, no cgroup path naming the host.
        check(libc.unshare(CLONE_NEWIPC | CLONE_NEWCGROUP), "unshare(ipc, cgroup)")
    if slot.get("netns_path"):
        # The slot's own network namespace (before /run, where it is named, is hidden).
        fd = os.open(slot["netns_path"], os.O_RDONLY)
        try:
            check(libc.setns(fd, CLONE_NEWNET), "setns(net)")
        finally:
            os.close(fd)
    workdir = slot["dir"]
    if cfg["mountns"]:
        workdir = namespaces.private_mounts(
            KEEP_VISIBLE,
            cfg["tmpfs_mb"],
            slot["uid"],
            cfg["go_bin_dir"],
            cfg["sandbox_go_dir"],
            cfg["hide_pids"],
            cfg["work_dir"],
        )
    if slot["netns"]:
        namespaces.empty_network()
    os.chdir(workdir)
    limits = cfg["rlimits"]
    for name, value in limits.items():
        if name == "RLIMIT_AS":
            if kind != "python":
                continue  # Node/Go reserve large address space up front; RLIMIT_DATA covers them
            value += _address_space()  # on top of what the warm interpreter already maps
        resource.setrlimit(getattr(resource, name), (value, value))
    uid = slot["uid"]
    if cfg["root"]:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    # Changing uid made the process non-dumpable (its /proc files owned by root); tools such as
    # Node read /proc/self, and only processes of this same slot uid could look at it.
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    if cfg.get("seccomp"):
        seccomp.apply()
    env = dict(cfg["env"])
    env["HOME"] = env["TMPDIR"] = workdir
    os.environ.clear()
    os.environ.update(env)
    import tempfile

    tempfile.tempdir = workdir


def _address_space() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _read_exact(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("stdin closed")
        data += chunk
    return data


def _set_cpu_limit(seconds: int) -> None:
    # SIGXCPU at the soft limit, SIGKILL a second later if it is ignored.
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))


def _exec(argv: list[str], env: dict[str, str]) -> None:
    # Python ignores these two; an exec'd program must get the default actions back.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execve(argv[0], argv, env)
    except OSError as exc:
        python_engine.Channel().send(
            {
                "t": "error",
                "kind": "runner",
                "message": f"cannot start {os.path.basename(argv[0])}: {exc.strerror}",
            }
        )
        os._exit(127)


def _forget_host() -> None:
    """User code sees no more than the engines: the host package leaves the path and modules."""
    with contextlib.suppress(ValueError):
        sys.path.remove(SRC)
    for name in [name for name in sys.modules if name.partition(".")[0] == "codeactions"]:
        del sys.modules[name]


def _child(cfg: dict[str, Any], slot: dict[str, Any], kind: str, fds: list[int]) -> None:
    """The forked child: sandbox, then wait for the request (python) or exec node right away."""
    try:
        _forget_host()
        stdin_r, stdout_w, stderr_w, proto_w = fds
        for target, fd in ((0, stdin_r), (1, stdout_w), (2, stderr_w), (3, proto_w)):
            os.dup2(fd, target)
        os.closerange(4, 65536)
        _become_sandbox(cfg, slot, kind)
    except BaseException as exc:
        try:
            os.write(
                3,
                (
                    json.dumps(
                        {"t": "error", "kind": "runner", "message": f"sandbox setup failed: {exc}"}
                    )
                    + "\n"
                ).encode(),
            )
        finally:
            os._exit(126)
    env = dict(os.environ)
    if kind == "python":
        with contextlib.suppress(Exception):  # only an optimisation
            python_engine.warm()
    # Sandboxed and waiting: only now may the supervisor hand this child a request.
    python_engine.Channel().send({"t": "ready"})
    if kind == "node":
        _set_cpu_limit(cfg["worker_cpu"])
        _exec(cfg["node_argv"], env)
    if cfg.get("python_reuse"):
        # This child may become a warm worker serving many runs: its RLIMIT_CPU is a budget for
        # its whole life, each run's own limit is set by the supervisor (as for Node).
        _set_cpu_limit(cfg["worker_cpu"])
    # A general spare: a length-prefixed header says what to become, the request follows.
    try:
        (size,) = struct.unpack(">I", _read_exact(0, 4))
        header = json.loads(_read_exact(0, size))
    except Exception:
        os._exit(0)  # the supervisor retired this spare without a run
    if not header.get("reuse"):
        _set_cpu_limit(int(header.get("cpu", 300)))
    if header.get("mode") == "exec":
        _exec(header["argv"], env)
    python_engine.serve(0, reuse=bool(header.get("reuse")))


class _Sigaction(ctypes.Structure):
    _fields_ = [
        ("handler", ctypes.c_void_p),
        ("mask", ctypes.c_ulong * 16),
        ("flags", ctypes.c_int),
        ("restorer", ctypes.c_void_p),
    ]


def _no_stop_notifications() -> None:
    """SIGCHLD only for children that end (SA_NOCLDSTOP): warm workers are stopped and continued
    around every run, which would otherwise wake us twice a run for nothing."""
    action = _Sigaction()
    check(libc.sigaction(signal.SIGCHLD, None, ctypes.byref(action)), "sigaction")
    action.flags |= 1  # SA_NOCLDSTOP
    check(libc.sigaction(signal.SIGCHLD, ctypes.byref(action), None), "sigaction")


class Zygote:
    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.cfg: dict[str, Any] = {}
        self.children: set[int] = set()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        _no_stop_notifications()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ, "sock")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.send(data)

    def spawn(self, index: int, kind: str) -> None:
        slot = self.cfg["slots"][index]
        pipes = [os.pipe() for _ in range(4)]  # stdin, stdout, stderr, protocol
        child_fds = [pipes[0][0], pipes[1][1], pipes[2][1], pipes[3][1]]
        parent_fds = [pipes[0][1], pipes[1][0], pipes[2][0], pipes[3][0]]
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                self.selector.close()
                self.sock.detach()
                for fd in [*parent_fds, self.wake_r, self.wake_w]:
                    os.close(fd)
                _child(self.cfg, slot, kind, child_fds)
            finally:
                os._exit(126)
        self.children.add(pid)
        for fd in child_fds:
            os.close(fd)
        try:
            self.send({"op": "spawned", "slot": index, "pid": pid, "kind": kind}, parent_fds)
        finally:
            for fd in parent_fds:
                os.close(fd)

    def reap(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            # Orphans of user code are re-parented here (subreaper); only our own children matter.
            if pid in self.children:
                self.children.discard(pid)
                cpu = usage.ru_utime + usage.ru_stime
                self.send({"op": "exit", "pid": pid, "status": status, "cpu": cpu})

    def serve(self) -> None:
        while True:
            for key, _ in self.selector.select():
                if key.data == "wake":
                    self.reap()
                    continue
                data = self.sock.recv(1 << 20)
                if not data:
                    return
                message = json.loads(data)
                if message["op"] == "config":
                    self.cfg = message
                elif message["op"] == "spawn":
                    try:
                        self.spawn(message["slot"], message.get("kind", "python"))
                    except OSError as exc:
                        self.send(
                            {"op": "spawn_failed", "slot": message["slot"], "error": str(exc)}
                        )


def main() -> None:
    global python_engine
    engines = sys.argv[2]
    KEEP_VISIBLE[:] = [engines, os.path.realpath(sys.prefix)]
    sys.path.insert(0, engines)
    python_engine = importlib.import_module("python_engine")
    for name in PRELOAD:
        with contextlib.suppress(Exception):
            __import__(name)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    zygote = Zygote(int(sys.argv[1]))
    gc.collect()
    gc.freeze()  # fork without touching (copying) the pages of every pre-imported object
    zygote.serve()


if __name__ == "__main__":
    main()
