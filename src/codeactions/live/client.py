"""The `codeactions run` and `codeactions tail` commands: a /web client that prints a run's lines
as they are written, resuming after a lagging follower or a lost connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote, urlsplit, urlunsplit

import click
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from codeactions.live.schemas import Status

DEFAULT_URL = "http://127.0.0.1:8050"  # what `make run` serves on (CODEACTIONS_PORT's default)
POLICY_VIOLATION = 1008  # the service refused the connection: bad token, too many connections
FIRST_DELAY, MAX_DELAY = 0.2, 5.0  # reconnect back-off, doubling
# `run` waits this long for the service to come back (a run lasts at most 300 s); `tail` for ever.
RUN_RECONNECT_SECONDS = 360.0
RESULT_CHARS = 200  # of a result or error in a summary line

Frame = dict[str, Any]
PACKAGES = {
    2: "get code",
    5: "run code",
    6: "list runs",
    7: "get run",
    8: "follow a run",
    9: "follow a project",
}


class CommandError(Exception):
    """Ends a command: `message` on stderr, then exit code `exit_code`."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Unreachable(CommandError):
    """No connection to the service (nothing listening, a timeout, not a /web endpoint)."""


class Refused(CommandError):
    """The service closed the connection with 1008 (a missing or bad token, too many)."""


class Rejected(CommandError):
    """A request answered with a status other than 0."""

    def __init__(self, pkg_id: int, status: int, msg: str) -> None:
        super().__init__(f"{PACKAGES.get(pkg_id, f'pkg {pkg_id}')}: {msg or f'status {status}'}")
        self.pkg_id = pkg_id
        self.status = status


class Disconnected(Exception):
    """The connection closed under way (the service restarted): reconnect and resume."""


# --- the connection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """Where /web is, and the token to show it."""

    url: str  # http(s)://host[:port][/prefix] or ws(s)://.../web
    token: str

    @property
    def address(self) -> str:
        """The WebSocket address, without the token (safe to print)."""
        parts = urlsplit(self.url.strip())
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        if scheme not in ("ws", "wss") or not parts.netloc:
            raise CommandError(f"not an http(s) or ws(s) URL: {self.url!r}")
        path = parts.path.rstrip("/")
        if not path.endswith("/web"):
            path += "/web"
        return urlunsplit((scheme, parts.netloc, path, "", ""))

    async def open(self) -> Channel:
        address = self.address
        try:
            ws = await connect(f"{address}?token={quote(self.token, safe='')}", max_size=None)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise Unreachable(f"cannot connect to {address}: {exc}") from None
        return Channel(ws)


