"""``POST /api/v1/drones/sorties/plan`` over Miraflores' demo docks, checked with Shapely."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from shapely.geometry import LineString, Point, box, mapping, shape

from api.app import create_app
from api.context import ApiContext
from api.routes.sorties import airspace_polygons
from tests.api.test_coverage_api import DOCKS, MIRAFLORES, fleet_with
from tests.fixtures.auth import seed_headers
from tracker.config import Settings
from tracker.coverage import CoverageService
from tracker.registry import UnitRegistry

PALACIO = next(d for d in DOCKS if d.dock_id == "dock-palacio")
# A restricted zone a little south-east of the Palacio dock (a hospital's, say), lon/lat.
PT = [{"lat": -12.12, "lon": -77.03}]
PAL = {"dock_id": "dock-palacio"}
ZONE = Point(PALACIO.lon + 0.004, PALACIO.lat - 0.003).buffer(0.0015)


@dataclass(slots=True)
class AirspaceContext(ApiContext):
    """A Context with the hook the airspace module will fill: zones as a function of altitude."""

    airspace: Any = None


class Zones:
    def __init__(self) -> None:
        self.asked: list[float] = []

    def avoidance_polygons(self, altitude_m: float) -> list[Any]:
        self.asked.append(altitude_m)
        return [ZONE] if altitude_m < 150 else []


@pytest.fixture
async def client() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(coverage: bool = True, airspace: Any = None) -> httpx.AsyncClient:
        fleet = fleet_with([], datetime.now(UTC))
        ctx = AirspaceContext(settings=Settings(), conninfo="", registry=UnitRegistry(), fleet=fleet)
        ctx.airspace = airspace
        ctx.coverage = CoverageService(MIRAFLORES, fleet, docks=DOCKS) if coverage else None
        c = httpx.AsyncClient(
            headers=seed_headers(ctx), transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://t"
        )
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.aclose()


def routes(body: dict[str, Any]) -> list[LineString]:
    return [LineString([(w["lon"], w["lat"]) for w in s["waypoints"]]) for s in body["sorties"]]


async def test_gap_cells_are_planned_from_a_configured_dock(client: Callable[..., httpx.AsyncClient]) -> None:
    c = client()
    cov = (
        await c.get("/api/v1/coverage", params={"minutes": 1.5, "layer": "drones", "cells": "true"})
    ).json()
    gaps = {e["h3"] for e in cov["cell_eta_s"] if e["eta_s"] is None or e["eta_s"] > 90}
    assert len(gaps) == cov["gap_cells"] > 50
    r = await c.post(
        "/api/v1/drones/sorties/plan",
        json={**PAL, "targets": "gaps", "minutes": 1.5, "layer": "drones"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    covered = [t for s in body["sorties"] for t in s["targets"]]
    assert len(covered) == len(set(covered))
    assert set(covered) | {u["id"] for u in body["unreachable"]} == gaps
    assert body["unreachable"] == []  # Miraflores is a few km across: all within one battery
    assert body["totals"]["targets_covered"] == len(gaps)
    for s in body["sorties"]:
        assert s["flight_s"] <= body["budget_s"]
        assert s["waypoints"][0]["role"] == s["waypoints"][-1]["role"] == "dock"
    assert body["dock"]["id"] == "dock-palacio" and body["altitude_m"] == 100.0


async def test_zones_from_the_airspace_hook_and_the_request_are_avoided(
    client: Callable[..., httpx.AsyncClient],
) -> None:
    zones = Zones()
    c = client(airspace=zones)
    lon0, lat0 = PALACIO.lon, PALACIO.lat
    extra = box(lon0 - 0.006, lat0 + 0.002, lon0 - 0.001, lat0 + 0.0025)  # a wall north-west of the dock
    points = [
        {"lat": lat0 - 0.003 + dy, "lon": lon0 + 0.004 + dx, "id": f"p{k}"}
        for k, (dx, dy) in enumerate([(0.003, 0.0), (0.0, 0.003), (-0.003, 0.0), (0.0, -0.003), (0.0, 0.0)])
    ] + [{"lat": lat0 + 0.005, "lon": lon0 - 0.003, "id": "north"}]
    r = await c.post(
        "/api/v1/drones/sorties/plan",
        json={**PAL, "targets": points, "altitude_m": 80, "avoid": mapping(extra)},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert zones.asked == [80.0]
    assert [(u["id"], u["reason"]) for u in body["unreachable"]] == [("p4", "inside_restricted_airspace")]
    for line in routes(body):
        assert not line.intersects(ZONE) and not line.intersects(extra)
    vias = [w for s in body["sorties"] for w in s["waypoints"] if w["role"] == "via"]
    assert vias, "the legs had to go round the zones"
    assert airspace_polygons(object(), 80.0) == []  # no hook wired: no zones


async def test_a_dock_by_position_a_polygon_and_the_exports(client: Callable[..., httpx.AsyncClient]) -> None:
    c = client(coverage=False)  # no service area: points and polygons still plan
    area = box(-77.040, -12.128, -77.030, -12.120)
    req = {
        "dock": {"lat": -12.1305, "lon": -77.0335, "profile": "m4td"},
        "targets": mapping(area),
        "loiter_s": 10,
    }
    body = (await c.post("/api/v1/drones/sorties/plan", json=req)).json()
    cells = [t for s in body["sorties"] for t in s["targets"]]
    assert len(cells) > 50 and body["dock"]["profile"] == "m4td"
    assert body["aircraft"]["max_flight_s"] == 54 * 60
    n = len(body["sorties"])

    r = await c.post("/api/v1/drones/sorties/plan", json={**req, "format": "geojson"})
    assert r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    lines = [shape(f["geometry"]) for f in fc["features"] if f["properties"]["kind"] == "sortie"]
    assert len(lines) == n

    r = await c.post("/api/v1/drones/sorties/plan", json={**req, "format": "qgc"})
    plans = r.json()["plans"]
    assert [p["sortie"] for p in plans] == list(range(1, n + 1))
    assert all(p["plan"]["fileType"] == "Plan" for p in plans)
    r = await c.post("/api/v1/drones/sorties/plan", json={**req, "format": "qgc", "sortie": 1})
    assert r.json() == plans[0]["plan"]
    assert 'filename="sorties-request-1.plan"' in r.headers["content-disposition"]

    r = await c.post("/api/v1/drones/sorties/plan", json={**req, "format": "kml"})
    assert r.headers["content-type"].startswith("application/vnd.google-earth.kml+xml")
    root = ET.fromstring(r.text)
    assert (
        len(root.findall("{http://www.opengis.net/kml/2.2}Document/{http://www.opengis.net/kml/2.2}Folder"))
        == n
    )
    json.dumps(body, allow_nan=False)


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"dock_id": "nope", "targets": PT}, 422, "unknown dock_id 'nope'"),
        ({"targets": PT}, 422, "give either dock_id"),
        ({**PAL, "targets": PT, "altitude_m": 200}, 422,
         "over the 120 m limit"),
        ({"dock": {"lat": -12.12, "lon": -77.03, "profile": "x9"}, "targets": PT},
         422, "unknown aircraft profile 'x9'"),
        ({**PAL, "targets": []}, 422, "empty list"),
        ({**PAL, "targets": {"type": "Point", "coordinates": [0, 0]}}, 422, "Polygon"),
        ({**PAL, "targets": PT, "avoid": {"type": "Nope"}},
         422, "avoid"),
        ({**PAL, "targets": PT, "format": "qgc", "sortie": 3},
         422, "sortie 3 does not exist"),
        ({**PAL, "targets": PT, "avoid": mapping(Point(PALACIO.lon, PALACIO.lat).buffer(0.001))}, 422,
         "inside restricted airspace"),
        ({**PAL, "targets": [{"lat": 95, "lon": -77.03}]}, 422, "less than or equal to 90"),
        ({**PAL, "targets": [{**PT[0], "id": "a"}, {**PT[0], "id": "a"}]}, 422, "'a' appears twice"),
        ({**PAL, "targets": mapping(box(-77.2, -12.2, -76.9, -11.9))}, 422, "give a smaller polygon"),
    ],
)  # fmt: skip
async def test_bad_requests_say_what_to_fix(
    client: Callable[..., httpx.AsyncClient], payload: dict[str, Any], status: int, fragment: str
) -> None:
    r = await client().post("/api/v1/drones/sorties/plan", json=payload)
    assert r.status_code == status, r.text
    assert fragment in r.text


async def test_gaps_need_the_coverage_service(client: Callable[..., httpx.AsyncClient]) -> None:
    r = await client(coverage=False).post(
        "/api/v1/drones/sorties/plan", json={"dock": {"lat": -12.12, "lon": -77.03}, "targets": "gaps"}
    )
    assert r.status_code == 503 and "give targets as points or a polygon" in r.text
