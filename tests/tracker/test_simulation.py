"""The fleet movement model, measured with pyproj.Geod (independent geodesic ground truth)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import shapely
from pyproj import Geod

from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE
from tracker.model import Source, UnitKind, UnitStatus, is_valid_unit_id
from tracker.simulation import (
    FOOT_DISPATCH_RADIUS_M,
    INCIDENTS_PER_HOUR,
    PROFILES,
    BadFix,
    FleetMix,
    FleetSimulation,
    SimFix,
    SimStatus,
)

GEOD = Geod(ellps="WGS84")
T0 = datetime(2024, 5, 6, 14, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def miraflores():
    return load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")


@pytest.fixture(scope="module")
def hour_with_statuses(miraflores) -> tuple[FleetSimulation, list[SimFix], list[SimStatus]]:
    sim = FleetSimulation(miraflores, seed=11, start=T0, bad_fix_rate=0.02)
    fixes = sim.advance_to(T0 + HOUR)
    return sim, fixes, sim.take_status_events()


@pytest.fixture(scope="module")
def hour(hour_with_statuses) -> tuple[FleetSimulation, list[SimFix]]:
    return hour_with_statuses[:2]


def by_unit(fixes: list[SimFix]) -> dict[str, list[SimFix]]:
    out: dict[str, list[SimFix]] = defaultdict(list)
    for f in fixes:
        out[f.unit.unit_id].append(f)
    return out


def geodesic_m(lon1, lat1, lon2, lat2) -> np.ndarray:
    return np.asarray(GEOD.inv(lon1, lat1, lon2, lat2)[2])


def test_default_mix_is_miraflores_sized_with_valid_unique_ids(hour) -> None:
    sim, _ = hour
    kinds = [u.kind for u in sim.units]
    assert kinds.count(UnitKind.FOOT) == 60
    assert kinds.count(UnitKind.PATROL_CAR) == 25
    assert kinds.count(UnitKind.MOTORCYCLE) == 15
    assert kinds.count(UnitKind.DRONE) == 4
    ids = [u.unit_id for u in sim.units]
    assert len(set(ids)) == len(ids)
    assert all(is_valid_unit_id(i) for i in ids)
    assert {u.callsign for u in sim.units} >= {"SER-014", "MOV-03", "MOTO-15", "DRON-04"}
    owntracks = [u for u in sim.units if u.source is Source.OWNTRACKS]
    # Most foot agents use OwnTracks, nobody else does; each phone has its own topic.
    assert all(u.kind is UnitKind.FOOT for u in owntracks)
    assert 0.6 * 60 < len(owntracks) < 60
    topics = [u.owntracks_topic for u in owntracks]
    assert len(set(topics)) == len(topics)
    assert all(t is not None and t.startswith("owntracks/") and t.count("/") == 2 for t in topics)
    assert len({u.sector for u in sim.units}) == 6


def test_true_positions_never_leave_the_boundary(hour, miraflores) -> None:
    _, fixes = hour
    lon = np.array([f.true_lon for f in fixes])
    lat = np.array([f.true_lat for f in fixes])
    # One centimetre of slack for the round trip through the metric frame.
    inside = shapely.contains_xy(miraflores.buffer(1e-7), lon, lat)
    assert inside.all(), f"{(~inside).sum()} of {len(fixes)} true positions outside Miraflores"


def test_ground_units_patrol_their_own_sector_until_dispatched(hour_with_statuses) -> None:
    sim, fixes, statuses = hour_with_statuses
    first_dispatch: dict[str, datetime] = {}
    for event in statuses:
        if event.status is UnitStatus.DISPATCHED:
            first_dispatch.setdefault(event.unit.unit_id, event.ts)
    sectors = {s.name: s.shape_xy.buffer(0.01) for s in sim.sectors}
    checked = 0
    for f in fixes:
        if f.unit.kind not in (UnitKind.FOOT, UnitKind.PATROL_CAR):
            continue
        if f.true_ts >= first_dispatch.get(f.unit.unit_id, T0 + 2 * HOUR):
            continue
        x, y = sim.frame.to_xy(f.true_lon, f.true_lat)
        assert sectors[f.unit.sector].covers(shapely.Point(float(x), float(y))), f.unit.unit_id
        checked += 1
    assert checked > 10_000


def test_incidents_send_units_through_a_full_status_cycle(hour_with_statuses) -> None:
    _, _fixes, statuses = hour_with_statuses
    dispatched = [e for e in statuses if e.status is UnitStatus.DISPATCHED]
    # Poisson at ~30 an hour (5 sigma), less the rare moments when nobody is free.
    assert abs(len(dispatched) - INCIDENTS_PER_HOUR) < 5 * math.sqrt(INCIDENTS_PER_HOUR)
    order = [UnitStatus.DISPATCHED, UnitStatus.EN_ROUTE, UnitStatus.ON_SCENE, UnitStatus.AVAILABLE]
    by_unit: dict[str, list[SimStatus]] = defaultdict(list)
    for e in statuses:
        by_unit[e.unit.unit_id].append(e)
    completed = 0
    for unit_id, events in by_unit.items():
        assert all(a.ts <= b.ts for a, b in itertools.pairwise(events)), unit_id
        kinds = [e.status for e in events]
        # Cycles in order; the last one may still be running at the end of the hour.
        assert kinds == (order * len(kinds))[: len(kinds)], (unit_id, kinds)
        for e in events:
            assert e.unit.kind is not UnitKind.DRONE
            if e.status is UnitStatus.ON_SCENE:
                gap = geodesic_m(e.true_lon, e.true_lat, e.incident_lon, e.incident_lat)
                assert float(gap) < 0.5, f"{unit_id} on scene {float(gap):.1f} m from the incident"
                completed += 1
            if e.status is UnitStatus.DISPATCHED and e.unit.kind is UnitKind.FOOT:
                away = geodesic_m(e.true_lon, e.true_lat, e.incident_lon, e.incident_lat)
                assert float(away) <= FOOT_DISPATCH_RADIUS_M * 1.01
    assert completed >= len(dispatched) // 2


def test_the_nearest_available_vehicle_is_dispatched(miraflores) -> None:
    sim = FleetSimulation(miraflores, FleetMix(0, 6, 0, 0), seed=8, start=T0, incidents_per_hour=400)
    seen = 0
    for second in range(1, 1200):
        sim.advance_to(T0 + timedelta(seconds=second))
        events = sim.take_status_events()
        freed = {e.unit.unit_id for e in events if e.status is UnitStatus.AVAILABLE}
        for e in events:
            if e.status is not UnitStatus.DISPATCHED:
                continue
            seen += 1
            chosen = geodesic_m(e.true_lon, e.true_lat, e.incident_lon, e.incident_lat)
            for j, unit in enumerate(sim.units):
                if sim.status[j] is UnitStatus.AVAILABLE and unit.unit_id not in freed:
                    lon, lat = sim.frame.to_lonlat(sim.pos[j, 0], sim.pos[j, 1])
                    assert geodesic_m(lon, lat, e.incident_lon, e.incident_lat) >= chosen - 0.5
    assert seen >= 10


def test_no_incidents_no_status_changes(miraflores) -> None:
    sim = FleetSimulation(miraflores, FleetMix(5, 5, 5, 1), seed=3, start=T0, incidents_per_hour=0)
    sim.advance_to(T0 + timedelta(minutes=30))
    assert sim.take_status_events() == []


def test_speeds_between_fixes_are_plausible_per_kind(hour) -> None:
    _, fixes = hour
    moving_speeds: dict[UnitKind, list[float]] = defaultdict(list)
    for track in by_unit(fixes).values():
        kind = track[0].unit.kind
        lo, hi = PROFILES[kind].speed_mps
        lon = np.array([f.true_lon for f in track])
        lat = np.array([f.true_lat for f in track])
        dt = np.array([(b.true_ts - a.true_ts).total_seconds() for a, b in itertools.pairwise(track)])
        v = geodesic_m(lon[:-1], lat[:-1], lon[1:], lat[1:]) / dt
        # Nobody ever covers ground faster than the fastest leg speed of its kind.
        assert v.max() <= hi * 1.001, f"{track[0].unit.unit_id} moved at {v.max():.1f} m/s"
        both_moving = np.array([a.true_speed > 0 and b.true_speed > 0 for a, b in itertools.pairwise(track)])
        moving_speeds[kind].extend(v[both_moving].tolist())
    for kind, (lo, hi) in ((k, PROFILES[k].speed_mps) for k in moving_speeds):
        median = float(np.median(moving_speeds[kind]))
        # Corners and arrivals inside an interval shorten the straight-line distance a little.
        assert lo * 0.8 <= median <= hi, f"{kind}: median {median:.2f} m/s outside {lo}-{hi}"
    assert 1.0 < float(np.median(moving_speeds[UnitKind.FOOT])) < 1.6  # walking pace ~1.3 m/s
    assert 11.0 < float(np.median(moving_speeds[UnitKind.DRONE])) < 12.6


def test_reported_speed_and_heading_agree_with_the_track(hour) -> None:
    _, fixes = hour
    errors = []
    for track in by_unit(fixes).values():
        for a, b in itertools.pairwise(track):
            dt = (b.true_ts - a.true_ts).total_seconds()
            if a.true_speed > 0 and b.true_speed > 0 and b.bad is None and b.speed is not None:
                _az, _, dist = GEOD.inv(a.true_lon, a.true_lat, b.true_lon, b.true_lat)
                errors.append(abs(b.speed - dist / dt))
            if b.true_speed == 0 and b.bad is None:
                assert b.heading is None
                assert b.speed is not None
                assert b.speed < 1.5
    # Reported speed is the instantaneous one plus noise: close to the track's on average.
    assert float(np.median(errors)) < 0.6


def test_report_intervals_per_kind(hour) -> None:
    _, fixes = hour
    for track in by_unit(fixes).values():
        kind = track[0].unit.kind
        gaps = [(b.true_ts - a.true_ts).total_seconds() for a, b in itertools.pairwise(track)]
        expected = {
            UnitKind.DRONE: 2.0,
            UnitKind.PATROL_CAR: 5.0,
            UnitKind.MOTORCYCLE: 5.0,
            UnitKind.FOOT: 10.0,
        }
        assert float(np.median(gaps)) == pytest.approx(expected[kind], abs=1.0)


def test_some_units_stand_still_for_a_while(hour) -> None:
    _, fixes = hour
    still_units = 0
    for track in by_unit(fixes).values():
        run = best = 0
        for a, b in itertools.pairwise(track):
            same = (a.true_lon, a.true_lat) == (b.true_lon, b.true_lat)
            run = run + 1 if same else 0
            best = max(best, run)
        if best * PROFILES[track[0].unit.kind].report_interval_s >= 300:
            still_units += 1
    assert 10 <= still_units < 104


def test_accuracy_claimed_is_the_68_percent_radius_of_the_noise(hour) -> None:
    _, fixes = hour
    good = [f for f in fixes if f.bad is None]
    err = geodesic_m(
        [f.true_lon for f in good], [f.true_lat for f in good], [f.lon for f in good], [f.lat for f in good]
    )
    acc = np.array([f.accuracy for f in good])
    share = float((err <= acc).mean())
    assert share == pytest.approx(0.68, abs=0.02)
    assert acc.min() >= 1.0
    assert acc.max() <= 50.0
    assert float(np.median(err)) < 10.0  # "a few metres"


def test_bad_fixes_appear_at_the_configured_rate_and_are_bad_as_labelled(hour) -> None:
    sim, fixes = hour
    counts = dict.fromkeys(BadFix, 0)
    for f in fixes:
        if f.bad is None:
            assert f.ts is not None
            assert f.lat != 0.0
            assert f.battery is None or 0.0 <= f.battery <= 100.0
            continue
        counts[f.bad] += 1
        if f.bad is BadFix.SPIKE:
            jump = geodesic_m(f.true_lon, f.true_lat, f.lon, f.lat)
            assert 250.0 < float(jump) < 1700.0
        elif f.bad is BadFix.NULL_ISLAND:
            assert (f.lat, f.lon) == (0.0, 0.0)
        elif f.bad is BadFix.NO_TIMESTAMP:
            assert f.ts is None
        else:
            assert f.battery is not None
            assert not 0.0 <= f.battery <= 100.0
    n = len(fixes)
    p = sim.bad_fix_rate / len(BadFix)
    sigma = math.sqrt(n * p * (1 - p))
    for kind, count in counts.items():
        assert abs(count - n * p) < 5 * sigma, f"{kind}: {count} of {n}, expected {n * p:.0f}"


def test_no_bad_fixes_when_the_rate_is_zero(miraflores) -> None:
    sim = FleetSimulation(miraflores, FleetMix(5, 5, 5, 1), seed=3, start=T0, bad_fix_rate=0.0)
    assert all(f.bad is None for f in sim.advance_to(T0 + timedelta(minutes=10)))


def test_batteries_drain_and_drones_return_to_swap(hour) -> None:
    _, fixes = hour
    tracks = by_unit(fixes)
    for unit_id, track in tracks.items():
        kind = track[0].unit.kind
        levels = [f.battery for f in track if f.bad is None]
        if kind in (UnitKind.PATROL_CAR, UnitKind.MOTORCYCLE):
            assert all(b is None for b in levels)  # vehicle power
        elif kind is UnitKind.FOOT:
            assert levels[-1] < levels[0] or max(levels) == 100.0, unit_id
        else:
            # 35 minutes a battery: within an hour every drone came back and swapped.
            assert min(levels) > 15.0
            assert max(levels) == 100.0
            assert any(b < 30.0 for b in levels)


def test_same_seed_same_fleet_and_fixes_different_seed_differs(miraflores) -> None:
    mix = FleetMix(8, 4, 3, 2)
    runs = []
    for seed in (5, 5, 6):
        sim = FleetSimulation(miraflores, mix, seed=seed, start=T0)
        runs.append(sim.advance_to(T0 + timedelta(minutes=5)))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    # Stepping in several calls gives the same fixes as one call.
    sim = FleetSimulation(miraflores, mix, seed=5, start=T0)
    pieces = sim.advance_to(T0 + timedelta(seconds=77)) + sim.advance_to(T0 + timedelta(minutes=5))
    assert pieces == runs[0]


def test_rejects_naive_start_and_impossible_rates(miraflores) -> None:
    with pytest.raises(ValueError, match="timezone"):
        FleetSimulation(miraflores, start=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="bad_fix_rate"):
        FleetSimulation(miraflores, start=T0, bad_fix_rate=1.5)


def test_external_dispatch_reports_incidents_and_follows_orders(miraflores) -> None:
    start = datetime(2024, 5, 21, 8, tzinfo=UTC)
    sim = FleetSimulation(miraflores, seed=3, start=start, bad_fix_rate=0.0, incidents_per_hour=120.0,
                          external_dispatch=True)  # fmt: skip
    sim.advance_to(start + timedelta(minutes=30))
    reported = sim.take_incidents()
    assert reported, "incidents are reported to the external dispatcher"
    assert all(miraflores.covers(shapely.Point(i.lon, i.lat)) for i in reported)
    assert sim.take_status_events() == [], "nobody dispatches itself"

    car = next(u for u in sim.units if u.kind is UnitKind.PATROL_CAR)
    scene = reported[-1]
    assert sim.dispatch_to(car.unit_id, scene.lat, scene.lon)
    assert not sim.dispatch_to(car.unit_id, scene.lat, scene.lon), "a unit on a job is busy"
    assert not sim.dispatch_to("nobody", scene.lat, scene.lon)
    statuses: list[UnitStatus] = []
    last: SimFix | None = None
    for _ in range(90):  # minutes, until it has cleared the scene
        fixes = sim.advance_to(sim.now() + timedelta(minutes=1))
        statuses += [e.status for e in sim.take_status_events() if e.unit.unit_id == car.unit_id]
        last = next((f for f in reversed(fixes) if f.unit.unit_id == car.unit_id), last)
        if car.unit_id in sim.take_cleared():
            break
    else:
        pytest.fail("the unit never cleared the scene")
    # The dispatcher set "dispatched"; the unit reports setting off and arriving, and waits to be released.
    assert statuses == [UnitStatus.EN_ROUTE, UnitStatus.ON_SCENE]
    assert last is not None
    assert geodesic_m(last.true_lon, last.true_lat, scene.lon, scene.lat) < 1.0
    sim.release(car.unit_id)
    i = [u.unit_id for u in sim.units].index(car.unit_id)
    assert sim.status[i] is UnitStatus.AVAILABLE
    sim.advance_to(sim.now() + timedelta(minutes=10))
    assert geodesic_m(sim.frame.to_lonlat(*sim.pos[i])[0], sim.frame.to_lonlat(*sim.pos[i])[1],
                      scene.lon, scene.lat) > 1.0, "back on patrol"  # fmt: skip


def test_drones_take_off_from_and_belong_to_the_given_docks(miraflores) -> None:
    docks = [(-12.1211, -77.0297), (-12.1305, -77.0365)]
    sim = FleetSimulation(miraflores, seed=3, start=datetime(2024, 5, 20, tzinfo=UTC), drone_docks=docks)
    drones = [u.unit_id for u in sim.units if u.kind is UnitKind.DRONE]
    geod = Geod(ellps="WGS84")
    for unit_id, (lat, lon) in zip(drones, docks, strict=False):
        home_lat, home_lon = sim.home_of(unit_id)
        assert geod.inv(lon, lat, home_lon, home_lat)[2] < 0.01  # metres
    # Drones beyond the docks given start from a point of the area, as before.
    lat, lon = sim.home_of(drones[-1])
    assert shapely.Point(lon, lat).within(miraflores)