class Channel:
    """One /web connection: requests by pkg_id, each answer and event routed by its req_id."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._frames: dict[str, asyncio.Queue[Frame | None]] = {}
        self._closed: Exception | None = None
        self.heard = False  # a frame came: the service took this connection
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                frame = json.loads(message)
                req_id = frame.get("req_id") if isinstance(frame, dict) else None
                queue = self._frames.get(req_id) if isinstance(req_id, str) else None
                if queue is not None:
                    self.heard = True
                    queue.put_nowait(frame)
        except (ConnectionClosed, ValueError):
            pass
        finally:
            self._closed = self._close_error()
            for queue in self._frames.values():
                queue.put_nowait(None)

    def _close_error(self) -> Exception:
        code, reason = self._ws.close_code, self._ws.close_reason
        if code == POLICY_VIOLATION:
            return Refused(f"the service refused the connection: {reason or 'policy violation'}")
        return Disconnected(f"the connection closed ({code or 'no close frame'})")

    async def close(self) -> None:
        await self._ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def request(self, pkg_id: int, data: dict[str, Any]) -> Any:
        """The answer's data (Rejected for a status other than 0)."""
        req_id = await self._send(pkg_id, data)
        try:
            return _answered(await self._next(req_id))
        finally:
            self._frames.pop(req_id, None)

    async def follow(self, pkg_id: int, data: dict[str, Any]) -> tuple[Any, AsyncIterator[Frame]]:
        """The answer's data, and the events sent after it on the same req_id."""
        req_id = await self._send(pkg_id, data)
        try:
            answer = _answered(await self._next(req_id))
        except BaseException:
            self._frames.pop(req_id, None)
            raise
        return answer, self._events(req_id)

    async def _events(self, req_id: str) -> AsyncIterator[Frame]:
        try:
            while True:
                event: Frame = _answered(await self._next(req_id))
                yield event
        finally:
            self._frames.pop(req_id, None)

    async def _send(self, pkg_id: int, data: dict[str, Any]) -> str:
        req_id = uuid.uuid4().hex[:16]
        queue: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._frames[req_id] = queue
        if self._closed is not None:
            queue.put_nowait(None)  # closed already: the reader will not tell this queue
            return req_id
        with contextlib.suppress(ConnectionClosed):  # the reader tells every queue why
            await self._ws.send(json.dumps({"pkg_id": pkg_id, "req_id": req_id, "data": data}))
        return req_id

    async def _next(self, req_id: str) -> Frame:
        frame = await self._frames[req_id].get()
        if frame is None:
            await asyncio.gather(self._reader, return_exceptions=True)
            assert self._closed is not None
            raise self._closed
        return frame


def _answered(frame: Frame) -> Any:
    status = frame.get("status_code")
    if status != Status.OK:
        raise Rejected(int(frame.get("pkg_id") or 0), int(status or 0), str(frame.get("msg", "")))
    return frame.get("data")


class Link:
    """A connection that comes back: whoever finds it closed calls `reconnect` and gets the new
    one, opened once for every subscription that shared the old one."""

    def __init__(self, server: Server, terminal: Terminal, give_up_after: float | None) -> None:
        self.server = server
        self.terminal = terminal
        self.give_up_after = give_up_after
        self.channel: Channel | None = None
        self._lock = asyncio.Lock()
        self._delay = FIRST_DELAY

    async def open(self) -> Channel:
        self.channel = await self.server.open()
        return self.channel

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def reconnect(self, lost: Channel, why: Disconnected) -> Channel:
        async with self._lock:
            if self.channel is not None and self.channel is not lost:
                return self.channel  # another subscription reconnected already
            await lost.close()
            if lost.heard:
                self._delay = FIRST_DELAY  # it worked for a while: not a service that flaps
            waited = 0.0
            while True:
                self.terminal.notice(f"{why}; reconnecting in {self._delay:.1f} s")
                await asyncio.sleep(self._delay)
                waited += self._delay
                self._delay = min(self._delay * 2, MAX_DELAY)
                try:
                    self.channel = await self.server.open()
                except Unreachable as exc:
                    if self.give_up_after is not None and waited >= self.give_up_after:
                        raise
                    why = Disconnected(exc.message)
                    continue
                self.terminal.notice("reconnected")
                return self.channel


# --- the terminal ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Terminal:
    """Where a command writes; colour only on a terminal, and only when `color`."""

    out: TextIO
    err: TextIO
    color: bool = True

    def echo(self, stream: TextIO, text: str, **style: Any) -> None:
        colored = self.color and stream.isatty()
        click.echo(click.style(text, **style) if colored and style else text, file=stream)

    def notice(self, text: str) -> None:
        self.echo(self.err, f"codeactions: {text}", dim=True)

    def line(self, stream: TextIO, event: Frame, prefix: str = "") -> None:
        kind = str(event.get("type", "info"))
        styles: dict[str, dict[str, Any]] = {"error": {"fg": "red"}, "debug": {"dim": True}}
        style = styles.get(kind, {})
        stamp = _clock(str(event.get("created_at", "")))
        self.echo(stream, f"{prefix}{stamp} {kind:<5} {event.get('content', '')}", **style)


