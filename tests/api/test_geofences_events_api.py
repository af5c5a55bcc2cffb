"""/api/v1/geofences and /api/v1/events against a real PostgreSQL, with a running EventEngine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import shapely
from shapely.geometry import Point

from api.app import create_app
from api.context import ApiContext
from geo.local_frame import LocalFrame
from tests.fixtures.auth import seed_headers
from tracker.config import Settings
from tracker.events import EventEngine
from tracker.fleet import LiveFleet
from tracker.model import Ping, Unit, UnitKind
from tracker.registry import UnitRegistry

pytestmark = pytest.mark.integration

FRAME = LocalFrame(-77.03, -12.12)
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


@dataclass
class EventsApi:
    client: httpx.AsyncClient
    ctx: ApiContext
    engine: EventEngine


@pytest.fixture
async def eapi(pg_url: str) -> AsyncIterator[EventsApi]:
    """The app with its lifespan running and an EventEngine in ctx.events (MQTT off: no broker here)."""
    settings = Settings(database_url=pg_url)
    settings.events.publish_mqtt = False
    fleet = LiveFleet()
    fleet.load([Unit("mov-1", UnitKind.PATROL_CAR)], [])
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
                yield EventsApi(client, ctx, engine)
    finally:
        await engine.stop()


def square(gid: str, x0: float = 0, y0: float = 0, size: float = 400, **props: Any) -> dict[str, Any]:
    lon, lat = FRAME.to_lonlat([x0, x0 + size, x0 + size, x0, x0], [y0, y0, y0 + size, y0 + size, y0])
    return {
        "type": "Feature",
        "id": gid,
        "properties": {"name": f"Sector {gid}", "kind": "sector", **props},
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]],
        },
    }


async def test_create_read_list_delete(eapi: EventsApi) -> None:
    resp = await eapi.client.post("/api/v1/geofences", json=square("S1", colour="blue"))
    assert resp.status_code == 201, resp.text
    feature = resp.json()
    assert feature["id"] == "S1"
    assert feature["properties"]["name"] == "Sector S1"
    assert feature["properties"]["colour"] == "blue"
    assert feature["properties"]["created_by"] == "api"
    assert feature["geometry"] == square("S1")["geometry"]
    assert "S1" in eapi.engine.index

    resp = await eapi.client.post("/api/v1/geofences", json=square("R9", 1000, 0, 50, kind="restricted"))
    assert resp.status_code == 201
    listed = (await eapi.client.get("/api/v1/geofences")).json()
    assert listed["type"] == "FeatureCollection"
    assert [f["id"] for f in listed["features"]] == ["R9", "S1"]
    restricted = (await eapi.client.get("/api/v1/geofences", params={"kind": "restricted"})).json()
    assert [f["id"] for f in restricted["features"]] == ["R9"]
    one = await eapi.client.get("/api/v1/geofences/S1")
    assert one.status_code == 200
    assert one.json() == feature

    assert (await eapi.client.delete("/api/v1/geofences/S1")).status_code == 204
    assert "S1" not in eapi.engine.index
    missing = await eapi.client.get("/api/v1/geofences/S1")
    assert missing.status_code == 404
    assert "does not exist" in missing.json()["detail"]
    assert (await eapi.client.delete("/api/v1/geofences/S1")).status_code == 404


def with_geometry(geometry: Any, gid: str = "bad") -> dict[str, Any]:
    return {"type": "Feature", "id": gid, "properties": {"name": "x"}, "geometry": geometry}


BOWTIE = [[-77.03, -12.12], [-77.02, -12.11], [-77.02, -12.12], [-77.03, -12.11], [-77.03, -12.12]]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([1, 2], "expected a GeoJSON Feature"),
        ({"type": "FeatureCollection", "features": []}, "expected a GeoJSON Feature"),
        (with_geometry({"type": "Point", "coordinates": [-77.0, -12.0]}), "use a Polygon or MultiPolygon"),
        (with_geometry(None), "has no geometry"),
        (with_geometry({"type": "Polygon", "coordinates": "nope"}), "array of rings"),
        (with_geometry({"type": "Polygon", "coordinates": [BOWTIE]}), "edges cross each other"),
        (
            with_geometry(
                {"type": "Polygon", "coordinates": [[[-77, -12], [-77, -95], [-76, -12], [-77, -12]]]}
            ),
            "latitude -95.0 is outside -90..90",
        ),
        (
            with_geometry(
                {"type": "Polygon", "coordinates": [[[-12, -77], [-12.1, -77], [-12, -99], [-12, -77]]]}
            ),
            "swapped",
        ),
        (
            with_geometry(
                {"type": "Polygon", "coordinates": [[[-77, -12], [-76, -12], [-76, -11], [-77, -11]]]}
            ),
            "is not closed",
        ),
        ({**square("x"), "id": None}, "needs an id"),
        ({**square("x"), "id": "no spaces allowed"}, "invalid geofence id"),
        (square("k", kind="zone"), "must be one of sector, restricted, other"),
        (
            with_geometry(shapely.geometry.mapping(Point(-77.03, -12.12).buffer(0.01, quad_segs=3000))),
            "simplify it",
        ),
    ],
)
async def test_bad_geojson_is_refused_with_what_to_fix(eapi: EventsApi, body: Any, says: str) -> None:
    resp = await eapi.client.post("/api/v1/geofences", json=body)
    assert resp.status_code == 422, resp.text
    assert says in resp.json()["detail"]
    assert (await eapi.client.get("/api/v1/geofences")).json()["features"] == []


async def test_not_json_and_duplicate_id(eapi: EventsApi) -> None:
    resp = await eapi.client.post(
        "/api/v1/geofences", content=b'{"type": "Feature",', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422
    assert (await eapi.client.post("/api/v1/geofences", json=square("S1"))).status_code == 201
    dup = await eapi.client.post("/api/v1/geofences", json=square("S1", 500, 500, 10))
    assert dup.status_code == 409
    assert "already exists" in dup.json()["detail"]


async def test_events_listed_filtered_and_paged(eapi: EventsApi) -> None:
    assert (await eapi.client.post("/api/v1/geofences", json=square("S1"))).status_code == 201
    fleet = eapi.ctx.fleet

    def drive() -> None:  # ingest's writer thread: the car drives through S1 and out again, twice
        for i in range(200):
            x = -200 + 10 * (i % 100)
            lon, lat = FRAME.to_lonlat(x, 200)
            fleet.apply([Ping("mov-1", T0 + timedelta(seconds=i), float(lat), float(lon))])

    await asyncio.to_thread(drive)
    await eapi.engine.flush()

    page = (await eapi.client.get("/api/v1/events")).json()
    kinds = [e["type"] for e in page["events"]]
    assert kinds == ["geofence_enter", "geofence_exit"] * 2
    ids = [e["event_id"] for e in page["events"]]
    assert ids == sorted(ids)
    assert page["next"] == str(ids[-1])

    first = (await eapi.client.get("/api/v1/events", params={"limit": 3})).json()
    assert [e["event_id"] for e in first["events"]] == ids[:3]
    second = (await eapi.client.get("/api/v1/events", params={"limit": 3, "since": first["next"]})).json()
    assert [e["event_id"] for e in second["events"]] == ids[3:]
    empty = (await eapi.client.get("/api/v1/events", params={"since": second["next"]})).json()
    assert empty == {"events": [], "next": second["next"]}

    exits = (await eapi.client.get("/api/v1/events", params={"type": "geofence_exit"})).json()
    assert [e["type"] for e in exits["events"]] == ["geofence_exit"] * 2
    both = await eapi.client.get(
        "/api/v1/events", params=[("type", "geofence_exit"), ("type", "geofence_enter")]
    )
    assert len(both.json()["events"]) == 4
    assert (await eapi.client.get("/api/v1/events", params={"unit_id": "nobody"})).json()["events"] == []
    later = T0 + timedelta(seconds=100)
    by_time = (await eapi.client.get("/api/v1/events", params={"since": later.isoformat()})).json()
    assert [e["event_id"] for e in by_time["events"]] == ids[2:]
    naive_utc = later.replace(tzinfo=None).isoformat()
    assert (await eapi.client.get("/api/v1/events", params={"since": naive_utc})).json() == by_time
    zulu = later.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (await eapi.client.get("/api/v1/events", params={"since": zulu})).json() == by_time


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"since": "yesterday"}, "neither an event id (digits) nor an ISO-8601 time"),
        ({"type": "geofence_entered"}, "unknown event type 'geofence_entered': use one of"),
        ({"limit": 0}, "greater than or equal to 1"),
        ({"limit": 5000}, "less than or equal to 1000"),
    ],
)
async def test_events_bad_queries(eapi: EventsApi, params: dict[str, Any], says: str) -> None:
    resp = await eapi.client.get("/api/v1/events", params=params)
    assert resp.status_code == 422
    assert says in str(resp.json()["detail"])


async def test_without_an_event_engine_the_routes_say_so(api) -> None:
    for resp in (
        await api.client.get("/api/v1/events"),
        await api.client.get("/api/v1/geofences"),
        await api.client.post("/api/v1/geofences", json=square("S1")),
    ):
        assert resp.status_code == 503
        assert "event engine is not running" in resp.json()["detail"]
