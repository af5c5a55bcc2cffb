"""The bridge end to end on a real Mosquitto and PostgreSQL: what goes in is what is stored."""

from __future__ import annotations

import queue
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from mqtt_bridge.ackclient import AckClient, InboundMessage
from mqtt_bridge.bridge import DEAD_LETTER_TOPIC
from tests.mqtt_bridge.ingest_rig import WAIT_S, IngestRig, Sent, recent_start, track_messages
from tracker.config import parse_mqtt_url
from tracker.model import UnitKind, UnitStatus

pytestmark = pytest.mark.integration


def test_every_ping_is_stored_once_with_latest_and_track(ingest: IngestRig) -> None:
    cars = ingest.native_units(8)
    phones = ingest.owntracks_units(4)
    per_unit = 25
    sent = track_messages(cars, phones, per_unit, recent_start(per_unit))
    bridge = ingest.bridge()
    assert all(ingest.publish(sent).acked)
    ingest.wait_rows(len(sent))
    ingest.wait_for("every message acknowledged", lambda: bridge.stats().acked == len(sent))

    keys = ingest.position_keys()
    assert len(keys) == len(sent)
    assert set(keys) == {(m.unit_id, m.ts) for m in sent}

    # unit_latest and the live fleet hold each unit's last fix; the track is the fixes in order.
    last = {m.unit_id: m for m in sent}  # the stream is in time order per unit
    latest = {
        u: (ts, lat, lon) for u, ts, lat, lon in ingest.query("SELECT unit_id, ts, lat, lon FROM unit_latest")
    }
    assert latest == {u: (m.ts, m.lat, m.lon) for u, m in last.items()}

    # The fleet is updated right after the acknowledgements, so it may lag them a moment.
    def fleet_shows_last_fixes() -> bool:
        for unit_id, m in last.items():
            state = bridge.fleet.get(unit_id)
            if state is None or state.fix is None:
                return False
            if (state.fix.ts, state.fix.lat, state.fix.lon) != (m.ts, m.lat, m.lon):
                return False
        return True

    ingest.wait_for("the live fleet shows every unit's last fix", fleet_shows_last_fixes)
    phone = next(iter(phones))
    track = ingest.query("SELECT ts, lat, lon, source FROM positions WHERE unit_id = %s ORDER BY ts", phone)
    assert [(t, lat, lon) for t, lat, lon, _ in track] == [
        (m.ts, m.lat, m.lon) for m in sent if m.unit_id == phone
    ]
    assert {source for *_, source in track} == {1}  # owntracks

    stats = bridge.stats()
    assert (stats.received, stats.stored, stats.duplicates, stats.dead_letters) == (
        len(sent),
        len(sent),
        0,
        0,
    )
    assert stats.in_flight == 0


def test_status_topic_updates_the_unit(ingest: IngestRig) -> None:
    (car,) = ingest.native_units(1)
    bridge = ingest.bridge()
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    body = orjson.dumps({"status": "dispatched", "ts": ts.isoformat()})
    assert all(ingest.publish([Sent(f"serenazgo/units/{car}/status", body, car, ts, 0, 0)]).acked)
    ingest.wait_for("the status", lambda: ingest.query("SELECT status FROM units")[0][0] == "dispatched")
    assert ingest.query("SELECT status_ts FROM units")[0][0] == ts
    ingest.wait_for(
        "the live fleet's status",
        lambda: (s := bridge.fleet.get(car)) is not None and s.status is UnitStatus.DISPATCHED,
    )


def unknown_senders(ingest: IngestRig) -> list[Sent]:
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    native = ingest.names.unit("ghost")
    return [
        Sent(
            f"serenazgo/units/{native}/position",
            orjson.dumps({"ts": int(ts.timestamp() * 1000), "lat": -12.1, "lon": -77.0}),
            native,
            ts,
            -12.1,
            -77.0,
        ),
        Sent(
            f"owntracks/{ingest.names.base}/stranger",
            orjson.dumps({"_type": "location", "tst": int(ts.timestamp()), "lat": -12.2, "lon": -77.1}),
            f"ot.{ingest.names.base}.stranger",
            ts,
            -12.2,
            -77.1,
        ),
    ]


def watch_dead_letters(ingest: IngestRig) -> queue.Queue[InboundMessage]:
    inbox: queue.Queue[InboundMessage] = queue.Queue()
    watcher = AckClient(
        parse_mqtt_url(ingest.broker.url), ingest.names.client("watch"), [DEAD_LETTER_TOPIC], inbox.put
    )
    watcher.start()
    assert watcher.wait_connected(WAIT_S)
    return inbox


def test_unknown_units_are_dead_letters_when_auto_register_is_off(ingest: IngestRig) -> None:
    dead_letters = watch_dead_letters(ingest)
    bridge = ingest.bridge(auto_register=False)
    sent = unknown_senders(ingest)
    assert all(ingest.publish(sent).acked)
    ingest.wait_for("two dead letters", lambda: ingest.query("SELECT count(*) FROM dead_letters")[0][0] == 2)
    rows = ingest.query("SELECT topic, payload, reason FROM dead_letters ORDER BY topic")
    assert sorted((t, bytes(p), r) for t, p, r in rows) == sorted(
        (m.topic, m.payload, "unknown_unit") for m in sent
    )
    assert ingest.query("SELECT count(*) FROM positions")[0][0] == 0
    assert ingest.query("SELECT count(*) FROM units")[0][0] == 0
    announced = [orjson.loads(dead_letters.get(timeout=WAIT_S).payload) for _ in sent]
    assert sorted(a["topic"] for a in announced) == sorted(m.topic for m in sent)
    assert {a["reason"] for a in announced} == {"unknown_unit"}
    assert bridge.stats().dead_letters == 2


