"""FastAPI dependencies as ``Annotated`` aliases: declare ``pool: Pool`` in a route and it is there.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in
its thread pool, and those hand-offs (several per request) cost more than the
whole nearest-unit answer under load.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from api.context import ApiContext
from tracker.errors import StorageError
from tracker.fleet import LiveFleet
from tracker.registry import UnitRegistry


async def get_context(request: Request) -> ApiContext:
    """The :class:`ApiContext` the app was created with."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


async def get_pool(ctx: Annotated[ApiContext, Depends(get_context)]) -> AsyncConnectionPool[Any]:
    """The database pool (opened by the lifespan)."""
    if ctx.pool is None:
        raise StorageError("the database pool is not open (the app's lifespan has not run)")
    return ctx.pool


async def get_registry(ctx: Annotated[ApiContext, Depends(get_context)]) -> UnitRegistry:
    """The in-memory unit registry shared with the bridge."""
    return ctx.registry


async def get_fleet(ctx: Annotated[ApiContext, Depends(get_context)]) -> LiveFleet:
    """The LiveFleet shared with the bridge."""
    return ctx.fleet


Context = Annotated[ApiContext, Depends(get_context)]
Pool = Annotated[AsyncConnectionPool[Any], Depends(get_pool)]
Registry = Annotated[UnitRegistry, Depends(get_registry)]
Fleet = Annotated[LiveFleet, Depends(get_fleet)]
