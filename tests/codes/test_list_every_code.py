"""`GET /code` without `page`/`page_size`: every code of the project, as the original."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert

from codeactions.db.listing import CHUNK_ROWS
from codeactions.db.models import Code
from codeactions.db.session import SESSIONMAKER
from tests.codes.support import OTHER_PROJECT, OUTSIDER, PROJECT, VIEWER, as_user
from tests.conftest import ADMIN

START = datetime(2024, 12, 10, 12, 0, 0, tzinfo=UTC)
MANY = 2 * CHUNK_ROWS + 500


async def add_codes(
    app: FastAPI, count: int, *, project_uuid: str = PROJECT
) -> list[tuple[datetime, uuid.UUID, str]]:
    """`count` codes in one statement, three per millisecond, types alternating; their keys."""
    rows: list[dict[str, Any]] = []
    for i in range(count):
        stamp = START + timedelta(milliseconds=i // 3)
        rows.append(
            {
                "id": uuid.uuid4(),
                "name": f"code {i}",
                "type": "flow" if i % 2 else "endpoint",
                "source": f"def Run(engine):\n    engine.result.set({i})\n",
                "language": "python",
                "project_uuid": project_uuid,
                "timeout": 60,
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
    async with app.state.parts[SESSIONMAKER]() as session, session.begin():
        await session.execute(insert(Code), rows)
    return [(row["created_at"], row["id"], row["type"]) for row in rows]


def newest_first(keys: list[tuple[datetime, uuid.UUID, str]]) -> list[str]:
    return [str(key) for _, key, _ in sorted(keys, reverse=True)]


async def test_without_paging_every_code_is_listed_newest_first(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    keys = await add_codes(app, MANY)
    await add_codes(app, 3, project_uuid=OTHER_PROJECT)

    response = await client.get("/code", params={"project_uuid": PROJECT}, headers=ADMIN)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "content-length" not in response.headers  # written as it was read
    assert response.headers["X-Total-Count"] == str(MANY)
    assert "Link" not in response.headers
    assert [c["id"] for c in response.json()] == newest_first(keys)


async def test_without_paging_the_type_filter_still_applies(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    keys = await add_codes(app, MANY)
    flows = [key for key in keys if key[2] == "flow"]

    response = await client.get(
        "/code", params={"project_uuid": PROJECT, "code_type": "flow"}, headers=ADMIN
    )

    assert response.headers["X-Total-Count"] == str(len(flows))
    assert [c["id"] for c in response.json()] == newest_first(flows)


async def test_every_code_reads_as_its_pages_byte_for_byte(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await add_codes(app, MANY)
    every = await client.get("/code", params={"project_uuid": PROJECT}, headers=ADMIN)
    pages = []
    for number in ("1", "2", "3"):
        page = await client.get(
            "/code", params={"project_uuid": PROJECT, "page": number}, headers=ADMIN
        )
        pages.append(page.content[1:-1])
    assert every.content == b"[" + b",".join(pages) + b"]"


async def test_paging_still_pages_when_asked(app: FastAPI, client: httpx.AsyncClient) -> None:
    expected = newest_first(await add_codes(app, MANY))
    first = await client.get(
        "/code", params={"project_uuid": PROJECT, "page_size": "1000"}, headers=ADMIN
    )
    assert [c["id"] for c in first.json()] == expected[:1000]
    assert first.headers["X-Total-Count"] == str(MANY)
    assert 'rel="next"' in first.headers["Link"]
    last = await client.get("/code", params={"project_uuid": PROJECT, "page": "3"}, headers=ADMIN)
    assert [c["id"] for c in last.json()] == expected[2000:]
    assert "Link" not in last.headers


@pytest.mark.usefixtures("users")
async def test_a_viewer_lists_every_code_and_an_outsider_none(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await add_codes(app, CHUNK_ROWS + 1)
    params = {"project_uuid": PROJECT}
    assert (await client.get("/code", params=params)).status_code == 401
    assert (await client.get("/code", params=params, headers=as_user(OUTSIDER))).status_code == 403
    viewer = await client.get("/code", params=params, headers=as_user(VIEWER))
    assert viewer.status_code == 200
    assert len(viewer.json()) == CHUNK_ROWS + 1
