"""Settings of the sandbox runner: slots and queues, per-run limits, network, interpreters, Go builds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import field_validator

from codeactions.config.fields import Group, env

# The checkout, where a relative interpreter path starts (src/codeactions/config/ is below it).
REPO_ROOT = Path(__file__).resolve().parents[3]


class RunnerSettings(Group):
    enabled: bool = env(
        "RUNNER_ENABLED",
        default=True,
        description="Start the sandbox runner; when false every execution answers 503.",
    )
    slots: int = env(
        "RUNNER_SLOTS",
        "FLOWS_CODE_ACTIONS_WORKER_POOL_SIZE",
        default=8,
        ge=1,
        le=64,
        description="Runs executed at once (sandbox slots).",
    )
    queue_size: int = env(
        "RUNNER_QUEUE_SIZE",
        "FLOWS_CODE_ACTIONS_WORKER_POOL_QUEUE_SIZE",
        default=100,
        ge=0,
        description="Runs that may wait for a slot; more answer 503.",
    )
    project_max_concurrency: int = env(
        "PROJECT_MAX_CONCURRENCY",
        default=0,
        ge=0,
        description="Runs of one project executing at once, so no tenant takes every slot; "
        "0: half the slots, at least 1.",
    )
    project_max_queued: int = env(
        "PROJECT_MAX_QUEUED",
        default=0,
        ge=0,
        description="Runs of one project waiting for a slot; more answer 429 at once. "
        "0: a quarter of the queue size, at least 1.",
    )
    code_max_concurrency: int = env(
        "CODE_MAX_CONCURRENCY",
        default=0,
        ge=0,
        description="Runs of one code executing at once; 0: the same as its project's.",
    )
    code_max_queued: int = env(
        "CODE_MAX_QUEUED",
        default=0,
        ge=0,
        description="Runs of one code waiting for a slot; more answer 429 at once. "
        "0: the same as its project's.",
    )
    memory_mb: int = env(
        "RUNNER_MEMORY_MB",
        default=256,
        ge=16,
        description="Memory limit of one run (its whole process tree).",
    )
    max_processes: int = env(
        "RUNNER_MAX_PROCESSES",
        default=64,
        ge=1,
        description="Processes and threads one run may have at once.",
    )
    cpu_seconds: int = env(
        "RUNNER_CPU_SECONDS",
        default=0,
        ge=0,
        description="CPU time per run; 0 = the code's timeout.",
    )
    file_size_mb: int = env(
        "RUNNER_FILE_SIZE_MB", default=64, ge=1, description="Largest file a run may write."
    )
    output_bytes: int = env(
        "RUNNER_OUTPUT_BYTES",
        default=1024 * 1024,
        ge=1024,
        description="Largest result plus logs of one run; more ends the run (reason `output`).",
    )
    network: Literal["public", "off"] = env(
        "RUNNER_NETWORK",
        default="public",
        description="`public`: egress allowed except loopback/private/link-local; `off`: none.",
    )
    network_namespaces: bool = env(
        "RUNNER_NETWORK_NAMESPACES",
        default=True,
        description="With `public` network: give each sandbox slot its own network namespace "
        "(a veth pair to the host, NAT; it sees only its own sockets; turns on IPv4 forwarding "
        "for those veths and the uplink). false, or where it cannot be set up: sandboxes share "
        "the host's namespace behind an iptables filter on their uids.",
    )
    uid_base: int = env(
        "RUNNER_UID_BASE",
        default=64000,
        ge=1000,
        description="First of the unprivileged uids given to sandbox slots (one per slot).",
    )
    work_dir: str = env(
        "RUNNER_WORK_DIR",
        default="/tmp/codeactions-runner",
        description="Sandbox dirs and Go cache.",
    )
    python: str = env(
        "RUNNER_PYTHON",
        default=".venv-runtime/bin/python",
        description="Interpreter for user Python (with the preinstalled libraries); "
        "a relative path is taken from the checkout.",
    )
    node: str = env(
        "RUNNER_NODE", default="/usr/bin/node", description="Node.js for JavaScript codes."
    )
    go: str = env(
        "RUNNER_GO",
        default="/usr/bin/go",
        description="Go toolchain for Go codes (compiled when saved).",
    )
    go_build_jobs: int = env(
        "RUNNER_GO_BUILD_JOBS",
        default=2,
        ge=1,
        le=16,
        description="Go compiles running at once; more wait their turn.",
    )
    go_build_memory_mb: int = env(
        "RUNNER_GO_BUILD_MEMORY_MB",
        default=512,
        ge=128,
        description="Memory limit of one Go compile (the toolchain's whole process tree).",
    )
    go_build_seconds: int = env(
        "RUNNER_GO_BUILD_SECONDS",
        default=60,
        ge=5,
        description="Wall-clock limit of one Go compile, and CPU-time limit of each of its "
        "processes.",
    )
    go_build_output_mb: int = env(
        "RUNNER_GO_BUILD_OUTPUT_MB",
        default=64,
        ge=8,
        description="Largest file a Go compile may write (the binary or a build-cache entry).",
    )
    go_cache_mb: int = env(
        "RUNNER_GO_CACHE_MB",
        default=1024,
        ge=128,
        description="Disk kept for compiled Go binaries and the Go build cache; the least "
        "recently used are evicted beyond it.",
    )
    node_spares: int = env(
        "RUNNER_NODE_SPARES", default=2, ge=0, description="Booted Node processes kept ready."
    )
    node_warm_workers: int = env(
        "RUNNER_NODE_WARM_WORKERS",
        default=6,
        ge=0,
        description="Extra Node sandboxes (on top of node_spares) that may stay warm for "
        "repeated runs of the same JavaScript code; each holds one idle Node process.",
    )
    reuse: bool = env(
        "RUNNER_REUSE",
        default=True,
        description="Keep a sandboxed process after a run that ended normally as the warm "
        "worker of that code (same code id and source), for its next runs (Python and "
        "JavaScript; Lambda-style: imported modules stay loaded, temp dirs are wiped and other "
        "processes killed between runs). false: a fresh process for every run.",
    )
    ca_file: str = env(
        "RUNNER_CA_FILE",
        default="",
        description="CA bundle user code trusts for HTTPS; empty: the service's own "
        "`SSL_CERT_FILE` when set, else each library's default.",
    )

    # The caps in force, with the defaults of the settings above worked out.
    @property
    def project_concurrency(self) -> int:
        return self.project_max_concurrency or max(1, self.slots // 2)

    @property
    def project_queued(self) -> int:
        return self.project_max_queued or max(1, self.queue_size // 4)

    @property
    def code_concurrency(self) -> int:
        return self.code_max_concurrency or self.project_concurrency

    @property
    def code_queued(self) -> int:
        return self.code_max_queued or self.project_queued

    @field_validator("ca_file")
    @classmethod
    def _service_ca(cls, value: str) -> str:
        return value or os.environ.get("SSL_CERT_FILE", "")

    @field_validator("python")
    @classmethod
    def _from_checkout(cls, value: str) -> str:
        return value if Path(value).is_absolute() else str(REPO_ROOT / value)
