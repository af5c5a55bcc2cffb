"""GPS quality filters: structural checks, kinematic rules, and the named-step pipeline.

Distances are checked against pyproj.Geod (WGS84 geodesics) as ground truth; tracks
are laid out with Geod.fwd so the expected distances do not come from the code
under test.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from geo.distance import haversine_m
from tracker.batch import FlagUpdate
from tracker.config import FilterSettings
from tracker.filters import (
    HISTORY,
    RECENT,
    STRUCTURAL_STEPS,
    FilterContext,
    Filtered,
    FilterPipeline,
    KinematicFilter,
    all_clear,
    check_fix,
    implied_speed_mps,
)
from tracker.model import Ping, PingFlag, Rejection, UnitKind

GEOD = Geod(ellps="WGS84")
NOW = datetime(2024, 5, 20, 15, 0, 0, tzinfo=UTC)
T0 = NOW - timedelta(hours=3)
LIMA = (-12.1211, -77.0297)  # Parque Kennedy, Miraflores (lat, lon)
SETTINGS = FilterSettings()
FOOT_MAX = SETTINGS.max_speed_mps[UnitKind.FOOT]
CAR_MAX = SETTINGS.max_speed_mps[UnitKind.PATROL_CAR]
# A sphere vs the WGS84 ellipsoid: haversine is off by at most about 0.56 %.
SPHERE_REL_TOL = 0.006


def move(lat: float, lon: float, azimuth_deg: float, metres: float) -> tuple[float, float]:
    """The point ``metres`` from (lat, lon) along ``azimuth_deg``, by WGS84 geodesic."""
    lon2, lat2, _ = GEOD.fwd(lon, lat, azimuth_deg, metres)
    return float(lat2), float(lon2)


def geod_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Ground-truth distance in metres."""
    _, _, d = GEOD.inv(lon1, lat1, lon2, lat2)
    return float(d)


def fix(
    t_s: float,
    lat: float,
    lon: float,
    acc: float | None = 5.0,
    speed: float | None = None,
    unit: str = "u1",
) -> Ping:
    """A ping ``t_s`` seconds after T0."""
    return Ping(unit, T0 + timedelta(seconds=t_s), lat, lon, accuracy=acc, speed=speed)


def walk(
    n: int, step_m: float, dt_s: float, start: tuple[float, float] = LIMA, t0: float = 0.0, az: float = 90.0
) -> list[Ping]:
    """``n`` fixes in a straight line, ``step_m`` apart every ``dt_s`` seconds."""
    pings = []
    lat, lon = start
    for i in range(n):
        pings.append(fix(t0 + i * dt_s, lat, lon))
        lat, lon = move(lat, lon, az, step_m)
    return pings


def run(kf: KinematicFilter, pings: list[Ping], kind: UnitKind = UnitKind.FOOT) -> list[FlagUpdate]:
    """Feed ``pings`` in order; return every flag update."""
    updates: list[FlagUpdate] = []
    for p in pings:
        updates.extend(kf.apply(p, kind))
    return updates


# -- distances ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (LIMA, move(*LIMA, 90.0, 10.0)),
        (LIMA, move(*LIMA, 0.0, 1_000.0)),
        (LIMA, (-12.0464, -77.0428)),  # Plaza de Armas de Lima
        (LIMA, (40.4168, -3.7038)),  # Madrid
        ((89.9, 0.0), (89.9, 180.0)),  # across the pole
        ((0.0, 179.9995), (0.0, -179.9995)),  # across the antimeridian: about 111 m
    ],
)
def test_haversine_matches_geodesic(a: tuple[float, float], b: tuple[float, float]) -> None:
    truth = geod_m(*a, *b)
    assert haversine_m(*a, *b) == pytest.approx(truth, rel=SPHERE_REL_TOL, abs=0.01)


