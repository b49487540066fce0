"""The channels events travel on, and the events themselves, as listeners receive them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from codeactions.events.bus import Event


def run_channel(run_id: str) -> str:
    """A run's log lines as they are written, then the run (`log`..., `run`)."""
    return f"run:{run_id}"


def project_channel(project_uuid: str) -> str:
    """What happens to a project's codes and runs (`code.saved`, `run.started`, ...)."""
    return f"project:{project_uuid}"


def log_event(*, run_id: str, seq: int, type: str, content: str, created_at: datetime) -> Event:
    """One log line; `seq` counts a run's lines from 1 (a follower resumes after one)."""
    return {
        "event": "log",
        "seq": seq,
        "run_id": run_id,
        "type": type,
        "content": content,
        "created_at": created_at.isoformat(),
    }


def run_event(run: dict[str, Any]) -> Event:
    """The run's record, once it has ended: the last event of a run's channel."""
    return {"event": "run", "run": run}


def project_event(name: str, **subject: dict[str, Any]) -> Event:
    """`code.saved`/`code.deleted` with `code`, `run.started`/`run.finished` with `run`."""
    return {"event": name, **subject}


def lagged_event(**where: Any) -> Event:
    """Told to a listener that fell behind: where to resume (`run_id`, `resume_after_seq`)."""
    return {"event": "lagged", **where}
