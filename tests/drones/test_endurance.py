"""drones.endurance: formulas checked by hand, distances against pyproj's geodesic, profiles and homes."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from pyproj import Geod

from drones.endurance import SquadronModel, endurance_many, geodesic_m, is_airborne
from geo.distance import haversine_m
from geo.docks import PROFILES, Dock
from tracker.model import DroneTelemetry, Ping

GEOD = Geod(ellps="WGS84")
HOME = (-12.1197, -77.0297)  # the demo's Palacio dock (lat, lon)
T0 = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
M3TD = PROFILES["m3td"]  # 50 min × 0.7 = 2100 s usable, reserve 0.25, 15 m/s


def point(dist_m: float, azimuth: float = 0.0) -> tuple[float, float]:
    """(lat, lon) ``dist_m`` from HOME along ``azimuth`` (° from north), by pyproj's forward geodesic."""
    lon, lat, _ = GEOD.fwd(HOME[1], HOME[0], azimuth, dist_m)
    return lat, lon


def test_profiles_hold_the_published_flight_times() -> None:
    minutes = {k: p.max_flight_s / 60 for k, p in PROFILES.items()}
    assert minutes == {"m3td": 50, "m4td": 54, "m30t": 40, "m3e": 45, "m30t_rc": 41}
    assert M3TD.usable_s == pytest.approx(2100.0)


def test_figures_by_hand_from_the_profile_alone() -> None:
    lat, lon = point(3000.0)  # 3 km due north of home
    e = endurance_many(M3TD.usable_s, M3TD.reserve, M3TD.cruise_mps, 80.0, np.nan, lat, lon, *HOME, 30.0)
    # E = 2100; T = 2100 × 0.8 = 1680; R = 2100 × 0.25 = 525; A = 1155; home = 3000/15 + 30 = 230.
    assert e.endurance_s[0] == pytest.approx(2100.0)
    assert not e.aircraft_limited[0]
    assert e.remaining_s[0] == pytest.approx(1680.0)
    assert e.reserve_s[0] == pytest.approx(525.0)
    assert e.usable_remaining_s[0] == pytest.approx(1155.0)
    assert e.distance_home_m[0] == pytest.approx(3000.0, abs=1e-3)
    assert e.time_home_s[0] == pytest.approx(230.0)
    assert e.margin_s[0] == pytest.approx(925.0)
    assert e.range_m[0] == pytest.approx(15 * 1155.0)


def test_the_more_conservative_of_profile_and_aircraft_estimate_is_used() -> None:
    lat, lon = point(1500.0, 90.0)
    args = (M3TD.usable_s, M3TD.reserve, M3TD.cruise_mps)
    # The aircraft says 1000 s left at 80 %: it draws as if a full charge lasted 1250 s (< 2100).
    low = endurance_many(*args, 80.0, 1000.0, lat, lon, *HOME)
    assert low.aircraft_limited[0]
    assert low.endurance_s[0] == pytest.approx(1250.0)
    assert low.remaining_s[0] == pytest.approx(1000.0)
    assert low.reserve_s[0] == pytest.approx(312.5)  # the same 25 % of a charge, at its draw
    assert low.usable_remaining_s[0] == pytest.approx(687.5)
    assert low.margin_s[0] == pytest.approx(687.5 - (100.0 + 30.0))
    # An optimistic aircraft (2000 s at 80 % → 2500 s a charge) does not lengthen the profile's figure.
    high = endurance_many(*args, 80.0, 2000.0, lat, lon, *HOME)
    assert not high.aircraft_limited[0]
    assert high.remaining_s[0] == pytest.approx(1680.0)
    # No percentage, only the aircraft's estimate: the reserve at the profile's rate is taken off it.
    only_own = endurance_many(*args, np.nan, 900.0, lat, lon, *HOME)
    assert only_own.usable_remaining_s[0] == pytest.approx(900.0 - 525.0)
    # An empty battery: the whole reserve is missing, range 0.
    empty = endurance_many(*args, 0.0, 0.0, lat, lon, *HOME)
    assert empty.usable_remaining_s[0] == pytest.approx(-525.0)
    assert empty.range_m[0] == 0.0


