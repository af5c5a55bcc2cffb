"""The event engine with drone alerts against a real PostgreSQL: stored, published and fed like the others."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from pyproj import Geod

from drones.alerts import DroneAlerts
from drones.endurance import SquadronModel
from geo.docks import PROFILES, Dock
from tracker.config import DroneSettings, EventSettings
from tracker.events import EventEngine
from tracker.fleet import LiveFleet
from tracker.model import DroneTelemetry, Ping, Unit, UnitKind

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
GEOD = Geod(ellps="WGS84")
DOCK = Dock("dock-1", "Palacio", -12.1197, -77.0297, PROFILES["m3td"], profile_key="m3td", aircraft_id="dr-1")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_drone_alerts_are_stored_published_and_fed(pg_url: str) -> None:
    fleet = LiveFleet()
    fleet.load([Unit("dr-1", UnitKind.DRONE), Unit("car-1", UnitKind.PATROL_CAR)], [])
    clock = Clock(T0)
    published: list[str] = []
    fed: list[dict[str, Any]] = []
    alerts = DroneAlerts(DroneSettings(), SquadronModel(PROFILES, "m3td", {}, [DOCK], 30.0))
    engine = EventEngine(
        pg_url,
        fleet,
        EventSettings(),
        publish=lambda topic, payload: published.append(topic) or True,
        feed=lambda kind, data: fed.append(data),
        clock=clock,
        drones=alerts,
    )
    await engine.start()
    try:

        def fly() -> None:
            # The ingest writer thread's part: out from the dock at cruise, climbing past the limit.
            usable = PROFILES["m3td"].usable_s
            for t in range(0, 800, 2):
                clock.now = T0 + timedelta(seconds=t)
                lon, lat, _ = GEOD.fwd(DOCK.lon, DOCK.lat, 45.0, 15.0 * t)
                report = DroneTelemetry(
                    "dr-1", clock.now, battery_pct=100.0 - 100.0 * t / usable,
                    alt_takeoff_m=min(t / 2.0, 130.0), flight_mode="mission",
                )  # fmt: skip
                fleet.apply(pings=[Ping("dr-1", clock.now, lat, lon)], telemetry=[report])

        await asyncio.to_thread(fly)
        clock.now = T0 + timedelta(seconds=798 + 31)  # silence after the last report
        swept = engine.sweep_once()
        # (the drone is also stale by now: a freshness event of its own, beside the drone alert)
        assert [str(e.type) for e in swept if e.type.startswith("drone_")] == ["drone_telemetry_lost"]
        await engine.flush()
        assert engine.drone_alerts("dr-1") == [
            "drone_altitude_exceeded", "drone_return_required", "drone_telemetry_lost"
        ]  # fmt: skip
    finally:
        await engine.stop()

    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT type, unit_id, ts, detail FROM events"
            " WHERE unit_id = 'dr-1' AND type LIKE 'drone%' ORDER BY event_id"
        ).fetchall()
    assert [(r[0], r[2]) for r in rows] == [
        ("drone_altitude_exceeded", T0 + timedelta(seconds=242)),  # the first report above 120 m (121 m)
        ("drone_return_required", T0 + timedelta(seconds=744)),
        ("drone_telemetry_lost", T0 + timedelta(seconds=829)),
    ]
    assert rows[1][3]["threshold_s"] == 60.0 and rows[1][3]["home_source"] == "dock"
    drone_topics = [t for t in published if t.startswith("serenazgo/events/drone_")]
    assert drone_topics == [f"serenazgo/events/{r[0]}" for r in rows]
    assert [d["type"] for d in fed if d["type"].startswith("drone_")] == [r[0] for r in rows]