@settings(max_examples=200, deadline=None)
@given(
    lat1=st.floats(-89.0, 89.0),
    lon1=st.floats(-180.0, 180.0),
    lat2=st.floats(-89.0, 89.0),
    lon2=st.floats(-180.0, 180.0),
)
def test_haversine_matches_geodesic_anywhere(lat1: float, lon1: float, lat2: float, lon2: float) -> None:
    truth = geod_m(lat1, lon1, lat2, lon2)
    assert haversine_m(lat1, lon1, lat2, lon2) == pytest.approx(truth, rel=SPHERE_REL_TOL, abs=0.01)


def test_implied_speed_subtracts_both_accuracies() -> None:
    lat2, lon2 = move(*LIMA, 45.0, 1_000.0)
    truth = geod_m(*LIMA, lat2, lon2)
    got = implied_speed_mps(*LIMA, 100.0, 0.0, lat2, lon2, 150.0, 50.0)
    assert got == pytest.approx((truth - 250.0) / 50.0, rel=SPHERE_REL_TOL)
    # Unknown accuracy counts as zero.
    assert implied_speed_mps(*LIMA, None, 0.0, lat2, lon2, None, 50.0) == pytest.approx(
        truth / 50.0, rel=SPHERE_REL_TOL
    )
    # Inside the combined error circles: no evidence of movement at all.
    assert implied_speed_mps(*LIMA, 600.0, 0.0, lat2, lon2, 600.0, 50.0) == 0.0


def test_implied_speed_clamps_dt_to_one_second() -> None:
    lat2, lon2 = move(*LIMA, 0.0, 30.0)
    # 0.2 s apart: judged as if 1 s apart (clock resolution), not 150 m/s.
    assert implied_speed_mps(*LIMA, None, 0.0, lat2, lon2, None, 0.2) == pytest.approx(
        30.0, rel=SPHERE_REL_TOL
    )


# -- structural checks ----------------------------------------------------------------


def _ok(**changes: object) -> Ping:
    ping = replace(Ping("u1", NOW - timedelta(seconds=5), *LIMA), **changes)  # type: ignore[arg-type]
    assert check_fix(ping, NOW, SETTINGS) is None
    return ping


def _rejected(**changes: object) -> Rejection:
    ping = replace(Ping("u1", NOW - timedelta(seconds=5), *LIMA), **changes)  # type: ignore[arg-type]
    rejection = check_fix(ping, NOW, SETTINGS)
    assert rejection is not None
    assert rejection.detail
    return rejection


def test_a_good_fix_passes_untouched() -> None:
    ping = _ok(alt=79.0, speed=8.3, heading=182.0, accuracy=5.0, battery=81.0)
    assert ping.flags == PingFlag.NONE
    assert (ping.alt, ping.speed, ping.heading, ping.accuracy, ping.battery) == (79.0, 8.3, 182.0, 5.0, 81.0)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"lat": math.nan}, "non_finite_position"),
        ({"lon": math.inf}, "non_finite_position"),
        ({"lat": 90.000001}, "lat_out_of_range"),
        ({"lat": -91.0}, "lat_out_of_range"),
        ({"lon": 180.5}, "lon_out_of_range"),
        ({"lon": -1000.0}, "lon_out_of_range"),
        ({"lat": 0.0, "lon": 0.0}, "null_island"),
        ({"lat": -0.0, "lon": 0.0}, "null_island"),
        ({"ts": datetime(2024, 5, 20, 14, 0)}, "naive_timestamp"),
        ({"ts": datetime(1998, 12, 31, 23, 59, 59, tzinfo=UTC)}, "fix_before_1999"),
        ({"ts": datetime(1970, 1, 1, tzinfo=UTC)}, "fix_before_1999"),
        ({"ts": NOW + timedelta(seconds=SETTINGS.future_tolerance_s + 1)}, "fix_in_future"),
        ({"ts": NOW - timedelta(seconds=SETTINGS.max_age_s + 1)}, "fix_too_old"),
    ],
)
def test_structural_rejections(changes: dict[str, object], reason: str) -> None:
    assert _rejected(**changes).reason == reason


