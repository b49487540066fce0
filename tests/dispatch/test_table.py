"""Which worker an API replica hands a run to: warm first, then the freest; lost when silent."""

from __future__ import annotations

import json

import pytest

from codeactions.dispatch.wire import Heartbeat, heartbeat
from codeactions.dispatch.workers import WorkerTable


def beat(
    worker: str, *, slots: int = 2, busy: int = 0, warm: tuple[str, ...] = (), **more: bool
) -> Heartbeat:
    return {
        "worker": worker,
        "queue": f"q.{worker}",
        "slots": slots,
        "busy": busy,
        "warm": list(warm),
        "draining": more.get("draining", False),
        "gone": more.get("gone", False),
        "isolation": "test",
        "languages": {"python": {"ready": True, "error": ""}},
        "sent_at": 0.0,
    }


def test_a_run_goes_where_its_code_is_warm_while_that_worker_has_a_free_slot() -> None:
    table = WorkerTable(lost_seconds=5)
    table.heard(beat("a", busy=0), now=0)
    table.heard(beat("b", busy=1, warm=("code-1",)), now=0)

    worker, warm = table.pick("code-1") or (None, False)
    assert (worker and worker.id, warm) == ("b", True)

    table.workers["b"].mine = 2  # this replica filled it since its last heartbeat
    worker, warm = table.pick("code-1") or (None, False)
    assert (worker and worker.id, warm) == ("a", False)


def test_a_cold_code_goes_to_the_freest_worker_and_warms_it() -> None:
    table = WorkerTable(lost_seconds=5)
    table.heard(beat("a", slots=2, busy=1), now=0)
    table.heard(beat("b", slots=4, busy=1), now=0)
    worker, warm = table.pick("new") or (None, False)
    assert worker is not None and (worker.id, warm) == ("b", False)
    worker.warmed("new")
    assert table.pick("new") == (worker, True)


def test_draining_workers_take_nothing_and_silent_ones_are_lost() -> None:
    table = WorkerTable(lost_seconds=5)
    table.heard(beat("a"), now=0)
    table.heard(beat("b", draining=True), now=0)
    assert [w.id for w in table.open()] == ["a"]
    assert table.capacity == 2

    table.heard(beat("b", draining=True), now=4)
    assert [w.id for w in table.silent(now=5)] == ["a"]
    assert table.pick("x") is None
    assert list(table.workers) == ["b"]


def test_a_message_that_is_no_heartbeat_is_refused() -> None:
    assert heartbeat(json.dumps(beat("a")).encode())["worker"] == "a"
    for broken in (b"[]", b"{}", b'{"worker": 1}', b"not json", b'{"worker": "a", "slots": NaN}'):
        with pytest.raises(ValueError):
            heartbeat(broken)
