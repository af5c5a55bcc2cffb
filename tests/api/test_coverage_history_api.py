"""GET /api/v1/coverage/history over a real PostgreSQL: samples per minute and hour, worst hours, refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from api.context import ApiContext
from api.routes import coverage_history
from tests.fixtures.auth import seed_headers
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE, Settings
from tracker.coverage import CoverageService
from tracker.coverage_history import CoverageSampler
from tracker.fleet import LiveFleet
from tracker.registry import UnitRegistry
from tracker.store import coverage as store
from tracker.store.coverage import SampleRow
from tracker.store.pool import open_pool

pytestmark = pytest.mark.integration

MIRAFLORES = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
T0 = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)


@pytest.fixture
async def app_for(pg_url: str) -> AsyncIterator[Any]:
    """``make(sampler=True, pool=True)``: an app with only the history router, its own pool and context."""
    pool = await open_pool(pg_url, max_size=2)
    clients: list[httpx.AsyncClient] = []

    def make(sampler: bool = True, with_pool: bool = True) -> httpx.AsyncClient:
        fleet = LiveFleet()
        ctx = ApiContext(settings=Settings(), conninfo=pg_url, registry=UnitRegistry(), fleet=fleet)
        ctx.pool = pool if with_pool else None
        app = FastAPI()
        app.state.ctx = ctx
        if sampler:
            ctx.coverage_history = CoverageSampler(pool, CoverageService(MIRAFLORES, fleet))
        app.include_router(coverage_history.router)
        client = httpx.AsyncClient(
            headers=seed_headers(ctx), transport=httpx.ASGITransport(app=app), base_url="http://t"
        )
        clients.append(client)
        return client

    make.pool = pool  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for c in clients:
            await c.aclose()
        await pool.close()


async def test_history_per_hour_and_minute_with_the_worst_hours(app_for) -> None:
    rng = np.random.default_rng(4)
    area = rng.uniform(0.5, 0.9, 120).astype(np.float32)
    area[:60] -= 0.3  # 05:00-06:00 is the worse hour
    rows = [
        SampleRow(T0 + timedelta(minutes=i), "ground", 480.0, 10, float(area[i]), float(area[i]), 7)
        for i in range(120)
    ]
    await store.insert_samples(app_for.pool, rows)
    client = app_for()
    params = {"since": T0.isoformat(), "until": (T0 + timedelta(hours=2)).isoformat(), "minutes": 8}
    r = await client.get("/api/v1/coverage/history", params={**params, "bucket": "hour"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["target_s"] == 480.0 and body["bucket"] == "hour" and body["interval_s"] == 60.0
    assert [p["start"] for p in body["points"]] == [T0.isoformat(), (T0 + timedelta(hours=1)).isoformat()]
    first = body["points"][0]
    assert first["samples"] == 60 and first["units"] == {"min": 7, "max": 7}
    assert first["covered_area_ratio"]["avg"] == pytest.approx(
        float(area[:60].astype(np.float64).mean()), abs=1e-5
    )
    assert first["covered_area_ratio"]["min"] == pytest.approx(float(area[:60].min()), abs=1e-5)
    assert first["covered_area_ratio"]["max"] == pytest.approx(float(area[:60].max()), abs=1e-5)
    assert body["worst_hours"][0]["start"] == T0.isoformat()

    r = await client.get("/api/v1/coverage/history", params={**params, "bucket": "minute"})
    assert r.status_code == 200, r.text
    pts = r.json()["points"]
    assert len(pts) == 120
    np.testing.assert_allclose([p["covered_area_ratio"]["avg"] for p in pts], area, atol=1e-5)

    # Another layer or target time was not sampled there: an empty list, not an error.
    r = await client.get("/api/v1/coverage/history", params={**params, "layer": "combined"})
    assert r.status_code == 200 and r.json()["points"] == []


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"layer": "air"}, 422),
        ({"bucket": "week"}, 422),
        ({"minutes": 0}, 422),
        ({"since": "2026-03-02T06:00:00Z", "until": "2026-03-02T05:00:00Z"}, 422),
        ({"since": "2025-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 422),
    ],
)
async def test_history_refuses_bad_queries(app_for, query: dict[str, Any], status: int) -> None:
    r = await app_for().get("/api/v1/coverage/history", params=query)
    assert r.status_code == status, r.text


async def test_history_is_unavailable_without_a_sampler_or_a_pool(app_for) -> None:
    assert (await app_for(sampler=False).get("/api/v1/coverage/history")).status_code == 503
    assert (await app_for(with_pool=False).get("/api/v1/coverage/history")).status_code == 503
    assert (await app_for().get("/api/v1/coverage/history")).status_code == 200