@pytest.mark.parametrize(
    "changes",
    [
        {"lat": 90.0, "lon": 180.0},
        {"lat": -90.0, "lon": -180.0},
        {"lat": 0.0, "lon": 0.001},  # on the equator, not null island
        {"ts": datetime(1999, 1, 1, tzinfo=UTC) + timedelta(days=1)},  # old, allowed by a long max age
        {"ts": NOW + timedelta(seconds=SETTINGS.future_tolerance_s)},  # clock skew within tolerance
        {"ts": NOW - timedelta(seconds=SETTINGS.max_age_s)},  # exactly the oldest allowed
    ],
)
def test_structural_edges_that_pass(changes: dict[str, object]) -> None:
    ping = replace(Ping("u1", NOW, *LIMA), **changes)  # type: ignore[arg-type]
    settings_ = FilterSettings(max_age_s=40 * 365 * 86400.0) if "ts" in changes else SETTINGS
    assert check_fix(ping, NOW, settings_) is None


def test_huge_max_age_means_no_limit() -> None:
    ping = Ping("u1", datetime(1999, 6, 1, tzinfo=UTC), *LIMA)
    assert check_fix(ping, NOW, FilterSettings(max_age_s=1e30)) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("speed", -0.1),
        ("speed", 350.1),
        ("speed", math.nan),
        ("heading", -1.0),
        ("heading", 360.5),
        ("heading", math.inf),
        ("accuracy", -1.0),
        ("battery", 100.5),
        ("battery", -1.0),
        ("alt", -500.5),
        ("alt", 20_000.5),
        ("alt", math.nan),
    ],
)
def test_out_of_range_optional_field_is_dropped_and_flagged(field: str, value: float) -> None:
    ping = _ok(**{field: value})
    assert getattr(ping, field) is None
    assert ping.flags == PingFlag.FIELD_DROPPED
    assert (ping.lat, ping.lon) == LIMA  # the position itself is kept


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("speed", 0.0),
        ("speed", 350.0),
        ("heading", 0.0),
        ("heading", 359.9),
        ("accuracy", 0.0),
        ("battery", 0.0),
        ("battery", 100.0),
        ("alt", -500.0),
        ("alt", 20_000.0),
    ],
)
def test_in_range_optional_field_is_kept(field: str, value: float) -> None:
    ping = _ok(**{field: value})
    assert getattr(ping, field) == value
    assert ping.flags == PingFlag.NONE


def test_heading_360_is_north() -> None:
    ping = _ok(heading=360.0)
    assert ping.heading == 0.0
    assert ping.flags == PingFlag.NONE


def test_several_bad_fields_one_flag() -> None:
    ping = _ok(speed=-5.0, battery=180.0, alt=99_999.0)
    assert (ping.speed, ping.battery, ping.alt) == (None, None, None)
    assert ping.flags == PingFlag.FIELD_DROPPED


def test_poor_accuracy() -> None:
    assert _ok(accuracy=SETTINGS.poor_accuracy_m).flags == PingFlag.NONE
    poor = _ok(accuracy=SETTINGS.poor_accuracy_m + 1)
    assert poor.flags == PingFlag.POOR_ACCURACY
    assert poor.accuracy == SETTINGS.poor_accuracy_m + 1
    # 150 km: the number is dropped, but the device did say the fix was terrible.
    awful = _ok(accuracy=150_000.0)
    assert awful.accuracy is None
    assert awful.flags == PingFlag.POOR_ACCURACY | PingFlag.FIELD_DROPPED


def test_existing_flags_are_kept() -> None:
    assert _ok(flags=PingFlag.TS_DEFAULTED | PingFlag.MOCK, battery=-3.0).flags == (
        PingFlag.TS_DEFAULTED | PingFlag.MOCK | PingFlag.FIELD_DROPPED
    )


