"""The `codeactions` command: serve, migrate, clean, secrets, settings."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING

import typer

from codeactions.config import Settings

if TYPE_CHECKING:
    from codeactions.secrets.service import SealReport

app = typer.Typer(help="Code Actions service.", no_args_is_help=True)


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Listen address (default from settings)."),
    port: int | None = typer.Option(None, help="Listen port (default from settings)."),
    migrate: bool = typer.Option(True, help="Apply database migrations before serving."),
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from codeactions.main import create_app
    from codeactions.ops.logging import configure_logging

    os.umask(0o077)  # files the service writes (the SQLite database) are its own
    settings = Settings()
    configure_logging(settings.server)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the previous
    # handler: make that a normal exit (0) instead of death by signal (143).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if migrate:
        _upgrade_or_exit(settings, "head")
    uvicorn.run(
        create_app(settings),
        host=host or settings.server.host,
        port=port or settings.server.port,
        log_level=settings.server.log_level,
        access_log=False,
        log_config=None,  # every line through configure_logging's handler (JSON)
        timeout_graceful_shutdown=int(settings.server.shutdown_grace_seconds),
    )


@app.command("migrate")
def migrate_command(revision: str = typer.Argument("head")) -> None:
    """Apply migrations (adopts a database made by the original service)."""
    os.umask(0o077)
    _upgrade_or_exit(Settings(), revision)
    typer.echo(f"database migrated to {revision}")


def _upgrade_or_exit(settings: Settings, revision: str) -> None:
    """Migrate; an unreachable database (down, wrong `sslmode` or certificate) is one line on
    stderr and exit code 1, not a traceback."""
    from codeactions.db.migrate import upgrade
    from codeactions.db.session import DatabaseUnreachable

    try:
        asyncio.run(upgrade(settings.database, revision))
    except DatabaseUnreachable as exc:
        typer.echo(f"codeactions: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("clean")
def clean_command() -> None:
    """Delete runs and logs older than the retention period now (one pass, holding the lock)."""
    from codeactions.runs.cleaner import clean_now

    result = asyncio.run(clean_now(Settings()))
    if result is None:
        typer.echo("another cleaner holds the lock; nothing deleted", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"deleted {result.runs} runs and {result.logs} logs created before "
        f"{result.before:%Y-%m-%d %H:%M:%S} UTC"
        + ("" if result.complete else " (stopped early: the lock was lost)")
    )


secrets_app = typer.Typer(
    help="Project secrets: keys and encryption at rest.", no_args_is_help=True
)
app.add_typer(secrets_app, name="secrets")


@secrets_app.command("encrypt")
def secrets_encrypt_command() -> None:
    """Re-encrypt every secret with the current key (plaintext ones and ones under old keys)."""
    os.umask(0o077)  # a key file generated now is the service's own
    report = asyncio.run(_seal_all(Settings()))
    typer.echo(f"re-encrypted {report.changed} of {report.total} secrets with the current key")
    if report.unreadable:
        typer.echo(
            f"{report.unreadable} secrets are under none of the configured keys and were left "
            "as they are: add their key to CODEACTIONS_SECRETS_OLD_KEYS",
            err=True,
        )
        raise typer.Exit(1)


async def _seal_all(settings: Settings) -> SealReport:
    from codeactions.db.session import create_engine, create_sessionmaker
    from codeactions.secrets.crypto import secret_box
    from codeactions.secrets.service import seal_all

    box = secret_box(settings)
    engine = create_engine(settings.database)
    try:
        return await seal_all(create_sessionmaker(engine), box)
    finally:
        await engine.dispose()


@secrets_app.command("new-key")
def secrets_new_key_command() -> None:
    """Print a new key for CODEACTIONS_SECRETS_KEY."""
    from codeactions.secrets.crypto import new_key

    typer.echo(new_key())


@app.command("settings")
def settings_command() -> None:
    """Print every setting as the README's Markdown table."""
    from codeactions.settings_doc import settings_table

    typer.echo(settings_table(), nl=False)


if __name__ == "__main__":  # pragma: no cover
    app()
