"""What followers of a run hear while it runs: its log lines as they are written (masked, as they
will be stored), then the run itself; and what followers of its project hear (start, end)."""

from __future__ import annotations

from datetime import UTC, datetime

from codeactions.db.models import CodeRun
from codeactions.events.bus import Event, EventBus
from codeactions.events.channels import (
    log_event,
    project_channel,
    project_event,
    run_channel,
    run_event,
)
from codeactions.logs.store import LogEntry
from codeactions.runner.base import RunLogLine
from codeactions.runs.schemas import run_json
from codeactions.secrets.masking import Masker


def stored_line_event(entry: LogEntry) -> Event:
    """The `log` event of a line as it is stored (stored seqs count from 0, events' from 1)."""
    return log_event(
        run_id=entry.run_id,
        seq=entry.seq + 1,
        type=entry.type,
        content=entry.content,
        created_at=entry.created_at,
    )


class RunBroadcast:
    """One run's events. The lines the runner streams while the run goes on are the first of the
    lines it stores at the end (the runner's promise), so the end sends only the rest."""

    def __init__(self, bus: EventBus, *, run: CodeRun, project_uuid: str, mask: Masker) -> None:
        self._bus = bus
        self._run_id = str(run.id)
        self._channel = run_channel(self._run_id)
        self._project = project_channel(project_uuid)
        self._mask = mask
        self.sent = 0  # lines sent so far: the next one's seq is sent + 1

    def started(self, run: CodeRun) -> None:
        self._bus.publish(self._project, [project_event("run.started", run=self._record(run))])

    def lines(self, lines: list[RunLogLine]) -> None:
        """The runner's `on_logs`: lines written just now, in order."""
        mask = self._mask
        events = [
            log_event(
                run_id=self._run_id,
                seq=self.sent + index,
                type=line.type,
                content=mask(line.content) if mask else line.content,
                created_at=datetime.fromtimestamp(line.at, UTC),
            )
            for index, line in enumerate(lines, start=1)
        ]
        self.sent += len(events)
        self._bus.publish(self._channel, events, keep=True)

    def finished(self, run: CodeRun, entries: list[LogEntry]) -> None:
        """The run ended: its unsent lines (as stored, masked), the run, and its project's
        `run.finished`."""
        record = self._record(run)
        events = [stored_line_event(entry) for entry in entries[self.sent :]]
        events.append(run_event(record))
        self._bus.publish(self._channel, events)
        self._bus.forget(self._channel)
        self._bus.publish(self._project, [project_event("run.finished", run=record)])

    def _record(self, run: CodeRun) -> dict[str, object]:
        record = run_json(run)
        return self._mask.json(record) if self._mask else record
