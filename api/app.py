"""The FastAPI application: routes, error mapping and the lifespan that owns the database pool."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api.access import check_routes
from api.audit import AuditMiddleware
from api.auth import LoginLimiter
from api.context import ApiContext
from api.routes import (
    airspace,
    auth,
    console,
    coverage,
    coverage_history,
    dispatch,
    drones,
    events,
    evidence,
    geofences,
    health,
    incidents,
    ingest,
    live,
    sorties,
    tracks,
    units,
    users,
    ws,
)
from mqtt_bridge.http_ingest import HttpIngest
from tracker.errors import ConfigError, StorageError
from tracker.store.pool import open_pool

log = logging.getLogger(__name__)


async def _load_airspace(ctx: ApiContext) -> None:
    """Restricted airspace into ``ctx.airspace`` at start; without it the API still serves the rest."""
    assert ctx.pool is not None
    try:
        await airspace.refresh_airspace(ctx, ctx.pool)
    except StorageError as exc:
        log.warning(
            "restricted airspace not loaded (the sortie planner sees no zones until a change): %s", exc
        )


class FastPaths:
    """An ASGI app that hands a few paths straight to their routes and everything else to ``app``.

    What ``serenazgo up`` serves (:func:`served_app`): phones send far more
    requests than consoles, and an ingest request needs none of the app's
    middleware (error pages, the audit layer, exception handlers) nor its route
    search, so ``/api/v1/ingest/osmand`` and ``…/owntracks`` go to the same
    handlers the app routes them to, before any of that. Every other scope
    (lifespan, WebSocket) and path goes to ``app`` untouched. The HTTP ingest
    benchmark's bare endpoint is served the same way (benchmarks/_http_floor.py).
    """

    def __init__(self, app: FastAPI, routes: list[Route]) -> None:
        self.app = app
        self._routes = {route.path: route for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one ASGI scope."""
        if scope["type"] == "http":
            route = self._routes.get(scope["path"])
            if route is not None and scope["method"] in (route.methods or ()):
                scope["app"] = self.app  # handlers read request.app.state
                await route.handle(scope, receive, send)
                return
        await self.app(scope, receive, send)


def served_app(ctx: ApiContext) -> FastPaths:
    """The app as ``serenazgo up`` serves it: :func:`create_app` behind the ingest fast paths."""
    return FastPaths(create_app(ctx), ingest.fast_routes())


def create_app(ctx: ApiContext) -> FastAPI:
    """Build the app around ``ctx``; its lifespan opens the pool on start and closes it on stop."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.pool = await open_pool(ctx.conninfo, max_size=ctx.pool_max_size)
        own_ingest = ctx.http_ingest is None
        if own_ingest:
            mqtt = getattr(ctx.bridge, "mqtt", None)
            ctx.http_ingest = HttpIngest(
                ctx.settings, ctx.conninfo, ctx.registry, ctx.fleet,
                publish=mqtt.publish if mqtt is not None and ctx.settings.events.publish_mqtt else None,
            )  # fmt: skip
        assert ctx.http_ingest is not None
        await ctx.http_ingest.start()
        try:
            await _load_airspace(ctx)
            yield
        finally:
            if own_ingest and ctx.http_ingest is not None:
                await ctx.http_ingest.stop()
                ctx.http_ingest = None
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
    # Ingest first: Starlette tries routes in order, and phones send far more requests than consoles.
    routes = (
        ingest, units, tracks, live, sorties, drones, dispatch, coverage, coverage_history, incidents,
        geofences, airspace, events, evidence, ws, health, auth, users, console,
    )  # fmt: skip
    routers = [module.router for module in routes] + [incidents.unit_router]
    # Every route says which roles it admits (api/access.py): refuse to serve one that does not.
    check_routes(route for router in routers for route in router.routes)
    for router in routers:
        app.include_router(router)
    auth_settings = ctx.settings.auth
    ctx.login_limiter = LoginLimiter(auth_settings.login_max_failures, auth_settings.login_window_s)
    app.add_middleware(AuditMiddleware, ctx=ctx)
    # Phones' requests reach their handlers before any of this when served (served_app, FastPaths).

    @app.exception_handler(StorageError)
    async def storage_error(request: Request, exc: StorageError) -> JSONResponse:
        return JSONResponse({"detail": f"database error: {exc}"}, status_code=503)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=500)

    return app