def _clock(created_at: str) -> str:
    """A line's time in local time, to the millisecond."""
    try:
        at = datetime.fromisoformat(created_at)
    except ValueError:
        return created_at or "-"
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    return at.astimezone().strftime("%H:%M:%S.%f")[:-3]


def summary(run: Frame, *, detail: bool = True) -> str:
    """`run <id> completed · status 200 · 0.42 s · result: ...` on one line (`detail`: with the
    result or error, shortened)."""
    extra = run.get("extra")
    extra = extra if isinstance(extra, dict) else {}
    parts = [f"run {run.get('id')} {run.get('status')}"]
    if extra.get("status_code") is not None:
        parts.append(f"status {extra['status_code']}")
    duration = _duration(run)
    if duration is not None:
        parts.append(f"{duration:.2f} s")
    if detail and run.get("status") == "failed":
        parts.append(f"error: {_short(str(extra.get('error') or run.get('result', '')))}")
    elif detail:
        parts.append(f"result: {_short(str(run.get('result', '')))}")
    return " · ".join(parts)


def _duration(run: Frame) -> float | None:
    try:
        start = datetime.fromisoformat(str(run["created_at"]))
        end = datetime.fromisoformat(str(run["updated_at"]))
    except (KeyError, ValueError):
        return None
    return (end - start).total_seconds()


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= RESULT_CHARS else flat[: RESULT_CHARS - 1] + "…"


# --- following a run ---------------------------------------------------------------------------


@dataclass
class FollowedRun:
    """A run being printed: the last line printed, where a follow resumes."""

    run_id: str
    last_seq: int = 0
    prefix: str = ""

    def take(self, event: Frame) -> bool:
        """A line not printed yet (counted as printed from here on)."""
        seq = event.get("seq")
        if not isinstance(seq, int) or seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True


async def follow_to_end(
    link: Link,
    channel: Channel,
    run: FollowedRun,
    stream: TextIO,
    events: AsyncIterator[Frame] | None = None,
) -> Frame:
    """The run's record once it has ended, its lines printed on `stream` as they come; a lagging
    follower or a lost connection resumes (pkg 8) after the last line printed."""
    while True:
        try:
            if events is None:
                _, events = await channel.follow(
                    8, {"run_id": run.run_id, "after_seq": run.last_seq}
                )
            async for event in events:
                kind = event.get("event")
                if kind == "log" and run.take(event):
                    link.terminal.line(stream, event, run.prefix)
                elif kind == "run":
                    record: Frame = event["run"]
                    return record
                elif kind == "lagged":
                    break
            events = None  # fell behind: follow again after the last line printed
        except Disconnected as lost:
            events = None
            channel = await link.reconnect(channel, lost)


# --- the commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInputs:
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: str | None = None
    method: str | None = None

    def data(self, code_id: str) -> dict[str, Any]:
        data: dict[str, Any] = {"id": code_id, "params": self.params, "headers": self.headers}
        if self.body is not None:
            data["body"] = self.body
        if self.method is not None:
            data["method"] = self.method.upper()
        return data


async def run_code(server: Server, terminal: Terminal, code_id: str, inputs: RunInputs) -> int:
    """Run a code (pkg 5), its lines and a summary on stderr, its result on stdout: 0 when it
    completed, 1 when it failed. Raises CommandError (exit 2) when it could not run."""
    link = Link(server, terminal, RUN_RECONNECT_SECONDS)
    channel = await link.open()
    try:
        try:
            answer, events = await channel.follow(5, inputs.data(code_id))
        except Disconnected:
            # Whether it started is unknown; running it again could run it twice.
            raise CommandError("the connection closed before the run was answered") from None
        run_id = str(answer["run_id"])
        terminal.notice(f"run {run_id}")
        try:
            record = await follow_to_end(link, channel, FollowedRun(run_id), terminal.err, events)
        except Rejected as exc:
            if exc.pkg_id != 5:
                raise
            # Refused before it ran (a full queue): no run was recorded.
            raise CommandError(f"run {run_id} did not run: {exc.message}") from None
    finally:
        await link.close()
    result = str(record.get("result", ""))
    if record.get("status") == "completed":
        terminal.echo(terminal.err, summary(record, detail=False), fg="green")
        click.echo(result, file=terminal.out, nl=not result.endswith("\n"))
        return 0
    # Its whole error (a traceback) is the run's last line, printed already.
    terminal.echo(terminal.err, summary(record), fg="red")
    return 1


