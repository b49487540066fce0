"""Source size, encoding and blacklist rules, on create and on update."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from codeactions.config import CodeSettings, Settings
from tests.codes.conftest import create_code
from tests.conftest import ADMIN

LIMIT = 1000


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        code=CodeSettings(max_source_bytes=LIMIT, blacklist=["exec", "os.system", "__import__("])
    )


async def test_source_one_byte_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    response = await create_code(client, "x" * (LIMIT - 1))
    assert response.status_code == 201
    assert len(response.json()["source"]) == LIMIT - 1


async def test_source_at_the_limit_is_too_big(client: httpx.AsyncClient) -> None:
    response = await create_code(client, "x" * LIMIT)
    assert response.status_code == 400
    assert response.json() == {"message": "source code is too big"}


async def test_limit_is_counted_in_bytes_not_characters(client: httpx.AsyncClient) -> None:
    response = await create_code(client, "é" * (LIMIT // 2))  # 2 bytes each
    assert response.status_code == 400
    assert response.json() == {"message": "source code is too big"}


async def test_a_chunked_body_without_length_is_cut_at_the_limit(
    client: httpx.AsyncClient,
) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(10_000):
            sent += 100
            yield b"x" * 100

    response = await create_code(client, endless())  # type: ignore[arg-type]
    assert response.status_code == 400
    assert response.json() == {"message": "source code is too big"}
    assert sent < 100 * 10_000  # the server stopped reading


async def test_type_and_language_are_checked_before_size(client: httpx.AsyncClient) -> None:
    response = await create_code(client, "x" * LIMIT, language="cobol")
    assert response.json() == {"message": "language type (cobol) is not valid"}


async def test_source_that_is_not_utf8_is_400(client: httpx.AsyncClient) -> None:
    response = await create_code(client, b"print('\xff')")
    assert response.status_code == 400
    assert response.json() == {"message": "source code must be valid UTF-8 text"}


async def test_source_with_a_nul_byte_is_400_not_a_database_error(
    client: httpx.AsyncClient,
) -> None:
    response = await create_code(client, b"print(1)\x00")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "source",
    [
        "exec(x)",
        "y = 1\nexec('print(1)')",
        "import os\nos.system('ls')",
        "__import__('os')",
        "f = exec",
    ],
)
async def test_blacklisted_terms_are_rejected(client: httpx.AsyncClient, source: str) -> None:
    response = await create_code(client, source)
    assert response.status_code == 400
    assert response.json() == {"message": "source code contains blacklisted term"}


@pytest.mark.parametrize(
    "source",
    [
        "cursor.execute('select 1')",
        "executor = None",
        "my_exec = 1",
        "aos.systems = 2",
        "Exec = 'case-sensitive as the original'",
    ],
)
async def test_blacklist_matches_whole_words_only(client: httpx.AsyncClient, source: str) -> None:
    response = await create_code(client, source)
    assert response.status_code == 201, response.json()


async def test_update_applies_the_same_source_rules(client: httpx.AsyncClient) -> None:
    code_id = (await create_code(client)).json()["id"]
    for source, message in (
        ("exec(x)", "source code contains blacklisted term"),
        ("x" * LIMIT, "source code is too big"),
    ):
        response = await client.patch(f"/code/{code_id}", content=source, headers=ADMIN)
        assert response.status_code == 400
        assert response.json() == {"message": message}
    response = await client.patch(f"/code/{code_id}", content="x" * (LIMIT - 1), headers=ADMIN)
    assert response.status_code == 200


async def test_default_limit_is_the_originals_one_mebibyte(
    make_settings: Callable[..., Settings],
) -> None:
    from codeactions.main import create_app

    app: FastAPI = create_app(make_settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ok = await create_code(client, "x" * (1024 * 1024 - 1))
            assert ok.status_code == 201
            too_big = await create_code(client, "x" * (1024 * 1024))
            assert too_big.json() == {"message": "source code is too big"}