def test_unknown_units_are_registered_when_auto_register_is_on(ingest: IngestRig) -> None:
    bridge = ingest.bridge(auto_register=True)
    sent = unknown_senders(ingest)
    assert all(ingest.publish(sent).acked)
    ingest.wait_rows(2)
    assert set(ingest.position_keys()) == {(m.unit_id, m.ts) for m in sent}
    units = dict(ingest.query("SELECT unit_id, external_ids FROM units"))
    assert units == {sent[0].unit_id: {}, sent[1].unit_id: {"owntracks": sent[1].topic}}
    assert ingest.query("SELECT count(*) FROM dead_letters")[0][0] == 0

    def shown(unit_id: str, lat: float) -> bool:
        state = bridge.fleet.get(unit_id)
        return state is not None and state.fix is not None and state.fix.lat == lat

    for m in sent:
        ingest.wait_for(f"{m.unit_id} in the live fleet", lambda m=m: shown(m.unit_id, m.lat))


def test_hostile_messages_become_dead_letters_and_ingest_goes_on(ingest: IngestRig) -> None:
    (car,) = ingest.native_units(1)
    bridge = ingest.bridge(max_payload_bytes=1024)
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    ms = int(now.timestamp() * 1000)
    position = f"serenazgo/units/{car}/position"
    hostile = [
        (position, b"{not json", "invalid_json"),
        (position, b"\xff\xfe\x00garbage", None),
        (position, b"[1, 2, 3]", None),
        (position, orjson.dumps({"lat": "x", "lon": 1}), "wrong_type"),
        (position, orjson.dumps({"ts": ms, "lat": 91.0, "lon": 0.5}), None),
        (position, b'{"ts": 1, "lat": 1e400, "lon": 2}', None),
        (position, b" " * 2000, "payload_too_large"),
        ("serenazgo/units/bad id/position", orjson.dumps({"lat": 1.0, "lon": 2.0}), "invalid_unit_id"),
        (f"owntracks/{ingest.names.base}/phone", orjson.dumps({"_type": "surprise"}), None),
        (f"serenazgo/units/{car}/status", orjson.dumps({"status": "asleep"}), None),
    ]
    good = Sent(position, orjson.dumps({"ts": ms, "lat": -12.1, "lon": -77.0}), car, now, -12.1, -77.0)
    messages = [Sent(t, p, car, now, 0, 0) for t, p, _ in hostile] + [good]
    assert all(ingest.publish(messages).acked)
    ingest.wait_rows(1)
    ingest.wait_for("every message settled", lambda: bridge.stats().acked == len(messages))
    rows = ingest.query("SELECT topic, payload, reason FROM dead_letters")
    assert sorted((t, bytes(p)) for t, p, _ in rows) == sorted((t, p[:4096]) for t, p, _ in hostile)
    by_payload = {bytes(p): r for _, p, r in rows}
    for _, payload, reason in hostile:
        if reason is not None:
            assert by_payload[payload[:4096]] == reason
    assert ingest.position_keys() == [(car, now)]
    assert bridge.running and bridge.stats().dead_letters == len(hostile)


def test_owntracks_last_will_marks_the_unit_disconnected(ingest: IngestRig) -> None:
    phones = ingest.owntracks_units(1)
    ((unit_id, topic),) = phones.items()
    bridge = ingest.bridge()
    sent = track_messages([], phones, 1, recent_start(1))
    lwt = Sent(
        topic, orjson.dumps({"_type": "lwt", "tst": int(sent[0].ts.timestamp())}), unit_id, sent[0].ts, 0, 0
    )
    assert all(ingest.publish(sent).acked)
    ingest.wait_rows(1)
    ingest.wait_for("connected", lambda: (s := bridge.fleet.get(unit_id)) is not None and s.connected is True)
    assert all(ingest.publish([lwt]).acked)
    ingest.wait_for(
        "the last will", lambda: (s := bridge.fleet.get(unit_id)) is not None and s.connected is False
    )
    assert ingest.query("SELECT count(*) FROM dead_letters")[0][0] == 0


def test_drone_topic_stores_telemetry_and_updates_the_fleet(ingest: IngestRig) -> None:
    (drone,) = ingest.native_units(1, kind=UnitKind.DRONE)
    bridge = ingest.bridge()
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=20)
    body = orjson.dumps(
        {"ts": ts.isoformat(), "alt_takeoff_m": 80.0, "battery_pct": 55.0, "flight_mode": "returning_home"}
    )
    bad = orjson.dumps({"ts": ts.isoformat(), "battery_pct": 400})
    topic = f"serenazgo/units/{drone}/drone"
    assert all(ingest.publish([Sent(topic, body, drone, ts, 0, 0), Sent(topic, bad, drone, ts, 0, 0)]).acked)
    ingest.wait_for("the telemetry row", lambda: bool(ingest.query("SELECT 1 FROM drone_telemetry")))
    rows = ingest.query("SELECT unit_id, ts, alt_takeoff_m, battery_pct, flight_mode FROM drone_telemetry")
    assert rows == [(drone, ts, 80.0, 55.0, "returning_home")]
    ingest.wait_for("the dead letter", lambda: bool(ingest.query("SELECT 1 FROM dead_letters")))
    assert ingest.query("SELECT reason FROM dead_letters") == [("battery_pct_out_of_range",)]
    ingest.wait_for(
        "the fleet's drone state",
        lambda: (
            (s := bridge.fleet.get(drone)) is not None
            and s.drone is not None
            and s.drone.flight_mode == "returning_home"
        ),
    )
