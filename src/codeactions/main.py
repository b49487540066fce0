"""create_app(settings) and the lifespan that builds and closes every engine, client and task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from codeactions import __version__
from codeactions.auth.dependencies import VERIFIER, TokenVerifier
from codeactions.auth.login import TOKEN_CLIENT, start_login
from codeactions.auth.sessions import SESSION_STORE
from codeactions.codes.cache import CODE_CACHE, CodeCache
from codeactions.config import Settings
from codeactions.db.session import ENGINE, SESSIONMAKER, create_engine, create_sessionmaker
from codeactions.errors import ErrorBoundary, install_error_handlers
from codeactions.events.bus import EVENT_BUS, EventBus
from codeactions.events.factory import build_event_bus
from codeactions.http import CorsMiddleware, HeaderLimit
from codeactions.logs.factory import build_log_store
from codeactions.logs.store import LOG_STORE, LogStore
from codeactions.ops.docs import install_docs
from codeactions.ops.health import HEALTH, Health, standard_checks
from codeactions.ops.logging import RequestContextMiddleware, configure_logging, init_sentry
from codeactions.ops.metrics import METRICS, Metrics, MetricsMiddleware
from codeactions.parts import SETTINGS, Parts
from codeactions.ratelimit.base import LIMITER, RateLimiter
from codeactions.ratelimit.factory import build_rate_limiter
from codeactions.runner.base import RUNNER, Runner
from codeactions.runner.disabled import DisabledRunner
from codeactions.runs.callbacks import CALLBACKS, CallbackSender
from codeactions.runs.cleaner import CLEANER, RetentionCleaner, build_cleaner
from codeactions.runs.journal import JOURNAL, OutcomeJournal
from codeactions.runs.queue import RunQueue, caps
from codeactions.runs.repository import RUN_BOOK, RunBook
from codeactions.runs.service import EXECUTOR, Executor
from codeactions.secrets.crypto import SECRET_BOX, secret_box
from codeactions.secrets.repository import ProjectValues
from codeactions.secrets.service import SECRET_VAULT, SecretVault
from codeactions.spool import destination_spool, spool_root

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    runner: Runner | None = None,
    oidc: TokenVerifier | None = None,
    limiter: RateLimiter | None = None,
    log_store: LogStore | None = None,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    secret_vault: SecretVault | None = None,
) -> FastAPI:
    """The app for `settings` (read from the environment when none). Its lifespan builds every
    part and keeps them in `app.state.parts` (`codeactions.parts`), which routes take as typed
    dependencies.

    A part given here (a test's fake, mostly) is used instead of the one the lifespan would build,
    and stays the caller's: the lifespan neither starts nor closes it. A given `oidc` verifies
    tokens whether or not `settings` enable OIDC.
    """
    settings = settings or Settings()
    metrics = Metrics(
        code_labels=settings.server.metrics_code_labels,
        project_labels=settings.server.metrics_project_labels,
        workers=_local_slots(settings),
        queue_capacity=settings.runner.queue_size,
    )
    code_cache = CodeCache(settings.code.cache_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.server)
        init_sentry(settings.server)
        async with AsyncExitStack() as stack:
            stack.callback(log.info, "shutdown complete")  # runs last, after everything closed
            parts = Parts()
            app.state.parts = parts
            await _start_parts(
                settings,
                stack,
                parts,
                metrics=metrics,
                code_cache=code_cache,
                runner=runner,
                oidc=oidc,
                limiter=limiter,
                log_store=log_store,
                sessionmaker=sessionmaker,
                secret_vault=secret_vault,
            )
            yield

    app = FastAPI(
        title="Code Actions",
        version=__version__,
        description="Run small Python, JavaScript and Go programs as flow steps and HTTP endpoints.",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs, with local assets
        redoc_url=None,
    )
    install_error_handlers(app)
    # Innermost: whatever a route lets escape is answered here, and the connection stays usable.
    app.add_middleware(ErrorBoundary)
    app.add_middleware(HeaderLimit, max_bytes=settings.server.max_header_bytes)
    app.add_middleware(CorsMiddleware, origins=settings.server.cors_origins)
    # Added last = outermost: every response (CORS ones included) is measured and has a request id.
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestContextMiddleware)
    _include_routers(app)
    install_docs(app)
    return app


async def _start_parts(
    settings: Settings,
    stack: AsyncExitStack,
    parts: Parts,
    *,
    metrics: Metrics,
    code_cache: CodeCache,
    runner: Runner | None,
    oidc: TokenVerifier | None,
    limiter: RateLimiter | None,
    log_store: LogStore | None,
    sessionmaker: async_sessionmaker[AsyncSession] | None,
    secret_vault: SecretVault | None,
) -> None:
    """Build (or take as given) and start every part, each closed by `stack` if built here, and
    set it in `parts`."""
    started_at = time.time()
    engine = create_engine(settings.database)
    stack.push_async_callback(engine.dispose)
    if sessionmaker is None:
        sessionmaker = create_sessionmaker(engine)
    box = secret_box(settings)
    if secret_vault is None:
        secret_values = ProjectValues(engine, settings.database.sqlite_path)
        stack.callback(secret_values.close)
        secret_vault = SecretVault(
            secret_values,
            box,
            timeout=settings.database.connect_timeout + settings.database.command_timeout,
        )
    run_book = RunBook(engine, settings.database.sqlite_path)
    stack.callback(run_book.close)
    spools = spool_root(settings.spool, settings.database)
    journal = OutcomeJournal(
        run_book,
        destination_spool(settings.spool, spools, "outcomes", settings.database.async_url),
    )
    journal.start()
    stack.push_async_callback(journal.close, settings.server.shutdown_grace_seconds)

    if limiter is None:
        limiter = build_rate_limiter(settings.ratelimit)
        stack.push_async_callback(limiter.close)
    # Closed after the runs in flight have drained (they tell their followers how they ended).
    bus = build_event_bus(settings.ratelimit.redis_url)
    await bus.start()
    stack.push_async_callback(bus.close)
    if log_store is None:
        log_store = build_log_store(
            settings.logs, sessionmaker, spools=spools, spool=settings.spool
        )
        await log_store.start()
        stack.push_async_callback(log_store.close)
    # Optional parts; each module adds itself here.
    if oidc is None and settings.auth.oidc_enabled:
        from codeactions.auth.oidc import OidcVerifier

        verifier = OidcVerifier(settings.auth)
        stack.push_async_callback(verifier.close)
        oidc = verifier
    run_queue = _run_queue(settings, metrics)
    if runner is None:
        runner = await _start_runner(settings, stack, metrics=metrics, run_queue=run_queue)
    # Closed after the runs in flight have drained, so that their callbacks go out too.
    callbacks = CallbackSender(settings.callbacks, sessionmaker=sessionmaker, metrics=metrics)
    stack.push_async_callback(callbacks.close, settings.server.shutdown_grace_seconds)
    # Pushed after the runner's close: runs in flight drain first.
    run_tasks = _start_execution(settings, stack, sessionmaker=sessionmaker)
    consumers = None
    if settings.rabbitmq.url:
        from codeactions.projects.consumers import start_consumers

        consumers = await start_consumers(
            settings.rabbitmq,
            sessionmaker,
            on_handled=lambda name, outcome: metrics.event_handled(consumer=name, outcome=outcome),
        )
        stack.push_async_callback(consumers.close)
    cleaner = None
    if settings.cleaner.enabled:
        cleaner = await _start_cleaner(
            settings, stack, engine=engine, sessionmaker=sessionmaker, log_store=log_store
        )
    parts[SETTINGS] = settings
    parts[METRICS] = metrics
    parts[CODE_CACHE] = code_cache
    parts[ENGINE] = engine
    parts[SESSIONMAKER] = sessionmaker
    parts[SECRET_BOX] = box
    parts[SECRET_VAULT] = secret_vault
    parts[RUN_BOOK] = run_book
    parts[JOURNAL] = journal
    parts[LIMITER] = limiter
    parts[LOG_STORE] = log_store
    parts[VERIFIER] = oidc
    parts[TOKEN_CLIENT], parts[SESSION_STORE] = start_login(settings, stack)
    parts[RUNNER] = runner
    parts[EXECUTOR] = Executor(
        runner=runner,
        queue=run_queue,
        book=run_book,
        sessionmaker=sessionmaker,
        log_store=log_store,
        metrics=metrics,
        tasks=run_tasks,
        journal=journal,
        vault=secret_vault,
        bus=bus,
    )
    parts[EVENT_BUS] = bus
    parts[CALLBACKS] = callbacks
    await _start_live(settings, stack, parts, bus=bus, log_store=log_store)
    # Imported here, as `start_consumers` is: importing the app does not load the AMQP client.
    from codeactions.projects.consumers import CONSUMERS

    parts[CONSUMERS] = consumers
    parts[CLEANER] = cleaner
    checks = standard_checks(
        settings,
        sessionmaker=sessionmaker,
        journal_status=journal.consumer.status,
        limiter=limiter,
        consumers=consumers,
        log_store=log_store,
        runner=runner,
    )
    parts[HEALTH] = Health(settings, checks, started_at)


async def _start_live(
    settings: Settings, stack: AsyncExitStack, parts: Parts, *, bus: EventBus, log_store: LogStore
) -> None:
    """The live channel's limits and what its packages use (the other parts already set)."""
    from codeactions.live.follow import Sources
    from codeactions.live.limits import LIVE_LIMITS, build_live_limits
    from codeactions.live.packages import LIVE, Services

    limits = build_live_limits(
        settings.ratelimit.redis_url,
        max_connections=settings.live.ws_max_connections,
        message_limit=settings.live.ws_rate_limit,
    )
    stack.push_async_callback(limits.close)
    parts[LIVE_LIMITS] = limits
    parts[LIVE] = Services(
        settings=settings,
        sources=Sources(bus, parts[SESSIONMAKER], log_store, settings.live.follower_queue),
        executor=parts[EXECUTOR],
        runner=parts[RUNNER],
        cache=parts[CODE_CACHE],
        metrics=parts[METRICS],
        runs=set(),
    )


def _local_slots(settings: Settings) -> int:
    """The runs this process executes at once: none under `rabbitmq` dispatch."""
    return 0 if settings.dispatch.mode == "rabbitmq" else settings.runner.slots


async def _start_runner(
    settings: Settings, stack: AsyncExitStack, *, metrics: Metrics, run_queue: RunQueue
) -> Runner:
    """The sandbox runner; under `rabbitmq` dispatch, the workers' (this process runs nothing,
    and may start as many runs at once as the workers alive have slots); or one that answers
    503 when running is turned off."""
    runner: Runner
    if settings.dispatch.mode == "rabbitmq" and settings.runner.enabled:
        from codeactions.dispatch.runner import DispatchRunner

        def resize(slots: int) -> None:
            project, code = caps(settings.runner, slots)
            run_queue.resize(slots, project=project, code=code)

        runner = DispatchRunner(settings, metrics=metrics, on_capacity=resize)
    elif settings.runner.enabled:
        from codeactions.runner.sandbox import SandboxRunner

        runner = SandboxRunner(settings.runner, settings.logs)
    else:
        runner = DisabledRunner()
    await runner.start()
    stack.push_async_callback(runner.close)
    return runner


def _run_queue(settings: Settings, metrics: Metrics) -> RunQueue:
    """The bounded run queue. Under `rabbitmq` dispatch its slots are the workers', known once
    they are heard from."""
    slots = _local_slots(settings)
    project, code = caps(settings.runner, slots)
    return RunQueue(
        slots=slots,
        queue_size=settings.runner.queue_size,
        project=project,
        code=code,
        metrics=metrics,
    )


def _start_execution(
    settings: Settings, stack: AsyncExitStack, *, sessionmaker: async_sessionmaker[AsyncSession]
) -> set[asyncio.Task[Any]]:
    """In-flight runs drained on shutdown, the run reaper."""
    from codeactions.runs.reaper import run_reaper

    run_tasks: set[asyncio.Task[Any]] = set()

    async def drain() -> None:
        # Runs in flight finish (and get recorded) before the runner and database close.
        if run_tasks:
            await asyncio.wait(list(run_tasks), timeout=settings.server.shutdown_grace_seconds)

    stack.push_async_callback(drain)
    reaper = asyncio.create_task(run_reaper(sessionmaker), name="run-reaper")

    async def stop_reaper() -> None:
        reaper.cancel()
        await asyncio.gather(reaper, return_exceptions=True)

    stack.push_async_callback(stop_reaper)
    return run_tasks


async def _start_cleaner(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    log_store: LogStore,
) -> RetentionCleaner:
    """The daily retention cleaner, running until shutdown."""
    cleaner = await build_cleaner(
        settings, engine=engine, sessionmaker=sessionmaker, log_store=log_store, stack=stack
    )
    task = asyncio.create_task(cleaner.run_daily(), name="retention-cleaner")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)
    return cleaner


def _include_routers(app: FastAPI) -> None:
    from codeactions.auth.router import router as auth_router
    from codeactions.codes.router import router as codes_router
    from codeactions.console.router import router as console_router
    from codeactions.libs.router import router as libs_router
    from codeactions.live.router import router as live_router
    from codeactions.logs.router import router as logs_router
    from codeactions.ops.router import router as ops_router
    from codeactions.projects.router import router as projects_router
    from codeactions.runs.router import router as runs_router
    from codeactions.secrets.router import router as secrets_router

    app.include_router(ops_router)
    app.include_router(auth_router)
    app.include_router(projects_router)
    app.include_router(codes_router)
    app.include_router(logs_router)
    app.include_router(libs_router)
    app.include_router(runs_router)
    app.include_router(live_router)
    app.include_router(secrets_router)
    app.include_router(console_router)
