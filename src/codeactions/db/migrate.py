"""Apply the Alembic migrations to the configured database."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from codeactions.config import DatabaseSettings
from codeactions.db.session import check_connection, create_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def _upgrade(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(settings: DatabaseSettings, revision: str = "head") -> None:
    engine = create_engine(settings)
    try:
        await check_connection(engine, settings)
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)
    finally:
        await engine.dispose()
