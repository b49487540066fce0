"""Fixtures for the code tests."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.codes.support import PROJECT, enable_users
from tests.conftest import ADMIN

SOURCE = "def Run(engine):\n    engine.result.set('hi')\n"


@pytest.fixture
async def users(app: FastAPI) -> None:
    await enable_users(app)


async def create_code(
    client: httpx.AsyncClient,
    source: str | bytes = SOURCE,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> httpx.Response:
    query = {"project_uuid": PROJECT, "name": "hello", "language": "python", "type": "endpoint"}
    query.update({k: v for k, v in params.items()})
    query = {k: v for k, v in query.items() if v is not None}
    return await client.post(
        "/code", params=query, content=source, headers=headers if headers is not None else ADMIN
    )