def test_unknown_inputs_give_nan_not_a_guess() -> None:
    args = (M3TD.usable_s, M3TD.reserve, M3TD.cruise_mps)
    nothing = endurance_many(*args, np.nan, np.nan, *HOME, *HOME)
    assert math.isnan(nothing.usable_remaining_s[0]) and math.isnan(nothing.margin_s[0])
    assert math.isnan(nothing.range_m[0])
    homeless = endurance_many(*args, 60.0, np.nan, *HOME, np.nan, np.nan)
    assert homeless.usable_remaining_s[0] == pytest.approx(2100 * 0.35)
    assert math.isnan(homeless.distance_home_m[0]) and math.isnan(homeless.margin_s[0])


def test_distances_are_the_geodesic_of_points_placed_by_pyproj() -> None:
    rng = np.random.default_rng(6)
    dist = rng.uniform(0.0, 20_000.0, 200)
    az = rng.uniform(-180.0, 180.0, 200)
    pts = np.array([point(d, a) for d, a in zip(dist, az, strict=True)])
    got = geodesic_m(pts[:, 0], pts[:, 1], HOME[0], HOME[1])
    np.testing.assert_allclose(got, dist, atol=1e-3)  # millimetres over 20 km
    # The coverage layers' haversine agrees within its documented 0.5 %, so both views of a dock match.
    hav = np.array([haversine_m(la, lo, *HOME) for la, lo in pts])
    assert np.all(np.abs(hav - dist) <= 0.006 * dist + 1e-6)


def test_vectorised_equals_one_at_a_time() -> None:
    rng = np.random.default_rng(7)
    n = 50
    pts = np.array(
        [point(d, a) for d, a in zip(rng.uniform(0, 9000, n), rng.uniform(0, 360, n), strict=True)]
    )
    pct = rng.uniform(0, 100, n)
    own = np.where(rng.random(n) < 0.5, rng.uniform(0, 3000, n), np.nan)
    many = endurance_many(2100.0, 0.25, 15.0, pct, own, pts[:, 0], pts[:, 1], *HOME)
    for i in range(n):
        one = endurance_many(2100.0, 0.25, 15.0, pct[i], own[i], pts[i, 0], pts[i, 1], *HOME)
        assert one.margin_s[0] == pytest.approx(many.margin_s[i])
        assert one.endurance_s[0] == pytest.approx(many.endurance_s[i])


def tel(uid: str, **kw: object) -> DroneTelemetry:
    return DroneTelemetry(uid, T0, **kw)  # type: ignore[arg-type]


def test_squadron_model_resolves_profile_and_home() -> None:
    docks = [
        Dock("dock-a", "A", *HOME, PROFILES["m4td"], profile_key="m4td", aircraft_id="dr-a"),
        Dock("dock-b", "B", -12.13, -77.02, PROFILES["m30t"], profile_key="m30t"),
    ]
    model = SquadronModel(PROFILES, "m3td", {"dr-x": "m3e", "dr-a": "m30t_rc"}, docks, landing_s=20.0)
    fix = Ping("dr-a", T0, *point(1500.0))
    # Assignment beats the dock; the dock (named as the aircraft's) gives the home.
    e = model.assess("dr-a", tel("dr-a", battery_pct=90.0, flight_mode="mission"), fix)
    assert (e.profile_key, e.home_source, e.dock and e.dock.dock_id) == ("m30t_rc", "dock", "dock-a")
    assert e.airborne
    assert e.time_home_s == pytest.approx(1500.0 / 15.0 + 20.0)
    # The telemetry's home point beats the dock; the dock its telemetry's dock_id names gives the profile.
    e = model.assess("dr-b", tel("dr-b", home_lat=HOME[0], home_lon=HOME[1], dock_id="dock-b"), fix)
    assert (e.profile_key, e.home_source, e.home_lat) == ("m30t", "telemetry", HOME[0])
    # Neither: the default profile and no home.
    e = model.assess("dr-z", tel("dr-z", battery_pct=50.0), None)
    assert (e.profile_key, e.home_source, e.distance_home_m, e.margin_s) == ("m3td", None, None, None)
    with pytest.raises(ValueError, match="'nope' is not one of"):
        SquadronModel(PROFILES, "m3td", {"dr-1": "nope"})


def test_airborne_means_not_docked_and_not_on_ground() -> None:
    assert not is_airborne(None)
    assert not is_airborne(tel("d", docked=True, flight_mode="mission"))
    assert not is_airborne(tel("d", flight_mode="on_ground"))
    assert is_airborne(tel("d", flight_mode="returning_home"))
    assert is_airborne(tel("d"))  # nothing said: watched as flying
