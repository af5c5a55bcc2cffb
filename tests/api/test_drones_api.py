"""/api/v1/drones: live state with endurance figures, one drone, telemetry (JSON, CSV), 404 and 422."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pyproj import Geod

from drones.endurance import SquadronModel
from geo.docks import PROFILES, Dock
from tracker.batch import IngestBatch
from tracker.model import DroneTelemetry, Ping, Source, Unit, UnitKind
from tracker.store.units import create_unit_sync
from tracker.store.writer import PositionWriter

pytestmark = pytest.mark.integration

GEOD = Geod(ellps="WGS84")
DOCK = Dock("dock-1", "Palacio", -12.1197, -77.0297, PROFILES["m4td"], profile_key="m4td", aircraft_id="dr-1")


def units() -> list[Unit]:
    return [
        Unit("dr-1", UnitKind.DRONE, callsign="DRON-01"),
        Unit("dr-2", UnitKind.DRONE, callsign="DRON-02"),
        Unit("mov-1", UnitKind.PATROL_CAR),
    ]


def flying(now: datetime) -> tuple[Ping, DroneTelemetry]:
    lon, lat, _ = GEOD.fwd(DOCK.lon, DOCK.lat, 30.0, 2400.0)  # 2.4 km out from its dock
    fix = Ping("dr-1", now - timedelta(seconds=1), lat, lon, speed=14.8, heading=30.0)
    tel = DroneTelemetry(
        "dr-1", now - timedelta(seconds=1), alt_takeoff_m=125.0, alt_msl_m=205.0, vertical_speed_mps=-0.5,
        battery_pct=40.0, remaining_flight_s=1500.0, flight_mode="mission", docked=False, source=Source.DJI,
    )  # fmt: skip
    return fix, tel


async def test_list_and_one_drone_with_the_endurance_figures(api) -> None:
    now = datetime.now(UTC)
    api.ctx.fleet.load(units(), [])
    fix, tel = flying(now)
    api.ctx.fleet.apply(pings=[fix], telemetry=[tel])
    api.ctx.squadron = SquadronModel(PROFILES, "m3td", {}, [DOCK], landing_s=30.0)

    resp = await api.client.get("/api/v1/drones")
    assert resp.status_code == 200
    body = resp.json()
    assert [d["unit_id"] for d in body["drones"]] == ["dr-1", "dr-2"]  # the patrol car is not a drone
    assert body["limits"] == {"altitude_m": 120.0, "return_margin_s": 60.0}  # known without any drone too
    d = body["drones"][0]
    assert d["airborne"] is True and d["freshness"] == "live"
    assert d["position"]["lat"] == pytest.approx(fix.lat) and d["position"]["age_s"] >= 0
    t = d["telemetry"]
    assert (t["battery_pct"], t["remaining_flight_s"], t["alt_takeoff_m"], t["alt_msl_m"]) == (
        40,
        1500,
        125,
        205,
    )
    assert (t["vertical_speed_mps"], t["flight_mode"], t["docked"], t["source"]) == (
        -0.5,
        "mission",
        False,
        "dji",
    )
    assert d["home"] == {"lat": DOCK.lat, "lon": DOCK.lon, "source": "dock"}
    assert d["dock"]["dock_id"] == "dock-1"
    e = d["endurance"]
    # m4td: 54 min × 0.7 = 2268 s a charge; at 40 % the profile says 907.2 s; the aircraft's 1500 s is more,
    # so the profile decides. Reserve 2268 × 0.25 = 567; usable 340.2; home 2400/15 + 30 = 190 s.
    assert e["profile"]["key"] == "m4td" and e["profile"]["max_flight_s"] == 54 * 60
    assert e["limited_by"] == "profile"
    assert e["usable_remaining_s"] == pytest.approx(340.2, abs=0.05)
    assert e["distance_home_m"] == pytest.approx(2400.0, abs=0.05)
    assert e["time_home_s"] == pytest.approx(190.0, abs=0.05)
    assert e["return_margin_s"] == pytest.approx(150.2, abs=0.1)
    assert e["range_m"] == pytest.approx(15 * 340.2, abs=1)
    assert d["altitude_exceeded"] is True and d["return_required"] is False
    assert d["limits"] == {"altitude_m": 120.0, "return_margin_s": 60.0}
    assert d["alerts"] == []  # no event engine in this process
    # A drone never heard from: nothing invented.
    d2 = body["drones"][1]
    assert (d2["position"], d2["telemetry"], d2["home"], d2["airborne"]) == (None, None, None, False)
    assert d2["endurance"]["return_margin_s"] is None and d2["endurance"]["profile"]["key"] == "m3td"

    one = await api.client.get("/api/v1/drones/dr-1")
    assert one.status_code == 200
    assert one.json()["endurance"] == e
    for missing in ("nope", "mov-1"):
        r = await api.client.get(f"/api/v1/drones/{missing}")
        assert r.status_code == 404 and "GET /api/v1/drones lists them" in r.json()["detail"]


async def test_the_model_is_built_from_settings_when_the_runtime_gave_none(api) -> None:
    api.ctx.fleet.load(units(), [])
    fix, tel = flying(datetime.now(UTC))
    api.ctx.fleet.apply(pings=[fix], telemetry=[tel])
    resp = await api.client.get("/api/v1/drones/dr-1")
    assert resp.status_code == 200
    e = resp.json()["endurance"]  # no docks known: default profile, no home
    assert (e["profile"]["key"], e["return_margin_s"], resp.json()["home"]) == ("m3td", None, None)


async def test_telemetry_history_as_json_and_csv_with_windows_checked(api, pg_url: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for u in units():
            create_unit_sync(conn, u)
    api.ctx.fleet.load(units(), [])
    reports = [
        DroneTelemetry("dr-1", now - timedelta(minutes=m), battery_pct=90.0 - m, source=Source.DJI)
        for m in (90, 50, 30, 10)
    ]
    with PositionWriter(pg_url) as writer:
        writer.write(IngestBatch(telemetry=reports))

    resp = await api.client.get("/api/v1/drones/dr-1/telemetry")  # default: the last hour
    assert resp.status_code == 200
    body = resp.json()
    assert [r["battery_pct"] for r in body["telemetry"]] == [40.0, 60.0, 80.0]
    assert body["telemetry"][0]["source"] == "dji" and body["telemetry"][0]["flight_mode"] is None

    # start alone: the hour after it (the 90-minute-old report only)
    start = (now - timedelta(hours=2)).isoformat()
    resp = await api.client.get("/api/v1/drones/dr-1/telemetry", params={"start": start})
    assert [r["battery_pct"] for r in resp.json()["telemetry"]] == [0.0]
    end = now.isoformat()
    resp = await api.client.get(
        "/api/v1/drones/dr-1/telemetry", params={"start": start, "end": end, "format": "csv"}
    )
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert [r["battery_pct"] for r in rows] == ["0.0", "40.0", "60.0", "80.0"]
    assert rows[0]["unit_id"] == "dr-1" and rows[0]["home_lat"] == ""

    bad = [
        ({"start": now.isoformat(), "end": (now - timedelta(hours=1)).isoformat()}, "must be after start"),
        ({"start": (now - timedelta(days=2)).isoformat(), "end": now.isoformat()}, "longer than 24 hours"),
        ({"start": "yesterday"}, None),
        ({"format": "gpx"}, None),
    ]
    for params, message in bad:
        r = await api.client.get("/api/v1/drones/dr-1/telemetry", params=params)
        assert r.status_code == 422, params
        if message is not None:
            assert message in r.json()["detail"]
    r = await api.client.get("/api/v1/drones/ghost/telemetry")
    assert r.status_code == 404