def _edgy(low: float, high: float) -> st.SearchStrategy[float | None]:
    """Floats around and beyond a field's limits, plus None, NaN and infinities."""
    return st.none() | st.floats() | st.sampled_from([low, high, low - 1e-9, high + 1e-9, 0.0, -0.0, 360.0])


@settings(max_examples=400, deadline=None)
@given(
    lat=_edgy(-90.0, 90.0),
    lon=_edgy(-180.0, 180.0),
    ts_offset=st.sampled_from([0.0, -1.0, 1.0, SETTINGS.future_tolerance_s, -SETTINGS.max_age_s])
    | st.floats(-1e10, 1e10)
    | st.just((datetime(1999, 1, 1, tzinfo=UTC) - NOW).total_seconds() - 1),
    speed=_edgy(0.0, 350.0),
    heading=_edgy(0.0, 360.0),
    accuracy=_edgy(0.0, SETTINGS.poor_accuracy_m) | st.sampled_from([100_000.0, 150_000.0]),
    battery=_edgy(0.0, 100.0),
    alt=_edgy(-500.0, 20_000.0),
    max_age_s=st.sampled_from([SETTINGS.max_age_s, 1e12]),  # 1e12: "no limit", so 1999 matters
    poor_accuracy_m=st.sampled_from([SETTINGS.poor_accuracy_m, 1e6]),  # above the 100 km field limit
)
def test_property_all_clear_means_no_step_would_act(
    lat: float | None,
    lon: float | None,
    ts_offset: float,
    speed: float | None,
    heading: float | None,
    accuracy: float | None,
    battery: float | None,
    alt: float | None,
    max_age_s: float,
    poor_accuracy_m: float,
) -> None:
    ping = Ping(
        "u1",
        NOW + timedelta(seconds=ts_offset),
        lat if lat is not None else 1.0,
        lon if lon is not None else 1.0,
        alt=alt,
        speed=speed,
        heading=heading,
        accuracy=accuracy,
        battery=battery,
    )
    ctx = FilterContext(NOW, FilterSettings(max_age_s=max_age_s, poor_accuracy_m=poor_accuracy_m))
    if not all_clear(ping, ctx):
        return
    copy = replace(ping)
    for name, step in STRUCTURAL_STEPS:
        assert step(copy, ctx) is False, name
    assert copy == ping


def test_all_clear_takes_the_common_case() -> None:
    ping = Ping(
        "u1",
        NOW - timedelta(seconds=5),
        *LIMA,
        alt=79.0,
        speed=8.3,
        heading=182.0,
        accuracy=12.0,
        battery=81.0,
    )
    assert all_clear(ping, FilterContext(NOW, SETTINGS))


# -- kinematics -----------------------------------------------------------------------


def test_normal_walk_is_clean() -> None:
    kf = KinematicFilter(SETTINGS)
    pings = walk(20, step_m=14.0, dt_s=10.0)  # 1.4 m/s, steps wider than the accuracies
    assert run(kf, pings) == []
    assert all(p.flags == PingFlag.NONE for p in pings)


def test_single_spike_is_an_outlier_once_the_next_fix_arrives() -> None:
    kf = KinematicFilter(SETTINGS)
    track = walk(4, step_m=14.0, dt_s=10.0)
    a, b, c, d = track
    spike = fix(15.0, *move(b.lat, b.lon, 200.0, 5_000.0))
    assert run(kf, [a, b]) == []
    assert kf.apply(spike, UnitKind.FOOT) == []
    assert spike.flags == PingFlag.SUSPECT  # held back from "latest" at once
    assert kf.apply(c, UnitKind.FOOT) == [FlagUpdate("u1", spike.ts, PingFlag.OUTLIER)]
    assert c.flags == PingFlag.NONE  # judged against b, not against the spike
    assert kf.apply(d, UnitKind.FOOT) == []
    assert d.flags == PingFlag.NONE


