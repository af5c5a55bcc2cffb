"""Incident demand, the coverage sampler and the history against a real PostgreSQL (coverage_samples)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import numpy as np
import pytest
from psycopg_pool import AsyncConnectionPool

from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE
from tracker.coverage import CoverageService
from tracker.coverage_history import LAYER_KINDS, CoverageSampler, floor_time, history
from tracker.demand import incident_demand
from tracker.fleet import LiveFleet
from tracker.model import Ping, StatusUpdate, Unit, UnitKind, UnitStatus
from tracker.store import coverage as store
from tracker.store.coverage import SampleRow
from tracker.store.pool import open_pool

pytestmark = pytest.mark.integration

MIRAFLORES = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
UNITS = [
    ("car1", UnitKind.PATROL_CAR, -12.1211, -77.0297),
    ("car2", UnitKind.PATROL_CAR, -12.1100, -77.0420),
    ("moto1", UnitKind.MOTORCYCLE, -12.1300, -77.0200),
    ("drone1", UnitKind.DRONE, -12.1250, -77.0350),
]


@pytest.fixture
async def pool(pg_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    p = await open_pool(pg_url, max_size=4)
    try:
        yield p
    finally:
        await p.close()


def miraflores_fleet(at: datetime) -> LiveFleet:
    fleet = LiveFleet()
    fleet.load([Unit(u, k) for u, k, *_ in UNITS], [])
    fleet.apply(
        [Ping(u, at, lat, lon) for u, _, lat, lon in UNITS],
        [(u, StatusUpdate(UnitStatus.AVAILABLE, at)) for u, *_ in UNITS],
    )
    return fleet


async def test_incident_demand_counts_the_window_per_cell_plus_the_area_prior(pool) -> None:
    now = datetime.now(UTC)
    rng = np.random.default_rng(8)
    minx, miny, maxx, maxy = MIRAFLORES.bounds
    n = 400
    lat = rng.uniform(miny, maxy, n)
    lon = rng.uniform(minx, maxx, n)
    age_days = rng.uniform(0, 40, n)  # about 30 % older than the 28-day window
    rows = [
        (float(a), float(o), now - timedelta(days=float(d)))
        for a, o, d in zip(lat, lon, age_days, strict=True)
    ]
    rows.append((-12.05, -77.14, now - timedelta(days=1)))  # Callao: not in the grid
    async with pool.connection() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO incidents (lat, lon, category, channel, created_at)"
            " VALUES (%s, %s, 'seguridad_ciudadana', 'phone', %s)",
            rows,
        )
    service = CoverageService(MIRAFLORES, LiveFleet())
    grid = service.grid(10)
    weights = await incident_demand(pool, grid, window_days=28, prior=0.5, now=now)
    # Independent count: h3's string API and a Counter over the incidents inside the window.
    inside = Counter(
        h3.latlng_to_cell(float(a), float(o), 10)
        for a, o, d in zip(lat, lon, age_days, strict=True)
        if d < 28
    )
    counts = np.array([inside.get(h3.int_to_str(int(c)), 0) for c in grid.cells], dtype=np.float64)
    area = grid.clipped_area_m2
    np.testing.assert_allclose(weights, counts + 0.5 * area / area.mean())
    assert 0 < counts.sum() < n
    # The demand plugs straight into the engine: a weight per cell.
    answer = service.compute(480.0, LAYER_KINDS["ground"], 10)
    assert answer.result.grid.size == weights.shape[0]


async def test_sampler_writes_what_the_coverage_service_computes(pool) -> None:
    now = datetime.now(UTC)
    service = CoverageService(MIRAFLORES, miraflores_fleet(now))
    targets = (("ground", 2.0), ("combined", 2.0), ("drones", 1.0))
    sampler = CoverageSampler(pool, service, targets, interval_s=0.05, resolution=10)
    await sampler.start()
    try:
        for _ in range(400):  # until two rounds are stored (bounded, not timed)
            if sampler.samples_written >= 2 * len(targets):
                break
            await asyncio.sleep(0.02)
    finally:
        await sampler.stop()
    assert not sampler.running and sampler.errors == 0
    rows = await store.samples(pool, now - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1))
    assert len(rows) == sampler.samples_written >= 6
    for layer, minutes in targets:
        want = service.compute(minutes * 60, LAYER_KINDS[layer], 10)
        mine = [r for r in rows if r.layer == layer]
        assert mine and all(r.target_s == minutes * 60 and r.resolution == 10 for r in mine)
        for r in mine:
            assert r.covered_area_ratio == pytest.approx(want.result.covered_area_ratio, rel=1e-6)
            assert r.covered_demand_ratio == pytest.approx(want.result.covered_demand_ratio, rel=1e-6)
            assert r.units == want.units
    assert {r.units for r in rows if r.layer == "ground"} == {3}
    assert {r.units for r in rows if r.layer == "combined"} == {4}
    # Replicas sampling the same instant store one row: the time is floored to the interval.
    again = await sampler.sample_once(rows[0].ts)
    assert again[0].ts == rows[0].ts
    assert len(
        await store.samples(pool, now - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1))
    ) == len(rows)


async def test_sampler_weights_the_demand_ratio_with_a_demand_source(pool) -> None:
    now = datetime.now(UTC)
    service = CoverageService(MIRAFLORES, miraflores_fleet(now))
    grid = service.grid(10)
    # All demand in car1's own cell: covered entirely, whatever the area ratio.
    weights = np.zeros(grid.size)
    weights[int(np.argmin((grid.lat + 12.1211) ** 2 + (grid.lon + 77.0297) ** 2))] = 1.0

    async def demand(g: Any) -> Any:
        return weights

    sampler = CoverageSampler(pool, service, (("ground", 1.0),), interval_s=60, resolution=10, demand=demand)
    (row,) = await sampler.sample_once(now)
    assert row.covered_demand_ratio == 1.0 and row.covered_area_ratio < 0.5
    assert row.ts == floor_time(now, 60) and row.ts.second == 0 and row.ts.microsecond == 0


async def test_history_per_hour_matches_numpy_and_names_the_worst_hours(pool) -> None:
    t0 = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
    rng = np.random.default_rng(11)
    n = 180  # three hours of minutes
    area = rng.uniform(0.3, 0.95, n).astype(np.float32)
    area[60:120] -= 0.25  # the second hour is the worst
    demand = rng.uniform(0.2, 1.0, n).astype(np.float32)
    units = rng.integers(5, 40, n)
    rows = [
        SampleRow(
            t0 + timedelta(minutes=i), "ground", 480.0, 10, float(area[i]), float(demand[i]), int(units[i])
        )
        for i in range(n)
    ]
    rows.append(SampleRow(t0, "combined", 480.0, 10, 1.0, 1.0, 1))  # another layer: not counted
    assert await store.insert_samples(pool, rows) == n + 1
    assert await store.insert_samples(pool, rows[:10]) == 0  # ON CONFLICT DO NOTHING

    h = await history(pool, t0, t0 + timedelta(hours=3), "ground", 480.0, "hour")
    assert [p.start for p in h.points] == [t0 + timedelta(hours=k) for k in range(3)]
    for k, p in enumerate(h.points):
        a, d, u = area[60 * k : 60 * (k + 1)], demand[60 * k : 60 * (k + 1)], units[60 * k : 60 * (k + 1)]
        assert p.samples == 60
        assert (p.area_min, p.area_max) == (pytest.approx(float(a.min())), pytest.approx(float(a.max())))
        assert p.area_avg == pytest.approx(float(a.astype(np.float64).mean()), rel=1e-6)
        assert p.demand_avg == pytest.approx(float(d.astype(np.float64).mean()), rel=1e-6)
        assert (p.demand_min, p.demand_max) == (pytest.approx(float(d.min())), pytest.approx(float(d.max())))
        assert (p.units_min, p.units_max) == (int(u.min()), int(u.max()))
    assert [w.start for w in h.worst_hours] == [
        h.points[i].start for i in np.argsort([p.area_avg for p in h.points], kind="stable")
    ]
    assert h.worst_hours[0].start == t0 + timedelta(hours=1)

    m = await history(pool, t0 + timedelta(minutes=30), t0 + timedelta(minutes=90), "ground", 480.0, "minute")
    assert len(m.points) == 60 and all(p.samples == 1 for p in m.points)
    np.testing.assert_allclose([p.area_avg for p in m.points], area[30:90], rtol=1e-6)
    assert len(m.worst_hours) == 2  # the hours the period touches
    with pytest.raises(ValueError):
        await history(pool, t0, t0 + timedelta(hours=1), "ground", 480.0, "week")


async def test_sampler_deletes_samples_past_the_retention_at_most_once_an_hour(
    pool: AsyncConnectionPool[Any],
) -> None:
    now = datetime.now(UTC)
    service = CoverageService(MIRAFLORES, miraflores_fleet(now))

    def old(days: float) -> SampleRow:
        return SampleRow(floor_time(now - timedelta(days=days), 60), "ground", 480.0, 10, 0.5, 0.5, 3)

    await store.insert_samples(pool, [old(d) for d in (400.0, 100.0, 90.01, 89.9, 1.0)])
    sampler = CoverageSampler(pool, service, (("ground", 8.0),), resolution=10, retention_days=90)
    await sampler.sample_once(now)
    kept = await store.samples(pool, now - timedelta(days=1000), now + timedelta(days=1))
    assert sorted(r.ts for r in kept) == sorted([old(89.9).ts, old(1.0).ts, floor_time(now, 60)])
    assert sampler.samples_pruned == 3
    # Another stale row (a replica's late write) waits for the next hourly pass.
    await store.insert_samples(pool, [old(120.0)])
    await sampler.sample_once(now + timedelta(minutes=30))
    assert sampler.samples_pruned == 3
    assert len(await store.samples(pool, now - timedelta(days=1000), now - timedelta(days=100))) == 1
    await sampler.sample_once(now + timedelta(minutes=61))
    assert sampler.samples_pruned == 4
    assert await store.samples(pool, now - timedelta(days=1000), now - timedelta(days=90.001)) == []
    # Without a retention every sample is kept.
    keep_all = CoverageSampler(pool, service, (("ground", 8.0),), resolution=10, retention_days=None)
    await store.insert_samples(pool, [old(500.0)])
    assert await keep_all.prune(now, force=True) == 0
    assert len(await store.samples(pool, now - timedelta(days=1000), now - timedelta(days=400))) == 1


def test_retention_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracker.config import Settings

    assert Settings().coverage_history.days == 90.0
    monkeypatch.setenv("SERENAZGO_COVERAGE_HISTORY__DAYS", "30")
    assert Settings().coverage_history.days == 30.0
    with pytest.raises(ValueError, match="retention_days must be > 0"):
        CoverageSampler(None, CoverageService(MIRAFLORES, LiveFleet()), retention_days=0)  # type: ignore[arg-type]
