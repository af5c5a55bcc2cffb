"""The simulated MAVLink aircraft: a plausible sortie, decoded by drones/mavlink.py, checked independently."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
import shapely
from pyproj import Geod

from drones.mavlink import MavlinkDecoder, MavlinkUpdate
from drones.mavlink_sim import STEP_S, SimAircraft, SimConfig
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE
from tracker.model import Ping

BOOT = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
GEOD = Geod(ellps="WGS84")


def test_a_full_sortie_is_plausible_and_decodes_cleanly() -> None:
    cfg = SimConfig(sysid=4, endurance_s=600.0, reserve_pct=30.0, ground_s=10.0)
    sim = SimAircraft(cfg, BOOT)
    decoder = MavlinkDecoder()
    miraflores = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
    modes: list[str] = []
    battery_at_return: list[float | None] = []
    pings: list[Ping] = []
    t = 0.0
    while t < 900.0:  # 15 min: take-off, patrol, return at 30 %, land, swap, take off again
        arrival = BOOT + timedelta(seconds=t + 0.05)
        for frame in sim.step(STEP_S):
            (result,) = decoder.feed(frame, arrival)
            assert isinstance(result, MavlinkUpdate), result
        t += STEP_S
        state = decoder.systems[4]
        if state.flight_mode is not None and (not modes or modes[-1] != state.flight_mode):
            modes.append(state.flight_mode)
            if state.flight_mode == "returning_home":
                battery_at_return.append(state.battery_pct)
        ping = state.ping()
        if ping is not None and (not pings or pings[-1].ts != ping.ts):
            pings.append(ping)
    assert decoder.rejected == {}
    assert modes[:5] == ["on_ground", "mission", "returning_home", "landing", "on_ground"]
    assert "mission" in modes[5:]  # and off again after the battery swap

    # Every fix on the autopilot's clock, 0.2 s apart, inside Miraflores, at a drone's speed.
    steps = {round((b.ts - a.ts).total_seconds(), 3) for a, b in itertools.pairwise(pings)}
    assert steps == {STEP_S}
    assert pings[0].ts == BOOT + timedelta(seconds=STEP_S)
    inside = shapely.contains_xy(miraflores, [p.lon for p in pings], [p.lat for p in pings])
    assert inside.all()
    assert max(p.speed or 0.0 for p in pings) == pytest.approx(cfg.speed_mps, abs=0.02)
    # The speed it reports matches how far it really moves (pyproj's geodesic, not our frame).
    cruising = [
        (a, b) for a, b in itertools.pairwise(pings) if (a.speed or 0) > 11.9 and (b.speed or 0) > 11.9
    ]
    assert len(cruising) > 100
    for a, b in cruising[::25]:
        _, _, dist = GEOD.inv(a.lon, a.lat, b.lon, b.lat)
        assert dist / STEP_S == pytest.approx(cfg.speed_mps, rel=0.01)

    # It turned for home at the reserve (its own battery reports said so) and landed where it left.
    assert battery_at_return[0] == pytest.approx(cfg.reserve_pct, abs=1.0)
    state = decoder.systems[4]
    assert state.home_lat == pytest.approx(cfg.home_lat)
    assert state.home_lon == pytest.approx(cfg.home_lon)
    landed = [p for p in pings if p.ts > pings[0].ts and (p.speed or 0) == 0 and p.alt == cfg.home_alt_msl_m]
    _, _, off_home = GEOD.inv(landed[-1].lon, landed[-1].lat, cfg.home_lon, cfg.home_lat)
    assert off_home < 0.5


def test_altitudes_and_climb_are_reported_in_si_units() -> None:
    sim = SimAircraft(SimConfig(sysid=2), BOOT)
    decoder = MavlinkDecoder()
    for k in range(int(15 / STEP_S)):  # 5 s on the ground, then 10 s climbing at 3 m/s
        for frame in sim.step(STEP_S):
            decoder.feed(frame, BOOT + timedelta(seconds=k * STEP_S))
    t = decoder.systems[2].telemetry()
    assert t.flight_mode == "mission"
    assert t.vertical_speed_mps == pytest.approx(3.0)
    assert t.alt_takeoff_m == pytest.approx(30.0, abs=0.5)
    assert t.alt_msl_m is not None and t.alt_takeoff_m is not None
    assert t.alt_msl_m - t.alt_takeoff_m == pytest.approx(sim.config.home_alt_msl_m, abs=0.01)
    assert t.gps_fix == 3
    assert t.battery_pct is not None and 95 <= t.battery_pct <= 100
