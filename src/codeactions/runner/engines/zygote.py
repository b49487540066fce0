"""Zygote: a warm interpreter that forks pre-sandboxed children for the supervisor.

Stdlib only, started by the supervisor with an empty environment as `python -I zygote.py <fd>`.
It never sees request data (requests go from the supervisor straight to the child's stdin), so a
child's inherited memory holds nothing of other tenants. A Python child serves one run, or with
reuse several runs of the same code (the supervisor keeps it as that code's warm worker). Each
child is sandboxed before it waits for its request: own session, cgroups, namespaces, rlimits,
uid, private dir.

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
import json
import os
import resource
import selectors
import signal
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import python_engine
from linux import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    PR_SET_NO_NEW_PRIVS,
    check,
    libc,
    mount,
)

# Light libraries user code commonly imports, loaded once here so a run does not pay for them.
# Heavy ones (pandas, numpy) stay out: fork cost grows with the zygote's memory.
for _name in (
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
):
    with contextlib.suppress(Exception):
        __import__(_name)

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40


# ---- seccomp: a deny-list of kernel interfaces user code has no business with (x86_64 only).
# Namespaces (unprivileged user namespaces would hand it a full capability set over a large
# kernel surface), mounts, ptrace and cross-process memory access, eBPF, perf, io_uring,
# keyrings, kernel modules, kexec, swap, reboot, clock and host name changes.
SECCOMP_DENY_X86_64 = {
    101: "ptrace",
    103: "syslog",
    134: "uselib",
    153: "vhangup",
    155: "pivot_root",
    161: "chroot",
    163: "acct",
    165: "mount",
    166: "umount2",
    167: "swapon",
    168: "swapoff",
    169: "reboot",
    170: "sethostname",
    171: "setdomainname",
    172: "iopl",
    173: "ioperm",
    175: "init_module",
    176: "delete_module",
    179: "quotactl",
    212: "lookup_dcookie",
    246: "kexec_load",
    248: "add_key",
    249: "request_key",
    250: "keyctl",
    272: "unshare",
    298: "perf_event_open",
    303: "name_to_handle_at",
    304: "open_by_handle_at",
    308: "setns",
    310: "process_vm_readv",
    311: "process_vm_writev",
    312: "kcmp",
    313: "finit_module",
    320: "kexec_file_load",
    321: "bpf",
    323: "userfaultfd",
    # SysV IPC and POSIX message queues: nothing user code needs, and their objects outlive
    # the process that made them (a warm worker's next run would find them, and pay for them).
    29: "shmget",
    30: "shmat",
    31: "shmctl",
    64: "semget",
    65: "semop",
    66: "semctl",
    67: "shmdt",
    68: "msgget",
    69: "msgsnd",
    70: "msgrcv",
    71: "msgctl",
    220: "semtimedop",
    240: "mq_open",
    241: "mq_unlink",
    242: "mq_timedsend",
    243: "mq_timedreceive",
    244: "mq_notify",
    245: "mq_getsetattr",
    428: "open_tree",
    429: "move_mount",
    430: "fsopen",
    431: "fsconfig",
    432: "fsmount",
    433: "fspick",
    442: "mount_setattr",
}
# Answered "not implemented": callers (glibc's clone3, libuv's io_uring) fall back by design.
SECCOMP_ENOSYS_X86_64 = {
    425: "io_uring_setup",
    426: "io_uring_enter",
    427: "io_uring_register",
    435: "clone3",
}
SYS_SOCKET = 41
SYS_SOCKETPAIR = 53
SYS_CLONE = 56
CLONE_NAMESPACES = 0x7E020080  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
AUDIT_ARCH_X86_64 = 0xC000003E
# The socket families user code needs: local sockets, IPv4, IPv6, and route netlink (getaddrinfo
# and getifaddrs read addresses through it). Others (vsock, packet, bluetooth, ...) are refused.
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
NETLINK_ROUTE = 0
EAFNOSUPPORT, EPROTONOSUPPORT = 97, 93


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _assemble(program: list) -> list[tuple[int, int, int, int]]:
    """BPF with named jump targets: a str in the program marks a label, jt/jf may name one."""
    labels: dict[str, int] = {}
    code = []
    for item in program:
        if isinstance(item, str):
            labels[item] = len(code)
        else:
            code.append(item)
    resolved = []
    for index, (op, jt, jf, k) in enumerate(code):
        jt = labels[jt] - index - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - index - 1 if isinstance(jf, str) else jf
        resolved.append((op, jt, jf, k))
    return resolved


def _seccomp_program() -> _SockFprog | None:
    """The BPF program, built once in the zygote; None where the syscall table is not known."""
    import platform

    if platform.machine() != "x86_64":
        return None
    load, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow = 0x7FFF0000

    def errno(number: int) -> int:
        return 0x00050000 | number

    nr, arg0, arg2 = 0, 16, 32  # offsets in seccomp_data (low halves of the arguments)
    program: list = [
        (load, 0, 0, 4),
        (jeq, 1, 0, AUDIT_ARCH_X86_64),
        (ret, 0, 0, errno(1)),  # other ABIs
        (load, 0, 0, nr),
        (jge, "eperm", 0, 0x40000000),  # x32 numbers
    ]
    program += [(jeq, "eperm", 0, number) for number in sorted(SECCOMP_DENY_X86_64)]
    program += [(jeq, "enosys", 0, number) for number in sorted(SECCOMP_ENOSYS_X86_64)]
    program += [
        (jeq, "socket", 0, SYS_SOCKET),
        (jeq, "socketpair", 0, SYS_SOCKETPAIR),
        (jeq, "clone", "allow", SYS_CLONE),
        "socket",
        (load, 0, 0, arg0),
        (jeq, "allow", 0, AF_UNIX),
        (jeq, "allow", 0, AF_INET),
        (jeq, "allow", 0, AF_INET6),
        (jeq, 0, "eafnosupport", AF_NETLINK),
        (load, 0, 0, arg2),
        (jeq, "allow", 0, NETLINK_ROUTE),
        (ret, 0, 0, errno(EPROTONOSUPPORT)),
        "socketpair",
        (load, 0, 0, arg0),
        (jeq, "allow", "eafnosupport", AF_UNIX),
        "clone",
        (load, 0, 0, arg0),  # its flags
        (jset, "eperm", "allow", CLONE_NAMESPACES),
        "allow",
        (ret, 0, 0, allow),
        "eperm",
        (ret, 0, 0, errno(1)),
        "enosys",
        (ret, 0, 0, errno(38)),
        "eafnosupport",
        (ret, 0, 0, errno(EAFNOSUPPORT)),
    ]
    code = _assemble(program)
    filters = (_SockFilter * len(code))(*[_SockFilter(*ins) for ins in code])
    program_struct = _SockFprog(len(code), filters)
    program_struct._keep = filters  # type: ignore[attr-defined]  # keep the array alive
    return program_struct


SECCOMP_PROGRAM = _seccomp_program()


def _apply_seccomp() -> None:
    if SECCOMP_PROGRAM is None:
        return
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
    check(
        libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(SECCOMP_PROGRAM), 0, 0),
        "seccomp",
    )


# Read-only material the sandbox needs at its real path: the engines (node runs engine.js by
# path) and the interpreter's prefix (user code imports libraries lazily).
KEEP_VISIBLE = [
    os.path.dirname(os.path.abspath(__file__)),
    os.path.realpath(sys.prefix),
]
PARKED = "/run/codeactions-keep"


def _within(path: str, top: str) -> bool:
    top = os.path.realpath(top)
    return path == top or path.startswith(top.rstrip("/") + "/")


def _closed_above(path: str) -> str | None:
    """The top-most dir above `path` that other users may not enter (a home such as /root, a
    private temp dir), or None: the sandbox user could not reach `path` through it."""
    current = ""
    for part in path.strip("/").split("/")[:-1]:
        current += "/" + part
        with contextlib.suppress(OSError):
            if not os.stat(current).st_mode & 0o001:
                return current
    return None


def _private_mounts(
    tmpfs_mb: int,
    uid: int,
    go_bin_dir: str,
    sandbox_go_dir: str,
    hide_pids: bool,
    work_dir: str,
) -> str:
    """Own mount namespace: the run's dir is a fresh, size-bounded /tmp it owns; /var/tmp and
    /dev/shm are fresh too, /run is empty (no unix sockets of host services) and /proc shows
    only the slot's own processes (hidepid: no other command lines, no pids to aim at).

    Everything vanishes with the namespace when the run's last process dies. Returns the dir.
    """
    check(libc.unshare(CLONE_NEWNS), "unshare(mount)")
    mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    flags = MS_NOSUID | MS_NODEV
    mount("tmpfs", "/run", "tmpfs", flags, "size=1m,mode=0755")
    # Compiled Go binaries may live under /tmp, about to be hidden: show their dir in /run.
    if os.path.isdir(go_bin_dir):
        os.mkdir(sandbox_go_dir, 0o711)
        mount(go_bin_dir, sandbox_go_dir, None, MS_BIND, None)
    hidden = ["/tmp", "/var/tmp", "/dev/shm", work_dir]
    # A kept path under a dir the sandbox user may not enter (an interpreter in /root/x): that
    # dir gets an empty tmpfs too (what it held is not the sandbox's to see), the path remade in it.
    closed = sorted({top for path in KEEP_VISIBLE if (top := _closed_above(path))})
    # The engines and the user-code interpreter's libraries must stay visible even when the
    # checkout lives under a dir about to be hidden (a clone in /tmp): park them in /run first.
    kept = [path for path in KEEP_VISIBLE if any(_within(path, top) for top in hidden + closed)]
    for index, path in enumerate(kept):
        os.makedirs(f"{PARKED}/{index}", 0o755)
        mount(path, f"{PARKED}/{index}", None, MS_BIND | MS_REC, None)
    # Twice the file-size limit: one file too big ends with EFBIG, not with a full disk.
    mount("tmpfs", "/tmp", "tmpfs", flags, f"size={2 * tmpfs_mb}m,mode=0700,uid={uid},gid={uid}")
    for target in ("/var/tmp", "/dev/shm"):
        if os.path.isdir(target) and not os.path.islink(target):
            mount("tmpfs", target, "tmpfs", flags, f"size={tmpfs_mb}m,mode=1777")
    # The on-disk work dir (other slots' dirs, the Go cache) is of no use inside: hide it.
    if os.path.isdir(work_dir):
        mount("tmpfs", work_dir, "tmpfs", flags, "size=64k,mode=0711")
    for top in closed:
        if os.path.isdir(top):  # not gone already under a tmpfs above
            mount("tmpfs", top, "tmpfs", flags, "size=64k,mode=0711")
    # The host's cgroup tree names other slots, other instances and the supervisor's pid.
    if os.path.isdir("/sys/fs/cgroup"):
        mount(
            "tmpfs", "/sys/fs/cgroup", "tmpfs", flags | MS_NOEXEC | MS_RDONLY, "size=4k,mode=0555"
        )
    for index, path in enumerate(kept):
        _make_traversable(path)
        mount(f"{PARKED}/{index}", path, None, MS_BIND | MS_REC, None)
    if hide_pids:
        mount("proc", "/proc", "proc", flags | MS_NOEXEC, "hidepid=invisible")
    return "/tmp"


def _make_traversable(path: str) -> None:
    """Create `path` in the fresh tmpfs with every component 0755 whatever the umask (the
    service may run with 077): the sandbox user must reach what is mounted there."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        if not os.path.isdir(current):
            os.mkdir(current)
            os.chmod(current, 0o755)


