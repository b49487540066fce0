"""The S3 log store against a real S3-compatible server (moto's), in the original's key layout."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from codeactions.config import LogSettings, SpoolSettings
from codeactions.logs import s3 as s3_module
from codeactions.logs.factory import build_log_store
from codeactions.logs.s3 import S3LogStore
from codeactions.logs.store import LogEntry, LogQuery
from tests.logs.conftest import s3_settings

NOW = datetime.now(UTC)


@pytest.fixture
async def make_store(s3_endpoint: str, raw: Any) -> AsyncIterator[Callable[..., S3LogStore]]:
    stores: list[S3LogStore] = []

    def make(bucket: str | None = None, prefix: str = "codeactions") -> S3LogStore:
        bucket = bucket or f"codeactions-{uuid.uuid4().hex[:10]}"
        raw.create_bucket(Bucket=bucket)
        store = S3LogStore(s3_settings(s3_endpoint, bucket, prefix))
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


def lines(
    count: int, *, run_id: str | None = None, code_id: str = "", at: datetime = NOW
) -> list[LogEntry]:
    run_id = run_id or str(uuid.uuid4())
    code_id = code_id or str(uuid.uuid4())
    return [
        LogEntry(
            run_id=run_id,
            code_id=code_id,
            type="error" if i % 2 else "info",
            content=f"line {i}",
            seq=i,
            created_at=at + timedelta(milliseconds=i),
        )
        for i in range(count)
    ]


def keys(raw: Any, bucket: str) -> list[str]:
    found: list[str] = []
    for page in raw.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        found.extend(item["Key"] for item in page.get("Contents", []))
    return found


def put_legacy(raw: Any, bucket: str, root: str, entry: LogEntry) -> None:
    """One object per line, named by its uuid, as the original's Python engine wrote them."""
    day = entry.created_at.strftime("%Y/%m/%d")
    raw.put_object(
        Bucket=bucket,
        Key=f"{root}/{day}/{entry.run_id}/{entry.code_id}/{entry.id}.json",
        Body=json.dumps(entry.as_json()).encode(),
        ContentType="application/json",
    )


async def test_a_run_is_one_object_in_the_original_layout(
    make_store: Callable[..., S3LogStore], raw: Any
) -> None:
    store = make_store()
    entries = lines(3)
    await store.write(entries)
    pointer, key = sorted(keys(raw, store._bucket))  # '-' sorts before '/'
    assert pointer.startswith(f"codeactions/logs-index/{NOW:%Y/%m/%d}/")
    run_id, code_id = entries[0].run_id, entries[0].code_id
    assert key.startswith(f"codeactions/logs/{NOW:%Y/%m/%d}/{run_id}/{code_id}/")
    assert key.endswith("_3.json")
    head = raw.head_object(Bucket=store._bucket, Key=key)
    assert head["ContentType"] == "application/json"
    assert head["Metadata"]["run-id"] == run_id
    assert head["Metadata"]["code-id"] == code_id
    assert head["Metadata"]["log-type"] == "info,error"
    assert "created-at" in head["Metadata"]
    body = json.loads(raw.get_object(Bucket=store._bucket, Key=key)["Body"].read())
    assert [item["content"] for item in body] == ["line 0", "line 1", "line 2"]
    assert set(body[0]) == {
        "id",
        "run_id",
        "code_id",
        "type",
        "content",
        "created_at",
        "updated_at",
    }
    assert body[0]["created_at"].endswith("+00:00")


async def test_lines_with_lone_surrogates_and_nul_are_written_replaced(
    make_store: Callable[..., S3LogStore],
) -> None:
    store = make_store()
    entries = lines(2)
    entries[0].content, entries[1].content = "lone \ud800", "nul \x00"
    await store.write(entries)
    found, total = await store.list(LogQuery(run_id=entries[0].run_id))
    assert total == 2
    assert sorted(e.content for e in found) == ["lone \ufffd", "nul \ufffd"]


