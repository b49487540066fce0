"""Linux namespaces of a sandboxed child: which ones this host allows, its private mounts, its
empty network."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Callable

from codeactions.runner.host.linux import (
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
    check,
    libc,
    mount,
)

PROC_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
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


def private_mounts(
    keep_visible: list[str],
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

    `keep_visible`: read-only material the sandbox needs at its real path, kept in sight.
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
    closed = sorted({top for path in keep_visible if (top := _closed_above(path))})
    # The engines and the user-code interpreter's libraries must stay visible even when the
    # checkout lives under a dir about to be hidden (a clone in /tmp): park them in /run first.
    kept = [path for path in keep_visible if any(_within(path, top) for top in hidden + closed)]
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


def empty_network() -> None:
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


def probe_namespaces() -> tuple[bool, bool, bool, bool]:
    """What a child may do, tried in throwaway forks: (mount ns, network ns, private /proc,
    IPC and cgroup ns)."""

    def private_proc() -> bool:
        return bool(
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
