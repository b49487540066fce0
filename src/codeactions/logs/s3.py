"""Run logs in S3, in the original's key layout (`s3_layout`), one object per run instead of one
per line: written through a local spool and uploaded in the background, read by listing the run's
or the code's day prefixes, deleted day by day."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from codeactions.config import LogSettings
from codeactions.errors import Unavailable
from codeactions.logs.s3_layout import (
    BATCH_NAME,
    Batch,
    LogObject,
    batch_day,
    day_path,
    entry_from_json,
    key_segment,
    line_id,
    new_batch_id,
    newest_first,
)
from codeactions.logs.store import LogEntry, LogQuery
from codeactions.spool import Spool, SpoolConsumer

# How far back a listing by code looks (the original's list window; its count used 30 days, §9.14).
CODE_LIST_DAYS = 7
# How far back a listing by run looks when the caller does not know the run's day.
RUN_LIST_DAYS = 7
# Parallel GETs when a page needs several objects.
READ_CONCURRENCY = 16
# Objects listed (and deleted) per request: each batch goes with its pointer, and DeleteObjects
# takes at most 1000 keys.
DELETE_BATCH = 500

# Parallel uploads of spooled batches.
UPLOADERS = 8


class S3LogStore:
    """Logs in S3. With a spool (the service's case), `write` keeps a run's batch on local disk and
    returns; background uploaders put it in S3, retrying with backoff while S3 is down, and reads
    merge the batches not yet uploaded. Without one (tools, tests), `write` puts at once."""

    def __init__(self, settings: LogSettings, spool: Spool | None = None) -> None:
        self._settings = settings
        self._spool = spool
        self._uploader: SpoolConsumer | None = None
        self._unsent: dict[str, Batch] = {}  # by object key
        self._bucket = settings.s3_bucket
        base = settings.s3_prefix.strip("/")
        # `{prefix}/logs`; an empty prefix gives "/logs", as the original wrote it.
        self._root = f"{base}/logs"
        self._index = f"{base}/logs-index"
        # Logs written when the endpoint URL included the bucket live under `{bucket}/{prefix}/logs`;
        # the original looked there first when the bucket name has a "-" (spec §4.3).
        self._read_roots = [self._root]
        if "-" in self._bucket:
            legacy = "/".join(part for part in (self._bucket, base, "logs") if part)
            self._read_roots.insert(0, legacy)
        self._session = aioboto3.Session()
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._opening = asyncio.Lock()

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._opening:
                if self._client is None:
                    self._client = await self._stack.enter_async_context(self._new_client())
        return self._client

    def _new_client(self) -> Any:
        s = self._settings
        config = Config(
            # A custom endpoint (MinIO, LocalStack) needs path-style, as the original set it.
            s3={"addressing_style": "path" if s.s3_endpoint else "auto"},
            # Bounded: a dead or frozen S3 must cost a read a few seconds (then 503), and an
            # upload a retry later, never a caller's run.
            retries={"total_max_attempts": 2, "mode": "standard"},
            connect_timeout=min(2.0, s.s3_read_timeout),
            read_timeout=max(s.s3_read_timeout, s.s3_write_timeout),
            max_pool_connections=READ_CONCURRENCY * 2,
        )
        kwargs: dict[str, Any] = {"region_name": s.s3_region, "config": config}
        if s.s3_endpoint:
            kwargs["endpoint_url"] = s.s3_endpoint
        # Static keys only when given: otherwise the default chain (IAM role, web identity) applies,
        # which the original's always-set defaults prevented.
        if s.s3_access_key_id:
            kwargs["aws_access_key_id"] = s.s3_access_key_id
            kwargs["aws_secret_access_key"] = s.s3_secret_access_key
        return self._session.client("s3", **kwargs)

    # -- writing ---------------------------------------------------------------------------------

    @property
    def written_with_run(self) -> bool:
        return False

    async def start(self) -> None:
        if self._spool is None:
            return
        for entry in self._spool.open():
            self._remember(Batch.from_record(entry.record))
        self._uploader = SpoolConsumer(
            self._spool, self._upload, name="S3 log uploads", workers=UPLOADERS
        )
        self._uploader.start()

    async def write(self, entries: list[LogEntry]) -> None:
        """One object per run (per run and code spelling); gives each line its locating id."""
        groups: dict[tuple[str, str], list[LogEntry]] = {}
        for entry in entries:
            groups.setdefault((entry.run_id, entry.code_id), []).append(entry)
        batches = [self._batch(lines) for lines in groups.values()]
        if self._spool is None:
            await asyncio.gather(*(self._put(batch) for batch in batches))
            return
        for batch in batches:
            await self._spool.append(batch.as_record())
            self._remember(batch)

    def _remember(self, batch: Batch) -> None:
        self._unsent[batch.key] = batch

    async def _upload(self, record: dict[str, Any]) -> None:
        # Batches another process left (adopted while running) are not in `_unsent`.
        batch = self._unsent.get(str(record["key"])) or Batch.from_record(record)
        async with asyncio.timeout(self._settings.s3_write_timeout):
            await self._put(batch)
        self._unsent.pop(batch.key, None)

    def _batch(self, lines: list[LogEntry]) -> Batch:
        first = lines[0]
        run_id = key_segment(first.run_id, "run id")
        code_id = key_segment(first.code_id, "code id")
        day = first.created_at.astimezone(UTC).date()
        batch = new_batch_id(day)
        for n, entry in enumerate(lines):
            entry.id = line_id(batch, n)
        key = f"{self._root}/{day_path(day)}/{run_id}/{code_id}/{batch}_{len(lines)}.json"
        body = json.dumps([e.as_json() for e in lines], ensure_ascii=False).encode()
        types = ",".join(dict.fromkeys(e.type for e in lines))
        metadata = {
            "run-id": run_id,
            "code-id": code_id,
            "log-type": types,
            "created-at": first.created_at.astimezone(UTC).isoformat(),
            "log-count": str(len(lines)),
        }
        return Batch(key, self._pointer(batch), body, metadata, lines)

    async def _put(self, batch: Batch) -> None:
        """The object, then its pointer: a pointer never names a missing object. Both keys are
        fixed by the batch, so putting it again after a lost answer writes the same objects."""
        s3 = await self._s3()
        await s3.put_object(
            Bucket=self._bucket,
            Key=batch.key,
            Body=batch.body,
            ContentType="application/json",
            Metadata=batch.metadata,
        )
        await s3.put_object(
            Bucket=self._bucket,
            Key=batch.pointer,
            Body=batch.key.encode(),
            ContentType="text/plain",
        )

    async def flush(self) -> None:
        """Wait until every spooled batch is in S3."""
        if self._spool is not None:
            await self._spool.wait_empty()

    def _unsent_lines(self, keep: Callable[[Batch], bool], listed: set[str]) -> list[LogEntry]:
        """Lines of batches not yet in S3 (nor in the listing just read) that `keep` wants."""
        return [
            line
            for batch in list(self._unsent.values())
            if batch.key not in listed and keep(batch)
            for line in batch.lines
        ]

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        """A read answers within the read timeout, or raises Unavailable (503) at once while the
        uploads already know S3 is down."""
        if self._uploader is not None and self._uploader.failing:
            raise Unavailable("log storage is unavailable")
        try:
            async with asyncio.timeout(self._settings.s3_read_timeout):
                yield
        except (TimeoutError, BotoCoreError, ClientError, OSError) as exc:
            raise Unavailable("log storage is unavailable") from exc

    def _pointer(self, batch: str) -> str:
        return f"{self._index}/{day_path(batch_day(batch))}/{batch}"

    # -- reading ---------------------------------------------------------------------------------

    async def _pages(self, prefix: str, size: int = 1000) -> AsyncIterator[list[LogObject]]:
        """Log objects under `prefix`, one LIST page (up to `size` keys) at a time."""
        s3 = await self._s3()
        paginator = s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self._bucket, Prefix=prefix, PaginationConfig={"PageSize": size}
        )
        async for page in pages:
            objects = []
            for item in page.get("Contents", []):
                key: str = item["Key"]
                parts = key.rsplit("/", 3)  # [..day, run_id, code_id, name]
                if len(parts) != 4 or not parts[3].endswith(".json"):
                    continue
                match = BATCH_NAME.fullmatch(parts[3][: -len(".json")])
                objects.append(
                    LogObject(
                        key=key,
                        code_id=parts[2],
                        last_modified=item["LastModified"],
                        lines=int(match[2]) if match else 1,
                    )
                )
            yield objects

    async def _objects(self, prefix: str) -> list[LogObject]:
        return [o async for page in self._pages(prefix) for o in page]

    async def _read(self, key: str) -> list[LogEntry]:
        s3 = await self._s3()
        response = await s3.get_object(Bucket=self._bucket, Key=key)
        async with response["Body"] as stream:
            data = json.loads(await stream.read())
        items = data if isinstance(data, list) else [data]
        return [entry_from_json(item, n) for n, item in enumerate(items) if isinstance(item, dict)]

    async def _read_all(self, keys: list[str]) -> list[list[LogEntry]]:
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(key: str) -> list[LogEntry]:
            async with limit:
                try:
                    return await self._read(key)
                except ClientError as exc:  # deleted between list and get
                    if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                        return []
                    raise

        return list(await asyncio.gather(*(one(k) for k in keys)))

    async def get(self, log_id: str) -> LogEntry | None:
        try:
            digits = uuid.UUID(log_id).hex
        except ValueError:
            return None
        if digits[12] != "8":
            # The original's ids (uuid4) say nothing about where their object is, and finding one
            # means listing 30 days of every tenant: those lines stay readable through their run's
            # listing, not by id.
            return None
        batch, n = digits[:24], int(digits[24:], 16)
        pointer_key = self._pointer(batch)
        unsent = [b for b in list(self._unsent.values()) if b.pointer == pointer_key]
        if unsent:
            lines = unsent[0].lines
        else:
            async with self._reading():
                key = await self._pointed(pointer_key)
                if key is None:
                    return None
                lines = (await self._read_all([key]))[0]
        if n < len(lines) and lines[n].id == str(uuid.UUID(log_id)):
            return lines[n]
        return None

    async def _pointed(self, pointer_key: str) -> str | None:
        s3 = await self._s3()
        try:
            pointer = await s3.get_object(Bucket=self._bucket, Key=pointer_key)
            async with pointer["Body"] as stream:
                key: bytes = await stream.read()
                return key.decode()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise

    async def list(self, query: LogQuery) -> tuple[builtins.list[LogEntry], int]:
        page = max(1, query.page)
        start = (page - 1) * query.page_size
        async with self._reading():
            if query.run_id is not None:
                return await self._list_run(query, start)
            if query.code_ids:
                return await self._list_code(query, start)
        return [], 0

    async def _list_run(self, query: LogQuery, start: int) -> tuple[builtins.list[LogEntry], int]:
        """A run's logs: LISTs on that run's own prefix, on its day and the next (midnight)."""
        assert query.run_id is not None
        try:
            run_id = key_segment(query.run_id, "run id")
        except ValueError:
            return [], 0
        if query.run_created_at is not None:
            first = query.run_created_at.astimezone(UTC).date()
            days = [first, first + timedelta(days=1)]
        else:
            today = datetime.now(UTC).date()
            days = [today - timedelta(days=n) for n in range(RUN_LIST_DAYS)]
        prefixes = [f"{root}/{day_path(d)}/{run_id}/" for d in days for root in self._read_roots]
        listed = await asyncio.gather(*(self._objects(p) for p in prefixes))
        objects = [o for found in listed for o in found]
        if query.code_ids:
            # Both spellings of the code (UUID and ObjectID): the original looked under the run's
            # code_id only and missed logs of runs invoked by ObjectID (spec §4.3).
            objects = [o for o in objects if o.code_id in query.code_ids]
        lines = [
            e
            for batch in await self._read_all([o.key for o in objects])
            for e in batch
            if e.run_id == run_id and (not query.code_ids or e.code_id in query.code_ids)
        ]
        lines += self._unsent_lines(
            lambda b: b.run_id == run_id and (not query.code_ids or b.code_id in query.code_ids),
            {o.key for o in objects},
        )
        lines = newest_first(lines)
        return lines[start : start + query.page_size], len(lines)

    async def _list_code(self, query: LogQuery, start: int) -> tuple[builtins.list[LogEntry], int]:
        """A code's logs of the last CODE_LIST_DAYS days.

        Keys carry no tenant above the run id, so this lists each day's keys of every tenant (one
        LIST per 1000 objects, i.e. per 1000 runs since a run is one object) and keeps the code's;
        the total comes from the counts in the names, and only the objects holding the requested
        page are read. Objects are ordered by write time, lines within one by creation time.
        """
        today = datetime.now(UTC).date()
        days = [today - timedelta(days=n) for n in range(CODE_LIST_DAYS)]
        prefixes = [f"{root}/{day_path(d)}/" for d in days for root in self._read_roots]
        listed = await asyncio.gather(*(self._objects(p) for p in prefixes))
        objects = sorted(
            (o for found in listed for o in found if o.code_id in query.code_ids),
            key=lambda o: (o.last_modified, o.key),
            reverse=True,
        )
        # Lines not yet uploaded are the newest: they come first, then the stored ones.
        unsent = newest_first(
            self._unsent_lines(lambda b: b.code_id in query.code_ids, {o.key for o in objects})
        )
        end = start + query.page_size
        first = unsent[start:end]
        start, end = max(0, start - len(unsent)), max(0, end - len(unsent))
        total = sum(o.lines for o in objects)
        wanted: builtins.list[LogObject] = []
        skipped = 0
        position = 0
        for obj in objects:
            if position + obj.lines <= start:
                skipped += obj.lines
            elif position < end:
                wanted.append(obj)
            position += obj.lines
        lines = [
            e
            for batch in await self._read_all([o.key for o in wanted])
            for e in newest_first(batch)
        ]
        return first + lines[start - skipped : end - skipped], total + len(unsent)

    # -- retention -------------------------------------------------------------------------------

    async def _children(self, prefix: str) -> builtins.list[str]:
        """Sub-"folders" of `prefix` (years, months, days): a few cheap delimited LISTs."""
        s3 = await self._s3()
        names: builtins.list[str] = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.append(common["Prefix"][len(prefix) :].rstrip("/"))
        return names

    async def _days(self, root: str, until: date) -> builtins.list[tuple[date, str]]:
        """Day prefixes that exist under `root` up to `until`, oldest first."""
        days: builtins.list[tuple[date, str]] = []
        for year in sorted(await self._children(f"{root}/")):
            if not year.isdigit() or int(year) > until.year:
                continue
            for month in sorted(await self._children(f"{root}/{year}/")):
                for day in sorted(await self._children(f"{root}/{year}/{month}/")):
                    try:
                        when = date(int(year), int(month), int(day))
                    except ValueError:
                        continue
                    if when <= until:
                        days.append((when, f"{root}/{year}/{month}/{day}/"))
        return sorted(days)

    async def delete_older(self, before: datetime, limit: int) -> int:
        """Delete objects of days before `before` (and older objects of its day), oldest first.

        Counts log lines (an object's count) and deletes whole objects, so it can go past `limit`
        by less than one run's lines; callers loop until fewer than `limit` went.
        """
        before = before.astimezone(UTC)
        s3 = await self._s3()
        deleted = 0
        candidates: builtins.list[tuple[date, str]] = []
        for root in self._read_roots:
            candidates.extend(await self._days(root, before.date()))
        for day, prefix in sorted(candidates):
            # Page by page: a call costs about one LIST per page of objects it deletes, however big
            # the day is, and the next call finds the remaining objects on the first page again.
            async for page in self._pages(prefix, DELETE_BATCH):
                doomed: builtins.list[str] = []
                lines = 0
                for obj in page:
                    if deleted + lines >= limit:
                        break
                    if day < before.date() or obj.last_modified < before:
                        doomed.append(obj.key)
                        lines += obj.lines
                        batch = BATCH_NAME.fullmatch(obj.key.rsplit("/", 1)[1][: -len(".json")])
                        if batch:
                            doomed.append(self._pointer(batch[1]))
                if doomed:
                    await s3.delete_objects(
                        Bucket=self._bucket,
                        Delete={"Objects": [{"Key": key} for key in doomed], "Quiet": True},
                    )
                    deleted += lines
                if deleted >= limit:
                    return deleted
        return deleted

    async def ping(self) -> None:
        s3 = await self._s3()
        await s3.head_bucket(Bucket=self._bucket)

    async def close(self) -> None:
        if self._uploader is not None:
            await self._uploader.drain(grace=5.0)
            self._uploader = None
        if self._spool is not None:
            self._spool.close()
        await self._stack.aclose()
        self._client = None

    def spool_status(self) -> dict[str, Any]:
        return self._uploader.status() if self._uploader is not None else {}
