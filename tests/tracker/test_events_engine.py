"""EventEngine against a real PostgreSQL and a real Mosquitto.

Events stored in ``events``, published on ``serenazgo/events/{type}`` (received by a real
subscriber), fed to the live feed; silent start; drain on stop; geofences from a file.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from geo.local_frame import LocalFrame
from mqtt_bridge.ackclient import AckClient
from tracker.config import EventSettings, parse_mqtt_url
from tracker.errors import ConfigError
from tracker.events import Event, EventEngine, EventType
from tracker.fleet import LiveFleet
from tracker.model import Ping, Unit, UnitKind
from tracker.store.geofences import DuplicateGeofenceError, GeofenceNotFoundError

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
FRAME = LocalFrame(-77.03, -12.12)
WAIT_S = 20.0


def at(x: float, y: float) -> tuple[float, float]:
    lon, lat = FRAME.to_lonlat(x, y)
    return float(lat), float(lon)


def square_feature(gid: str, x0: float, y0: float, size: float, **props: Any) -> dict[str, Any]:
    lon, lat = FRAME.to_lonlat([x0, x0 + size, x0 + size, x0, x0], [y0, y0, y0 + size, y0 + size, y0])
    ring = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    return {
        "type": "Feature",
        "id": gid,
        "properties": {"name": f"Sector {gid}", "kind": "sector", **props},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


class Clock:
    """A controlled clock: the engine's freshness decisions use ``now``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Subscriber:
    """A real MQTT subscriber on serenazgo/events/#."""

    def __init__(self, port: int, client_id: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("serenazgo/events/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT_S), "the subscriber could not subscribe"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, json.loads(msg.payload)))
            self._cond.notify_all()

    def wait_for(self, n: int) -> list[tuple[str, dict[str, Any]]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.messages) >= n, WAIT_S), self.messages
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def subscriber(mqtt_broker, test_names) -> Iterator[Subscriber]:
    sub = Subscriber(mqtt_broker.port, test_names.client("sub"))
    yield sub
    sub.close()


@pytest.fixture
def publisher(mqtt_broker, test_names) -> Iterator[AckClient]:
    """The same best-effort publisher the bridge has (AckClient.publish)."""
    client = AckClient(
        parse_mqtt_url(mqtt_broker.url),
        test_names.client("pub"),
        [test_names.topic("unused")],
        lambda m: None,
    )
    client.start()
    assert client.wait_connected(WAIT_S)
    yield client
    client.stop()


def rows(pg_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            "SELECT event_id, type, unit_id, geofence_id, ts, detail FROM events ORDER BY event_id"
        ).fetchall()


async def test_events_are_stored_published_and_fed(pg_url, subscriber, publisher) -> None:
    fleet = LiveFleet()
    fleet.load([Unit("mov-1", UnitKind.PATROL_CAR), Unit("ser-1", UnitKind.FOOT)], [])
    lat, lon = at(200, 200)
    fleet.apply([Ping("ser-1", T0, lat, lon)])  # already inside S1 before anyone watches
    clock = Clock(T0)
    fed: list[tuple[str, dict[str, Any]]] = []
    engine = EventEngine(
        pg_url,
        fleet,
        EventSettings(),
        publish=publisher.publish,
        feed=lambda kind, data: fed.append((kind, data)),
        clock=clock,
    )
    await engine.start()
    try:
        stored = await engine.create_geofence(square_feature("S1", 0, 0, 400), created_by="test")
        assert stored.created_by == "test"
        assert engine.inside("ser-1") == ["S1"]  # silently

        def drive() -> None:
            # The ingest writer thread's part: one batch per fix, the car crossing S1 west to east
            # while its battery runs down.
            for i in range(90):
                clock.now = T0 + timedelta(seconds=i)
                lat, lon = at(-200 + 10 * i, 200)
                fleet.apply([Ping("mov-1", clock.now, lat, lon, battery=60 - i)])

        await asyncio.to_thread(drive)
        clock.now = T0 + timedelta(seconds=130)  # the sereno's fix is 130 s old: stale
        swept = engine.sweep_once()
        assert [(e.type, e.unit_id) for e in swept] == [(EventType.UNIT_STALE, "ser-1")]
        await engine.flush()
    finally:
        await engine.stop()

    expected = [
        ("geofence_enter", "mov-1", "S1"),
        ("battery_low", "mov-1", None),
        ("geofence_exit", "mov-1", "S1"),
        ("unit_stale", "ser-1", None),
    ]
    db = rows(pg_url)
    assert [(r[1], r[2], r[3]) for r in db] == expected
    assert db[0][4] == T0 + timedelta(seconds=22)  # the first fix 15 m or more inside: x = 20 m
    assert db[0][5]["name"] == "Sector S1"
    assert db[1][5]["battery"] == 15
    ids = [r[0] for r in db]

    received = subscriber.wait_for(len(expected))
    assert [t for t, _ in received] == [f"serenazgo/events/{t}" for t, _, _ in expected]
    assert [m["event_id"] for _, m in received] == ids
    assert [(m["type"], m["unit_id"], m["geofence_id"]) for _, m in received] == expected
    assert [k for k, _ in fed] == ["event"] * 4
    assert [d["event_id"] for _, d in fed] == ids
    assert engine.stats.stored == engine.stats.published == 4
    assert engine.stats.queued == 0

    # Listing through the engine's own queries (a fresh engine on the same database).
    reader = EventEngine(pg_url, LiveFleet(), EventSettings(publish_mqtt=False))
    await reader.start()
    try:
        page = await reader.list_events(limit=2)
        assert [e.event_id for e in page] == ids[:2]
        rest = await reader.list_events(after_id=page[-1].event_id)
        assert [e.event_id for e in rest] == ids[2:]
        assert [e.type for e in await reader.list_events(types=["unit_stale"])] == ["unit_stale"]
        assert [e.event_id for e in await reader.list_events(unit_id="mov-1", geofence_id="S1")] == [
            ids[0],
            ids[2],
        ]
        late = await reader.list_events(since=T0 + timedelta(seconds=50))
        assert [e.type for e in late] == ["geofence_exit", "unit_stale"]
        assert isinstance(late[0], Event) and late[0].recorded_at is not None
        assert late[0].to_json()["ts"] == (T0 + timedelta(seconds=62)).isoformat()
    finally:
        await reader.stop()


async def test_stop_drains_everything_queued(pg_url) -> None:
    fleet = LiveFleet()
    published: list[str] = []
    engine = EventEngine(pg_url, fleet, EventSettings(), publish=lambda t, p: published.append(t) or True)
    await engine.start()

    def emit_many() -> None:  # from another thread, as the incident service or the writer thread would
        for i in range(50):
            engine.emit(
                [
                    Event(EventType.UNIT_ARRIVED, T0, f"u{i}-{j}", incident_id=i, detail={"j": j})
                    for j in range(10)
                ]
            )

    await asyncio.to_thread(emit_many)
    await engine.stop()
    assert len(rows(pg_url)) == 500
    assert len(published) == 500
    assert set(published) == {"serenazgo/events/unit_arrived"}
    engine.emit([Event(EventType.UNIT_ARRIVED, T0, "late")])  # after stop: dropped, counted, no crash
    assert engine.stats.dropped == 1


async def test_geofences_file_loaded_at_start_and_managed(pg_url, tmp_path: Path) -> None:
    lat, lon = at(50, 50)
    fleet = LiveFleet()
    fleet.load([Unit("ser-1", UnitKind.FOOT)], [Ping("ser-1", T0, lat, lon)])
    path = tmp_path / "geofences.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    square_feature("A", 0, 0, 100),
                    square_feature("B", 1000, 0, 100, kind="restricted"),
                ],
            }
        )
    )
    engine = EventEngine(pg_url, fleet, EventSettings(publish_mqtt=False), geofences_file=path)
    await engine.start()
    try:
        assert engine.inside("ser-1") == ["A"]  # computed at start, no event
        assert [g.geofence_id for g in await engine.list_geofences()] == ["A", "B"]
        assert (await engine.get_geofence("B")).kind == "restricted"
        with pytest.raises(DuplicateGeofenceError, match="already exists"):
            await engine.create_geofence(square_feature("A", 0, 0, 10))
        await engine.delete_geofence("A")
        assert engine.inside("ser-1") == []
        assert "A" not in engine.index
        with pytest.raises(GeofenceNotFoundError):
            await engine.delete_geofence("A")
        await engine.create_geofence(square_feature("A2", 0, 0, 100))
        assert engine.inside("ser-1") == ["A2"]
        await engine.flush()
    finally:
        await engine.stop()
    assert rows(pg_url) == []

    # A second start with the same file replaces its geofences by id; a bad file names what to fix.
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [square_feature("A", 0, 0, 200)]}))
    again = EventEngine(pg_url, fleet, EventSettings(), geofences_file=path)
    await again.start()
    try:
        assert sorted(again.index.ids) == ["A", "A2", "B"]
        assert again.index.area("A").area > 3 * again.index.area("B").area
    finally:
        await again.stop()
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "id": "x"}]}))
    with pytest.raises(ConfigError, match="feature 0: the feature has no geometry"):
        await EventEngine(pg_url, fleet, EventSettings(), geofences_file=bad).start()
    with pytest.raises(ConfigError, match="not found"):
        await EventEngine(pg_url, fleet, EventSettings(), geofences_file=tmp_path / "nope.json").start()


async def test_ingest_never_waits_for_the_database(pg_url) -> None:
    fleet = LiveFleet()
    fleet.load([Unit("ser-1", UnitKind.FOOT)], [])
    engine = EventEngine(pg_url, fleet, EventSettings(publish_mqtt=False))
    await engine.start()
    try:
        # Another session holds the events table: every INSERT of the engine waits behind it.
        async with await psycopg.AsyncConnection.connect(pg_url) as blocker:
            await blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")

            def drive() -> None:  # the writer thread: battery low, charged, low again... 20 times
                for i in range(40):
                    lat, lon = at(0, 0)
                    fleet.apply(
                        [Ping("ser-1", T0 + timedelta(seconds=i), lat, lon, battery=10 if i % 2 == 0 else 50)]
                    )

            await asyncio.to_thread(drive)  # returns although nothing can be stored
            assert engine.stats.emitted == 20
            assert engine.stats.stored == 0
            await blocker.rollback()  # release the table
        await engine.flush()
        assert engine.stats.stored == 20
        assert [r[1] for r in rows(pg_url)] == ["battery_low"] * 20
    finally:
        await engine.stop()
