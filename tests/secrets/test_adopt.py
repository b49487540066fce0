"""`codeactions migrate` adopts the original's `secrets` table (its migration 000006) with its
rows, which stay readable: listed masked, handed to runs in plaintext, sealed by `encrypt`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from codeactions.config import (
    AuthSettings,
    DatabaseSettings,
    RunnerSettings,
    SecretsSettings,
    Settings,
    SpoolSettings,
)
from codeactions.db.migrate import upgrade
from codeactions.db.session import ENGINE, SESSIONMAKER
from codeactions.secrets.crypto import PREFIX, SECRET_BOX, SecretBox, new_key
from codeactions.secrets.service import SECRET_VAULT, seal_all
from tests.conftest import ADMIN, ADMIN_TOKEN, PG_ADMIN_URL, need_service
from tests.db.test_adopt_original import ORIGINAL_DDL
from tests.secrets.conftest import running

# The original's migration 000006, as it creates the table.
ORIGINAL_SECRETS_DDL = [
    """CREATE TABLE IF NOT EXISTS secrets (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        name VARCHAR(255) NOT NULL,
        value TEXT NOT NULL,
        project_uuid VARCHAR(255) NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
        CONSTRAINT uq_secrets_project_name UNIQUE (project_uuid, name))""",
    "CREATE INDEX IF NOT EXISTS idx_secrets_project_uuid ON secrets(project_uuid)",
    "CREATE INDEX IF NOT EXISTS idx_secrets_created_at ON secrets(created_at)",
    "UPDATE schema_migrations SET version = 6",
]
PROJECT = "p-original"
KEY = new_key()


async def _admin(sql: str) -> None:
    engine = create_async_engine(
        DatabaseSettings(url=PG_ADMIN_URL).async_url, isolation_level="AUTOCOMMIT"
    )
    async with engine.connect() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


@pytest.fixture
def original_database() -> Iterator[str]:
    need_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"codeactions_original_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    async def populate() -> None:
        engine = create_async_engine(DatabaseSettings(url=url).async_url)
        async with engine.begin() as conn:
            for statement in ORIGINAL_DDL + ORIGINAL_SECRETS_DDL:
                await conn.execute(text(statement))
            await conn.execute(
                text(
                    "INSERT INTO secrets (name, value, project_uuid)"
                    " VALUES ('API_KEY', 'plaintext-from-go', :project)"
                ),
                {"project": PROJECT},
            )
        await engine.dispose()

    asyncio.run(populate())
    yield url
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_migrate_adopts_the_originals_secrets_and_keeps_them_readable(
    original_database: str, tmp_path: Path
) -> None:
    database = DatabaseSettings(url=original_database)
    await upgrade(database)
    await upgrade(database)  # idempotent
    settings = Settings(
        database=database,
        auth=AuthSettings(token=ADMIN_TOKEN),
        runner=RunnerSettings(enabled=False, work_dir=str(tmp_path / "runner")),
        spool=SpoolSettings(dir=str(tmp_path / "spool")),
        secrets=SecretsSettings(key=KEY),
    )
    async with running(settings) as (app, client):
        listed = await client.get("/secret", params={"project_uuid": PROJECT}, headers=ADMIN)
        assert listed.status_code == 200
        assert [(s["name"], s["value"]) for s in listed.json()] == [("API_KEY", "********")]
        assert await app.state.parts[SECRET_VAULT].for_run(PROJECT) == {
            "API_KEY": "plaintext-from-go"
        }

        # The original's unique constraint still answers for the name.
        again = await client.post(
            "/secret",
            json={"name": "API_KEY", "value": "x", "project_uuid": PROJECT},
            headers=ADMIN,
        )
        assert again.status_code == 409

        report = await seal_all(app.state.parts[SESSIONMAKER], app.state.parts[SECRET_BOX])
        assert (report.total, report.changed, report.unreadable) == (1, 1, 0)
        async with app.state.parts[ENGINE].connect() as conn:
            stored = (await conn.execute(text("SELECT value FROM secrets"))).scalar_one()
        assert stored.startswith(PREFIX)
        assert SecretBox(KEY).unseal(stored) == "plaintext-from-go"
