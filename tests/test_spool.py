"""The local spool: what is appended survives a stop or a crash, is applied once, then deleted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from codeactions import spool as spool_module
from codeactions.spool import REJECTED, Spool, SpoolConsumer, SpoolFull


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


async def test_records_not_applied_are_handed_out_again_after_a_stop(tmp_path: Path) -> None:
    first = Spool(tmp_path, max_bytes=1 << 20)
    first.open()
    applied = await first.append({"n": 1})
    await first.append({"n": 2})
    first.done(applied)
    first.close()

    second = Spool(tmp_path, max_bytes=1 << 20)
    again = second.open()
    # At least once: the segment still held an unapplied record, so all of it comes back (what
    # applies records is idempotent); a segment whose records were all applied is gone.
    assert [entry.record for entry in again] == [{"n": 1}, {"n": 2}]
    assert (await second.get()).record == {"n": 1}
    for entry in again:
        second.done(entry)
    second.close()
    assert segments(tmp_path) == []


def test_a_record_cut_by_a_crash_is_skipped(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "00000000000000000001-1-abcdefgh.seg").write_bytes(b'{"n":1}\n{"n":2}\n{"n"')
    spool = Spool(tmp_path, max_bytes=1 << 20)
    assert [entry.record for entry in spool.open()] == [{"n": 1}, {"n": 2}]
    spool.close()


async def test_a_segment_held_by_another_process_is_not_taken(tmp_path: Path) -> None:
    owner = Spool(tmp_path, max_bytes=1 << 20)
    owner.open()
    await owner.append({"n": 1})
    # Its own open file description: flock conflicts as it would across processes.
    other = Spool(tmp_path, max_bytes=1 << 20)
    assert other.open() == []
    owner.close()  # the owner stops with the record not applied: now it is anybody's
    assert [entry.record for entry in other.adopt()] == [{"n": 1}]
    other.close()


async def test_a_full_spool_refuses_instead_of_growing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    spool.open()
    await spool.append({"text": "x" * 40})
    with pytest.raises(SpoolFull):
        await spool.append({"text": "y" * 80})
    assert spool.backlog == 1
    spool.close()


async def test_applied_segments_are_deleted_and_the_active_one_emptied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 16)
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    entries = [await spool.append({"text": "z" * 40, "n": n}) for n in range(5)]
    assert len(segments(tmp_path)) == 5
    for entry in entries:
        spool.done(entry)
    left = segments(tmp_path)
    assert len(left) == 1 and left[0].stat().st_size == 0  # the one being written, emptied
    spool.close()
    assert segments(tmp_path) == []


async def test_concurrent_appends_share_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = spool_module.os.fsync

    def counting(fd: int) -> None:
        nonlocal calls
        calls += 1
        real(fd)

    monkeypatch.setattr(spool_module.os, "fsync", counting)
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    calls = 0
    await asyncio.gather(*(spool.append({"n": n}) for n in range(50)))
    assert spool.backlog == 50
    assert calls < 50
    spool.close()


async def test_the_consumer_retries_with_backoff_then_applies_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    seen: list[int] = []
    failures = 3

    async def apply(record: dict[str, Any]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionRefusedError("database down")
        seen.append(record["n"])

    consumer = SpoolConsumer(spool, apply, name="test", first_delay=0.01, max_delay=0.02)
    consumer.start()
    for n in range(5):
        await spool.append({"n": n})
    async with asyncio.timeout(5):
        await spool.wait_empty()
    assert seen == [0, 1, 2, 3, 4]
    assert not consumer.failing
    await consumer.stop()
    spool.close()
    assert segments(tmp_path) == []


async def test_a_record_that_can_never_apply_is_set_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()

    async def apply(record: dict[str, Any]) -> None:
        raise ValueError("bad record")

    consumer = SpoolConsumer(
        spool, apply, name="test", permanent=lambda exc: isinstance(exc, ValueError)
    )
    consumer.start()
    await spool.append({"n": 1})
    async with asyncio.timeout(5):
        await spool.wait_empty()
    await consumer.stop()
    spool.close()
    rejected = [json.loads(line) for line in (tmp_path / REJECTED).read_text().splitlines()]
    assert rejected == [{"reason": "ValueError: bad record", "record": {"n": 1}}]