def test_bad_first_fix_does_not_condemn_the_good_ones() -> None:
    kf = KinematicFilter(SETTINGS)
    bad = fix(0.0, *move(*LIMA, 30.0, 50_000.0))
    good = walk(5, step_m=14.0, dt_s=10.0, t0=10.0)
    run(kf, [bad, *good])
    # The first good fix cannot be told from a spike yet; the second confirms it.
    assert [p.flags for p in good] == [PingFlag.SUSPECT] + [PingFlag.NONE] * 4
    # Documented limit: the first fix has no predecessor, so it is never called an outlier.
    assert bad.flags == PingFlag.NONE


def test_real_fast_jump_is_accepted_when_the_next_fix_confirms_it() -> None:
    kf = KinematicFilter(SETTINGS)
    a, b = walk(2, step_m=150.0, dt_s=10.0)  # a patrol car at 15 m/s
    jump_lat, jump_lon = move(b.lat, b.lon, 90.0, 3_000.0)  # 3 km in 30 s: 100 m/s, implausible
    j = fix(40.0, jump_lat, jump_lon)
    k = fix(50.0, *move(jump_lat, jump_lon, 90.0, 150.0))  # consistent with j
    m = fix(60.0, *move(k.lat, k.lon, 90.0, 150.0))
    updates = run(kf, [a, b, j, k, m], UnitKind.PATROL_CAR)
    assert updates == []
    assert j.flags == PingFlag.SUSPECT  # stays as history
    assert k.flags == PingFlag.NONE and m.flags == PingFlag.NONE


def test_long_gps_gap_is_plausible() -> None:
    kf = KinematicFilter(SETTINGS)
    a = fix(0.0, *LIMA)
    # Two hours later, 50 km away (Lima to Punta Hermosa): 6.9 m/s even on foot.
    b = fix(7200.0, *move(*LIMA, 160.0, 50_000.0))
    c = fix(7210.0, *move(b.lat, b.lon, 160.0, 14.0))
    assert run(kf, [a, b, c]) == []
    assert a.flags == b.flags == c.flags == PingFlag.NONE


def test_long_gap_still_catches_an_impossible_distance() -> None:
    kf = KinematicFilter(SETTINGS)
    a = fix(0.0, *LIMA)
    b = fix(7200.0, *move(*LIMA, 160.0, 500_000.0))  # 69 m/s on foot
    run(kf, [a, b])
    assert b.flags == PingFlag.SUSPECT


def test_speed_limit_depends_on_kind() -> None:
    step = 20.0 * 10.0  # 20 m/s: a car, not a sereno on foot
    for kind, expected in [(UnitKind.FOOT, PingFlag.SUSPECT), (UnitKind.PATROL_CAR, PingFlag.NONE)]:
        a, b = walk(2, step_m=step, dt_s=10.0)
        run(KinematicFilter(SETTINGS), [a, b], kind)
        assert b.flags == expected, kind


def test_threshold_uses_geodesic_distance_minus_accuracies() -> None:
    # Two fixes whose geodesic gap minus accuracies is just under / just over the foot limit.
    dt = 10.0
    for factor, expected in [(0.98, PingFlag.NONE), (1.02, PingFlag.SUSPECT)]:
        target = FOOT_MAX * dt * factor + 2 * 40.0
        lat2, lon2 = move(*LIMA, 135.0, target)
        assert geod_m(*LIMA, lat2, lon2) == pytest.approx(target, rel=1e-9)
        a = fix(0.0, *LIMA, acc=40.0)
        b = fix(dt, lat2, lon2, acc=40.0)
        run(KinematicFilter(SETTINGS), [a, b])
        assert b.flags == expected, factor


def test_late_fix_is_flagged_and_skips_kinematics() -> None:
    kf = KinematicFilter(SETTINGS)
    a, b, c = walk(3, step_m=14.0, dt_s=10.0)
    run(kf, [a, c])
    late = fix(5.0, *move(*LIMA, 0.0, 90_000.0))  # far away, but late: not judged
    assert kf.apply(late, UnitKind.FOOT) == []
    assert late.flags == PingFlag.LATE
    same_time = fix(c.ts.timestamp() - T0.timestamp(), b.lat, b.lon)  # same ts as c, other place
    kf.apply(same_time, UnitKind.FOOT)
    assert same_time.flags == PingFlag.LATE
    d = fix(30.0, *move(c.lat, c.lon, 90.0, 14.0))
    kf.apply(d, UnitKind.FOOT)
    assert d.flags == PingFlag.NONE  # judged against c; the late fixes changed nothing


