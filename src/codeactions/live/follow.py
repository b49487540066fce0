"""Following a run (its lines so far, its lines as they are written, then the run) and a project
(what happens to its codes and runs): the events the WebSocket and Server-Sent Events send."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.access.service import authorize
from codeactions.auth.principals import Principal, Role
from codeactions.codes.service import valid_project_uuid
from codeactions.db.models import CodeRun
from codeactions.errors import AppError
from codeactions.events.bus import Event, EventBus, Lagged, Subscription
from codeactions.events.channels import (
    lagged_event,
    project_channel,
    run_channel,
    run_event,
)
from codeactions.logs.service import run_lines
from codeactions.logs.store import LogEntry, LogStore
from codeactions.runs.live import stored_line_event
from codeactions.runs.schemas import run_json
from codeactions.runs.service import get_run, get_run_by_id

# A follower that hears nothing for this long looks at the run's record: a run whose replica
# died is ended by the reaper, whose end no replica announces.
QUIET_RECHECK_SECONDS = 10.0
FAILED = "failed"  # this follower's own marker: the run it waits for was refused


@dataclass(frozen=True)
class Sources:
    """Where a follower reads what it was not told live."""

    bus: EventBus
    sessionmaker: async_sessionmaker[AsyncSession]
    log_store: LogStore
    queue_size: int


class RunFollower:
    """A run's events for one follower: stored lines after `after_seq`, live ones, then the run.

    Subscribed before anything is read, so no event falls between what is read and what is
    heard; a line heard twice (read from a backlog, then live) is sent once, by its `seq`."""

    def __init__(self, sources: Sources, run_id: str, after_seq: int) -> None:
        self._sources = sources
        self.run_id = run_id
        self.last_seq = after_seq  # the last line sent (or skipped by the follower's choice)
        self._subscription: Subscription = sources.bus.subscribe(
            run_channel(run_id), sources.queue_size
        )
        self._failure: AppError | None = None

    @classmethod
    async def open(
        cls, sources: Sources, principal: Principal, run_id: str, after_seq: int
    ) -> RunFollower:
        """Follow a recorded run, for Viewers of its project (RunNotFound, Forbidden)."""
        async with sources.sessionmaker() as session:
            run = await get_run(session, principal, run_id=run_id)
        return cls(sources, str(run.id), after_seq)

    def close(self) -> None:
        self._subscription.close()

    def fail(self, error: AppError) -> None:
        """The run will not happen (refused before it was recorded): end with `error`."""
        self._failure = error
        self._subscription.push([{"event": FAILED}])

    async def events(self) -> AsyncIterator[Event]:
        """Raises the AppError given to `fail`."""
        try:
            ended = await self._ended()
            if ended is not None:  # ended before (or as) it was followed
                for event in ended:
                    yield event
                return
            for event in await self._sources.bus.backlog(self._subscription.channel):
                if self._fresh(event):
                    yield event
            while True:
                try:
                    heard = await self._subscription.get(QUIET_RECHECK_SECONDS)
                except Lagged:
                    yield lagged_event(run_id=self.run_id, resume_after_seq=self.last_seq)
                    return
                if heard is None:
                    ended = await self._ended()
                    if ended is not None:
                        for event in ended:
                            yield event
                        return
                elif heard.get("event") == "run":
                    yield heard
                    return
                elif heard.get("event") == FAILED and self._failure is not None:
                    raise self._failure
                elif self._fresh(heard):
                    yield heard
        finally:
            self.close()

    def _fresh(self, event: Event) -> bool:
        """A log line not sent yet (counted as sent from here on)."""
        seq = event.get("seq")
        if event.get("event") != "log" or not isinstance(seq, int) or seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True

    async def _ended(self) -> list[Event] | None:
        """The lines not sent yet and the run, when its record says it has ended."""
        sources = self._sources
        async with sources.sessionmaker() as session:
            try:
                run = await get_run_by_id(session, self.run_id)
            except Exception:
                return None  # not recorded yet (a run just asked for), or the database blinked
            if run.status == "started":
                return None
            lines = await run_lines(session, sources.log_store, run)
        return self._stored(run, lines)

    def _stored(self, run: CodeRun, lines: list[LogEntry]) -> list[Event]:
        events: list[Event] = []
        for entry in lines:
            event = stored_line_event(entry)
            if self._fresh(event):
                events.append(event)
        events.append(run_event(run_json(run)))
        return events


class ProjectFollower:
    """What happens to a project's codes and runs from now on, for Viewers of the project."""

    def __init__(self, sources: Sources, project_uuid: str) -> None:
        self.project_uuid = project_uuid
        self._subscription = sources.bus.subscribe(
            project_channel(project_uuid), sources.queue_size
        )

    @classmethod
    async def open(
        cls, sources: Sources, principal: Principal, project_uuid: str
    ) -> ProjectFollower:
        project = valid_project_uuid(project_uuid)
        async with sources.sessionmaker() as session:
            await authorize(session, principal, project, Role.VIEWER)
        return cls(sources, project)

    def close(self) -> None:
        self._subscription.close()

    async def events(self) -> AsyncIterator[Event]:
        try:
            while True:
                try:
                    event = await self._subscription.get()
                except Lagged:
                    yield lagged_event(project_uuid=self.project_uuid)
                    return
                if event is not None:
                    yield event
        finally:
            self.close()
