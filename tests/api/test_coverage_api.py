"""``/api/v1/coverage`` over a LiveFleet in Miraflores, checked against Shapely buffers in a metric CRS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
import shapely
from pyproj import Transformer

from api.app import create_app
from api.context import ApiContext
from api.runtime import Runtime, UpOptions
from geo.docks import Dock
from geo.viewsheds import Viewsheds
from tests.fixtures.auth import seed_headers
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE, CoverageSettings, Settings
from tracker.coverage import CoverageService
from tracker.coverage_files import DEMO_CAMERAS_FILE, DEMO_DOCKS_FILE, load_docks, load_viewsheds
from tracker.errors import ConfigError
from tracker.fleet import LiveFleet
from tracker.model import Ping, StatusUpdate, Unit, UnitKind, UnitStatus
from tracker.registry import UnitRegistry
from tracker.store.pool import open_pool

MIRAFLORES = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
CAR_PACE = 1.35 / 6.9  # seconds per metre (EtaSettings defaults)


def fleet_with(units: list[tuple[str, UnitKind, float, float, UnitStatus]], at: datetime) -> LiveFleet:
    fleet = LiveFleet()
    fleet.load([Unit(u, k) for u, k, *_ in units], [])
    fleet.apply(
        [Ping(u, at, lat, lon) for u, _, lat, lon, _ in units],
        [(u, StatusUpdate(s, at)) for u, *_, s in units],
    )
    return fleet


@pytest.fixture
async def client_for() -> AsyncIterator[object]:
    clients: list[httpx.AsyncClient] = []

    def make(
        fleet: LiveFleet,
        coverage: bool = True,
        docks: list[Dock] | None = None,
        viewsheds: Viewsheds | None = None,
    ) -> httpx.AsyncClient:
        ctx = ApiContext(settings=Settings(), conninfo="", registry=UnitRegistry(), fleet=fleet)
        ctx.coverage = (
            CoverageService(MIRAFLORES, fleet, docks=docks or (), viewsheds=viewsheds) if coverage else None
        )
        # No lifespan: these routes need no database.
        client = httpx.AsyncClient(
            headers=seed_headers(ctx), transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://t"
        )
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.aclose()


def shapely_ratio(points: list[tuple[float, float]], reach_m: float) -> float:
    """Covered share of Miraflores: reach discs in UTM 18S, unioned, intersected with the boundary."""
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32718", always_xy=True).transform
    area = shapely.transform(MIRAFLORES, lambda xy: np.column_stack(to_utm(xy[:, 0], xy[:, 1])))
    discs = [shapely.Point(*to_utm(lon, lat)).buffer(reach_m, 64) for lat, lon in points]
    covered = shapely.union_all(discs).intersection(area) if discs else shapely.Polygon()
    return float(covered.area / area.area)


async def test_ground_coverage_agrees_with_shapely_and_ignores_busy_units(client_for) -> None:
    now = datetime.now(UTC)
    rng = np.random.default_rng(5)
    minx, miny, maxx, maxy = MIRAFLORES.bounds
    units = []
    while len(units) < 12:
        lon, lat = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if MIRAFLORES.contains(shapely.Point(lon, lat)):
            units.append((f"car{len(units)}", UnitKind.PATROL_CAR, lat, lon, UnitStatus.AVAILABLE))
    busy = ("busy", UnitKind.PATROL_CAR, -12.12, -77.03, UnitStatus.DISPATCHED)
    client = client_for(fleet_with([*units, busy], now))
    r = await client.get("/api/v1/coverage", params={"minutes": 1.5, "layer": "ground"})
    assert r.status_code == 200, r.text
    body = r.json()
    reach = 90.0 / CAR_PACE
    assert body["units"] == 12  # the dispatched one does not cover anything
    assert body["resolution"] == 10
    assert body["model"]["kinds"]["patrol_car"]["reach_m"] == pytest.approx(reach, rel=1e-3)
    want = shapely_ratio([(lat, lon) for _, _, lat, lon, _ in units], reach)
    assert 0.1 < want < 0.95, "the fixture should leave real gaps"
    assert body["covered_area_ratio"] == pytest.approx(want, abs=0.01)
    gaps = shapely.geometry.shape(body["gaps"]["geometry"])
    assert gaps.is_valid and MIRAFLORES.buffer(1e-6).contains(gaps)


async def test_no_units_means_everything_is_a_gap(client_for) -> None:
    client = client_for(fleet_with([], datetime.now(UTC)))
    body = (await client.get("/api/v1/coverage", params={"minutes": 8, "cells": "true"})).json()
    assert body["units"] == 0 and body["covered_area_ratio"] == 0.0
    assert body["gap_cells"] == body["cells"] == len(body["cell_eta_s"])
    assert all(c["eta_s"] is None for c in body["cell_eta_s"])


async def test_lost_units_and_other_layers_do_not_count(client_for) -> None:
    now = datetime.now(UTC)
    drone = ("d1", UnitKind.DRONE, -12.121, -77.03, UnitStatus.AVAILABLE)
    client = client_for(fleet_with([drone], now - timedelta(hours=1)))  # an hour old: lost
    body = (await client.get("/api/v1/coverage", params={"layer": "drones"})).json()
    assert body["units"] == 0
    client = client_for(fleet_with([drone], now))
    ground = (await client.get("/api/v1/coverage", params={"layer": "ground"})).json()
    drones = (await client.get("/api/v1/coverage", params={"layer": "drones", "minutes": 1})).json()
    assert ground["units"] == 0 and ground["covered_area_ratio"] == 0.0
    assert drones["units"] == 1 and drones["covered_area_ratio"] > 0.0


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"minutes": 0}, "minutes must be"),
        ({"minutes": "nan"}, "minutes must be"),
        ({"layer": "sky"}, "unknown layer"),
        ({"kinds": "tank"}, "unknown kind tank"),
        ({"resolution": 16}, "resolution must be"),
        ({"resolution": 15}, "would need about"),
    ],
)
async def test_bad_requests_say_what_is_wrong(client_for, params: dict[str, object], fragment: str) -> None:
    client = client_for(fleet_with([], datetime.now(UTC)))
    r = await client.get("/api/v1/coverage", params=params)
    assert r.status_code == 422
    assert fragment in r.text


async def test_without_a_service_area_the_answer_is_503(client_for) -> None:
    client = client_for(LiveFleet(), coverage=False)
    r = await client.get("/api/v1/coverage")
    assert r.status_code == 503 and "no service area" in r.text


async def test_move_up_recommendations_raise_coverage_as_recomputed(client_for) -> None:
    now = datetime.now(UTC)
    # Three cars bunched together in the north-west corner: moving them must open up the district.
    cars = [
        (f"car{i}", UnitKind.PATROL_CAR, -12.108 + 0.0005 * i, -77.047, UnitStatus.AVAILABLE)
        for i in range(3)
    ]
    fleet = fleet_with(cars, now)
    client = client_for(fleet)
    before = (await client.get("/api/v1/coverage", params={"minutes": 2})).json()["covered_area_ratio"]
    r = await client.post("/api/v1/coverage/recommendations", json={"minutes": 2, "max_moves": 2})
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["covered_before"] == pytest.approx(before, abs=1e-4)
    assert 1 <= len(plan["moves"]) <= 2 and plan["covered_after"] > before + 0.05
    # Apply the moves to the fleet: the live coverage then equals what the plan promised.
    later = now + timedelta(seconds=1)
    fleet.apply([Ping(m["unit_id"], later, m["to"]["lat"], m["to"]["lon"]) for m in plan["moves"]])
    after = (await client.get("/api/v1/coverage", params={"minutes": 2})).json()["covered_area_ratio"]
    assert after == pytest.approx(plan["covered_after"], abs=1e-4)
    assert all(m["travel_s"] > 0 and m["gain_ratio"] > 0 for m in plan["moves"])


async def test_placement_recommendation_covers_more_with_more_units(client_for) -> None:
    client = client_for(fleet_with([], datetime.now(UTC)))
    few = (await client.post("/api/v1/coverage/recommendations",
                             json={"mode": "placement", "minutes": 2, "p": 2})).json()  # fmt: skip
    many = (await client.post("/api/v1/coverage/recommendations",
                              json={"mode": "placement", "minutes": 2, "p": 6})).json()  # fmt: skip
    assert len(few["positions"]) == 2 and len(many["positions"]) == 6
    assert 0 < few["coverage"] < many["coverage"] <= 1.0
    r = await client.post("/api/v1/coverage/recommendations", json={"mode": "teleport"})
    assert r.status_code == 422


async def test_incident_demand_needs_the_database(client_for) -> None:
    client = client_for(fleet_with([], datetime.now(UTC)))
    r = await client.get("/api/v1/coverage", params={"demand": "incidents"})
    assert r.status_code == 503 and "database" in r.text
    r = await client.get("/api/v1/coverage", params={"demand": "calls"})
    assert r.status_code == 422


@pytest.mark.integration
async def test_incident_demand_weights_the_ratio_towards_where_incidents_happen(pg_url: str) -> None:
    now = datetime.now(UTC)
    hotspot = (-12.1211, -77.0297)  # Parque Kennedy: every incident of the month happened here
    # 2,000 incidents of the month here (Central Alerta logs ~690 a day district-wide), against the
    # prior's 0.5 pseudo-incidents per average cell (~360 over Miraflores' 729 cells).
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO incidents (lat, lon, category, channel, created_at)"
            " SELECT %s + 1e-6 * g, %s, 'otro', 'phone', %s FROM generate_series(1, 2000) AS g",
            [hotspot[0], hotspot[1], now - timedelta(days=1)],
        )
    fleet = fleet_with([("car", UnitKind.PATROL_CAR, *hotspot, UnitStatus.AVAILABLE)], now)
    ctx = ApiContext(settings=Settings(), conninfo=pg_url, registry=UnitRegistry(), fleet=fleet)
    ctx.coverage = CoverageService(MIRAFLORES, fleet)
    ctx.pool = await open_pool(pg_url, max_size=2)
    try:
        transport = httpx.ASGITransport(app=create_app(ctx))
        async with httpx.AsyncClient(
            headers=seed_headers(ctx), transport=transport, base_url="http://t"
        ) as client:
            params = {"minutes": 1, "demand": "incidents"}
            body = (await client.get("/api/v1/coverage", params=params)).json()
    finally:
        await ctx.pool.close()
    # One car at the hotspot covers a small share of the area but most of the expected demand.
    assert body["covered_area_ratio"] < 0.1
    assert body["covered_demand_ratio"] > 0.8
    assert "incidents of the last 28 days" in body["demand"]


# ----- drone docks and camera viewsheds (the demo's, in Miraflores) ---------------------------------------

DOCKS = load_docks(DEMO_DOCKS_FILE)
CAMERAS = load_viewsheds(DEMO_CAMERAS_FILE)


async def test_drone_layer_reaches_from_the_docks_as_shapely_buffers_do(client_for) -> None:
    client = client_for(fleet_with([], datetime.now(UTC)), docks=DOCKS, viewsheds=CAMERAS)
    r = await client.get("/api/v1/coverage", params={"minutes": 1.5, "layer": "drones"})
    assert r.status_code == 200, r.text
    body = r.json()
    reach = 15.0 * (90.0 - 30.0)  # cruise 15 m/s for 90 s less the 30 s take-off: time-limited, 900 m
    docks = body["model"]["docks"]
    assert [d["id"] for d in docks] == ["dock-palacio", "dock-costaverde", "dock-surquillo"]
    for d in docks:
        assert (d["reach_m"], d["limit"], d["reserve"], d["hold_s"]) == (reach, "time", 0.25, 0.0)
        assert d["profile"] in ("m3td", "m4td") and d["aircraft"].startswith("DJI Matrice")
    assert body["model"]["viewsheds"]["included"] is False
    want = shapely_ratio([(d["lat"], d["lon"]) for d in docks], reach)
    assert 0.1 < want < 0.95
    assert body["covered_area_ratio"] == pytest.approx(want, abs=0.01)


async def test_combined_layer_adds_ground_drones_and_cameras(client_for) -> None:
    now = datetime.now(UTC)
    cars = [
        ("car1", UnitKind.PATROL_CAR, -12.1085, -77.0480, UnitStatus.AVAILABLE),
        ("car2", UnitKind.PATROL_CAR, -12.1330, -77.0260, UnitStatus.AVAILABLE),
    ]
    client = client_for(fleet_with(cars, now), docks=DOCKS, viewsheds=CAMERAS)
    params = {"minutes": 1.5, "cells": "true"}
    layers = {
        layer: (await client.get("/api/v1/coverage", params={**params, "layer": layer})).json()
        for layer in ("ground", "drones", "combined")
    }
    combined = layers["combined"]
    assert combined["model"]["viewsheds"]["included"] is True
    assert combined["model"]["viewsheds"]["cameras"] == 6
    seen = combined["model"]["viewsheds"]["cells_seen"]
    assert seen > 0

    def eta(body: dict[str, object]) -> np.ndarray:
        cells = body["cell_eta_s"]
        assert isinstance(cells, list)
        return np.array([np.inf if c["eta_s"] is None else c["eta_s"] for c in cells])

    ground, drones, both = eta(layers["ground"]), eta(layers["drones"]), eta(combined)
    # Reached in the combined layer: reached by the ground or the drone layer, or seen by a camera.
    assert int((both == 0.0).sum()) >= seen
    reached = np.isfinite(ground) | np.isfinite(drones)
    assert np.all(np.isfinite(both)[reached])
    assert int((np.isfinite(both) & ~reached).sum()) <= seen
    np.testing.assert_allclose(both[reached & (both > 0)], np.minimum(ground, drones)[reached & (both > 0)])
    assert combined["covered_area_ratio"] > max(layers["ground"]["covered_area_ratio"],
                                                layers["drones"]["covered_area_ratio"])  # fmt: skip
    assert layers["ground"]["model"]["docks"] == []


def test_runtime_reads_the_demo_files_only_for_the_miraflores_demo(tmp_path: Path) -> None:
    assert Runtime(Settings(), UpOptions(demo=True)).coverage_files() == (DEMO_DOCKS_FILE, DEMO_CAMERAS_FILE)
    assert Runtime(Settings(), UpOptions(demo=True, district="miraflores")).coverage_files() == (
        DEMO_DOCKS_FILE,
        DEMO_CAMERAS_FILE,
    )
    assert Runtime(Settings(), UpOptions(demo=True, district="Barranco")).coverage_files() == (None, None)
    assert Runtime(Settings(), UpOptions()).coverage_files() == (None, None)
    mine = tmp_path / "docks.geojson"
    own = Settings(coverage=CoverageSettings(docks=mine))
    assert Runtime(own, UpOptions(demo=True)).coverage_files() == (mine, DEMO_CAMERAS_FILE)
    assert Runtime(own, UpOptions()).coverage_files() == (mine, None)


def test_a_bad_docks_file_stops_the_start_with_its_reason(tmp_path: Path) -> None:
    bad = tmp_path / "docks.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": []}', encoding="utf-8")
    runtime = Runtime(Settings(coverage=CoverageSettings(docks=bad)), UpOptions())
    with pytest.raises(ConfigError, match=r"holds no dock features .*SERENAZGO_COVERAGE__DOCKS"):
        runtime._load_coverage_files()
    runtime = Runtime(Settings(), UpOptions(demo=True))
    runtime._load_coverage_files()
    assert len(runtime._docks) == 3 and runtime._viewsheds is not None