def test_exact_duplicates_get_their_first_flags_back() -> None:
    kf = KinematicFilter(SETTINGS)
    a, b, c = walk(3, step_m=14.0, dt_s=10.0)
    spike = fix(15.0, *move(b.lat, b.lon, 0.0, 9_000.0))
    run(kf, [a, b, spike])

    def again(p: Ping) -> Ping:
        return replace(p, flags=PingFlag.NONE)

    dup_b = again(b)
    kf.apply(dup_b, UnitKind.FOOT)
    assert dup_b.flags == PingFlag.NONE  # a redelivered good fix is not LATE
    dup_spike = again(spike)
    kf.apply(dup_spike, UnitKind.FOOT)
    assert dup_spike.flags == PingFlag.SUSPECT
    assert kf.apply(c, UnitKind.FOOT) == [FlagUpdate("u1", spike.ts, PingFlag.OUTLIER)]
    dup_spike2 = again(spike)
    assert kf.apply(dup_spike2, UnitKind.FOOT) == []
    assert dup_spike2.flags == PingFlag.SUSPECT | PingFlag.OUTLIER


def test_jitter_of_a_stationary_unit() -> None:
    kf = KinematicFilter(SETTINGS)
    anchor = fix(0.0, *LIMA, acc=20.0)
    near1 = fix(10.0, *move(*LIMA, 10.0, 15.0), acc=20.0, speed=0.0)
    near2 = fix(20.0, *move(*LIMA, 200.0, 30.0), acc=20.0)  # 45 m from near1, 30 m from anchor
    run(kf, [anchor, near1, near2])
    assert near1.flags == PingFlag.JITTER
    assert near2.flags == PingFlag.JITTER  # measured from the anchor, not from near1
    moved = fix(30.0, *move(*LIMA, 90.0, 60.0), acc=20.0)
    after = fix(40.0, *move(moved.lat, moved.lon, 90.0, 10.0), acc=20.0)
    run(kf, [moved, after])
    assert moved.flags == PingFlag.NONE  # beyond 20 + 20 m: a new anchor
    assert after.flags == PingFlag.JITTER  # 10 m from the new anchor


@pytest.mark.parametrize(
    ("acc_anchor", "acc_new", "speed"),
    [
        (20.0, 20.0, 1.5),  # the device says it is moving
        (None, 20.0, None),  # an accuracy unknown
        (20.0, None, None),
        (0.0, 20.0, None),  # zero accuracy is not a real error circle
    ],
)
def test_no_jitter_without_the_evidence(
    acc_anchor: float | None, acc_new: float | None, speed: float | None
) -> None:
    kf = KinematicFilter(SETTINGS)
    a = fix(0.0, *LIMA, acc=acc_anchor)
    b = fix(10.0, *move(*LIMA, 0.0, 5.0), acc=acc_new, speed=speed)
    run(kf, [a, b])
    assert b.flags == PingFlag.NONE


def test_units_are_independent() -> None:
    kf = KinematicFilter(SETTINGS)
    a1, b1 = walk(2, step_m=14.0, dt_s=10.0)
    a2 = replace(fix(0.0, *move(*LIMA, 0.0, 80_000.0)), unit_id="u2")  # far from u1: its own first fix
    b2 = replace(fix(10.0, *move(a2.lat, a2.lon, 0.0, 14.0)), unit_id="u2")
    run(kf, [a1, a2, b1, b2])
    assert [p.flags for p in (a1, b1, a2, b2)] == [PingFlag.NONE] * 4
    assert len(kf) == 2
    kf.forget("u2")
    assert len(kf) == 1


