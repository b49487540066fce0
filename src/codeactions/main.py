"""create_app(settings) and the lifespan that builds and closes every engine, client and task."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from codeactions import __version__
from codeactions.codes.cache import CodeCache
from codeactions.config import Settings
from codeactions.db.session import create_engine, create_sessionmaker
from codeactions.errors import ErrorBoundary, install_error_handlers
from codeactions.http import CorsMiddleware, HeaderLimit
from codeactions.logs.store import build_log_store
from codeactions.ops.docs import install_docs
from codeactions.ops.health import Health
from codeactions.ops.logging import RequestContextMiddleware, configure_logging, init_sentry
from codeactions.ops.metrics import Metrics, MetricsMiddleware
from codeactions.ratelimit.base import build_rate_limiter
from codeactions.runs.journal import OutcomeJournal
from codeactions.runs.repository import RunBook
from codeactions.secrets.crypto import secret_box
from codeactions.secrets.repository import ProjectValues
from codeactions.secrets.service import SecretVault
from codeactions.spool import destination_spool, spool_root

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.server)
        init_sentry(settings.server)
        async with AsyncExitStack() as stack:
            stack.callback(log.info, "shutdown complete")  # runs last, after everything closed
            app.state.started_at = time.time()
            engine = create_engine(settings.database)
            stack.push_async_callback(engine.dispose)
            app.state.engine = engine
            app.state.sessionmaker = create_sessionmaker(engine)
            app.state.secret_box = secret_box(settings)
            secret_values = ProjectValues(engine, settings.database.sqlite_path)
            stack.callback(secret_values.close)
            app.state.secret_vault = SecretVault(
                secret_values,
                app.state.secret_box,
                timeout=settings.database.connect_timeout + settings.database.command_timeout,
            )
            app.state.run_book = RunBook(engine, settings.database.sqlite_path)
            stack.callback(app.state.run_book.close)
            spools = spool_root(settings.spool, settings.database)
            journal = OutcomeJournal(
                app.state.run_book,
                destination_spool(settings.spool, spools, "outcomes", settings.database.async_url),
            )
            journal.start()
            stack.push_async_callback(journal.close, settings.server.shutdown_grace_seconds)
            app.state.journal = journal

            app.state.limiter = build_rate_limiter(settings.ratelimit)
            stack.push_async_callback(app.state.limiter.close)
            app.state.log_store = build_log_store(
                settings.logs, app.state.sessionmaker, spools=spools, spool=settings.spool
            )
            await app.state.log_store.start()
            stack.push_async_callback(app.state.log_store.close)
            await _start_components(app, settings, stack)
            yield

    app = FastAPI(
        title="Code Actions",
        version=__version__,
        description="Run small Python, JavaScript and Go programs as flow steps and HTTP endpoints.",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs, with local assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = Metrics(
        code_labels=settings.server.metrics_code_labels,
        project_labels=settings.server.metrics_project_labels,
        workers=settings.runner.slots,
        queue_capacity=settings.runner.queue_size,
    )
    app.state.health = Health(settings)
    app.state.code_cache = CodeCache(settings.code.cache_seconds)
    install_error_handlers(app)
    # Innermost: whatever a route lets escape is answered here, and the connection stays usable.
    app.add_middleware(ErrorBoundary)
    app.add_middleware(HeaderLimit, max_bytes=settings.server.max_header_bytes)
    app.add_middleware(CorsMiddleware, origins=settings.server.cors_origins)
    # Added last = outermost: every response (CORS ones included) is measured and has a request id.
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestContextMiddleware)
    _include_routers(app)
    install_docs(app)
    return app


async def _start_components(app: FastAPI, settings: Settings, stack: AsyncExitStack) -> None:
    """Optional parts; each module adds itself here."""
    app.state.oidc = None
    if settings.auth.oidc_enabled:
        from codeactions.auth.oidc import OidcVerifier

        verifier = OidcVerifier(settings.auth)
        stack.push_async_callback(verifier.close)
        app.state.oidc = verifier
    await _start_execution(app, settings, stack)
    app.state.consumers = None
    if settings.rabbitmq.url:
        from codeactions.projects.consumers import start_consumers

        metrics: Metrics = app.state.metrics
        consumers = await start_consumers(
            settings.rabbitmq,
            app.state.sessionmaker,
            on_handled=lambda name, outcome: metrics.event_handled(consumer=name, outcome=outcome),
        )
        stack.push_async_callback(consumers.close)
        app.state.consumers = consumers
    app.state.cleaner = None
    if settings.cleaner.enabled:
        from codeactions.ops.cleaner import start_cleaner

        await start_cleaner(app, settings, stack)


async def _start_execution(app: FastAPI, settings: Settings, stack: AsyncExitStack) -> None:
    """The runner, the bounded run queue, in-flight runs drained on shutdown, the run reaper."""
    from codeactions.runs.queue import Caps, RunQueue
    from codeactions.runs.reaper import run_reaper
    from codeactions.runs.service import DisabledRunner

    if settings.runner.enabled:
        from codeactions.runner.sandbox import SandboxRunner

        app.state.runner = SandboxRunner(settings.runner, settings.logs)
    else:
        app.state.runner = DisabledRunner()
    await app.state.runner.start()
    # Read at shutdown: tests may swap the runner after start.
    stack.push_async_callback(lambda: app.state.runner.close())
    runner = settings.runner
    app.state.run_queue = RunQueue(
        slots=runner.slots,
        queue_size=runner.queue_size,
        project=Caps(running=runner.project_concurrency, waiting=runner.project_queued),
        code=Caps(running=runner.code_concurrency, waiting=runner.code_queued),
        metrics=app.state.metrics,
    )
    app.state.run_tasks = set()

    async def drain() -> None:
        # Runs in flight finish (and get recorded) before the runner and database close.
        if app.state.run_tasks:
            await asyncio.wait(
                list(app.state.run_tasks), timeout=settings.server.shutdown_grace_seconds
            )

    stack.push_async_callback(drain)
    reaper = asyncio.create_task(run_reaper(app.state.sessionmaker), name="run-reaper")

    async def stop_reaper() -> None:
        reaper.cancel()
        await asyncio.gather(reaper, return_exceptions=True)

    stack.push_async_callback(stop_reaper)


def _include_routers(app: FastAPI) -> None:
    from codeactions.codes.router import router as codes_router
    from codeactions.libs.router import router as libs_router
    from codeactions.logs.router import router as logs_router
    from codeactions.ops.router import router as ops_router
    from codeactions.projects.router import router as projects_router
    from codeactions.runs.router import router as runs_router
    from codeactions.secrets.router import router as secrets_router

    app.include_router(ops_router)
    app.include_router(projects_router)
    app.include_router(codes_router)
    app.include_router(logs_router)
    app.include_router(libs_router)
    app.include_router(runs_router)
    app.include_router(secrets_router)
