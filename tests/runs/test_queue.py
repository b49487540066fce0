"""The run queue: slots shared fairly between projects and codes, caps on what each may hold,
and every ticket's slot or place given back once, whatever happened to its run."""

from __future__ import annotations

import asyncio

import pytest

from codeactions.config import RunnerSettings
from codeactions.errors import QueueFull, TooManyWaiting
from codeactions.ops.metrics import Metrics
from codeactions.runs.queue import Caps, RunQueue, Ticket


def make_queue(
    *,
    slots: int = 2,
    queue_size: int = 10,
    project: Caps = Caps(running=1, waiting=3),
    code: Caps = Caps(running=1, waiting=3),
    metrics: Metrics | None = None,
) -> RunQueue:
    return RunQueue(
        slots=slots,
        queue_size=queue_size,
        project=project,
        code=code,
        metrics=metrics or Metrics(),
    )


def started(ticket: Ticket) -> bool:
    return ticket.state == "running"


def sample(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


async def test_a_project_at_its_cap_does_not_hold_up_the_others() -> None:
    queue = make_queue(slots=2)
    a1 = queue.admit(project_uuid="a", code_id="a1")
    a2 = queue.admit(project_uuid="a", code_id="a2")  # a slot is free, but project a is at 1
    b1 = queue.admit(project_uuid="b", code_id="b1")
    assert (started(a1), started(a2), started(b1)) == (True, False, True)
    assert (queue.running, queue.waiting) == (2, 1)


async def test_a_freed_slot_goes_to_the_oldest_waiting_run_that_may_start() -> None:
    queue = make_queue(slots=2)
    a1 = queue.admit(project_uuid="a", code_id="a1")
    b1 = queue.admit(project_uuid="b", code_id="b1")
    a2 = queue.admit(project_uuid="a", code_id="a2")  # oldest waiting, but a is at its cap
    c1 = queue.admit(project_uuid="c", code_id="c1")
    d1 = queue.admit(project_uuid="d", code_id="d1")
    b1.release()
    assert (started(a2), started(c1), started(d1)) == (False, True, False)
    a1.release()
    assert (started(a2), started(d1)) == (True, False)
    c1.release()
    assert started(d1)


async def test_a_waiting_run_starts_when_it_gets_a_slot() -> None:
    queue = make_queue(slots=1)
    first = queue.admit(project_uuid="a", code_id="a1")
    second = queue.admit(project_uuid="b", code_id="b1")
    waiter = asyncio.create_task(second.wait_for_slot())
    await asyncio.sleep(0)
    assert not waiter.done()
    first.release()
    await asyncio.wait_for(waiter, 1)
    assert started(second)
    await asyncio.wait_for(first.wait_for_slot(), 1)  # a ticket admitted with a slot: at once


async def test_a_code_is_capped_within_its_project() -> None:
    queue = make_queue(slots=4, project=Caps(running=3, waiting=3), code=Caps(running=1, waiting=1))
    one = queue.admit(project_uuid="a", code_id="x")
    other_code = queue.admit(project_uuid="a", code_id="y")
    same_code = queue.admit(project_uuid="a", code_id="x")
    assert (started(one), started(other_code), started(same_code)) == (True, True, False)
    with pytest.raises(TooManyWaiting) as refused:
        queue.admit(project_uuid="a", code_id="x")
    assert refused.value.status_code == 429
    assert refused.value.message == "too many runs of this code waiting"
    assert refused.value.headers == {"Retry-After": "1"}


async def test_over_its_waiting_cap_a_project_is_refused_at_once_and_others_are_not() -> None:
    metrics = Metrics()
    queue = make_queue(slots=1, project=Caps(running=1, waiting=2), metrics=metrics)
    queue.admit(project_uuid="a", code_id="a1")
    queue.admit(project_uuid="a", code_id="a2")
    queue.admit(project_uuid="a", code_id="a3")
    with pytest.raises(TooManyWaiting) as refused:
        queue.admit(project_uuid="a", code_id="a4")
    assert refused.value.message == "too many runs of this project waiting"
    assert refused.value.headers == {"Retry-After": "1"}
    queue.admit(project_uuid="b", code_id="b1")  # another project still gets a place
    assert (queue.running, queue.waiting) == (1, 3)
    assert sample(metrics, "workerpool_tasks_rejected_total") == 1


async def test_a_full_queue_is_still_503() -> None:
    queue = make_queue(slots=1, queue_size=2)
    for project in ("a", "b", "c"):
        queue.admit(project_uuid=project, code_id=project)
    with pytest.raises(QueueFull) as refused:
        queue.admit(project_uuid="d", code_id="d")
    assert (refused.value.status_code, refused.value.message) == (503, "workerpool queue is full")


async def test_a_cancelled_waiter_gives_its_place_back_and_never_gets_a_slot() -> None:
    queue = make_queue(slots=1)
    first = queue.admit(project_uuid="a", code_id="a1")
    gone = queue.admit(project_uuid="b", code_id="b1")
    after = queue.admit(project_uuid="c", code_id="c1")
    waiter = asyncio.create_task(gone.wait_for_slot())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    first.release()  # before the cancelled run is released: the slot skips it
    assert (started(gone), started(after)) == (False, True)
    gone.release()
    gone.release()  # a second release changes nothing
    assert (queue.running, queue.waiting) == (1, 0)


async def test_a_timed_out_waiter_gives_its_place_back() -> None:
    queue = make_queue(slots=1)
    first = queue.admit(project_uuid="a", code_id="a1")
    late = queue.admit(project_uuid="b", code_id="b1")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await late.wait_for_slot()
    late.release()
    assert (queue.running, queue.waiting) == (1, 0)
    first.release()
    assert (queue.running, queue.waiting, queue.admitted) == (0, 0, 0)


async def test_a_slot_granted_as_its_waiter_is_cancelled_is_given_back() -> None:
    queue = make_queue(slots=1)
    first = queue.admit(project_uuid="a", code_id="a1")
    second = queue.admit(project_uuid="b", code_id="b1")
    third = queue.admit(project_uuid="c", code_id="c1")
    waiter = asyncio.create_task(second.wait_for_slot())
    await asyncio.sleep(0)
    first.release()  # `second` gets the slot ...
    waiter.cancel()  # ... and its run is cancelled before it could use it
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert started(second) and not started(third)
    second.release()
    assert started(third)
    third.release()
    assert (queue.running, queue.waiting) == (0, 0)


async def test_each_release_counts_once_and_the_caps_recover() -> None:
    queue = make_queue(slots=1, project=Caps(running=1, waiting=1))
    for _ in range(3):
        running = queue.admit(project_uuid="a", code_id="a1")
        waiting = queue.admit(project_uuid="a", code_id="a1")
        with pytest.raises(TooManyWaiting):
            queue.admit(project_uuid="a", code_id="a1")
        for ticket in (running, running, waiting, waiting):
            ticket.release()
        assert (queue.running, queue.waiting) == (0, 0)


async def test_the_queue_reports_its_depth_and_waits() -> None:
    metrics = Metrics(workers=1)
    queue = make_queue(slots=1, metrics=metrics)
    first = queue.admit(project_uuid="a", code_id="a1")
    second = queue.admit(project_uuid="b", code_id="b1")
    assert sample(metrics, "workerpool_workers_busy") == 1
    assert sample(metrics, "workerpool_queue_size") == 1
    first.release()
    assert sample(metrics, "workerpool_workers_busy") == 1
    assert sample(metrics, "workerpool_queue_size") == 0
    second.release()
    assert sample(metrics, "workerpool_workers_busy") == 0
    assert sample(metrics, "workerpool_queue_wait_seconds_count") == 2


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, (4, 25, 4, 25)),  # 8 slots, 100 waiting places
        ({"slots": 1, "queue_size": 0}, (1, 1, 1, 1)),
        ({"slots": 3, "queue_size": 7}, (1, 1, 1, 1)),
        ({"project_max_concurrency": 6, "project_max_queued": 50}, (6, 50, 6, 50)),
        ({"code_max_concurrency": 2, "code_max_queued": 5}, (4, 25, 2, 5)),
    ],
)
def test_caps_default_to_shares_of_the_slots_and_queue(
    fields: dict[str, int], expected: tuple[int, int, int, int]
) -> None:
    runner = RunnerSettings(**fields)
    resolved = (
        runner.project_concurrency,
        runner.project_queued,
        runner.code_concurrency,
        runner.code_queued,
    )
    assert resolved == expected


def test_caps_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEACTIONS_PROJECT_MAX_CONCURRENCY", "3")
    monkeypatch.setenv("CODEACTIONS_PROJECT_MAX_QUEUED", "9")
    monkeypatch.setenv("CODEACTIONS_CODE_MAX_CONCURRENCY", "2")
    monkeypatch.setenv("CODEACTIONS_CODE_MAX_QUEUED", "4")
    runner = RunnerSettings()
    assert (
        runner.project_concurrency,
        runner.project_queued,
        runner.code_concurrency,
        runner.code_queued,
    ) == (3, 9, 2, 4)