def test_state_is_bounded() -> None:
    kf = KinematicFilter(SETTINGS)
    run(kf, walk(500, step_m=14.0, dt_s=10.0))
    track = kf._tracks["u1"]
    assert len(track.fixes) <= HISTORY
    assert len(track.recent) <= RECENT


def test_missing_kind_in_settings_falls_back_to_the_fastest() -> None:
    custom = FilterSettings(max_speed_mps={UnitKind.FOOT: 5.0, UnitKind.PATROL_CAR: 50.0})
    a, b = walk(2, step_m=450.0, dt_s=10.0)  # 45 m/s
    run(KinematicFilter(custom), [a, b], UnitKind.DRONE)
    assert b.flags == PingFlag.NONE


# -- properties -----------------------------------------------------------------------


@st.composite
def plausible_track(draw: st.DrawFn, kind: UnitKind) -> list[Ping]:
    """A track whose every leg needs at most half the kind's speed limit."""
    limit = SETTINGS.max_speed_mps[kind]
    lat = draw(st.floats(-60.0, 60.0))
    lon = draw(st.floats(-179.0, 179.0))
    n = draw(st.integers(2, 15))
    t = 0.0
    pings = [fix(t, lat, lon, acc=draw(st.floats(3.0, 30.0)))]
    for _ in range(n - 1):
        dt = float(draw(st.integers(2, 60)))
        dist = draw(st.floats(0.0, 0.5 * limit * dt))
        lat, lon = move(lat, lon, draw(st.floats(0.0, 360.0)), dist)
        t += dt
        pings.append(fix(t, lat, lon, acc=draw(st.floats(3.0, 30.0))))
    return pings


_kinds = st.sampled_from(list(UnitKind))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), kind=_kinds)
def test_property_one_spike_in_a_plausible_track_is_exactly_the_outlier(
    data: st.DataObject, kind: UnitKind
) -> None:
    track = data.draw(plausible_track(kind))
    i = data.draw(st.integers(1, len(track) - 1))  # a fix before and after the spike
    before = track[i - 1]
    spike_lat, spike_lon = move(
        before.lat, before.lon, data.draw(st.floats(0.0, 360.0)), data.draw(st.floats(100_000.0, 2_000_000.0))
    )
    spike = fix(
        before.ts.timestamp() - T0.timestamp() + 1.0,
        spike_lat,
        spike_lon,
        acc=data.draw(st.floats(3.0, 30.0)),
    )
    pings = [*track[:i], spike, *track[i:]]
    updates = run(KinematicFilter(SETTINGS), pings, kind)
    assert updates == [FlagUpdate("u1", spike.ts, PingFlag.OUTLIER)]
    assert spike.flags & PingFlag.SUSPECT
    for p in track:
        assert not p.flags & (PingFlag.SUSPECT | PingFlag.OUTLIER | PingFlag.LATE), p


@settings(max_examples=100, deadline=None)
@given(data=st.data(), kind=_kinds)
def test_property_a_plausible_track_raises_no_alarm(data: st.DataObject, kind: UnitKind) -> None:
    track = data.draw(plausible_track(kind))
    assert run(KinematicFilter(SETTINGS), track, kind) == []
    assert not any(p.flags & (PingFlag.SUSPECT | PingFlag.OUTLIER | PingFlag.LATE) for p in track)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), kind=_kinds)
def test_property_bad_first_fix_costs_one_suspect_fix(data: st.DataObject, kind: UnitKind) -> None:
    track = data.draw(plausible_track(kind))
    first = track[0]
    bad = fix(-1.0, *move(first.lat, first.lon, data.draw(st.floats(0.0, 360.0)), 500_000.0))
    run(KinematicFilter(SETTINGS), [bad, *track], kind)
    assert track[0].flags & PingFlag.SUSPECT
    assert not any(p.flags & (PingFlag.SUSPECT | PingFlag.OUTLIER) for p in track[1:])


