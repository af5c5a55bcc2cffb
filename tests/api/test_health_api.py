"""/healthz names what is wrong; checked against real servers and a port where nothing listens."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from api.app import create_app
from api.context import ApiContext
from tests.fixtures.auth import seed_headers
from tracker.config import Settings, parse_mqtt_url
from tracker.fleet import LiveFleet
from tracker.registry import UnitRegistry
from tracker.store.embedded import free_port

pytestmark = pytest.mark.integration


async def test_healthy_when_the_database_answers(api) -> None:
    resp = await api.client.get("/healthz")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True


async def test_503_naming_the_broker_when_nothing_listens_there(api) -> None:
    api.ctx.mqtt = parse_mqtt_url(f"mqtt://127.0.0.1:{free_port()}")
    resp = await api.client.get("/healthz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unhealthy"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is False
    assert any(p.startswith("broker:") for p in body["problems"])


async def test_503_naming_the_database_when_its_server_stops(pg_server_factory) -> None:
    server = pg_server_factory()
    ctx = ApiContext(
        settings=Settings(database_url=server.url),
        conninfo=server.url,
        registry=UnitRegistry(),
        fleet=LiveFleet(),
        pool_max_size=2,
    )
    app = create_app(ctx)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            headers=seed_headers(ctx), transport=transport, base_url="http://serenazgo.test"
        ) as client:
            assert (await client.get("/healthz")).status_code == 200
            server.stop()
            resp = await client.get("/healthz")
            assert resp.status_code == 503
            assert [p.split(":")[0] for p in resp.json()["problems"]] == ["database"]
            server.start()
            # The pool reconnects on its own (with backoff) once the server is back.
            codes = []
            for _ in range(60):
                codes.append((await client.get("/healthz")).status_code)
                if codes[-1] == 200:
                    break
                await asyncio.sleep(0.5)
            assert codes[-1] == 200, codes