async def tail(server: Server, terminal: Terminal, run_or_code_id: str) -> int:
    """Print a run's lines (stored, then live) and its summary; given a code's id instead, every
    new run of the code until cancelled. 0 once a run has ended, whatever its status; 1 when the
    id is neither a run nor a code."""
    link = Link(server, terminal, None)
    channel = await link.open()
    try:
        try:
            run = await channel.request(7, {"id": run_or_code_id})
        except Rejected as exc:
            if exc.status != Status.NOT_FOUND:
                raise
        else:
            record = await follow_to_end(link, channel, FollowedRun(str(run["id"])), terminal.out)
            _print_summary(terminal, record)
            return 0
        try:
            code = await channel.request(2, {"id": run_or_code_id})
        except Rejected as exc:
            if exc.status != Status.NOT_FOUND:
                raise
            raise CommandError(f"no run or code with id {run_or_code_id}", 1) from None
        await _tail_code(link, channel, code)
        return 0  # not reached: it follows until cancelled
    finally:
        await link.close()


def _print_summary(terminal: Terminal, record: Frame, prefix: str = "") -> None:
    color = "green" if record.get("status") == "completed" else "red"
    terminal.echo(terminal.out, prefix + summary(record), fg=color)


async def _tail_code(link: Link, channel: Channel, code: Frame) -> None:
    """Follow the code's project (pkg 9) and each run of the code that starts (pkg 8)."""
    code_id, project_uuid = str(code["id"]), str(code["project_uuid"])
    followed: set[str] = set()
    try:
        async with asyncio.TaskGroup() as runs:

            def start(run_id: str) -> None:
                if run_id not in followed:
                    followed.add(run_id)
                    runs.create_task(_tail_one(link, link.channel or channel, run_id))

            first = True
            while True:
                try:
                    _, events = await channel.follow(9, {"project_uuid": project_uuid})
                    if first:
                        link.terminal.notice(
                            f"following new runs of code {code.get('name', '')!r} ({code_id}); "
                            "Ctrl-C to stop"
                        )
                    else:  # runs that started while nobody listened
                        started = await channel.request(
                            6, {"code_id": code_id, "status": "started", "per_page": 100}
                        )
                        for run in reversed(started):
                            start(str(run["id"]))
                    first = False
                    async for event in events:
                        kind, run = event.get("event"), event.get("run") or {}
                        if kind == "run.started" and run.get("code_id") == code_id:
                            start(str(run["id"]))
                        elif kind == "lagged":
                            break  # follow the project again, then look for missed runs
                except Disconnected as lost:
                    channel = await link.reconnect(channel, lost)
    except BaseExceptionGroup as group:
        # The first failure (a refused reconnect) is the command's, not the group's.
        raise group.exceptions[0] from None


async def _tail_one(link: Link, channel: Channel, run_id: str) -> None:
    prefix = f"[{run_id[:8]}] "
    link.terminal.echo(link.terminal.out, f"{prefix}run {run_id} started", bold=True)
    try:
        record = await follow_to_end(
            link, channel, FollowedRun(run_id, prefix=prefix), link.terminal.out
        )
    except Rejected as exc:
        link.terminal.notice(f"run {run_id}: {exc.message}")
        return
    _print_summary(link.terminal, record, prefix)
