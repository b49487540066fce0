"""`GET /coderun?status=` and `GET /coderun/stats`: a code's runs by status, and per hour or day."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from codeactions.db.models import CodeRun
from codeactions.db.session import SESSIONMAKER
from codeactions.runs.repository import percentile_cont
from tests.conftest import ADMIN
from tests.runs.conftest import OTHER_PROJECT, Api, bearer

T0 = datetime(2025, 3, 1, 10, 0, 0, tzinfo=UTC)


async def _add(api: Api, code_id: uuid.UUID, at: datetime, status: str, ms: int = 0) -> CodeRun:
    run = CodeRun(
        id=uuid.uuid4(),
        code_id=code_id,
        status=status,
        result="",
        created_at=at,
        updated_at=at + timedelta(milliseconds=ms),
    )
    async with api.app.state.parts[SESSIONMAKER]() as session, session.begin():
        session.add(run)
    return run


# --- GET /coderun?status= ---------------------------------------------------------------


async def test_list_filters_by_status_paged_or_not(api: Api) -> None:
    code = await api.add_code()
    done = await api.add_run(code_id=code.id, status="completed", created_at=T0)
    failed = await api.add_run(code_id=code.id, status="failed", created_at=T0 + timedelta(1))
    await api.add_run(code_id=code.id, status="started", created_at=T0 + timedelta(2))

    async def ids(query: str) -> list[str]:
        response = await api.client.get(f"/coderun?code_id={code.id}&{query}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()]

    assert await ids("status=failed") == [str(failed.id)]
    assert await ids("status=completed&page=1") == [str(done.id)]
    assert len(await ids("status=")) == 3
    paged = await api.client.get(
        f"/coderun?code_id={code.id}&status=started&page_size=1", headers=ADMIN
    )
    assert paged.headers["X-Total-Count"] == "1"


@pytest.mark.parametrize("value", ["queued", "done", "COMPLETED"])
async def test_list_with_another_status_is_400(api: Api, value: str) -> None:
    code = await api.add_code()
    for paging in ("", "&page=1"):
        response = await api.client.get(
            f"/coderun?code_id={code.id}&status={value}{paging}", headers=ADMIN
        )
        assert response.status_code == 400
        assert response.json() == {
            "message": "invalid status parameter: one of started, completed, failed"
        }


# --- GET /coderun/stats: the answer -----------------------------------------------------


async def test_stats_count_each_hour_and_give_duration_percentiles(api: Api) -> None:
    code = await api.add_code()
    for ms in (100, 200, 300, 400):
        await _add(api, code.id, T0 + timedelta(minutes=5), "completed", ms)
    await _add(api, code.id, T0 + timedelta(minutes=59, seconds=59), "failed", 1000)
    await _add(api, code.id, T0 + timedelta(minutes=30), "started", 99_000)  # no duration
    await _add(api, code.id, T0 + timedelta(hours=2, minutes=1), "completed", 50)
    await _add(api, code.id, T0 + timedelta(hours=3), "completed", 7)  # at `before`: left out
    await _add(api, code.id, T0 - timedelta(seconds=1), "completed", 7)  # before `after`
    response = await api.client.get(
        "/coderun/stats",
        params={
            "code_id": str(code.id),
            "after": "2025-03-01T10:00:00Z",
            "before": "2025-03-01T13:00:00Z",
        },
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "code_id": str(code.id),
        "after": "2025-03-01T10:00:00Z",
        "before": "2025-03-01T13:00:00Z",
        "bucket_seconds": 3600,
        "buckets": [
            {
                "start": "2025-03-01T10:00:00Z",
                "completed": 4,
                "failed": 1,
                "started": 1,
                # percentile_cont over 100, 200, 300, 400, 1000 ms
                "p50_ms": pytest.approx(300.0, abs=0.001),
                "p95_ms": pytest.approx(880.0, abs=0.001),
            },
            {
                "start": "2025-03-01T11:00:00Z",
                "completed": 0,
                "failed": 0,
                "started": 0,
                "p50_ms": None,
                "p95_ms": None,
            },
            {
                "start": "2025-03-01T12:00:00Z",
                "completed": 1,
                "failed": 0,
                "started": 0,
                "p50_ms": pytest.approx(50.0, abs=0.001),
                "p95_ms": pytest.approx(50.0, abs=0.001),
            },
        ],
    }


async def test_stats_buckets_cover_an_unaligned_range_and_days(api: Api) -> None:
    code = await api.add_code()
    await _add(api, code.id, T0 + timedelta(minutes=40), "completed", 10)
    await _add(api, code.id, T0 + timedelta(days=1, hours=5), "failed", 20)
    hours = await api.client.get(
        "/coderun/stats",
        params={
            "code_id": str(code.id),
            "after": "2025-03-01T10:30:00Z",
            "before": "2025-03-01 12:15:00",
        },
        headers=ADMIN,
    )
    assert [b["start"] for b in hours.json()["buckets"]] == [
        "2025-03-01T10:00:00Z",
        "2025-03-01T11:00:00Z",
        "2025-03-01T12:00:00Z",
    ]
    assert hours.json()["buckets"][0]["completed"] == 1
    days = await api.client.get(
        "/coderun/stats",
        params={
            "code_id": str(code.id),
            "after": "2025-02-28",
            "before": "2025-03-03",
            "bucket": "day",
        },
        headers=ADMIN,
    )
    body = days.json()
    assert body["bucket_seconds"] == 86400
    assert [(b["start"], b["completed"], b["failed"]) for b in body["buckets"]] == [
        ("2025-02-28T00:00:00Z", 0, 0),
        ("2025-03-01T00:00:00Z", 1, 0),
        ("2025-03-02T00:00:00Z", 0, 1),
    ]


async def test_stats_default_to_the_last_24_hours(api: Api) -> None:
    code = await api.add_code()
    now = datetime.now(UTC)
    await _add(api, code.id, now - timedelta(hours=1), "completed", 10)
    await _add(api, code.id, now - timedelta(hours=25), "completed", 10)
    body = (await api.client.get(f"/coderun/stats?code_id={code.id}", headers=ADMIN)).json()
    after = datetime.fromisoformat(body["after"])
    before = datetime.fromisoformat(body["before"])
    assert before - after == timedelta(hours=24)
    assert abs(before - now) < timedelta(minutes=1)
    assert len(body["buckets"]) in (24, 25)  # 25 unless `before` falls on the hour
    assert sum(b["completed"] for b in body["buckets"]) == 1
    only_before = await api.client.get(
        f"/coderun/stats?code_id={code.id}&before=2025-03-02", headers=ADMIN
    )
    assert only_before.json()["after"] == "2025-03-01T00:00:00Z"


async def test_stats_count_legacy_runs_found_by_object_id(api: Api) -> None:
    await api.add_code(mongo_object_id="65a1b2c3d4e5f60718293a52")
    await api.add_run(code_id=None, code_mongo_id="65a1b2c3d4e5f60718293a52", created_at=T0)
    response = await api.client.get(
        "/coderun/stats?code_id=65a1b2c3d4e5f60718293a52&after=2025-03-01T10:00:00Z"
        "&before=2025-03-01T11:00:00Z",
        headers=ADMIN,
    )
    assert response.json()["buckets"][0]["completed"] == 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "valid code_id is required"),
        ("&after=2025-03-02&before=2025-03-01", "after must be earlier than before"),
        ("&after=2025-03-01&before=2025-03-01", "after must be earlier than before"),
        (
            "&after=2025-01-01&before=2025-02-01T00:00:01Z",
            "the range from after to before is at most 31 days",
        ),
        ("&after=yesterday", "invalid after parameter"),
        ("&before=10/12/2024", "invalid before parameter"),
        ("&bucket=minute", "invalid bucket parameter: one of hour, day"),
        ("&before=0001-01-01", "invalid before parameter: too early for a range"),
    ],
)
async def test_stats_with_a_bad_parameter_is_400(api: Api, query: str, message: str) -> None:
    code = await api.add_code()
    code_param = f"code_id={code.id}" if message != "valid code_id is required" else ""
    response = await api.client.get(f"/coderun/stats?{code_param}{query}", headers=ADMIN)
    assert response.status_code == 400
    assert response.json() == {"message": message}


async def test_stats_of_31_days_by_the_hour_are_answered(api: Api) -> None:
    code = await api.add_code()
    response = await api.client.get(
        f"/coderun/stats?code_id={code.id}&after=2025-01-01&before=2025-02-01", headers=ADMIN
    )
    assert response.status_code == 200
    assert len(response.json()["buckets"]) == 31 * 24


def test_percentiles_interpolate_as_postgresql_percentile_cont() -> None:
    assert percentile_cont([5.0], 0.95) == 5.0
    assert percentile_cont([1.0, 2.0], 0.5) == 1.5
    assert percentile_cont([10.0, 20.0, 30.0, 40.0, 50.0], 0.95) == pytest.approx(48.0)


# --- GET /coderun/stats: who may -------------------------------------------------------


async def test_stats_access_matrix(api: Api) -> None:
    code = await api.add_code()
    await api.add_run(code_id=code.id)
    await api.grant("viewer@example.com", 1)
    await api.grant("contributor@example.com", 0)  # a permission that grants nothing
    await api.grant("outsider@example.com", 3, project_uuid=OTHER_PROJECT)
    path = f"/coderun/stats?code_id={code.id}"
    assert (await api.client.get(path)).status_code == 401
    outsider = await api.client.get(path, headers=bearer("outsider-token"))
    assert outsider.status_code == 404
    assert outsider.json() == {"message": "code not found"}
    assert (await api.client.get(path, headers=bearer("contributor-token"))).status_code == 404
    viewer = await api.client.get(path, headers=bearer("viewer-token"))
    assert viewer.status_code == 200
    assert sum(b["completed"] for b in viewer.json()["buckets"]) == 1
    assert (await api.client.get(path, headers=bearer("internal-token"))).status_code == 200


async def test_status_filter_access_matrix(api: Api) -> None:
    code = await api.add_code()
    await api.add_run(code_id=code.id, status="failed")
    await api.grant("viewer@example.com", 1)
    await api.grant("contributor@example.com", 0)
    await api.grant("outsider@example.com", 3, project_uuid=OTHER_PROJECT)
    path = f"/coderun?code_id={code.id}&status=failed"
    assert (await api.client.get(path)).status_code == 401
    assert (await api.client.get(path, headers=bearer("outsider-token"))).status_code == 404
    assert (await api.client.get(path, headers=bearer("contributor-token"))).status_code == 404
    viewer = await api.client.get(path, headers=bearer("viewer-token"))
    assert viewer.status_code == 200 and len(viewer.json()) == 1


async def test_stats_of_an_unknown_code_is_404(api: Api) -> None:
    await api.grant("viewer@example.com", 1)
    response = await api.client.get(
        f"/coderun/stats?code_id={uuid.uuid4()}", headers=bearer("viewer-token")
    )
    assert response.status_code == 404
