"""An app wired to a real, freshly migrated PostgreSQL database, driven through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest

from api.app import create_app
from api.context import ApiContext
from tests.fixtures.auth import seed_headers
from tracker.config import Settings
from tracker.fleet import LiveFleet
from tracker.registry import UnitRegistry


@dataclass
class Api:
    client: httpx.AsyncClient
    ctx: ApiContext


@asynccontextmanager
async def running_app(
    settings: Settings, *, base_url: str = "http://serenazgo.test", admin: bool = False
) -> AsyncIterator[Api]:
    """The app on ``settings.database_url`` with its lifespan running and an httpx client in front.

    ``admin``: the client sends a test administrator's token (tests/fixtures/auth.py); else none.
    """
    assert settings.database_url is not None
    ctx = ApiContext(
        settings=settings,
        conninfo=settings.database_url,
        registry=UnitRegistry(),
        fleet=LiveFleet(),
        pool_max_size=4,
    )
    app = create_app(ctx)
    async with app.router.lifespan_context(app):
        headers = seed_headers(ctx) if admin else None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(headers=headers, transport=transport, base_url=base_url) as client:
            yield Api(client, ctx)


@pytest.fixture
async def api(pg_url: str) -> AsyncIterator[Api]:
    """The FastAPI app with its lifespan running, an httpx client in front of it (as an admin)."""
    async with running_app(Settings(database_url=pg_url), admin=True) as api:
        yield api
