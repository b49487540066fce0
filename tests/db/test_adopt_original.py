"""`codeactions migrate` adopts a PostgreSQL database made by the original's migrations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from codeactions.config import AuthSettings, DatabaseSettings, RunnerSettings, Settings
from codeactions.db.migrate import upgrade
from codeactions.main import create_app
from tests.conftest import ADMIN, ADMIN_TOKEN, PG_ADMIN_URL, need_service

# The original's golang-migrate files 000001-000005 (spec §4.1), as they create the tables.
ORIGINAL_DDL = [
    'CREATE EXTENSION IF NOT EXISTS "pgcrypto"',
    """CREATE TABLE codes (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        mongo_object_id TEXT UNIQUE,
        name VARCHAR(255) NOT NULL,
        type VARCHAR(50) NOT NULL CHECK (type IN ('flow','endpoint')),
        source TEXT NOT NULL,
        language VARCHAR(50) NOT NULL CHECK (language IN ('python','go','javascript')),
        url VARCHAR(512),
        project_uuid VARCHAR(255) NOT NULL,
        timeout INTEGER NOT NULL DEFAULT 60 CHECK (timeout >= 5 AND timeout <= 300),
        created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW())""",
    "CREATE INDEX idx_codes_mongo_object_id ON codes(mongo_object_id)",
    "CREATE INDEX idx_codes_project_uuid ON codes(project_uuid)",
    """CREATE TABLE codelibs (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        mongo_object_id TEXT UNIQUE,
        name VARCHAR(255) NOT NULL,
        language VARCHAR(50) NOT NULL CHECK (language IN ('python')),
        created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW())""",
    """CREATE TABLE coderuns (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        mongo_object_id TEXT UNIQUE,
        code_id UUID NOT NULL,
        code_mongo_id TEXT,
        status VARCHAR(50) NOT NULL CHECK (status IN ('queued','started','completed','failed')),
        result TEXT,
        extra JSONB DEFAULT '{}',
        params JSONB DEFAULT '{}',
        body TEXT,
        headers JSONB DEFAULT '{}',
        created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW())""",
    """CREATE TABLE user_permissions (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        mongo_object_id TEXT UNIQUE,
        project_uuid VARCHAR(255) NOT NULL,
        email VARCHAR(255) NOT NULL,
        role INTEGER NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW())""",
    """CREATE UNIQUE INDEX idx_user_permissions_unique_project_email
        ON user_permissions(project_uuid, email)""",
    """CREATE TABLE projects (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        mongo_object_id TEXT UNIQUE,
        uuid VARCHAR(255) NOT NULL UNIQUE,
        name VARCHAR(255) NOT NULL,
        authorizations JSONB DEFAULT '[]',
        created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW())""",
    "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)",
    "INSERT INTO schema_migrations VALUES (5, false)",
]

CODE_ID = uuid.UUID("6a8f5a0e-2f4b-4c1e-9d55-0b1c2d3e4f50")
OBJECT_ID = "65a1b2c3d4e5f60718293a4b"


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
            for statement in ORIGINAL_DDL:
                await conn.execute(text(statement))
            await conn.execute(
                text(
                    "INSERT INTO codes (id, mongo_object_id, name, type, source, language,"
                    " project_uuid, timeout) VALUES (:id, :oid, 'legacy', 'endpoint',"
                    " 'def Run(engine): pass', 'python', 'p-1', 60)"
                ),
                {"id": CODE_ID, "oid": OBJECT_ID},
            )
            await conn.execute(
                text(
                    "INSERT INTO coderuns (code_id, status, result) VALUES (:id, 'completed', 'ok')"
                ),
                {"id": CODE_ID},
            )
        await engine.dispose()

    asyncio.run(populate())
    yield url
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_migrate_adopts_original_tables_and_keeps_rows(original_database: str) -> None:
    database = DatabaseSettings(url=original_database)
    await upgrade(database)
    await upgrade(database)  # idempotent

    settings = Settings(
        database=database,
        auth=AuthSettings(token=ADMIN_TOKEN),
        runner=RunnerSettings(enabled=False),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            by_uuid = await client.get(f"/code/{CODE_ID}", headers=ADMIN)
            by_object_id = await client.get(f"/code/{OBJECT_ID}", headers=ADMIN)
            runs = await client.get("/coderun", params={"code_id": str(CODE_ID)}, headers=ADMIN)

    assert by_uuid.status_code == 200, by_uuid.text
    assert by_uuid.json()["name"] == "legacy"
    assert by_object_id.status_code == 200
    assert by_object_id.json()["id"] == str(CODE_ID)
    assert runs.status_code == 200
    assert [r["result"] for r in runs.json()] == ["ok"]

    engine = create_async_engine(database.async_url)
    async with engine.connect() as conn:
        version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        nullable = await conn.scalar(
            text(
                "SELECT is_nullable FROM information_schema.columns"
                " WHERE table_name='coderuns' AND column_name='code_id'"
            )
        )
    await engine.dispose()
    assert version == "0002"
    assert nullable == "YES"