def _empty_network() -> None:
    """Own network namespace with only `lo` up: no route anywhere, not even the host's loopback."""
    check(libc.unshare(CLONE_NEWNET), "unshare(net)")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        import fcntl

        fcntl.ioctl(
            sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)
        )
    finally:
        sock.close()


def _enter_cgroups(paths: list[str]) -> None:
    pid = str(os.getpid())
    for path in paths:
        with open(path, "w") as handle:
            handle.write(pid)


def _become_sandbox(cfg: dict, slot: dict, kind: str) -> None:
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
        workdir = _private_mounts(
            cfg["tmpfs_mb"],
            slot["uid"],
            cfg["go_bin_dir"],
            cfg["sandbox_go_dir"],
            cfg["hide_pids"],
            cfg["work_dir"],
        )
    if slot["netns"]:
        _empty_network()
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
        _apply_seccomp()
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


def _child(cfg: dict, slot: dict, kind: str, fds: list[int]) -> None:
    """The forked child: sandbox, then wait for the request (python) or exec node right away."""
    try:
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
        _set_cpu_limit(cfg["node_cpu"])
        _exec(cfg["node_argv"], env)
    if cfg.get("python_reuse"):
        # This child may become a warm worker serving many runs: its RLIMIT_CPU is a budget for
        # its whole life, each run's own limit is set by the supervisor (as for Node).
        _set_cpu_limit(cfg["node_cpu"])
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
        self.cfg: dict = {}
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

    def send(self, message: dict, fds: list[int] | None = None) -> None:
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
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    zygote = Zygote(int(sys.argv[1]))
    gc.collect()
    gc.freeze()  # fork without touching (copying) the pages of every pre-imported object
    zygote.serve()


if __name__ == "__main__":
    main()
