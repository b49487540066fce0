"""Processes and files of sandboxes: killing them until none is left, what /proc says, wiping."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable

from codeactions.runner.host.linux import CLONE_NEWIPC, entered

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLEAN_STEP = 0.002  # between two kill rounds of a slot being cleaned (from the event loop)
KILL_ATTEMPTS = 200  # kill_until_empty: rounds, KILL_PAUSE seconds apart
KILL_PAUSE = 0.005


def kill_round(pids_of: Callable[[], set[int]]) -> set[int]:
    """SIGKILL every process `pids_of` lists now; what it listed (empty: none was left).

    The one way the host kills what a sandbox may have forked: list, kill, and (the caller)
    list again until nothing is left, since a process may fork while its siblings die.
    """
    pids = pids_of()
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return pids


def kill_until_empty(pids_of: Callable[[], set[int]]) -> None:
    """Kill rounds until none is left (or KILL_ATTEMPTS rounds), waiting in between."""
    for _ in range(KILL_ATTEMPTS):
        if not kill_round(pids_of):
            return
        time.sleep(KILL_PAUSE)


def uid_pids(uid: int) -> set[int]:
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


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a live process has used; 0 when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def process_rss(pid: int) -> int:
    """Resident bytes of a live process; 0 when unknown."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def ipc_objects(pid: int) -> int:
    """SysV IPC objects (shared memory, queues, semaphores) in the IPC namespace of `pid`."""
    with entered(f"/proc/{pid}/ns/ipc", CLONE_NEWIPC):
        count = 0
        for kind in ("shm", "msg", "sem"):
            with open(f"/proc/sysvipc/{kind}") as handle:
                count += max(0, len(handle.readlines()) - 1)  # below a header line
        return count


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def chown_tree(top: str, uid: int) -> None:
    """Give `top` and everything under it to `uid` (skipping what it owns already)."""
    for root, dirs, files in os.walk(top):
        for name in [root, *(os.path.join(root, entry) for entry in dirs + files)]:
            with contextlib.suppress(OSError):
                if os.lstat(name).st_uid != uid:
                    os.lchown(name, uid, uid)


def wipe(directory: str) -> None:
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def sweep_shared_tmp(uid: int) -> None:
    """Without a private mount namespace, remove what the slot's user left in shared temp dirs."""
    for directory in ("/tmp", "/var/tmp", "/dev/shm"):
        wipe_owned(directory, uid)


def wipe_owned(directory: str, uid: int) -> None:
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
