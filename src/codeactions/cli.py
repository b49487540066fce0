"""The `codeactions` command: serve, migrate, clean, settings."""

from __future__ import annotations

import asyncio
import os

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

    os.umask(0o077)  # files the service writes (the SQLite database) are its own
    settings = Settings()
    if migrate:
        asyncio.run(upgrade(settings.database))
    uvicorn.run(
        create_app(settings),
        host=host or settings.server.host,
        port=port or settings.server.port,
        log_level=settings.server.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(settings.server.shutdown_grace_seconds),
    )


@app.command("migrate")
def migrate_command(revision: str = typer.Argument("head")) -> None:
    """Apply migrations (adopts a database made by the original service)."""
    from codeactions.db.migrate import upgrade

    os.umask(0o077)
    asyncio.run(upgrade(Settings().database, revision))
    typer.echo(f"database migrated to {revision}")


if __name__ == "__main__":  # pragma: no cover
    app()
