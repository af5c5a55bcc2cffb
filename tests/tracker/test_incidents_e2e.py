"""An incident's whole life on real Mosquitto, PostgreSQL and the real Bridge.

A unit is sent to an incident, reports en_route on its status topic, drives
there publishing MQTT pings, is detected on scene from its positions, and the
incident is closed: every step is checked in the database, the LiveFleet and
the live feed, and the response time then shows in the statistics.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from psycopg_pool import AsyncConnectionPool

from geo.distance import haversine_m
from mqtt_bridge.ackclient import AckClient, InboundMessage
from tests.mqtt_bridge.ingest_rig import WAIT_S, IngestRig, Sent
from tests.tracker.incidents_rig import SCENE, offset, wait_for
from tracker.config import DispatchSettings, parse_mqtt_url
from tracker.fleet import LiveFleet, UnitState
from tracker.incidents import Channel, IncidentCategory, IncidentService, IncidentStatus
from tracker.model import Unit, UnitKind, UnitStatus
from tracker.store.pool import open_pool

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(pg_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    p = await open_pool(pg_url, max_size=4)
    try:
        yield p
    finally:
        await p.close()


def position(unit_id: str, ts: datetime, lat: float, lon: float) -> Sent:
    body = {"ts": int(ts.timestamp() * 1000), "lat": lat, "lon": lon, "accuracy": 5.0, "speed": 12.0}
    return Sent(f"serenazgo/units/{unit_id}/position", orjson.dumps(body), unit_id, ts, lat, lon)


def status(unit_id: str, ts: datetime, value: UnitStatus) -> Sent:
    body = {"status": str(value), "ts": int(ts.timestamp() * 1000)}
    return Sent(f"serenazgo/units/{unit_id}/status", orjson.dumps(body), unit_id, ts, 0.0, 0.0)


async def publish(ingest: IngestRig, messages: list[Sent]) -> None:
    # paho blocks while it waits for the PUBACKs; the loop keeps recording arrivals meanwhile.
    result = await asyncio.to_thread(ingest.publish, messages)
    assert all(result.acked)


async def test_incident_lifecycle_over_mqtt(ingest: IngestRig, pool: AsyncConnectionPool[Any]) -> None:
    car = ingest.names.unit("car")
    other = ingest.names.unit("other")
    ingest.add_units([Unit(car, UnitKind.PATROL_CAR), Unit(other, UnitKind.PATROL_CAR)])
    bridge = ingest.bridge()
    fleet = bridge.fleet
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    far = offset(*SCENE, 1200.0)
    await publish(ingest, [position(car, start, *far), position(other, start, *offset(*SCENE, -900.0))])
    await wait_for("both units in the live fleet", lambda: all((s := fleet.get(u)) is not None and s.fix
                                                               for u in (car, other)))  # fmt: skip

    events_out: queue.Queue[InboundMessage] = queue.Queue()
    watcher = AckClient(
        parse_mqtt_url(ingest.broker.url),
        ingest.names.client("events"),
        ["serenazgo/events/#"],
        events_out.put,
    )
    watcher.start()
    assert watcher.wait_connected(WAIT_S)
    feed: list[dict[str, Any]] = []

    def incidents_only(kind: str, data: dict[str, Any]) -> None:
        if kind == "incident":
            feed.append(data)

    service = IncidentService(pool, fleet, DispatchSettings(), feed=incidents_only, publish=watcher.publish)
    await service.start()
    try:
        incident, _ = await service.create(
            lat=SCENE[0], lon=SCENE[1], category=IncidentCategory.SEGURIDAD_CIUDADANA, channel=Channel.PHONE,
            priority=1, description="asalto en curso", operator="op-ana", origin="10.0.0.5",
        )  # fmt: skip
        iid = incident.incident_id
        _, assignment = await service.assign(iid, car, "op-ana", "10.0.0.5")
        assert ingest.query("SELECT status FROM units WHERE unit_id = %s", car) == [("dispatched",)]
        state = fleet.get(car)
        assert state is not None
        assert state.status is UnitStatus.DISPATCHED

        # The crew reports en_route on its status topic.
        t = assignment.assigned_at.replace(microsecond=0) + timedelta(seconds=1)
        await publish(ingest, [status(car, t, UnitStatus.EN_ROUTE)])
        await wait_for_status(service, iid, IncidentStatus.EN_ROUTE)

        # It drives south 60 m every 5 s (12 m/s) and stops 60 m short of the address, inside the 75 m radius.
        path = [
            position(car, t + timedelta(seconds=5 * k), *offset(*SCENE, 1200.0 - 60.0 * k))
            for k in range(1, 20)
        ]
        assert haversine_m(path[-1].lat, path[-1].lon, *SCENE) < 75.0
        assert haversine_m(path[-2].lat, path[-2].lon, *SCENE) > 75.0
        await publish(ingest, path)
        await wait_for_status(service, iid, IncidentStatus.ON_SCENE)
        await service.drain()

        arrived = await service.get(iid)
        arrival = path[-1].ts
        assert arrived.first_arrival_at == arrival
        assert arrived.assignments[0].arrived_at == arrival
        assert ingest.query("SELECT status FROM units WHERE unit_id = %s", car) == [("on_scene",)]
        await wait_for(
            "the fleet shows the unit on scene", lambda: shown(fleet, car).status is UnitStatus.ON_SCENE
        )
        [(etype, detail)] = ingest.query(
            "SELECT type, detail FROM events WHERE unit_id = %s AND incident_id = %s", car, iid
        )
        assert etype == "unit_arrived"
        assert detail["distance_m"] == pytest.approx(60.0, abs=0.5)
        assert [f["status"] for f in feed][-1] == "on_scene"
        announced = orjson.loads(events_out.get(timeout=WAIT_S).payload)
        assert (announced["type"], announced["unit_id"], announced["incident_id"]) == (
            "unit_arrived",
            car,
            iid,
        )
        assert announced["ts"] == arrival.isoformat()

        closed = await service.close(iid, "sospechoso retenido, entregado a la PNP", "op-ana", "10.0.0.5")
        assert closed.status is IncidentStatus.CLOSED
        assert ingest.query("SELECT status FROM units WHERE unit_id = %s", car) == [("available",)]
        state = fleet.get(car)
        assert state is not None
        assert state.status is UnitStatus.AVAILABLE
        assert service.watched() == {}
        # The unit's own reports keep flowing and nothing is recorded for a closed incident.
        await publish(ingest, [position(car, arrival + timedelta(seconds=30), *offset(*SCENE, 10.0))])
        last = arrival + timedelta(seconds=30)
        await wait_for("the last fix", lambda: (fix := shown(fleet, car).fix) is not None and fix.ts == last)
        await service.drain()
        assert ingest.query("SELECT count(*) FROM events")[0][0] == 1

        actions = ingest.query("SELECT action, actor FROM audit_log ORDER BY audit_id")
        assert actions == [("create", "op-ana"), ("assign", "op-ana"), ("en_route", f"unit:{car}"),
                           ("arrive", "system"), ("close", "op-ana")]  # fmt: skip
        assert [f["status"] for f in feed] == ["open", "assigned", "en_route", "on_scene", "closed"]

        stats = await service.stats(
            incident.created_at - timedelta(minutes=1), datetime.now(UTC) + timedelta(hours=1)
        )
        expected = (arrival - incident.created_at).total_seconds()
        assert stats.overall.count == 1
        assert stats.overall.arrived == 1
        assert stats.overall.response_p50_s == pytest.approx(expected, abs=1e-3)
        assert stats.groups["channel"]["phone"].response_p90_s == pytest.approx(expected, abs=1e-3)
        assert stats.groups["category"]["seguridad_ciudadana"].assign_p50_s == pytest.approx(
            (assignment.assigned_at - incident.created_at).total_seconds(), abs=1e-3
        )
    finally:
        await service.stop()
        watcher.stop()


def shown(fleet: LiveFleet, unit_id: str) -> UnitState:
    state = fleet.get(unit_id)
    assert state is not None
    return state


async def wait_for_status(service: IncidentService, iid: int, wanted: IncidentStatus) -> None:
    async def reached() -> bool:
        return (await service.get(iid)).status is wanted

    await wait_for(f"incident {iid} {wanted}", reached)
