"""airspace_entered / airspace_exited through the EventEngine against a real PostgreSQL.

Zones are rows of ``airspace_zones`` (written by the store, as the API and the start-up file do); the
fleet is fed like the bridge feeds it (positions and drone telemetry), and the stored events are read
back from the ``events`` table.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import shapely

from geo.local_frame import LocalFrame
from tracker.config import EventSettings
from tracker.events import EventEngine
from tracker.fleet import LiveFleet
from tracker.model import DroneTelemetry, Ping, Unit, UnitKind
from tracker.store.airspace import StoredZone, insert_zones
from tracker.store.pool import open_pool

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
FRAME = LocalFrame(-77.03, -12.12)


def at(x: float, y: float) -> tuple[float, float]:
    lon, lat = FRAME.to_lonlat(x, y)
    return float(lat), float(lon)


def square(zid: str, x0: float, size: float, floor: float = 0.0, ceiling: float = math.inf) -> StoredZone:
    lon, lat = FRAME.to_lonlat([x0, x0 + size, x0 + size, x0, x0], [0, 0, size, size, 0])
    ring = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    geometry = {"type": "Polygon", "coordinates": [ring]}
    return StoredZone(zid, f"Zone {zid}", "heliport", floor, ceiling, geometry)


class Flight:
    """Feeds one unit's fixes and altitudes into the fleet, one second apart."""

    def __init__(self, fleet: LiveFleet, unit_id: str) -> None:
        self.fleet, self.unit_id, self.i = fleet, unit_id, 0

    def fly(
        self, x: float, y: float, alt: float | None, *, docked: bool | None = None, fix: bool = True
    ) -> None:
        self.i += 1
        ts = T0 + timedelta(seconds=self.i)
        lat, lon = at(x, y)
        pings = [Ping(self.unit_id, ts, lat, lon)] if fix else []
        tele = [DroneTelemetry(self.unit_id, ts, alt_takeoff_m=alt, docked=docked)]
        self.fleet.apply(pings, telemetry=tele)


def airspace_rows(pg_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            "SELECT type, unit_id, detail->>'zone_id', detail->>'rule', (detail->>'alt_m')::float8"
            " FROM events WHERE type LIKE 'airspace_%' ORDER BY event_id"
        ).fetchall()


async def store(pg_url: str, zones: list[StoredZone], replace: bool = False) -> None:
    pool = await open_pool(pg_url, max_size=1)
    try:
        await insert_zones(pool, zones, replace=replace)
    finally:
        await pool.close()


async def test_drone_entering_and_leaving_footprint_and_band(pg_url: str) -> None:
    fleet = LiveFleet()
    fleet.load([Unit("dr-1", UnitKind.DRONE), Unit("mov-1", UnitKind.PATROL_CAR)], [])
    # H1: ground to 60 m over a 400 m square; M1: from 90 m up over the next square.
    await store(pg_url, [square("H1", 0, 400, 0.0, 60.0), square("M1", 1000, 400, 90.0)])
    engine = EventEngine(pg_url, fleet, EventSettings(publish_mqtt=False))
    await engine.start()
    try:
        assert engine.stats.airspace_zones == 2
        d = Flight(fleet, "dr-1")
        d.fly(-300, 200, 40.0)  # outside
        d.fly(-5, 200, 40.0)  # inside by 5 m only: within the 10 m margin, no event yet
        assert engine.in_airspace("dr-1") == []
        d.fly(200, 200, 40.0)  # deep inside: entered
        assert engine.in_airspace("dr-1") == ["H1"]
        d.fly(200, 200, 62.0)  # 2 m over the ceiling: within the vertical margin, still inside
        d.fly(200, 200, 80.0)  # well over the ceiling (telemetry only would do): exited
        assert engine.in_airspace("dr-1") == []
        d.fly(1200, 200, 80.0)  # under M1's floor: nothing
        d.fly(1200, 200, 100.0)  # climbs into M1
        d.fly(1200, 200, 100.0, docked=True)  # reported docked (on a roof inside the footprint): out
        # A patrol car crossing H1 is no aircraft: no airspace events.
        c = Flight(fleet, "mov-1")
        c.fly(-300, 200, None)
        c.fly(200, 200, None)
        await engine.flush()
    finally:
        await engine.stop()
    assert airspace_rows(pg_url) == [
        ("airspace_entered", "dr-1", "H1", "margin", 40.0),
        ("airspace_exited", "dr-1", "H1", "margin", 80.0),
        ("airspace_entered", "dr-1", "M1", "margin", 100.0),
        ("airspace_exited", "dr-1", "M1", "margin", 100.0),
    ]


async def test_start_is_silent_and_a_replaced_zone_is_reseeded(pg_url: str) -> None:
    fleet = LiveFleet()
    fleet.load([Unit("dr-1", UnitKind.DRONE), Unit("dr-2", UnitKind.DRONE)], [])
    Flight(fleet, "dr-1").fly(200, 200, 30.0)  # inside H1 before anyone watches
    d2 = Flight(fleet, "dr-2")
    d2.fly(200, 200, None)  # no altitude known: the footprint alone decides
    await store(pg_url, [square("H1", 0, 400, 0.0, 60.0)])
    engine = EventEngine(pg_url, fleet, EventSettings(publish_mqtt=False))
    await engine.start()
    try:
        assert engine.in_airspace("dr-1") == ["H1"] and engine.in_airspace("dr-2") == ["H1"]
        # The zone is lowered under the drones (replaced through the store, then re-indexed): silently out.
        await store(pg_url, [square("H1", 0, 400, 0.0, 20.0)], replace=True)
        await engine.reload_airspace()
        assert engine.in_airspace("dr-1") == [] and engine.in_airspace("dr-2") == ["H1"]
        d2.fly(600, 200, None)
        await engine.flush()
    finally:
        await engine.stop()
    assert airspace_rows(pg_url) == [("airspace_exited", "dr-2", "H1", "margin", None)]


async def test_dwell_inside_the_margin_enters(pg_url: str) -> None:
    fleet = LiveFleet()
    fleet.load([Unit("dr-1", UnitKind.DRONE)], [])
    await store(pg_url, [square("H1", 0, 400, 30.0, 60.0)])
    engine = EventEngine(pg_url, fleet, EventSettings(publish_mqtt=False), dwell_fixes=3)
    await engine.start()
    try:
        d = Flight(fleet, "dr-1")
        d.fly(200, 200, 10.0)  # deep under the floor
        for _ in range(3):
            d.fly(200, 200, 32.0)  # 2 m over the floor: shallow, enters on the third fix
        await engine.flush()
    finally:
        await engine.stop()
    assert airspace_rows(pg_url) == [("airspace_entered", "dr-1", "H1", "dwell", 32.0)]
    # The event's zone is the one Shapely says holds the fix.
    footprint = shapely.geometry.shape(square("H1", 0, 400).geometry)
    lat, lon = at(200, 200)
    assert footprint.contains(shapely.Point(lon, lat))
