"""create_app(settings) and the lifespan that builds and closes every engine, client and task."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from codeactions import __version__
from codeactions.config import Settings
from codeactions.db.session import create_engine, create_sessionmaker
from codeactions.errors import install_error_handlers
from codeactions.logs.store import build_log_store
from codeactions.ops.metrics import Metrics
from codeactions.ratelimit.base import build_rate_limiter

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.started_at = time.time()
            engine = create_engine(settings.database)
            stack.push_async_callback(engine.dispose)
            app.state.engine = engine
            app.state.sessionmaker = create_sessionmaker(engine)

            app.state.limiter = build_rate_limiter(settings.ratelimit)
            stack.push_async_callback(app.state.limiter.close)
            app.state.log_store = build_log_store(settings.logs, app.state.sessionmaker)
            stack.push_async_callback(app.state.log_store.close)
            await _start_components(app, settings, stack)
            yield

    app = FastAPI(
        title="Code Actions",
        version=__version__,
        description="Run small Python, JavaScript and Go programs as flow steps and HTTP endpoints.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    _include_routers(app)
    return app


async def _start_components(app: FastAPI, settings: Settings, stack: AsyncExitStack) -> None:
    """Optional parts; each module adds itself here."""


def _include_routers(app: FastAPI) -> None:
    from codeactions.ops.router import router as ops_router

    app.include_router(ops_router)
