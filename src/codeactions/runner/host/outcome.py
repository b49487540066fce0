"""How a run ended, as the API gets it (wire.Outcome): the one place an outcome is built."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from codeactions.runner import wire
from codeactions.runner.host.cpu import cpu_exhausted
from codeactions.runner.host.processes import signal_name
from codeactions.runner.host.slots import Run


def of_run(
    run: Run, *, oom: bool, cpu_limit: int, memory_mb: Any, file_size_mb: Any
) -> wire.Outcome:
    """The outcome of a run that reached a child: from how it ended (the reason it was killed
    for, the memory cgroup's OOM kills, its exit status) and what it said (result, error, logs).
    `oom`: the slot's cgroup counted an OOM kill during the run."""
    reason, error = run.reason, run.reason_message
    status = run.child.exit_status if run.child is not None else None
    if reason in (None, "timeout", "cpu") and oom:
        reason, error = "memory", f"memory limit of {memory_mb} MB exceeded"
    elif reason is None and status is None and run.done_code is not None:
        if run.error is not None:
            reason, error = _error_reason(run)
        elif run.done_code != 0:
            reason, error = "exception", f"exited with status {run.done_code}"
    elif reason is None and status is not None:
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_exhausted(run, cpu_limit)):
                reason, error = "cpu", "CPU time limit exceeded"
            elif sig == signal.SIGXFSZ:
                reason, error = "file_size", f"file size limit of {file_size_mb} MB exceeded"
            else:
                reason, error = "killed", f"killed by signal {signal_name(sig)}"
        elif run.error is not None:
            reason, error = _error_reason(run)
        elif os.WEXITSTATUS(status) != 0:
            code = os.WEXITSTATUS(status)
            reason = "exception"
            tail = "\n".join(line[1] for line in run.logs if line[0] == "error")[-2000:]
            error = f"exited with status {code}" + (f": {tail}" if tail else "")
    duration = time.monotonic() - run.started if run.started else 0.0
    result = run.result or {}
    if run.program and run.stdout is not None:
        result = {"value": run.stdout.decode("utf-8", "replace")}
    return {
        "ok": reason is None,
        "result": str(result.get("value", "")),
        "status_code": result.get("status_code", 200),
        "content_type": str(result.get("content_type", "text")),
        "reason": reason,
        "error": error,
        "logs": run.logs,
        "duration": duration,
    }


def failed(reason: wire.FailureReason, message: str) -> wire.Outcome:
    """The outcome of a run that ended before any child ran it (refused, or Go did not compile)."""
    return {
        "ok": False,
        "result": "",
        "status_code": 200,
        "content_type": "text",
        "reason": reason,
        "error": message,
        "logs": [],
        "duration": 0.0,
    }


def _error_reason(run: Run) -> tuple[wire.FailureReason, str]:
    assert run.error is not None
    kind = run.error.get("kind")
    reason: wire.FailureReason = (
        kind if kind in ("exception", "memory", "file_size", "runner") else "exception"
    )
    error = str(run.error.get("message", ""))
    if reason == "memory" and "memory" not in error.lower():
        error = "MemoryError: " + error
    return reason, error
