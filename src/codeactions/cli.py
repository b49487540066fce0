"""The `codeactions` command: serve, worker, migrate, clean, secrets, settings, run, tail."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from codeactions.config import Settings

if TYPE_CHECKING:
    from codeactions.live.client import Server, Terminal
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
        # /web frames are small JSON: compressing each costs the fan-out of an event to many
        # followers half its CPU, and each connection about 35 KiB (bench/bench_live.py).
        ws_per_message_deflate=False,
    )


@app.command()
def worker() -> None:
    """Run the codes API replicas hand over through RabbitMQ (CODEACTIONS_RUNNER_DISPATCH=rabbitmq
    on them), in this process's own sandbox runner; SIGTERM lets the runs under way finish."""
    from codeactions.dispatch.worker import run_worker
    from codeactions.ops.logging import configure_logging

    os.umask(0o077)
    settings = Settings()
    configure_logging(settings.server)
    if not settings.rabbitmq.url:
        typer.echo("codeactions: a worker needs CODEACTIONS_RABBITMQ_URL", err=True)
        raise typer.Exit(2)
    if not settings.runner.enabled:
        typer.echo("codeactions: a worker needs the runner (CODEACTIONS_RUNNER_ENABLED)", err=True)
        raise typer.Exit(2)
    asyncio.run(run_worker(settings))


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


# --- the /web client: run, tail ---------------------------------------------------------------

URL_OPTION = typer.Option(
    None,
    "--url",
    envvar="CODEACTIONS_URL",
    help="The service: http(s)://host:port or its ws(s)://.../web (default "
    "http://127.0.0.1:8050, where `codeactions serve` listens by default).",
    show_default=False,
)
TOKEN_OPTION = typer.Option(
    "", "--token", envvar="CODEACTIONS_TOKEN", help="A JWT or the static token."
)
NO_COLOR_OPTION = typer.Option(
    False, "--no-color", help="No colours (also with NO_COLOR set, or when not a terminal)."
)


@app.command("run")
def run_command(
    code_id: str = typer.Argument(..., help="The code to run."),
    param: list[str] = typer.Option([], "--param", "-p", help="A query parameter, k=v."),
    header: list[str] = typer.Option([], "--header", "-H", help="A header, k=v."),
    body: str | None = typer.Option(None, help="The body; @file reads a file, @- stdin."),
    method: str | None = typer.Option(None, help="The HTTP method the code sees (POST)."),
    url: str | None = URL_OPTION,
    token: str = TOKEN_OPTION,
    no_color: bool = NO_COLOR_OPTION,
) -> None:
    """Run a code: its lines on stderr as they are written, its result on stdout.

    Exit code: 0 completed, 1 failed, 2 not run (usage, connection, token, unknown code)."""
    from codeactions.live.client import RunInputs, run_code

    headers: dict[str, list[str]] = {}
    for name, value in (_pair(item, "--header") for item in header):
        headers.setdefault(name, []).append(value)
    inputs = RunInputs(
        params=dict(_pair(item, "--param") for item in param),
        headers=headers,
        body=_body(body),
        method=method,
    )
    server, terminal = _client(url, token, no_color)
    _exit(terminal, run_code(server, terminal, code_id, inputs))


@app.command("tail")
def tail_command(
    run_or_code_id: str = typer.Argument(..., metavar="RUN_ID|CODE_ID"),
    url: str | None = URL_OPTION,
    token: str = TOKEN_OPTION,
    no_color: bool = NO_COLOR_OPTION,
) -> None:
    """Follow a run's lines to its end; given a code's id, each new run's, until Ctrl-C.

    Exit code: 0 the run ended (any status); 1 no such run or code; 2 connection or token error."""
    from codeactions.live.client import tail

    server, terminal = _client(url, token, no_color)
    _exit(terminal, tail(server, terminal, run_or_code_id))


def _client(url: str | None, token: str, no_color: bool) -> tuple[Server, Terminal]:
    from codeactions.live.client import DEFAULT_URL, Server, Terminal

    color = not no_color and not os.environ.get("NO_COLOR")
    return Server(url or DEFAULT_URL, token), Terminal(sys.stdout, sys.stderr, color)


def _pair(item: str, option: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise typer.BadParameter(f"{item!r} is not k=v", param_hint=option)
    return name, value


def _body(body: str | None) -> str | None:
    if body is None or not body.startswith("@"):
        return body
    if body == "@-":
        return sys.stdin.read()
    try:
        return Path(body[1:]).read_text()
    except OSError as exc:
        raise typer.BadParameter(str(exc), param_hint="--body") from None


def _exit(terminal: Terminal, command: Coroutine[Any, Any, int]) -> None:
    """Run a client command; its CommandError is one line on stderr and its exit code."""
    from codeactions.live.client import CommandError

    try:
        code = asyncio.run(command)
    except CommandError as exc:
        terminal.echo(terminal.err, f"codeactions: {exc.message}", fg="red")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code)


if __name__ == "__main__":  # pragma: no cover
    app()
