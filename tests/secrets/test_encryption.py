"""Secrets at rest: encrypted under the configured key (or a generated key file), rows the
original wrote in plaintext still read, and `codeactions secrets encrypt` rotating keys."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
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
from codeactions.secrets.crypto import (
    PREFIX,
    SecretBox,
    SecretsKeyError,
    key_file_path,
    new_key,
)
from codeactions.secrets.service import SECRET_VAULT
from tests.codes.support import PROJECT
from tests.conftest import ADMIN, ADMIN_TOKEN
from tests.secrets.conftest import create_secret, insert_secret, running, stored_value

CLI = Path(sys.executable).parent / "codeactions"
KEY, OLD_KEY, UNKNOWN_KEY = new_key(), new_key(), new_key()


async def test_a_stored_value_is_ciphertext_under_the_configured_key(
    make_settings: Callable[..., Settings],
) -> None:
    async with running(make_settings(secrets=SecretsSettings(key=KEY))) as (app, client):
        created = (await create_secret(client, value="plain-text-value")).json()
        stored = await stored_value(app, created["id"])
    assert stored.startswith(PREFIX)
    assert "plain-text-value" not in stored
    assert SecretBox(KEY).unseal(stored) == "plain-text-value"
    with pytest.raises(Exception, match="unknown key"):
        SecretBox(UNKNOWN_KEY).unseal(stored)


async def test_a_changed_value_is_stored_encrypted_too(
    make_settings: Callable[..., Settings],
) -> None:
    async with running(make_settings(secrets=SecretsSettings(key=KEY))) as (app, client):
        created = (await create_secret(client)).json()
        before = await stored_value(app, created["id"])
        await client.patch(
            f"/secret/{created['id']}", json={"value": "second-value"}, headers=ADMIN
        )
        after = await stored_value(app, created["id"])
    assert after != before and "second-value" not in after
    assert SecretBox(KEY).unseal(after) == "second-value"


async def test_secrets_under_an_old_key_stay_readable_after_the_key_changes(
    make_settings: Callable[..., Settings],
) -> None:
    async with running(make_settings(secrets=SecretsSettings(key=OLD_KEY))) as (_, client):
        await create_secret(client, name="OLD", value="under-the-old-key")
    rotated = SecretsSettings(key=KEY, old_keys=[OLD_KEY])
    async with running(make_settings(secrets=rotated)) as (app, client):
        await create_secret(client, name="NEW", value="under-the-new-key")
        values = await app.state.parts[SECRET_VAULT].for_run(PROJECT)
    assert values == {"OLD": "under-the-old-key", "NEW": "under-the-new-key"}


async def test_rows_the_original_wrote_in_plaintext_are_read_as_they_are(
    make_settings: Callable[..., Settings],
) -> None:
    async with running(make_settings(secrets=SecretsSettings(key=KEY))) as (app, client):
        await insert_secret(app, name="LEGACY", value="written-by-the-go-service")
        listed = await client.get("/secret", params={"project_uuid": PROJECT}, headers=ADMIN)
        values = await app.state.parts[SECRET_VAULT].for_run(PROJECT)
    assert listed.json()[0]["value"] == "********"
    assert values == {"LEGACY": "written-by-the-go-service"}


# --- without a configured key ---------------------------------------------------------------


async def test_without_a_key_one_is_generated_beside_the_sqlite_database_and_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "service.db"
    await _migrate(f"sqlite:///{database}")
    settings = _bare_settings(f"sqlite:///{database}", tmp_path)
    key_file = tmp_path / "service.db-secrets.key"
    with caplog.at_level(logging.WARNING, logger="codeactions.secrets.crypto"):
        async with running(settings) as (_, client):
            await create_secret(client, value="kept-across-restarts")
    assert key_file_path(settings) == key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert "generated now" in caplog.text and str(key_file) in caplog.text

    async with running(settings) as (app, _):
        values = await app.state.parts[SECRET_VAULT].for_run(PROJECT)
    assert values == {"API_KEY": "kept-across-restarts"}
    assert key_file.read_text().strip() == key  # reused, not replaced


async def test_without_a_key_postgresql_keeps_its_key_file_in_the_spool_directory(
    postgresql_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _bare_settings(postgresql_url, tmp_path)
    with caplog.at_level(logging.WARNING, logger="codeactions.secrets.crypto"):
        async with running(settings):
            pass
    key_file = tmp_path / "spool" / "secrets.key"
    assert key_file_path(settings) == key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "Every replica must use the same key" in caplog.text


async def test_a_configured_key_writes_no_key_file(tmp_path: Path) -> None:
    database = tmp_path / "service.db"
    await _migrate(f"sqlite:///{database}")
    settings = _bare_settings(f"sqlite:///{database}", tmp_path, key=KEY)
    async with running(settings):
        pass
    assert not (tmp_path / "service.db-secrets.key").exists()


async def test_a_key_file_without_a_key_stops_the_service(tmp_path: Path) -> None:
    database = tmp_path / "service.db"
    await _migrate(f"sqlite:///{database}")
    (tmp_path / "service.db-secrets.key").write_text("not a key\n")
    with pytest.raises(SecretsKeyError, match=r"service\.db-secrets\.key"):
        async with running(_bare_settings(f"sqlite:///{database}", tmp_path)):
            pass


def test_a_malformed_configured_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="32 url-safe base64-encoded bytes") as error:
        SecretsSettings(key="my-password-123")
    assert "my-password-123" not in str(error.value)


# --- codeactions secrets encrypt -------------------------------------------------------------


def test_encrypt_rewrites_plaintext_and_old_key_rows_under_the_current_key(
    database_url: str, tmp_path: Path
) -> None:
    rows = {
        "PLAIN": "plain-value",
        "OLD": SecretBox(OLD_KEY).seal("old-key-value"),
        "CURRENT": SecretBox(KEY).seal("current-value"),
    }
    ids = asyncio.run(_insert_rows(database_url, rows))

    done = _encrypt(database_url, tmp_path, key=KEY, old_keys=OLD_KEY)
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 2 of 3 secrets" in done.stdout

    stored = asyncio.run(_stored_values(database_url, ids))
    current = SecretBox(KEY)  # the old key is no longer needed
    assert {name: current.unseal(value) for name, value in stored.items()} == {
        "PLAIN": "plain-value",
        "OLD": "old-key-value",
        "CURRENT": "current-value",
    }
    assert stored["CURRENT"] == rows["CURRENT"]  # already under the current key: untouched

    again = _encrypt(database_url, tmp_path, key=KEY, old_keys=OLD_KEY)
    assert "re-encrypted 0 of 3 secrets" in again.stdout


def test_encrypt_leaves_rows_under_unknown_keys_and_fails(
    database_url: str, tmp_path: Path
) -> None:
    lost = SecretBox(UNKNOWN_KEY).seal("lost-value")
    ids = asyncio.run(_insert_rows(database_url, {"LOST": lost, "PLAIN": "plain-value"}))

    done = _encrypt(database_url, tmp_path, key=KEY)
    assert done.returncode == 1
    assert "re-encrypted 1 of 2 secrets" in done.stdout
    assert "1 secrets are under none of the configured keys" in done.stderr
    assert asyncio.run(_stored_values(database_url, ids))["LOST"] == lost


# --- helpers ----------------------------------------------------------------------------------


def _bare_settings(url: str, tmp_path: Path, *, key: str = "") -> Settings:
    return Settings(
        database=DatabaseSettings(url=url),
        auth=AuthSettings(token=ADMIN_TOKEN),
        runner=RunnerSettings(enabled=False, work_dir=str(tmp_path / "runner")),
        spool=SpoolSettings(dir=str(tmp_path / "spool")),
        secrets=SecretsSettings(key=key),
    )


async def _migrate(url: str) -> None:
    await upgrade(DatabaseSettings(url=url))


def _encrypt(
    url: str, tmp_path: Path, *, key: str, old_keys: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEACTIONS_", "FLOWS_"))}
    env.update(
        CODEACTIONS_DATABASE_URL=url,
        CODEACTIONS_SPOOL_DIR=str(tmp_path / "spool"),
        CODEACTIONS_SECRETS_KEY=key,
        CODEACTIONS_SECRETS_OLD_KEYS=old_keys,
    )
    return subprocess.run(
        [str(CLI), "secrets", "encrypt"], env=env, capture_output=True, text=True, timeout=60
    )


async def _insert_rows(url: str, rows: dict[str, str]) -> dict[str, str]:
    engine = create_async_engine(DatabaseSettings(url=url).async_url)
    ids = {}
    try:
        async with engine.begin() as conn:
            for name, value in rows.items():
                row = await conn.execute(
                    text(
                        "INSERT INTO secrets (id, name, value, project_uuid, created_at, "
                        "updated_at) VALUES (:id, :name, :value, :project, "
                        "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id"
                    ),
                    {"id": _new_id(url), "name": name, "value": value, "project": PROJECT},
                )
                ids[name] = str(row.scalar_one())
    finally:
        await engine.dispose()
    return ids


async def _stored_values(url: str, ids: dict[str, str]) -> dict[str, str]:
    engine = create_async_engine(DatabaseSettings(url=url).async_url)
    try:
        async with engine.connect() as conn:
            found = {}
            for name, secret_id in ids.items():
                row = await conn.execute(
                    text("SELECT value FROM secrets WHERE id = :id"), {"id": secret_id}
                )
                found[name] = str(row.scalar_one())
            return found
    finally:
        await engine.dispose()


def _new_id(url: str) -> str:
    # SQLite keeps uuids as 32 hex digits, PostgreSQL as the uuid type.
    return uuid.uuid4().hex if url.startswith("sqlite") else str(uuid.uuid4())
