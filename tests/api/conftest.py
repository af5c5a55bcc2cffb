"""An app wired to a real, freshly migrated PostgreSQL database, driven through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
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


@pytest.fixture
async def api(pg_url: str) -> AsyncIterator[Api]:
    """The FastAPI app with its lifespan running, an httpx client in front of it."""
    ctx = ApiContext(
        settings=Settings(database_url=pg_url),
        conninfo=pg_url,
        registry=UnitRegistry(),
        fleet=LiveFleet(),
        pool_max_size=4,
    )
    app = create_app(ctx)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            headers=seed_headers(ctx), transport=transport, base_url="http://serenazgo.test"
        ) as client:
            yield Api(client, ctx)
