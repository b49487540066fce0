"""CPU time of runs: each run's own limit, also for a warm worker (Node or Python) whose process
serves many runs under one RLIMIT_CPU budget for its whole life."""

from __future__ import annotations

import math
import resource

from codeactions.runner.host.processes import process_cpu
from codeactions.runner.host.slots import Child, Run
from codeactions.runner.host.state import HostState

CPU_POLL = 0.1  # per-run CPU accounting period when RLIMIT_CPU cannot be lowered from here
WORKER_CPU_BUDGET = 3600  # RLIMIT_CPU (seconds) of a warm worker over all the runs it serves


class CpuBudget(HostState):
    def _cpu_limit(self, run: Run) -> int:
        # Without cpu_seconds, RLIMIT_CPU only backs up the wall-clock timeout: set above it
        # (with room for the spare's own start-up CPU and a late timer), so a plain busy loop
        # ends as "timeout" and only many busy threads end as "cpu".
        return int(self.s["cpu_seconds"]) or math.ceil(run.timeout) + 2

    def _limit_worker_cpu(self, run: Run, child: Child, seconds: int) -> None:
        """Per-run CPU limit for a warm worker, whose RLIMIT_CPU counts every run it served.

        With CAP_SYS_RESOURCE the supervisor moves the worker's RLIMIT_CPU to what it used so
        far plus this run's allowance (prlimit). A container's root often lacks it (prlimit on
        another uid's process: EPERM); then a timer samples the worker's CPU time from
        /proc/<pid>/stat every CPU_POLL seconds and kills the run with reason "cpu" past the
        allowance. The worker's own RLIMIT_CPU (WORKER_CPU_BUDGET) stays as a backstop.
        """
        run.cpu_base = process_cpu(child.pid)
        soft = int(run.cpu_base + seconds + 0.999)
        try:
            resource.prlimit(child.pid, resource.RLIMIT_CPU, (soft, soft + 1))
        except (OSError, ValueError):
            self._poll_cpu(run, seconds)

    def _poll_cpu(self, run: Run, seconds: int) -> None:
        if run.finished or run.child is None:
            return
        if process_cpu(run.child.pid) - run.cpu_base >= seconds:
            self._kill_run(run, "cpu", "CPU time limit exceeded")
            return
        self.call_later(CPU_POLL, lambda: self._poll_cpu(run, seconds))

    def _has_budget_for(self, child: Child, run: Run) -> bool:
        """Whether a warm worker's RLIMIT_CPU leaves room for this run (else it could end the
        run early, blaming it)."""
        return process_cpu(child.pid) + self._cpu_limit(run) + 2 < WORKER_CPU_BUDGET


def cpu_exhausted(run: Run, limit: int) -> bool:
    # The hard RLIMIT_CPU (soft + 1 s) ends with SIGKILL when SIGXCPU was ignored.
    return run.child is not None and run.child.cpu - run.cpu_base >= limit
