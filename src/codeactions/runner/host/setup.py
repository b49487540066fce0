"""Start-up of the supervisor: the isolation layers this host allows, the slots, the zygote's
configuration and what /health says of it all."""

from __future__ import annotations

import os
import platform
import selectors
import shutil
from typing import Any

from codeactions.runner.host import network
from codeactions.runner.host.cgroups import MB, Cgroups
from codeactions.runner.host.cpu import WORKER_CPU_BUDGET
from codeactions.runner.host.namespaces import probe_namespaces
from codeactions.runner.host.processes import chown_tree
from codeactions.runner.host.slots import Slot, SlotState
from codeactions.runner.host.state import HostState
from codeactions.runner.host.warm import SYS_READ

# The engines: what user code sees (copied at start where every sandbox user may read them).
ENGINES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "engines")
CHILD_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
BOOT_SETTLE = 30.0  # "ready" goes to the API once every language started or failed, or by then
SANDBOX_GO_DIR = "/run/codeactions-go"


class StartUp(HostState):
    def start(self, init: dict[str, Any]) -> None:
        """Set up the isolation layers and the slots, start the zygote and the first spares."""
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
        # Binaries land in <cache>/bin (host/gocompile.py); sandboxes see that dir
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
            chown_tree(self.go_cache_dir, self.build_uid)
        self._sweep_stale_dirs(work)
        self.base_dir = os.path.join(work, f"sandbox-{os.getpid()}")
        os.makedirs(self.base_dir, mode=0o711, exist_ok=True)
        os.chmod(self.base_dir, 0o711)
        self.engines_dir = install_engines(os.path.join(self.base_dir, "engines"))
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
            # life, each run's own limit is enforced by the supervisor (cpu.py).
            "worker_cpu": WORKER_CPU_BUDGET,
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
            slot.state = SlotState.PARKED
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


def install_engines(target: str) -> str:
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
