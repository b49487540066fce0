"""Fixtures for the secret tests: the standard users, and secrets created over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from codeactions.config import Settings
from codeactions.db.models import Secret
from codeactions.db.session import ENGINE, SESSIONMAKER
from codeactions.main import create_app
from codeactions.parts import SETTINGS
from tests.codes.support import PROJECT, enable_users
from tests.conftest import ADMIN

# The run tests' apps with a fake runner, and a real S3 server: the secret tests use them too.
from tests.logs.conftest import s3_endpoint  # noqa: F401
from tests.runs.conftest import api, start_api  # noqa: F401


@pytest.fixture
async def users(app: FastAPI) -> None:
    await enable_users(app)


async def create_secret(
    client: httpx.AsyncClient,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> httpx.Response:
    body = {"name": "API_KEY", "value": "s3cr3t-value", "project_uuid": PROJECT, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    return await client.post(
        "/secret", json=body, headers=headers if headers is not None else ADMIN
    )


async def stored_value(app: FastAPI, secret_id: str) -> str:
    """The `value` column as the database holds it."""
    async with app.state.parts[ENGINE].connect() as conn:
        row = await conn.execute(
            text("SELECT value FROM secrets WHERE id = :id"), {"id": _id_param(app, secret_id)}
        )
        return str(row.scalar_one())


def _id_param(app: FastAPI, secret_id: str) -> str:
    # SQLite keeps uuids as 32 hex digits, PostgreSQL as the uuid type.
    return secret_id.replace("-", "") if app.state.parts[SETTINGS].database.is_sqlite else secret_id


async def insert_secret(app: FastAPI, *, name: str, value: str, project_uuid: str = PROJECT) -> str:
    """A row written straight to the table, `value` as given (as the original wrote them)."""
    secret = Secret(name=name, value=value, project_uuid=project_uuid)
    async with app.state.parts[SESSIONMAKER]() as session, session.begin():
        session.add(secret)
    return str(secret.id)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app started from `settings`, and a client of it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client