async def test_empty_prefix_keys_start_with_a_slash(
    make_store: Callable[..., S3LogStore], raw: Any
) -> None:
    store = make_store(prefix="")
    entries = lines(1)
    await store.write(entries)
    pointer, key = sorted(keys(raw, store._bucket))
    assert key.startswith(f"/logs/{NOW:%Y/%m/%d}/")
    assert pointer.startswith(f"/logs-index/{NOW:%Y/%m/%d}/")
    found, total = await store.list(LogQuery(run_id=entries[0].run_id))
    assert total == 1 and found[0].content == "line 0"


async def test_each_line_can_be_read_back_by_its_uuid(
    make_store: Callable[..., S3LogStore],
) -> None:
    store = make_store()
    entries = lines(3)
    await store.write(entries)
    for entry in entries:
        assert str(uuid.UUID(entry.id)) == entry.id  # a canonical UUID, as the API's ids
        got = await store.get(entry.id)
        assert got is not None
        assert (got.id, got.content, got.run_id) == (entry.id, entry.content, entry.run_id)
    other = uuid.UUID(entries[0].id).hex
    assert await store.get(str(uuid.UUID(other[:24] + "000000ff"))) is None  # no such line
    assert await store.get(str(uuid.UUID(other[:4] + "0" * 8 + other[12:]))) is None  # no batch
    assert await store.get(str(uuid.uuid4())) is None  # the original's ids: not scanned for
    assert await store.get("not-an-id") is None


async def test_run_logs_are_paginated_newest_first_with_total(
    make_store: Callable[..., S3LogStore],
) -> None:
    store = make_store()
    entries = lines(45)
    await store.write(entries)
    run_id = entries[0].run_id
    pages = [
        await store.list(LogQuery(run_id=run_id, run_created_at=NOW, page=p)) for p in (1, 2, 3, 4)
    ]
    assert [len(found) for found, _ in pages] == [20, 20, 5, 0]
    assert all(total == 45 for _, total in pages)
    contents = [e.content for found, _ in pages for e in found]
    assert contents == [f"line {i}" for i in reversed(range(45))]


async def test_run_near_midnight_finds_logs_of_the_next_day(
    make_store: Callable[..., S3LogStore],
) -> None:
    store = make_store()
    midnight = datetime(2026, 3, 1, tzinfo=UTC)
    entries = lines(2, at=midnight + timedelta(seconds=1))
    await store.write(entries)
    found, total = await store.list(
        LogQuery(run_id=entries[0].run_id, run_created_at=midnight - timedelta(seconds=2))
    )
    assert total == 2 and {e.content for e in found} == {"line 0", "line 1"}


async def test_logs_of_a_run_invoked_by_object_id_are_found_by_both_spellings(
    make_store: Callable[..., S3LogStore],
) -> None:
    store = make_store()
    object_id = "65a1b2c3d4e5f60718293a4b"
    code_uuid = str(uuid.uuid4())
    entries = lines(2, code_id=object_id)
    await store.write(entries)
    found, total = await store.list(
        LogQuery(run_id=entries[0].run_id, code_ids=(code_uuid, object_id), run_created_at=NOW)
    )
    assert total == 2
    found, total = await store.list(LogQuery(run_id=entries[0].run_id, code_ids=(code_uuid,)))
    assert total == 0 and found == []


async def test_original_and_bucket_prefixed_logs_stay_readable(
    make_store: Callable[..., S3LogStore], raw: Any
) -> None:
    store = make_store()  # the bucket name has a "-": the legacy layout is searched too
    bucket = store._bucket
    run_id, code_id = str(uuid.uuid4()), str(uuid.uuid4())
    old = lines(1, run_id=run_id, code_id=code_id, at=NOW - timedelta(seconds=30))[0]
    older = lines(1, run_id=run_id, code_id=code_id, at=NOW - timedelta(seconds=60))[0]
    put_legacy(raw, bucket, "codeactions/logs", old)
    put_legacy(raw, bucket, f"{bucket}/codeactions/logs", older)
    await store.write(lines(1, run_id=run_id, code_id=code_id))

    found, total = await store.list(LogQuery(run_id=run_id, run_created_at=NOW))
    assert total == 3
    assert [e.id for e in found[1:]] == [old.id, older.id]
    found, total = await store.list(LogQuery(code_ids=(code_id,)))
    assert total == 3 and {e.id for e in found} >= {old.id, older.id}


