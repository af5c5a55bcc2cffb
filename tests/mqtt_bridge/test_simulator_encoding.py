"""The simulator's payloads go through the bridge's own codecs: what is sent is what gets decoded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from drones.dji import DjiState
from mqtt_bridge.codecs import decode_message
from mqtt_bridge.simulator import SimClock, dji_announcements, encode_fix, encode_status
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE
from tracker.model import Decoded, Ignored, PingFlag, Source
from tracker.simulation import BadFix, FleetMix, FleetSimulation

T0 = datetime(2024, 5, 6, 14, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def fixes():
    area = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
    sim = FleetSimulation(area, FleetMix(10, 4, 3, 2), seed=9, start=T0, bad_fix_rate=0.05)
    return sim.advance_to(T0 + timedelta(minutes=20))


def test_every_good_fix_decodes_to_the_same_position_time_and_fields(fixes) -> None:
    received = T0 + timedelta(hours=1)
    seen_sources = set()
    for fix in fixes:
        if fix.bad is not None:
            continue
        topic, payload = encode_fix(fix)
        result = decode_message(topic, payload, received)
        assert isinstance(result, Decoded), (topic, payload, result)
        (ping,) = result.pings
        seen_sources.add(ping.source)
        assert ping.lat == pytest.approx(fix.lat, abs=1e-7)
        assert ping.lon == pytest.approx(fix.lon, abs=1e-7)
        assert not ping.flags & PingFlag.TS_DEFAULTED
        if fix.unit.source is Source.OWNTRACKS:
            assert topic == fix.unit.owntracks_topic
            assert result.ref.external_id == fix.unit.external_ids["owntracks"]
            # OwnTracks carries whole seconds, whole metres and whole km/h.
            assert ping.ts == fix.ts.replace(microsecond=0)
            assert ping.accuracy == pytest.approx(fix.accuracy, abs=0.5)
            assert ping.speed == pytest.approx(fix.speed, abs=0.5 / 3.6 + 1e-9)
        else:
            assert topic == f"serenazgo/units/{fix.unit.unit_id}/position"
            assert ping.unit_id == fix.unit.unit_id
            assert abs((ping.ts - fix.ts).total_seconds()) < 0.001
            assert ping.accuracy == fix.accuracy
            assert ping.speed == fix.speed
            assert ping.heading == fix.heading
            assert ping.battery == fix.battery
    assert seen_sources == {Source.OWNTRACKS, Source.NATIVE}


def test_bad_fixes_are_sent_the_way_broken_devices_send_them(fixes) -> None:
    received = T0 + timedelta(hours=1)
    kinds = set()
    for fix in (f for f in fixes if f.bad is not None):
        kinds.add(fix.bad)
        topic, payload = encode_fix(fix)
        body = orjson.loads(payload)
        if fix.bad is BadFix.NO_TIMESTAMP:
            assert "ts" not in body
            assert "tst" not in body
            result = decode_message(topic, payload, received)
            assert isinstance(result, Decoded)
            assert result.pings[0].flags & PingFlag.TS_DEFAULTED
        elif fix.bad is BadFix.NULL_ISLAND:
            assert (body["lat"], body["lon"]) == (0.0, 0.0)
        elif fix.bad is BadFix.BAD_BATTERY:
            battery = body.get("battery", body.get("batt"))
            assert not 0 <= battery <= 100
    assert kinds == set(BadFix)


def test_clock_replays_the_past_faster_and_never_runs_ahead_of_the_wall() -> None:
    wall0 = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
    clock = SimClock(speedup=10.0, catch_up_s=60.0, wall_start=wall0)
    assert clock.sim_start == wall0 - timedelta(seconds=540)
    assert clock.sim_time(wall0 + timedelta(seconds=30)) == wall0 - timedelta(seconds=240)
    assert clock.sim_time(wall0 + timedelta(seconds=60)) == wall0 + timedelta(seconds=60)
    assert clock.sim_time(wall0 + timedelta(seconds=90)) == wall0 + timedelta(seconds=90)
    realtime = SimClock(wall_start=wall0)
    assert realtime.sim_time(wall0 + timedelta(seconds=5)) == wall0 + timedelta(seconds=5)
    with pytest.raises(ValueError, match="speedup"):
        SimClock(speedup=0.5)


def test_status_changes_decode_to_the_same_status_and_time() -> None:
    area = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
    sim = FleetSimulation(area, FleetMix(4, 4, 2, 0), seed=5, start=T0, incidents_per_hour=200)
    sim.advance_to(T0 + timedelta(minutes=30))
    events = sim.take_status_events()
    assert len(events) > 10
    for event in events:
        topic, payload = encode_status(event)
        assert topic == f"serenazgo/units/{event.unit.unit_id}/status"
        result = decode_message(topic, payload, T0 + timedelta(hours=1))
        assert isinstance(result, Decoded), result
        assert result.status is not None
        assert result.status.status is event.status
        assert abs((result.status.ts - event.ts).total_seconds()) < 0.001


def test_drones_in_dji_docks_speak_the_dji_cloud_api() -> None:
    area = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
    sim = FleetSimulation(area, FleetMix(0, 0, 0, 3), seed=3, start=T0, bad_fix_rate=0.0, dji_docks=2)
    dji_units = [u for u in sim.units if u.source is Source.DJI]
    assert [u.unit_id for u in dji_units] == ["dron-01", "dron-02"]  # the third drone stays native
    state = DjiState()
    received = T0 + timedelta(hours=2)
    announced = [decode_message(t, p, received, dji_state=state) for t, p in dji_announcements(sim, T0)]
    assert announced == [Ignored("dji_topology_updated"), Ignored("dji_dock_osd_merged"),
                         Ignored("dji_state_kept")] * 2  # fmt: skip
    for unit in dji_units:
        assert state.aircraft_under(unit.dock_id or "") == unit.external_ids["dji"]
    flights = docked = 0
    for fix in sim.advance_to(T0 + timedelta(minutes=75)):
        topic, payload = encode_fix(fix)
        if fix.unit.source is not Source.DJI:
            assert topic == f"serenazgo/units/{fix.unit.unit_id}/position"
            continue
        sn = fix.unit.external_ids["dji"]
        result = decode_message(topic, payload, received, dji_state=state)
        if fix.airborne:
            assert topic == f"thing/product/{sn}/osd"
            assert isinstance(result, Decoded), result
            assert result.ref.external_id == sn
            (ping,) = result.pings
            assert (ping.lat, ping.lon) == (fix.lat, fix.lon)
            assert fix.ts is not None
            assert abs((ping.ts - fix.ts).total_seconds()) < 0.001
            assert ping.speed == fix.speed
            assert ping.heading == (None if fix.heading is None else pytest.approx(fix.heading))
            (t,) = result.telemetry
            assert t.alt_takeoff_m == fix.agl
            assert t.flight_mode == ("returning_home" if fix.returning else "mission")
            assert (t.docked, t.dock_id) == (False, fix.unit.dock_id)
            assert t.battery_pct == round(fix.battery or 0)
            assert t.wind_speed_mps == pytest.approx(3.0)
            assert (t.home_lat, t.home_lon) == (fix.home_lat, fix.home_lon)
            flights += 1
        else:
            assert topic == f"thing/product/{fix.unit.dock_id}/osd"
            if isinstance(result, Ignored):
                assert result.reason == "dji_dock_osd_merged"  # just landed: its own OSD is fresh
                continue
            assert isinstance(result, Decoded), result
            assert result.ref.external_id == sn  # the dock speaks for its aircraft
            (t,) = result.telemetry
            assert (t.docked, t.dock_id, t.flight_mode) == (True, fix.unit.dock_id, "on_ground")
            assert t.battery_pct == round(fix.battery or 0)
            docked += 1
    assert flights > 100
    assert docked > 10  # each aircraft came home at least once and swapped its battery
