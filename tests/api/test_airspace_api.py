"""/api/v1/airspace against a real PostgreSQL: CRUD, 422s that say what to fix, checks, live re-indexing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import shapely
from shapely.geometry import LineString, Point

from api.app import create_app
from api.context import ApiContext
from api.runtime import Runtime, UpOptions
from drones.airspace_file import DEMO_AIRSPACE_FILE, load_airspace_file
from geo.local_frame import LocalFrame
from tests.fixtures.auth import seed_headers
from tracker.config import DroneSettings, Settings
from tracker.errors import ConfigError
from tracker.events import EventEngine
from tracker.fleet import LiveFleet
from tracker.model import DroneTelemetry, Ping, Unit, UnitKind
from tracker.registry import UnitRegistry

pytestmark = pytest.mark.integration

FRAME = LocalFrame(-77.03, -12.12)
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


@dataclass
class AirApi:
    client: httpx.AsyncClient
    engine: EventEngine
    fleet: LiveFleet
    ctx: ApiContext


@pytest.fixture
async def air(pg_url: str) -> AsyncIterator[AirApi]:
    """The app with its lifespan and a running EventEngine (MQTT off: no broker here)."""
    settings = Settings(database_url=pg_url)
    settings.events.publish_mqtt = False
    fleet = LiveFleet()
    fleet.load([Unit("dr-1", UnitKind.DRONE)], [])
    ctx = ApiContext(
        settings=settings, conninfo=pg_url, registry=UnitRegistry(), fleet=fleet, pool_max_size=2
    )
    engine = EventEngine(pg_url, fleet, settings.events, settings.freshness)
    await engine.start()
    ctx.events = engine
    app = create_app(ctx)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                headers=seed_headers(ctx), transport=transport, base_url="http://serenazgo.test"
            ) as client:
                yield AirApi(client, engine, fleet, ctx)
    finally:
        await engine.stop()


def lonlat(x: float, y: float) -> list[float]:
    lon, lat = FRAME.to_lonlat(x, y)
    return [float(lon), float(lat)]


def zone(zid: str, x0: float = 0, size: float = 400, **props: Any) -> dict[str, Any]:
    ring = [lonlat(x0, 0), lonlat(x0 + size, 0), lonlat(x0 + size, size), lonlat(x0, size), lonlat(x0, 0)]
    return {
        "type": "Feature",
        "id": zid,
        "properties": {"name": f"Zone {zid}", "kind": "hospital", **props},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


async def test_create_list_replace_delete(air: AirApi) -> None:
    c = air.client
    resp = await c.post("/api/v1/airspace", json=zone("H1", ceiling_m=120, colour="red"))
    assert resp.status_code == 201, resp.text
    [f] = resp.json()["features"]
    assert f["id"] == "H1" and f["properties"]["ceiling_m"] == 120 and f["properties"]["floor_m"] == 0
    assert f["properties"]["colour"] == "red" and f["properties"]["created_by"] == "api"
    fc = {
        "type": "FeatureCollection",
        "features": [zone("E1", 1000, kind="embassy"), zone("M1", 2000, floor_m=90)],
    }
    assert (await c.post("/api/v1/airspace", json=fc)).status_code == 201
    listed = (await c.get("/api/v1/airspace")).json()
    assert listed["type"] == "FeatureCollection"
    assert [(x["id"], x["properties"]["ceiling_m"]) for x in listed["features"]] == [
        ("E1", None),
        ("H1", 120),
        ("M1", None),
    ]
    assert [x["id"] for x in (await c.get("/api/v1/airspace?kind=embassy")).json()["features"]] == ["E1"]
    # A taken id: 409 naming it; with replace=true it is overwritten.
    dup = await c.post("/api/v1/airspace", json=zone("H1", ceiling_m=60))
    assert (
        dup.status_code == 409 and "'H1'" in dup.json()["detail"] and "replace=true" in dup.json()["detail"]
    )
    again = await c.post("/api/v1/airspace?replace=true", json=zone("H1", ceiling_m=60))
    assert again.status_code == 201 and again.json()["features"][0]["properties"]["ceiling_m"] == 60
    assert (await c.delete("/api/v1/airspace/E1")).status_code == 204
    missing = await c.delete("/api/v1/airspace/E1")
    assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]
    assert [x["id"] for x in (await c.get("/api/v1/airspace")).json()["features"]] == ["H1", "M1"]
    assert air.engine.stats.airspace_zones == 2


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (zone("B1", kind="stadium"), "must be one of airport, heliport, hospital"),
        (zone("B1", floor_m=100, ceiling_m=50), "ceiling_m 50.0 must be above floor_m 100.0"),
        ({"type": "Point", "coordinates": [0, 0]}, "expected a GeoJSON Feature or FeatureCollection"),
        (
            {
                "type": "Feature",
                "id": "bow",
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
            },
            "edges cross each other",
        ),
        ({"type": "FeatureCollection", "features": [zone("ok"), zone("x y")]}, "feature 1: invalid zone id"),
    ],
)
async def test_bad_zones_are_422_and_store_nothing(air: AirApi, body: dict[str, Any], words: str) -> None:
    resp = await air.client.post("/api/v1/airspace", json=body)
    assert resp.status_code == 422, resp.text
    assert words in resp.json()["detail"]
    assert (await air.client.get("/api/v1/airspace")).json()["features"] == []


async def test_check_point_path_and_sortie(air: AirApi) -> None:
    c = air.client
    fc: dict[str, Any] = {
        "type": "FeatureCollection",
        "features": [zone("H1", 0, ceiling_m=60), zone("M1", 1000, floor_m=90)],
    }
    assert (await c.post("/api/v1/airspace", json=fc)).status_code == 201
    inside = await c.post("/api/v1/airspace/check", json={"point": [*lonlat(200, 200), 40]})
    assert inside.status_code == 200
    assert [v["zone_id"] for v in inside.json()["violations"]] == ["H1"]
    above = await c.post("/api/v1/airspace/check", json={"point": [*lonlat(200, 200), 70]})
    assert above.json()["violations"] == []
    # At 80 m: over H1 (ceiling 60) and under M1 (floor 90): clear.
    path = [[*lonlat(-100, 200), 80], [*lonlat(1500, 200), 80]]
    assert (await c.post("/api/v1/airspace/check", json={"path": path})).json()["violations"] == []
    # At 100 m the same line crosses M1 over 400 m; Shapely measures the same stretch.
    path = [[*lonlat(-100, 200), 100], [*lonlat(1500, 200), 100]]
    body = (await c.post("/api/v1/airspace/check", json={"path": path})).json()
    [v] = body["violations"]
    assert (v["zone_id"], v["leg"], v["segment"]) == ("M1", 0, 0)
    assert v["to_m"] - v["from_m"] == pytest.approx(400.0, abs=0.5)
    line = LineString([p[:2] for p in path])
    m1 = shapely.geometry.shape(fc["features"][1]["geometry"])
    assert Point(v["entry"][:2]).distance(m1.boundary) < 1e-9 and line.intersects(m1)
    # A sortie: climb on the spot inside H1, then cruise out at 80 m.
    legs = [
        [[*lonlat(200, 200), 0], [*lonlat(200, 200), 80]],
        [[*lonlat(200, 200), 80], [*lonlat(700, 200), 80]],
    ]
    body = (await c.post("/api/v1/airspace/check", json={"legs": legs, "profile": "linear"})).json()
    assert [(v["zone_id"], v["leg"], v["alt_range_m"]) for v in body["violations"]] == [
        ("H1", 0, [0.0, 60.0])
    ]
    assert body["profile"] == "linear" and body["zones_checked"] == 2


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"point": [-77.03, -12.12, 10], "path": []}, "exactly one of point"),
        ({}, "got none"),
        ({"point": [-77.03, -12.12]}, "expected [lon, lat, altitude"),
        ({"path": [[-77.03, -12.12, 10]]}, "a leg needs at least 2"),
        ({"path": [[-77.03, -12.12, 10], [-77.02, -12.12, 10]], "profile": "curvy"}, "must be 'envelope'"),
        ({"legs": []}, "legs is empty"),
        ({"point": [-77.03, -120.0, 10]}, "out of range"),
        ([1, 2], "send a JSON object"),
    ],
)
async def test_bad_checks_are_422(air: AirApi, body: Any, words: str) -> None:
    resp = await air.client.post("/api/v1/airspace/check", json=body)
    assert resp.status_code == 422, resp.text
    assert words in resp.json()["detail"]


async def test_the_context_holds_the_zones_for_the_sortie_planner(air: AirApi) -> None:
    live = air.ctx.airspace
    assert live is not None and live.avoidance_polygons(80.0) == []  # loaded (empty) by the lifespan
    fc: dict[str, Any] = {
        "type": "FeatureCollection",
        "features": [zone("H1", 0, ceiling_m=60), zone("M1", 1000, floor_m=90)],
    }
    assert (await air.client.post("/api/v1/airspace", json=fc)).status_code == 201
    h1 = shapely.geometry.shape(fc["features"][0]["geometry"])
    m1 = shapely.geometry.shape(fc["features"][1]["geometry"])
    # The planner's hook: ctx.airspace.avoidance_polygons(altitude_m) -> lon/lat polygons to keep out of.
    [low] = live.avoidance_polygons(40.0)
    assert low.covers(h1) and not low.intersects(m1)
    [high] = live.avoidance_polygons(120.0, 25.0)
    assert high.covers(m1) and not high.intersects(h1)
    assert high.area > m1.area
    assert (await air.client.delete("/api/v1/airspace/H1")).status_code == 204
    assert live.avoidance_polygons(40.0) == []


async def test_zone_created_through_the_api_raises_events(air: AirApi) -> None:
    c = air.client
    assert (await c.post("/api/v1/airspace", json=zone("H1", 0, ceiling_m=60))).status_code == 201
    track = [(-200, 200), (200, 200), (250, 200), (700, 200)]
    for i, (x, y) in enumerate(track):
        lon, lat = lonlat(x, y)
        ts = T0 + timedelta(seconds=i)
        air.fleet.apply(
            [Ping("dr-1", ts, lat, lon)], telemetry=[DroneTelemetry("dr-1", ts, alt_takeoff_m=40.0)]
        )
    await air.engine.flush()
    events = (await c.get("/api/v1/events?type=airspace_entered&type=airspace_exited")).json()
    got = [(e["type"], e["unit_id"], e["detail"]["zone_id"], e["detail"]["alt_m"]) for e in events["events"]]
    assert got == [("airspace_entered", "dr-1", "H1", 40.0), ("airspace_exited", "dr-1", "H1", 40.0)]


def test_demo_zones_and_the_airspace_setting(tmp_path: Path) -> None:
    assert Runtime(Settings(), UpOptions(demo=True)).airspace_file() == DEMO_AIRSPACE_FILE
    assert Runtime(Settings(), UpOptions(demo=False)).airspace_file() is None
    own = tmp_path / "zones.geojson"
    settings = Settings(drones=DroneSettings(airspace=own))
    assert Runtime(settings, UpOptions(demo=True)).airspace_file() == own
    zones = load_airspace_file(DEMO_AIRSPACE_FILE)
    assert {z.kind for z in zones} == {"hospital", "embassy", "military"}
    assert all("DEMO" in z.name for z in zones)
    own.write_text(json.dumps({"type": "FeatureCollection", "features": [zone("x", kind="zoo")]}))
    with pytest.raises(ConfigError, match="SERENAZGO_DRONES__AIRSPACE"):
        load_airspace_file(own)
