"""Per-slot cgroups (memory, pids, cpu): v1 hierarchies, the v2 unified tree, or none."""

from __future__ import annotations

import contextlib
import os

from codeactions.runner.host.linux import read_text, write_text
from codeactions.runner.host.processes import kill_until_empty

MB = 1024 * 1024


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
                    kill_cgroup(path)
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
        wanted: list[str] = [c for c in ("memory", "pids", "cpu") if c in available]
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
            found |= cgroup_pids(path)
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
                kill_cgroup(path)
                with contextlib.suppress(OSError):
                    os.rmdir(path)
        for base in self.bases:
            with contextlib.suppress(OSError):
                os.rmdir(base)


def cgroup_pids(path: str) -> set[int]:
    try:
        return {int(line) for line in read_text(os.path.join(path, "cgroup.procs")).split()}
    except OSError:
        return set()


def kill_cgroup(path: str) -> None:
    kill_until_empty(lambda: cgroup_pids(path))
