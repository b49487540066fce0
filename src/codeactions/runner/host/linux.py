"""Small Linux helpers of the runner host: entering another process's namespace for a moment.

Stdlib only (the supervisor runs outside the service's venv).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
_KINDS = {CLONE_NEWIPC: "ipc", CLONE_NEWNET: "net"}
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_NO_NEW_PRIVS = 38

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]


def read_text(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def write_text(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def check(result: int, what: str) -> None:
    """Raise OSError (with errno) for a failed libc call's -1."""
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    check(
        libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def setns(fd: int, nstype: int) -> None:
    check(libc.setns(fd, nstype), "setns")


@contextlib.contextmanager
def entered(path: str, nstype: int) -> Iterator[None]:
    """Run the block in the namespace at `path` (e.g. /proc/<pid>/ns/ipc), then come back.

    Only for a single-threaded process (setns changes the calling thread). Failing to come back
    would leave the process working in a sandbox's namespace: it exits instead.
    """
    home = os.open(f"/proc/self/ns/{_KINDS[nstype]}", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            setns(target, nstype)
        finally:
            os.close(target)
        try:
            yield
        finally:
            try:
                setns(home, nstype)
            except OSError as exc:
                sys.stderr.write(f"codeactions: cannot return to our namespace: {exc}\n")
                os._exit(70)
    finally:
        os.close(home)
