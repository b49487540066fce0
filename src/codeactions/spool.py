"""A durable local spool: records appended to fsynced segment files and applied in the background.

What a dependency cannot take right now (a run's outcome while the database is down, a run's log
batch on its way to S3) is appended here before the caller is answered, then applied by a
`SpoolConsumer` with backoff; a segment file is deleted once all its records are applied. Records
left by a stop, a crash or another process that died are applied at the next start.

Delivery is at least once: a segment is replayed whole when any of its records was not applied,
so what applies records must be idempotent (outcomes are written over, log objects have fixed keys).

Segment files are held under an exclusive `flock` by the process writing or applying them, so
several processes may share a directory: each takes only segments nobody holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeactions.config import DatabaseSettings, SpoolSettings

log = logging.getLogger(__name__)

SEGMENT_BYTES = 4 * 1024 * 1024  # past this size the next record opens a new segment
SUFFIX = ".seg"
REJECTED = "rejected.jsonl"  # records that can never be applied, kept for people to read


class SpoolFull(Exception):
    """The spool holds as much as it may: the record was not kept."""


def spool_root(spool: SpoolSettings, database: DatabaseSettings) -> Path:
    """Where spools live: the setting, else beside the SQLite file, else `./codeactions-spool`."""
    if spool.dir:
        return Path(spool.dir)
    if database.sqlite_path:
        return Path(f"{database.sqlite_path}-spool")
    return Path("codeactions-spool")


def destination_spool(settings: SpoolSettings, root: Path, kind: str, *identity: str) -> Spool:
    """The spool of `kind` for one destination (a database, a bucket), in a directory of its own:
    records are only ever applied where they were meant to go."""
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:12]
    return Spool(
        root / f"{kind}-{digest}", max_bytes=settings.max_mb * 1024 * 1024, fsync=settings.fsync
    )


@dataclass(eq=False)
class _Segment:
    path: Path
    fd: int  # open, with an exclusive flock, while this process owns the file
    size: int = 0
    unapplied: int = 0  # records appended or recovered and not yet applied
    active: bool = True  # records are appended to it
    written: int = 0  # appends so far, and how many of them an fsync covered
    synced: int = 0
    syncing: asyncio.Future[None] | None = None


@dataclass(eq=False)
class Entry:
    record: dict[str, Any]
    segment: _Segment


class Spool:
    def __init__(self, directory: Path, *, max_bytes: int, fsync: bool = True) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.fsync = fsync
        self._queue: deque[Entry] = deque()
        self._ready = asyncio.Event()
        self._segments: set[_Segment] = set()
        self._active: _Segment | None = None
        self._bytes = 0
        self._emptied = asyncio.Event()

    # -- owning files ----------------------------------------------------------------------------

    def open(self) -> list[Entry]:
        """Create the directory and take over every segment nobody holds; their records are
        queued and returned."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.adopt()

    def adopt(self) -> list[Entry]:
        """Queue the records of segments left by a stopped or dead process (oldest first)."""
        adopted: list[Entry] = []
        owned = {segment.path for segment in self._segments}
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path in owned:
                continue
            segment = self._take(path)
            if segment is None:
                continue
            records = _read_records(segment)
            segment.active = False
            segment.unapplied = len(records)
            self._segments.add(segment)
            self._bytes += segment.size
            adopted.extend(Entry(record, segment) for record in records)
            self._finish_if_applied(segment)
        if adopted:
            log.info("spool %s: %d records to apply", self.directory.name, len(adopted))
            self._queue.extend(adopted)
            self._ready.set()
        return adopted

    def _take(self, path: Path) -> _Segment | None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # applied and deleted by its owner meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not path.exists():  # deleted between our open and our lock
            os.close(fd)
            return None
        return _Segment(path, fd, size=os.fstat(fd).st_size)

    def _new_segment(self) -> _Segment:
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if self.fsync:  # the file's name must outlive a crash as much as its content
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        segment = _Segment(path, fd)
        self._segments.add(segment)
        return segment

    def _writable(self) -> _Segment:
        active = self._active
        if active is not None and active.size < SEGMENT_BYTES:
            return active
        if active is not None:
            active.active = False
            self._finish_if_applied(active)
        self._active = self._new_segment()
        return self._active

    def _finish_if_applied(self, segment: _Segment) -> None:
        if segment.unapplied > 0:
            return
        if segment.active:
            # Nothing left to apply in the segment being written: start it over.
            if segment.size:
                os.ftruncate(segment.fd, 0)
                self._bytes -= segment.size
                segment.size = 0
            return
        if segment.syncing is not None:
            return  # closed when its fsync returns
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        os.close(segment.fd)
        self._segments.discard(segment)
        self._bytes -= segment.size

    # -- appending -------------------------------------------------------------------------------

    async def append(self, record: dict[str, Any]) -> Entry:
        """Keep `record` (on disk, fsynced unless turned off) and queue it to be applied.

        Raises SpoolFull when the spool is at its size limit, OSError when the disk refuses.
        """
        data = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        if self._bytes + len(data) > self.max_bytes:
            raise SpoolFull(f"the spool {self.directory} holds {self._bytes} bytes")
        segment = self._writable()
        try:
            _write_all(segment.fd, data)
        except OSError:
            os.ftruncate(segment.fd, segment.size)  # no half record before the next one
            raise
        segment.size += len(data)
        self._bytes += len(data)
        segment.unapplied += 1
        segment.written += 1
        entry = Entry(record, segment)
        if self.fsync:
            try:
                await self._synced(segment, segment.written)
            except BaseException:
                self.done(entry)  # the caller is told it failed; if it is on disk, it is replayed
                raise
        self._queue.append(entry)
        self._ready.set()
        return entry

    async def _synced(self, segment: _Segment, target: int) -> None:
        """Return once an fsync that started after append number `target` has ended: concurrent
        appends share one fsync (group commit)."""
        while segment.synced < target:
            if segment.syncing is None:
                segment.syncing = asyncio.ensure_future(self._fsync(segment))
            await asyncio.shield(segment.syncing)

    async def _fsync(self, segment: _Segment) -> None:
        upto = segment.written
        try:
            await asyncio.to_thread(os.fsync, segment.fd)
            segment.synced = upto
        finally:
            segment.syncing = None
            self._finish_if_applied(segment)

    # -- applying --------------------------------------------------------------------------------

    async def get(self) -> Entry:
        """The oldest record not yet handed out; waits for one."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def done(self, entry: Entry) -> None:
        """`entry` is applied: it will not be handed out again, here or after a restart."""
        entry.segment.unapplied -= 1
        self._finish_if_applied(entry.segment)
        if not self.backlog:
            self._emptied.set()

    async def wait_empty(self) -> None:
        """Return once every record kept has been applied."""
        while self.backlog:
            self._emptied.clear()
            await self._emptied.wait()

    def reject(self, entry: Entry, reason: str) -> None:
        """`entry` can never be applied: it moves to the rejected file, for people to read."""
        line = json.dumps({"reason": reason, "record": entry.record}, default=str) + "\n"
        with open(self.directory / REJECTED, "a", encoding="utf-8") as rejected:
            rejected.write(line)
        self.done(entry)

    @property
    def backlog(self) -> int:
        """Records kept and not yet applied."""
        return sum(segment.unapplied for segment in self._segments)

    def close(self) -> None:
        """Release every file; records not yet applied stay on disk for the next start."""
        for segment in list(self._segments):
            if segment.unapplied == 0 and segment.size == 0:
                with contextlib.suppress(FileNotFoundError):
                    segment.path.unlink()
            os.close(segment.fd)
        self._segments.clear()
        self._queue.clear()
        self._active = None
        self._bytes = 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_records(segment: _Segment) -> list[dict[str, Any]]:
    """The whole records of a segment; a last line cut by a crash was never acknowledged."""
    os.lseek(segment.fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(segment.fd, 1 << 20):
        chunks.append(chunk)
    records = []
    for line in b"".join(chunks).split(b"\n")[:-1]:
        try:
            record = json.loads(line)
        except ValueError:
            log.error("spool %s: an unreadable record skipped", segment.path)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class SpoolConsumer:
    """Applies a spool's records with `workers` tasks; a failing record is retried with backoff
    (while the others wait their turn), one that `permanent` says can never succeed is rejected."""

    def __init__(
        self,
        spool: Spool,
        apply: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        name: str,
        workers: int = 1,
        permanent: Callable[[BaseException], bool] = lambda _: False,
        first_delay: float = 0.2,
        max_delay: float = 5.0,
    ) -> None:
        self.spool = spool
        self.name = name
        self._apply = apply
        self._permanent = permanent
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self.failing_since: float | None = None  # monotonic time of the first failure in a row
        self.last_error = ""
        self._warned = -float("inf")

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"spool-{self.name}-{n}")
            for n in range(self._workers)
        ]
        self._tasks.append(asyncio.create_task(self._adopt(), name=f"spool-{self.name}-adopt"))

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    async def _work(self) -> None:
        while True:
            entry = await self.spool.get()
            delay = self._first_delay
            while True:
                try:
                    await self._apply(entry.record)
                except asyncio.CancelledError:
                    raise  # not applied: it stays on disk for the next start
                except Exception as exc:
                    if self._permanent(exc):
                        log.error("%s: a record can never be applied, rejected: %s", self.name, exc)
                        self.spool.reject(entry, f"{type(exc).__name__}: {exc}"[:2000])
                        break
                    self._failed(exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_delay)
                    continue
                self.spool.done(entry)
                if self.failing_since is not None:
                    log.info("%s: applying again (backlog %d)", self.name, self.spool.backlog)
                    self.failing_since = None
                break

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if now - self._warned >= 30:
            self._warned = now
            log.warning(
                "%s: cannot apply, retrying (backlog %d): %s",
                self.name,
                self.spool.backlog,
                self.last_error,
            )

    async def _adopt(self) -> None:
        # Another process sharing the directory may die with records in its segments.
        while True:
            await asyncio.sleep(30)
            try:
                self.spool.adopt()
            except OSError as exc:
                log.warning("%s: looking for orphan segments failed: %s", self.name, exc)

    async def drain(self, grace: float) -> None:
        """Let the backlog go for up to `grace` seconds (on shutdown; not while the records fail),
        then stop: what is left stays on disk for the next start."""
        if not self.failing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self.spool.wait_empty()
        await self.stop()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def status(self) -> dict[str, Any]:
        return {
            "backlog": self.spool.backlog,
            "failing_for_seconds": (
                round(time.monotonic() - self.failing_since, 1) if self.failing_since else 0
            ),
            "last_error": self.last_error if self.failing else "",
        }
