"""The demo's dispatch loop on a real PostgreSQL: simulated incidents become real, units obey assignments.

The simulation runs on its own clock, advanced by the test; its fixes are
stored by the real writer and applied to the LiveFleet as the bridge does (the
MQTT path itself is covered by the bridge tests), so the incident service sees
positions and detects arrivals exactly as in production.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from pyproj import Geod

from api.demo_dispatch import DemoDispatch
from geo.area import Area
from mqtt_bridge.simulator import register_units
from tracker.area_file import load_area
from tracker.batch import IngestBatch
from tracker.config import DEFAULT_DISTRICTS_FILE, DispatchSettings
from tracker.dispatch import Candidate, Dispatcher
from tracker.fleet import LiveFleet
from tracker.incidents import IncidentService, IncidentStatus
from tracker.model import Ping, StatusUpdate, Unit, UnitStatus
from tracker.simulation import FleetMix, FleetSimulation
from tracker.store.writer import PositionWriter


def miraflores() -> Area:
    return load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")


async def test_simulated_incidents_are_assigned_reached_and_closed(pg_url: str) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    sim = FleetSimulation(
        miraflores(), FleetMix(foot=4, cars=6, motorcycles=2, drones=0), seed=7, start=start,
        bad_fix_rate=0.0, incidents_per_hour=240.0, external_dispatch=True,
    )  # fmt: skip
    created, _ = register_units(pg_url, sim.units)
    fleet = LiveFleet()
    fleet.load([Unit(u.unit_id, u.kind, u.callsign, u.sector, u.capabilities) for u in created], [])
    seen: list[dict[str, object]] = []
    clock = [0.0]
    with Dispatcher(fleet) as dispatcher, PositionWriter(pg_url) as writer:

        def recommend(lat: float, lon: float, k: int) -> list[Candidate]:
            return dispatcher.nearest(lat, lon, k, now=sim.now())  # fix ages on the simulation's clock

        def remember(_kind: str, payload: dict[str, Any]) -> None:
            seen.append(payload)

        demo = DemoDispatch(sim, remember, recommend, clock=lambda: clock[0])
        service = IncidentService(pg_url, fleet, DispatchSettings(), recommend, demo.feed, clock=sim.now)
        await service.start()
        demo.incidents = service
        demo.bind()
        try:
            # 40 simulated minutes, two seconds at a time; the automatic colleague's clock is the sim's.
            for _ in range(40 * 30):
                fixes = sim.advance_to(sim.now() + timedelta(seconds=2))
                events = sim.take_status_events()
                batch = IngestBatch(
                    [Ping(f.unit.unit_id, f.ts or f.true_ts, f.lat, f.lon, speed=f.speed) for f in fixes],
                    statuses=[(e.unit.unit_id, StatusUpdate(e.status, e.ts)) for e in events],
                )
                writer.write(batch)
                fleet.apply(batch.pings, batch.statuses)
                clock[0] = sim.t
                await demo.tick()
                await service.drain()
            page = await service.list(status="all", limit=200)
        finally:
            await service.stop()
    incidents = page.items
    assert demo.created == len(incidents) > 0
    assert demo.auto_assigned > 0
    arrived = [i for i in incidents if i.first_arrival_at is not None]
    assert arrived, "no simulated unit reached its incident"
    geod = Geod(ellps="WGS84")
    with psycopg.connect(pg_url) as conn:
        for incident in arrived:
            a = next(a for a in incident.assignments if a.arrived_at is not None)
            # Arrival is timed at the stored fix that came within the radius (75 m) of the scene.
            row = conn.execute(
                "SELECT lat, lon FROM positions WHERE unit_id = %s AND ts = %s", [a.unit_id, a.arrived_at]
            ).fetchone()
            assert row is not None
            _, _, metres = geod.inv(row[1], row[0], incident.lon, incident.lat)
            assert metres <= DispatchSettings().arrival_radius_m * 1.01
    closed = [i for i in incidents if i.status is IncidentStatus.CLOSED]
    assert closed and demo.closed == len(closed)
    # A closed incident's unit is free again, in the fleet and in the simulation.
    for incident in closed:
        for a in incident.assignments:
            if a.unit_id not in service.watched():
                assert fleet.get(a.unit_id).status is UnitStatus.AVAILABLE  # type: ignore[union-attr]
    assert any(p.get("status") == "on_scene" for p in seen)
