"""Field incident reports over MQTT (``serenazgo/units/{id}/incident``) on a real Mosquitto and PostgreSQL.

Ground truth: the database's own rows (incidents, audit_log, dead_letters) and the
position the unit published before its report.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from tests.mqtt_bridge.ingest_rig import IngestRig, Sent
from tests.tracker.incidents_rig import wait_for
from tracker.batch import IngestBatch
from tracker.config import DispatchSettings
from tracker.incidents import IncidentService
from tracker.model import FieldReport
from tracker.store.writer import PositionWriter

pytestmark = pytest.mark.integration


def message(topic: str, body: dict[str, object] | bytes, unit: str = "", ts: datetime | None = None) -> Sent:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    return Sent(topic, payload, unit, ts or datetime.now(UTC), 0.0, 0.0)


def test_a_report_becomes_one_patrol_incident_at_the_units_position_even_redelivered(
    ingest: IngestRig,
) -> None:
    (car,) = ingest.native_units(1)
    bridge = ingest.bridge()
    told: list[int] = []
    bridge.on_incidents = told.extend
    seen = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=20)
    fix_ts = seen - timedelta(seconds=5)
    position = message(f"serenazgo/units/{car}/position", {"ts": fix_ts.isoformat(), "lat": -12.1219,
                                                           "lon": -77.0297}, car, fix_ts)  # fmt: skip
    report = message(
        f"serenazgo/units/{car}/incident",
        {"category": "seguridad_ciudadana", "priority": 2, "description": "pelea", "ts": seen.isoformat()},
        car,
        seen,
    )
    assert all(ingest.publish([position, report]).acked)
    ingest.wait_for("the incident", lambda: bool(ingest.query("SELECT 1 FROM incidents")))
    # Delivered again (a redelivery carries the same bytes): stored once.
    assert all(ingest.publish([report, report], role="again").acked)
    ingest.wait_for("every message settled", lambda: bridge.stats().acked == 4)
    rows = ingest.query(
        "SELECT incident_id, lat, lon, category, channel, priority, description, reported_by, created_at,"
        " report_ts, status FROM incidents"
    )
    assert len(rows) == 1
    incident_id, *rest = rows[0]
    assert rest == [-12.1219, -77.0297, "seguridad_ciudadana", "patrol", 2, "pelea", car, seen, seen, "open"]
    assert ingest.query("SELECT actor, origin, action, subject FROM audit_log") == [
        (car, "mqtt", "create", f"incident:{incident_id}")
    ]
    assert told == [incident_id]
    assert ingest.query("SELECT count(*) FROM dead_letters") == [(0,)]


def test_a_given_point_wins_over_the_units_position(ingest: IngestRig) -> None:
    (car,) = ingest.native_units(1)
    ingest.bridge()
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    sent = [
        message(f"serenazgo/units/{car}/position", {"ts": ts.isoformat(), "lat": -12.12, "lon": -77.03}),
        message(f"serenazgo/units/{car}/incident", {"category": "otro", "lat": -12.13, "lon": -77.04}),
    ]
    assert all(ingest.publish(sent).acked)
    ingest.wait_for("the incident", lambda: bool(ingest.query("SELECT 1 FROM incidents")))
    assert ingest.query("SELECT lat, lon, priority, description FROM incidents") == [(-12.13, -77.04, 3, "")]


def test_hostile_reports_become_dead_letters_with_reasons(ingest: IngestRig) -> None:
    car, lost = ingest.native_units(2)
    bridge = ingest.bridge()
    topic = f"serenazgo/units/{car}/incident"
    hostile: list[tuple[str, bytes, str | None]] = [
        (topic, b"{not json", "invalid_json"),
        (topic, b"[1]", None),
        (topic, orjson.dumps({"priority": 1, "lat": 1.0, "lon": 1.0}), "missing_field"),
        (topic, orjson.dumps({"category": 7, "lat": 1.0, "lon": 1.0}), "wrong_type"),
        (topic, orjson.dumps({"category": "robo", "lat": 1.0, "lon": 1.0}), "unknown_category"),
        (topic, orjson.dumps({"category": "otro", "priority": "1", "lat": 1.0, "lon": 1.0}), "wrong_type"),
        (topic, orjson.dumps({"category": "otro", "priority": True, "lat": 1.0, "lon": 1.0}), "wrong_type"),
        (topic, orjson.dumps({"category": "otro", "priority": 9, "lat": 1.0, "lon": 1.0}),
         "priority_out_of_range"),
        (topic, orjson.dumps({"category": "otro", "lat": 1.0}), "missing_field"),
        (topic, orjson.dumps({"category": "otro", "lat": 91.0, "lon": 1.0}), "lat_lon_out_of_range"),
        (topic, orjson.dumps({"category": "otro", "lat": "1", "lon": 1.0}), "wrong_type"),
        (topic, orjson.dumps({"category": "otro", "description": 5, "lat": 1.0, "lon": 1.0}), "wrong_type"),
        (topic, orjson.dumps({"category": "otro", "description": "x" * 4001, "lat": 1.0, "lon": 1.0}),
         "description_too_long"),
        (topic, orjson.dumps({"category": "otro", "ts": "yesterday", "lat": 1.0, "lon": 1.0}), None),
        ("serenazgo/units/ghost/incident", orjson.dumps({"category": "otro", "lat": 1.0, "lon": 1.0}),
         "unknown_unit"),
        # A unit with no stored position and no point in its report: nowhere to put the incident.
        (f"serenazgo/units/{lost}/incident", orjson.dumps({"category": "otro", "ts": 1_700_000_000}),
         "no_location"),
    ]  # fmt: skip
    good = message(topic, {"category": "otro", "lat": -12.1, "lon": -77.0})
    sent = [message(t, p) for t, p, _ in hostile] + [good]
    assert all(ingest.publish(sent).acked)
    ingest.wait_for("every message settled", lambda: bridge.stats().acked == len(sent))
    rows = ingest.query("SELECT topic, payload, reason, detail FROM dead_letters")
    assert sorted((t, bytes(p)) for t, p, _, _ in rows) == sorted((t, p) for t, p, _ in hostile)
    by_payload = {bytes(p): (r, d) for _, p, r, d in rows}
    for _, payload, reason in hostile:
        got, detail = by_payload[payload]
        assert detail, payload
        if reason is not None:
            assert got == reason, (payload, got, detail)
    assert ingest.query("SELECT lat, lon, reported_by FROM incidents") == [(-12.1, -77.0, car)]
    assert bridge.running


async def test_the_incident_service_announces_what_the_bridge_committed(ingest: IngestRig) -> None:
    (car,) = ingest.native_units(1)
    bridge = await asyncio.to_thread(ingest.bridge)
    feed: list[tuple[str, dict[str, object]]] = []
    service = IncidentService(
        ingest.conninfo, bridge.fleet, DispatchSettings(), feed=lambda k, p: feed.append((k, p))
    )
    await service.start()
    bridge.on_incidents = service.learn  # as `serenazgo up` wires them
    try:
        sent = message(f"serenazgo/units/{car}/incident", {"category": "defensa_civil", "lat": -12.1,
                                                          "lon": -77.0, "priority": 1})  # fmt: skip
        assert all((await asyncio.to_thread(ingest.publish, [sent])).acked)
        await wait_for("the incident on the live feed", lambda: bool(feed))
        [(kind, data)] = feed
        [(incident_id,)] = ingest.query("SELECT incident_id FROM incidents")
        assert kind == "incident"
        assert (data["incident_id"], data["channel"], data["reported_by"], data["category"]) == (
            incident_id, "patrol", car, "defensa_civil"
        )  # fmt: skip
        assert (await service.get(incident_id)).to_json() == data
    finally:
        bridge.on_incidents = None
        await service.stop()


def test_a_replayed_batch_stores_each_report_once(ingest: IngestRig) -> None:
    """What a redelivery after a crash amounts to for the writer: the same batch committed again."""
    (car,) = ingest.native_units(1)
    ts = datetime.now(UTC).replace(microsecond=0)
    report = FieldReport(car, ts, "obras_servicios", 4, "bache", -12.1, -77.0, ts)
    with PositionWriter(ingest.conninfo, retention_days=None) as writer:
        first = writer.write(IngestBatch(reports=[report]))
        again = writer.write(IngestBatch(reports=[report, report]))
    assert len(first.incidents) == 1
    assert again.incidents == ()
    assert ingest.query("SELECT count(*), min(incident_id) FROM incidents") == [(1, first.incidents[0])]
    assert ingest.query("SELECT count(*) FROM audit_log") == [(1,)]
