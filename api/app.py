"""The FastAPI application: routes, error mapping and the lifespan that owns the database pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.context import ApiContext
from api.routes import (
    console,
    coverage,
    coverage_history,
    dispatch,
    drones,
    events,
    geofences,
    health,
    incidents,
    live,
    tracks,
    units,
    ws,
)
from tracker.errors import ConfigError, StorageError
from tracker.store.pool import open_pool


def create_app(ctx: ApiContext) -> FastAPI:
    """Build the app around ``ctx``; its lifespan opens the pool on start and closes it on stop."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.pool = await open_pool(ctx.conninfo, max_size=ctx.pool_max_size)
        try:
            yield
        finally:
            pool, ctx.pool = ctx.pool, None
            if pool is not None:
                await pool.close()

    app = FastAPI(
        title="serenazgo",
        summary="Real-time tracking of a municipal security fleet",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    routes = (
        units, tracks, live, drones, dispatch, coverage, coverage_history, incidents, geofences, events, ws,
        health, console,
    )  # fmt: skip
    for module in routes:
        app.include_router(module.router)

    @app.exception_handler(StorageError)
    async def storage_error(request: Request, exc: StorageError) -> JSONResponse:
        return JSONResponse({"detail": f"database error: {exc}"}, status_code=503)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=500)

    return app
