"""`GET /coderun` without `page`/`page_size`: every run, as the original, read in chunks."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, insert

from codeactions.db.listing import CHUNK_ROWS
from codeactions.db.models import CodeRun
from codeactions.db.session import ENGINE, SESSIONMAKER
from tests.conftest import ADMIN
from tests.runs.conftest import Api, bearer, served

START = datetime(2024, 12, 10, 12, 0, 0, tzinfo=UTC)
# More than two chunks, and three runs per instant, so ties straddle the chunk boundaries.
MANY = 2 * CHUNK_ROWS + 500


async def add_runs(
    api: Api,
    code_id: uuid.UUID | None,
    count: int,
    *,
    code_mongo_id: str | None = None,
    body: str = "",
) -> list[tuple[datetime, uuid.UUID]]:
    """`count` runs in one statement, three per millisecond from START; their keys."""
    rows: list[dict[str, Any]] = []
    for i in range(count):
        stamp = START + timedelta(milliseconds=i // 3)
        rows.append(
            {
                "id": uuid.uuid4(),
                "code_id": code_id,
                "code_mongo_id": code_mongo_id,
                "status": "completed",
                "result": f"run {i}",
                "extra": {"status_code": 200, "content_type": "text"},
                "params": {"i": str(i)},
                "body": body,
                "headers": {"X-Run": [str(i)]},
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
    async with api.app.state.parts[SESSIONMAKER]() as session, session.begin():
        await session.execute(insert(CodeRun), rows)
    return [(row["created_at"], row["id"]) for row in rows]


def newest_first(keys: list[tuple[datetime, uuid.UUID]]) -> list[str]:
    return [str(key) for _, key in sorted(keys, reverse=True)]


async def test_without_paging_every_run_is_listed_newest_first(api: Api) -> None:
    code = await api.add_code()
    other = await api.add_code()
    keys = await add_runs(api, code.id, MANY)
    await add_runs(api, other.id, 10)

    response = await api.client.get(f"/coderun?code_id={code.id}", headers=ADMIN)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "content-length" not in response.headers  # written as it was read
    assert response.headers["X-Total-Count"] == str(MANY)
    assert "Link" not in response.headers
    assert [r["id"] for r in response.json()] == newest_first(keys)


async def test_every_run_reads_as_its_pages_byte_for_byte(api: Api) -> None:
    code = await api.add_code(mongo_object_id="65a1b2c3d4e5f60718293a52")
    await add_runs(api, code.id, MANY, code_mongo_id="65a1b2c3d4e5f60718293a52")
    await add_runs(api, None, 5, code_mongo_id="65a1b2c3d4e5f60718293a52")  # legacy rows

    every = await api.client.get(f"/coderun?code_id={code.id}", headers=ADMIN)
    pages = []
    for number in (1, 2, 3):
        page = await api.client.get(
            f"/coderun?code_id={code.id}&page_size=1000&page={number}", headers=ADMIN
        )
        pages.append(page.content[1:-1])

    assert every.content == b"[" + b",".join(pages) + b"]"
    assert len(every.json()) == MANY + 5
    assert every.json()[0]["code_mongo_id"] == "65a1b2c3d4e5f60718293a52"


async def test_without_paging_the_date_filters_still_apply(api: Api) -> None:
    code = await api.add_code()
    keys = await add_runs(api, code.id, MANY)
    after = START + timedelta(milliseconds=100)
    before = START + timedelta(milliseconds=700)  # 1,803 runs: more than a chunk
    inside = [key for key in keys if after <= key[0] <= before]

    response = await api.client.get(
        "/coderun",
        params={
            "code_id": str(code.id),
            "after": after.isoformat(),
            "before": before.isoformat(),
        },
        headers=ADMIN,
    )

    assert response.status_code == 200, response.text
    assert response.headers["X-Total-Count"] == str(len(inside))
    assert [r["id"] for r in response.json()] == newest_first(inside)


async def test_paging_still_pages_when_asked(api: Api) -> None:
    code = await api.add_code()
    keys = await add_runs(api, code.id, MANY)
    expected = newest_first(keys)

    first = await api.client.get(f"/coderun?code_id={code.id}&page_size=1000", headers=ADMIN)
    assert [r["id"] for r in first.json()] == expected[:1000]
    assert first.headers["X-Total-Count"] == str(MANY)
    assert "page=2" in first.headers["Link"]

    # `page` alone: pages of 100, as before.
    second = await api.client.get(f"/coderun?code_id={code.id}&page=2", headers=ADMIN)
    assert [r["id"] for r in second.json()] == expected[100:200]
    assert 'rel="next"' in second.headers["Link"]


async def test_a_viewer_lists_every_run_and_an_outsider_none(api: Api) -> None:
    code = await api.add_code()
    await add_runs(api, code.id, CHUNK_ROWS + 1)
    await api.grant("viewer@example.com", 1)
    path = f"/coderun?code_id={code.id}"

    assert (await api.client.get(path)).status_code == 401
    outsider = await api.client.get(path, headers=bearer("outsider-token"))
    assert outsider.status_code == 404
    assert outsider.json() == {"message": "code not found"}
    viewer = await api.client.get(path, headers=bearer("viewer-token"))
    assert viewer.status_code == 200
    assert len(viewer.json()) == CHUNK_ROWS + 1


async def test_a_client_going_away_stops_the_listing_and_frees_its_connection(
    api: Api,
) -> None:
    code = await api.add_code()
    chunks = 8
    # Fat runs: the socket's buffers cannot take more than a couple of chunks.
    await add_runs(api, code.id, chunks * CHUNK_ROWS, body="x" * 4000)
    engine = api.app.state.parts[ENGINE]
    reads: list[str] = []
    dropped: list[object] = []

    def count_reads(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM coderuns" in statement and "ORDER BY" in statement:
            reads.append(statement)

    def count_dropped(dbapi_connection: Any, record: Any, exception: Any) -> None:
        dropped.append(exception)

    event.listen(engine.sync_engine, "before_cursor_execute", count_reads)
    event.listen(engine.sync_engine, "invalidate", count_dropped)
    try:
        async with served(api) as host, httpx.AsyncClient(timeout=10) as client:
            path = f"http://{host}/coderun?code_id={code.id}"
            async with client.stream("GET", path, headers=ADMIN) as response:
                assert response.status_code == 200
                received = await anext(response.aiter_raw())
                assert received.startswith(b'[{"id":')
            # Closed with most of the answer unread: the server notices and stops.
            for _ in range(200):
                if engine.pool.checkedout() == 0:
                    break
                await asyncio.sleep(0.05)
            read_then = len(reads)
            await asyncio.sleep(0.3)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count_reads)
        event.remove(engine.sync_engine, "invalidate", count_dropped)

    assert engine.pool.checkedout() == 0
    assert dropped == []  # returned to the pool, not cut off mid-query
    assert len(reads) == read_then  # nothing read after the client left
    assert len(reads) < chunks


async def test_a_database_failing_mid_list_cuts_the_answer_short(api: Api) -> None:
    code = await api.add_code()
    await add_runs(api, code.id, CHUNK_ROWS + 1)
    engine = api.app.state.parts[ENGINE]
    reads: list[str] = []

    def fail_second_read(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM coderuns" in statement and "ORDER BY" in statement:
            reads.append(statement)
            if len(reads) == 2:
                raise ConnectionResetError("the database went away")

    event.listen(engine.sync_engine, "before_cursor_execute", fail_second_read)
    try:
        # Half an answer is out: the connection is closed on it, never a complete-looking list.
        with pytest.raises(Exception, match="went away"):
            await api.client.get(f"/coderun?code_id={code.id}", headers=ADMIN)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", fail_second_read)
    assert engine.pool.checkedout() == 0


async def test_every_run_is_valid_json_with_the_run_object_shape(api: Api) -> None:
    code = await api.add_code()
    await add_runs(api, code.id, CHUNK_ROWS + 2)
    response = await api.client.get(f"/coderun?code_id={code.id}", headers=ADMIN)
    runs = json.loads(response.content)
    assert list(runs[-1]) == [
        "id",
        "code_id",
        "status",
        "result",
        "extra",
        "params",
        "body",
        "headers",
        "created_at",
        "updated_at",
    ]
    assert runs[-1]["created_at"] == "2024-12-10T12:00:00Z"
    assert runs[0]["created_at"] == "2024-12-10T12:00:00.333Z"
