"""``POST /api/v1/coverage/recommendations``: candidate sites (sectors, GeoJSON), the exact method, its guard.

Through the real app with its lifespan and a real PostgreSQL (sector geofences
are read from the ``geofences`` table). Ground truth: candidate cells by brute
force over every grid cell (Shapely), optima by brute force over the candidates.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import h3.api.basic_int as h3
import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, Polygon, mapping, shape

from geo.codes import KIND_CODE
from geo.coverage import reach_sets
from geo.placement import covered_demand
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE, PlacementSettings
from tracker.coverage import CoverageService
from tracker.model import Ping, StatusUpdate, Unit, UnitKind, UnitStatus
from tracker.store.geofences import StoredGeofence, insert_geofence

from .conftest import Api

pytestmark = pytest.mark.integration

MIRAFLORES = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
URL = "/api/v1/coverage/recommendations"
LARCO = LineString([(-77.0300, -12.1200), (-77.0290, -12.1320)])  # roughly Av. Larco
SECTOR = Polygon([(-77.036, -12.128), (-77.024, -12.128), (-77.024, -12.118), (-77.036, -12.118)])


@pytest.fixture
async def cov(api: Api) -> Api:
    api.ctx.coverage = CoverageService(MIRAFLORES, api.ctx.fleet)
    return api


def touched_cells(service: CoverageService, geometry: shapely.Geometry) -> set[str]:
    """H3 ids (hex) of every res-10 grid cell whose hexagon the geometry intersects, testing all cells."""
    grid = service.grid(10)
    out = set()
    for c in grid.cells.tolist():
        hexagon = Polygon(np.asarray(h3.cell_to_boundary(int(c)))[:, ::-1])
        if hexagon.intersects(geometry):
            out.add(format(int(c), "x"))
    return out


def brute_best(service: CoverageService, cells: set[str], minutes: float, p: int) -> float:
    """The best covered area share with p patrol cars on the given cells (every p-subset tried)."""
    grid = service.grid(10)
    rows = [i for i, c in enumerate(grid.cells.tolist()) if format(int(c), "x") in cells]
    car = KIND_CODE["patrol_car"]
    sites = reach_sets(grid, grid.lat[rows], grid.lon[rows], car, minutes * 60.0, service.model)
    w = grid.clipped_area_m2
    best = max(covered_demand(w, *sites, list(s)) for s in itertools.combinations(range(len(rows)), p))
    return best / float(w.sum())


async def post(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.client.post(URL, json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_placement_on_a_street_uses_only_cells_it_passes_through(cov: Api) -> None:
    assert cov.ctx.coverage is not None
    street = {"type": "Feature", "properties": {"name": "Av. Larco"}, "geometry": mapping(LARCO)}
    allowed = touched_cells(cov.ctx.coverage, LARCO)
    body = {"mode": "placement", "minutes": 1, "p": 2, "resolution": 10, "candidates_geojson": street}
    greedy = await post(cov, body)
    exact = await post(cov, {**body, "method": "exact"})
    assert greedy["candidates"] == exact["candidates"] == len(allowed)
    for answer in (greedy, exact):
        assert {pos["h3"] for pos in answer["positions"]} <= allowed and len(answer["positions"]) == 2
    want = brute_best(cov.ctx.coverage, allowed, 1.0, 2)
    assert exact["method"] == "exact" and exact["objective"]["optimal"] is True
    assert exact["objective"]["covered_ratio"] == pytest.approx(want, rel=1e-5)
    assert greedy["method"] == "greedy"
    assert greedy["objective"]["covered_ratio"] >= 0.98 * want
    # The greedy answer states its gap to a bound that the optimum does not exceed.
    g = greedy["objective"]
    assert g["bound"] in ("lp_relaxation", "marginal_gains", "coverable_demand")
    assert g["upper_bound_ratio"] >= want - 1e-6
    assert g["gap"] == pytest.approx(1 - g["covered_demand"] / g["upper_bound"], abs=1e-6)


async def test_sectors_restrict_placement_and_move_up(cov: Api) -> None:
    assert cov.ctx.pool is not None and cov.ctx.coverage is not None
    await insert_geofence(cov.ctx.pool, StoredGeofence("S2-larco", "Sector 2", "sector", mapping(SECTOR)))
    await insert_geofence(cov.ctx.pool, StoredGeofence("R1", "Cuartel", "restricted", mapping(SECTOR)))
    body = {"mode": "placement", "minutes": 1, "p": 3, "sectors": ["S2-larco"]}
    plan = await post(cov, body)
    grid = cov.ctx.coverage.grid(10)
    centres_inside = sum(
        SECTOR.contains(shapely.Point(lo, la)) for la, lo in zip(grid.lat, grid.lon, strict=True)
    )
    assert plan["candidates"] == centres_inside > 10
    assert all(SECTOR.contains(shapely.Point(pos["lon"], pos["lat"])) for pos in plan["positions"])
    # Move-up: three idle cars bunched in the north-west; they may only go to the sector.
    now = datetime.now(UTC)
    cars = [f"car{i}" for i in range(3)]
    fleet = cov.ctx.fleet
    fleet.load([Unit(c, UnitKind.PATROL_CAR) for c in cars], [])
    fleet.apply(
        [Ping(c, now, -12.108 + 0.0005 * i, -77.047) for i, c in enumerate(cars)],
        [(c, StatusUpdate(UnitStatus.AVAILABLE, now)) for c in cars],
    )
    for method in ("greedy", "exact"):
        moves = await post(cov, {"minutes": 2, "max_moves": 2, "sectors": ["S2-larco"], "method": method})
        assert moves["moves"], moves
        assert moves["covered_after"] > moves["covered_before"]
        assert all(SECTOR.contains(shapely.Point(m["to"]["lon"], m["to"]["lat"])) for m in moves["moves"])
    # Errors say what to fix.
    r = await cov.client.post(URL, json={**body, "sectors": ["S9", "S2-larco"]})
    assert r.status_code == 422 and "unknown sector 'S9'" in r.text and "kind=sector" in r.text
    r = await cov.client.post(URL, json={**body, "sectors": ["R1"]})
    assert r.status_code == 422 and "not a sector" in r.text
    r = await cov.client.post(URL, json={**body, "sectors": []})
    assert r.status_code == 422 and "sectors is empty" in r.text


async def test_exact_size_guard_and_empty_or_bad_candidates_are_422(cov: Api) -> None:
    cov.ctx.settings.placement = PlacementSettings(exact_max_nonzeros=1000)
    r = await cov.client.post(URL, json={"mode": "placement", "minutes": 2, "p": 3, "method": "exact"})
    assert r.status_code == 422, r.text
    assert "over the limit of 1,000" in r.text and "nonzeros" in r.text and "method greedy" in r.text
    # The guard measures the restricted model: a short street fits under the same limit.
    short = {"type": "LineString", "coordinates": [[-77.0300, -12.1200], [-77.0298, -12.1220]]}
    ok = await post(
        cov, {"mode": "placement", "minutes": 1, "p": 1, "method": "exact", "candidates_geojson": short}
    )
    assert ok["objective"]["optimal"] is True and len(ok["positions"]) == 1
    # An instance where greedy covers every coverable cell is proven optimal without HiGHS, at any size.
    whole = await post(cov, {"mode": "placement", "minutes": 8, "p": 3, "method": "exact"})
    assert whole["objective"]["optimal"] is True and whole["objective"]["covered_ratio"] == pytest.approx(1.0)
    assert "every coverable cell covered" in whole["solver"]
    r = await cov.client.post(URL, json={"minutes": 2, "method": "exact"})  # move-up with no units: tiny
    assert r.status_code == 200, r.text
    callao = {"type": "Point", "coordinates": [-77.14, -12.05]}
    r = await cov.client.post(URL, json={"mode": "placement", "candidates_geojson": callao})
    assert r.status_code == 422 and "no candidate site" in r.text
    r = await cov.client.post(URL, json={"mode": "placement", "candidates_geojson": {"type": "Circle"}})
    assert r.status_code == 422 and "not supported" in r.text
    r = await cov.client.post(URL, json={"mode": "placement", "method": "clever"})
    assert r.status_code == 422


async def test_polygon_candidates_touch_not_centre(cov: Api) -> None:
    """A drawn polygon counts every cell it touches (sectors count centres): the two rules differ."""
    assert cov.ctx.coverage is not None
    poly = shape({"type": "Polygon", "coordinates": [list(SECTOR.exterior.coords)]})
    body = {"mode": "placement", "minutes": 1, "p": 2, "candidates_geojson": mapping(poly)}
    plan = await post(cov, body)
    assert plan["candidates"] == len(touched_cells(cov.ctx.coverage, poly))