async def test_code_logs_span_runs_and_days_and_page_by_line(
    make_store: Callable[..., S3LogStore],
) -> None:
    store = make_store()
    code_id = str(uuid.uuid4())
    await store.write(lines(15, code_id=code_id, at=NOW - timedelta(days=2)))
    await store.write(lines(15, code_id=code_id, at=NOW - timedelta(days=1)))
    await store.write(lines(15, code_id=code_id))
    await store.write(lines(5))  # another code
    await store.write(lines(5, code_id=code_id, at=NOW - timedelta(days=30)))  # out of window
    first, total = await store.list(LogQuery(code_ids=(code_id,), page=1))
    second, _ = await store.list(LogQuery(code_ids=(code_id,), page=2))
    third, _ = await store.list(LogQuery(code_ids=(code_id,), page=3))
    assert total == 45
    assert [len(first), len(second), len(third)] == [20, 20, 5]
    every = first + second + third
    assert len({e.id for e in every}) == 45
    assert all(e.code_id == code_id for e in every)
    stamps = [e.created_at for e in every]
    assert stamps == sorted(stamps, reverse=True)


async def test_listing_a_run_never_lists_other_runs(
    make_store: Callable[..., S3LogStore],
) -> None:
    store = make_store()
    mine = lines(2)
    await store.write(mine)
    await store.write(lines(2))
    prefixes: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        prefixes.append(params.get("Prefix", ""))

    client = await store._s3()
    client.meta.events.register("before-parameter-build.s3.ListObjectsV2", record)
    for query in (
        LogQuery(run_id=mine[0].run_id, run_created_at=NOW),
        LogQuery(run_id=mine[0].run_id),  # the run's day unknown: its own prefix, on recent days
    ):
        _found, total = await store.list(query)
        assert total == 2
    await store.get(mine[0].id)
    assert prefixes
    assert all(p.endswith(f"/{mine[0].run_id}/") for p in prefixes)


async def test_delete_older_removes_old_days_page_by_page(
    make_store: Callable[..., S3LogStore], raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "DELETE_BATCH", 7)  # LIST pages of 7 keys instead of 1000
    store = make_store()
    bucket = store._bucket
    old_day = NOW - timedelta(days=40)
    code_id = str(uuid.uuid4())
    for entry in lines(25, code_id=code_id, at=old_day):
        entry.id = str(uuid.uuid4())
        put_legacy(raw, bucket, "codeactions/logs", entry)  # 25 one-line objects
    for entry in lines(3, at=old_day - timedelta(days=300)):
        put_legacy(raw, bucket, f"{bucket}/codeactions/logs", entry)
    await store.write(lines(10, at=old_day + timedelta(days=1)))  # one object, 10 lines
    recent = lines(4, code_id=code_id)
    await store.write(recent)

    before = NOW - timedelta(days=30)
    rounds = []
    while True:
        deleted = await store.delete_older(before, 8)
        rounds.append(deleted)
        if deleted < 8:
            break
    assert sum(rounds) == 25 + 3 + 10
    remaining = sorted(keys(raw, bucket))
    # The recent run's object and its pointer; the old batch's pointer went with it.
    assert len(remaining) == 2
    assert remaining[0].startswith("codeactions/logs-index/")
    assert f"/{recent[0].run_id}/" in remaining[1]
    assert await store.get(recent[0].id) is not None
    _found, total = await store.list(LogQuery(code_ids=(code_id,)))
    assert total == 4


async def test_ping_checks_the_bucket(make_store: Callable[..., S3LogStore], raw: Any) -> None:
    store = make_store()
    await store.ping()
    raw.delete_bucket(Bucket=store._bucket)
    with pytest.raises(Exception):  # noqa: B017 - the health check only needs "it raised"
        await store.ping()


def test_store_is_chosen_by_s3_enabled(s3_endpoint: str, tmp_path: Path) -> None:
    settings = LogSettings(s3_enabled=True, s3_bucket="b", s3_endpoint=s3_endpoint)
    store = build_log_store(settings, None, spools=tmp_path, spool=SpoolSettings())  # type: ignore[arg-type]
    assert isinstance(store, S3LogStore)
