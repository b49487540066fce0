"""The `codeactions` command: serve, migrate, clean, settings."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import typer

from codeactions.config import Settings

app = typer.Typer(help="Code Actions service.", no_args_is_help=True)


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Listen address (default from settings)."),
    port: int | None = typer.Option(None, help="Listen port (default from settings)."),
    migrate: bool = typer.Option(True, help="Apply database migrations before serving."),
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from codeactions.db.migrate import upgrade
    from codeactions.main import create_app
    from codeactions.ops.logging import configure_logging

    os.umask(0o077)  # files the service writes (the SQLite database) are its own
    settings = Settings()
    configure_logging(settings.server)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the previous
    # handler: make that a normal exit (0) instead of death by signal (143).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if migrate:
        asyncio.run(upgrade(settings.database))
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
    from codeactions.db.migrate import upgrade

    os.umask(0o077)
    asyncio.run(upgrade(Settings().database, revision))
    typer.echo(f"database migrated to {revision}")


@app.command("clean")
def clean_command() -> None:
    """Delete runs and logs older than the retention period now (one pass, holding the lock)."""
    from codeactions.ops.cleaner import clean_now

    result = asyncio.run(clean_now(Settings()))
    if result is None:
        typer.echo("another cleaner holds the lock; nothing deleted", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"deleted {result.runs} runs and {result.logs} logs created before "
        f"{result.before:%Y-%m-%d %H:%M:%S} UTC"
        + ("" if result.complete else " (stopped early: the lock was lost)")
    )


@app.command("settings")
def settings_command() -> None:
    """Print every setting as the README's Markdown table."""
    from codeactions.settings_doc import settings_table

    typer.echo(settings_table(), nl=False)


if __name__ == "__main__":  # pragma: no cover
    app()