# -- pipeline -------------------------------------------------------------------------


def test_pipeline_step_names_are_ordered_and_visible() -> None:
    pipeline = FilterPipeline(SETTINGS)
    assert pipeline.step_names == [name for name, _ in STRUCTURAL_STEPS] + ["kinematics"]
    assert pipeline.step_names[:4] == ["finite_position", "lat_range", "lon_range", "null_island"]


def test_pipeline_reports_which_steps_fired() -> None:
    pipeline = FilterPipeline(SETTINGS)
    first = Ping("u1", NOW - timedelta(seconds=60), *LIMA, speed=-2.0, battery=150.0, accuracy=5.0)
    out = pipeline.process(first, UnitKind.FOOT, NOW)
    assert out == Filtered(first, [], ["speed_range", "battery_range"])
    assert first.flags == PingFlag.FIELD_DROPPED

    spike = Ping("u1", NOW - timedelta(seconds=50), *move(*LIMA, 0.0, 20_000.0), accuracy=5.0)
    out = pipeline.process(spike, UnitKind.FOOT, NOW)
    assert isinstance(out, Filtered) and out.fired == ["suspect"]

    nxt = Ping("u1", NOW - timedelta(seconds=40), *move(*LIMA, 0.0, 14.0), accuracy=5.0, heading=360.0)
    out = pipeline.process(nxt, UnitKind.FOOT, NOW)
    assert out == Filtered(nxt, [FlagUpdate("u1", spike.ts, PingFlag.OUTLIER)], ["outlier"])
    assert nxt.heading == 0.0  # normalised, which is not "firing"

    late = Ping("u1", NOW - timedelta(seconds=45), *LIMA)
    out = pipeline.process(late, UnitKind.FOOT, NOW)
    assert isinstance(out, Filtered) and out.fired == ["late"]

    # A poor fix near the last anchor: its wide error circle makes it jitter.
    poor = Ping("u1", NOW - timedelta(seconds=30), *move(*LIMA, 0.0, 40.0), accuracy=250.0)
    out = pipeline.process(poor, UnitKind.FOOT, NOW)
    assert isinstance(out, Filtered) and out.fired == ["poor_accuracy", "jitter"]
    assert poor.flags == PingFlag.POOR_ACCURACY | PingFlag.JITTER


def test_pipeline_rejection_leaves_the_kinematic_state_alone() -> None:
    pipeline = FilterPipeline(SETTINGS)
    a = Ping("u1", NOW - timedelta(seconds=20), *LIMA, accuracy=5.0)
    assert isinstance(pipeline.process(a, UnitKind.FOOT, NOW), Filtered)
    future = Ping("u1", NOW + timedelta(hours=2), *move(*LIMA, 0.0, 10.0))
    rejection = pipeline.process(future, UnitKind.FOOT, NOW)
    assert isinstance(rejection, Rejection) and rejection.reason == "fix_in_future"
    # Had the future fix entered the state, this one would be LATE.
    b = Ping("u1", NOW - timedelta(seconds=10), *move(*LIMA, 90.0, 14.0), accuracy=5.0)
    out = pipeline.process(b, UnitKind.FOOT, NOW)
    assert isinstance(out, Filtered) and out.fired == [] and b.flags == PingFlag.NONE


def test_pipeline_agrees_with_check_fix() -> None:
    cases = [
        Ping("u1", NOW, 95.0, 0.0),
        Ping("u1", NOW, 0.0, 0.0),
        Ping("u1", NOW - timedelta(days=30), *LIMA),
        Ping("u1", NOW, *LIMA, speed=-1.0),
    ]
    for ping in cases:
        direct = check_fix(replace(ping), NOW, SETTINGS)
        via = FilterPipeline(SETTINGS).process(replace(ping), UnitKind.FOOT, FilterContext(NOW, SETTINGS))
        if direct is None:
            assert isinstance(via, Filtered)
        else:
            assert via == direct
