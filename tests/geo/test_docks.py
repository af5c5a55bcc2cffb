"""geo.docks against independent references: geodesic reach discs (pyproj.Geod on the haversine's sphere)
unioned with Shapely in an equal-area projection, distances from pyproj, and hand-checked mission budgets.

As in tests/geo/test_coverage.py, the grid judges a cell by its centre, so the
ratios agree statistically (within 1 % for reaches of several hundred metres
over resolution-10 cells, or resolution 11 on the smaller random shapes).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import CRS, Geod, Transformer

from geo.area import Area, random_points
from geo.coverage import coverage, kind_pace
from geo.distance import EARTH_RADIUS_M
from geo.docks import (
    PROFILES,
    AircraftProfile,
    Dock,
    DockDefaults,
    dock_eta,
    dock_reach,
    dock_reach_sets,
    docks_from_geojson,
    energy_radius_m,
)
from geo.eta import StraightLineEta
from geo.hexgrid import HexGrid, hexgrid
from tests.geo.test_coverage import random_boundary

SPHERE = Geod(a=EARTH_RADIUS_M, b=EARTH_RADIUS_M)
M3TD = PROFILES["m3td"]
M4TD = PROFILES["m4td"]
M30T = PROFILES["m30t"]


def expected_radius(d: Dock, target_s: float, takeoff_s: float, hold_s: float | None = None) -> float:
    """The reach radius written out from the mission budget, independently of geo.docks."""
    if not d.in_service:
        return -math.inf
    p = d.profile
    hold = d.hold_s if hold_s is None else hold_s
    charge = 1.0 if d.battery_pct is None else d.battery_pct / 100.0
    budget = p.max_flight_s * p.derating * charge * (1.0 - p.reserve)
    # out: takeoff + d/v; back: d/v + takeoff; plus the hold: 2 d / v = budget - hold - 2 takeoff
    by_energy = (budget - hold - 2 * takeoff_s) * p.cruise_mps / 2
    by_time = (target_s - takeoff_s) * p.cruise_mps
    return min(by_time, by_energy, p.max_radius_m)


def geodesic_ratio(area: Area, docks: list[Dock], radii: list[float]) -> float:
    """Covered share of ``area``: each dock's reach as a geodesic circle, unioned, ∩ boundary, area ratio."""
    lon0, lat0 = area.centroid.x, area.centroid.y
    laea = CRS.from_proj4(f"+proj=laea +lat_0={lat0} +lon_0={lon0} +R={EARTH_RADIUS_M} +units=m +no_defs")
    fwd = Transformer.from_crs(
        CRS.from_proj4(f"+proj=longlat +R={EARTH_RADIUS_M} +no_defs"), laea, always_xy=True
    )

    def project(g: shapely.Geometry) -> shapely.Geometry:
        return shapely.transform(g, lambda c: np.column_stack(fwd.transform(c[:, 0], c[:, 1])))

    az = np.linspace(0.0, 360.0, 721)[:-1]
    discs = []
    for d, r in zip(docks, radii, strict=True):
        if r <= 0:
            continue
        lon, lat, _ = SPHERE.fwd(np.full(az.shape, d.lon), np.full(az.shape, d.lat), az, np.full(az.shape, r))
        discs.append(project(shapely.Polygon(np.column_stack([lon, lat]))))
    area_m = project(area)
    if not discs:
        return 0.0
    return float(shapely.intersection(shapely.union_all(discs), area_m).area / area_m.area)


def area_ratio(grid: HexGrid, eta: np.ndarray) -> float:
    w = grid.clipped_area_m2
    return float(w[np.isfinite(eta)].sum() / w.sum())


def demo_like_docks() -> list[Dock]:
    return [
        Dock("palacio", "Palacio", -12.1197, -77.0297, M3TD),
        Dock("costa", "Costa Verde", -12.1305, -77.0335, M4TD, battery_pct=9.0),  # energy-limited
        Dock("surquillo", "Surquillo", -12.1133, -77.0190, M3TD, battery_pct=40.0, hold_s=300.0),
        Dock("taller", "En taller", -12.1100, -77.0450, M3TD, in_service=False),
    ]


@pytest.mark.parametrize(("target_s", "takeoff_s"), [(90.0, 30.0), (150.0, 30.0), (120.0, 0.0)])
def test_miraflores_ratio_agrees_with_geodesic_buffers(
    mgrid: HexGrid, miraflores: Area, target_s: float, takeoff_s: float
) -> None:
    docks = demo_like_docks()
    radii = [expected_radius(d, target_s, takeoff_s) for d in docks]
    for d, r in zip(docks, radii, strict=True):
        assert dock_reach(d, target_s, takeoff_s).radius_m == pytest.approx(r, rel=1e-12, abs=1e-9)
    eta, which = dock_eta(mgrid, docks, target_s, takeoff_s)
    ref = geodesic_ratio(miraflores, docks, radii)
    assert 0.05 < ref < 0.99
    assert area_ratio(mgrid, eta) == pytest.approx(ref, abs=0.01)
    assert not np.any(which == 3)  # the dock in the workshop covers nothing


@pytest.mark.parametrize("seed", range(4))
def test_random_boundaries_agree_with_geodesic_buffers(seed: int) -> None:
    rng = np.random.default_rng(500 + seed)
    area = random_boundary(rng)
    grid = hexgrid(area, 11)
    pts = random_points(area, 4, rng)
    docks = [
        Dock(f"d{i}", f"d{i}", float(lat), float(lon), M3TD, battery_pct=float(rng.uniform(5, 100)),
             hold_s=float(rng.uniform(0, 600)))
        for i, (lon, lat) in enumerate(pts)
    ]  # fmt: skip
    target_s = 70.0
    radii = [expected_radius(d, target_s, 30.0) for d in docks]
    eta, _ = dock_eta(grid, docks, target_s)
    ref = geodesic_ratio(area, docks, radii)
    assert area_ratio(grid, eta) == pytest.approx(ref, abs=0.01)


def test_eta_is_takeoff_plus_flight_by_pyproj_distance(mgrid: HexGrid) -> None:
    docks = demo_like_docks()
    target_s, takeoff_s = 150.0, 30.0
    eta, which = dock_eta(mgrid, docks, target_s, takeoff_s)
    ref = np.full(mgrid.size, np.inf)
    near_edge = np.zeros(mgrid.size, dtype=bool)
    for d in docks:
        _, _, dist = SPHERE.inv(np.full(mgrid.size, d.lon), np.full(mgrid.size, d.lat), mgrid.lon, mgrid.lat)
        r = expected_radius(d, target_s, takeoff_s)
        e = np.where(dist <= r, takeoff_s + dist / d.profile.cruise_mps, np.inf)
        ref = np.minimum(ref, e)
        near_edge |= np.abs(dist - r) < 1e-3  # a haversine and pyproj may round apart right at the edge
    assert np.array_equal(np.isfinite(eta) | near_edge, np.isfinite(ref) | near_edge)
    both = np.isfinite(eta) & np.isfinite(ref)
    np.testing.assert_allclose(eta[both], ref[both], rtol=1e-9)
    assert np.all((which >= 0) == np.isfinite(eta))


def test_hand_checked_reach_numbers() -> None:
    full = Dock("a", "a", -12.12, -77.03, M3TD)
    # 50 min × 0.7 × 0.75 = 1575 s of flight; (1575 - 2 × 30) / 2 × 15 m/s = 11,362.5 m; 8 min: 450 s × 15 m/s
    assert energy_radius_m(full, 30.0) == pytest.approx(11_362.5)
    r = dock_reach(full, 480.0, 30.0)
    assert (r.radius_m, r.limit) == (pytest.approx(6_750.0), "time")
    # 40 % charge: 630 s; (630 - 60) / 2 × 15 = 4,275 m, less than the 6,750 m of 8 minutes
    low = Dock("b", "b", -12.12, -77.03, M3TD, battery_pct=40.0)
    r = dock_reach(low, 480.0, 30.0)
    assert (r.radius_m, r.limit) == (pytest.approx(4_275.0), "energy")
    # ...and holding 5 minutes over the incident: (630 - 300 - 60) / 2 × 15 = 2,025 m
    assert dock_reach(low, 480.0, 30.0, hold_s=300.0).radius_m == pytest.approx(2_025.0)
    assert dock_reach(
        Dock("c", "c", -12.12, -77.03, M3TD, battery_pct=40.0, hold_s=300.0), 480.0
    ).radius_m == (pytest.approx(2_025.0))
    # Half the charge in reserve: 3000 × 0.7 × 0.5 = 1050 s; (1050 - 60) / 2 × 15 = 7,425 m
    cautious = AircraftProfile("cautious", 15.0, 3000.0, reserve=0.5)
    assert energy_radius_m(Dock("d", "d", -12.12, -77.03, cautious), 30.0) == pytest.approx(7_425.0)
    # Matrice 30T over 15 minutes: time 13,050 m, energy (1260 - 60) / 2 × 15 = 9,000 m, the Dock's 7 km link
    r = dock_reach(Dock("e", "e", -12.12, -77.03, M30T), 900.0, 30.0)
    assert (r.radius_m, r.limit, r.energy_radius_m) == (7_000.0, "range", pytest.approx(9_000.0))
    # No take-off overhead, no derating left out: the whole 15 m/s × T
    assert dock_reach(full, 100.0, 0.0).radius_m == pytest.approx(1_500.0)


def test_shrinking_reach_shrinks_the_covered_cells(mgrid: HexGrid) -> None:
    base = Dock("a", "a", -12.1197, -77.0297, M3TD, battery_pct=30.0)
    covered = []
    for hold in (0.0, 120.0, 240.0, 360.0):
        eta, _ = dock_eta(
            mgrid, [Dock("a", "a", base.lat, base.lon, M3TD, battery_pct=30.0, hold_s=hold)], 600.0
        )
        covered.append(np.isfinite(eta))
    for wide, narrow in itertools.pairwise(covered):
        assert np.all(narrow <= wide) and narrow.sum() < wide.sum()


def test_out_of_service_or_flat_battery_covers_nothing(mgrid: HexGrid) -> None:
    at = (-12.1197, -77.0297)
    for d in (
        Dock("off", "off", *at, M3TD, in_service=False),
        Dock("flat", "flat", *at, M3TD, battery_pct=0.0),
        Dock("weak", "weak", *at, M3TD, battery_pct=3.0),  # 63 s of flight: not even take-off and landing
    ):
        eta, which = dock_eta(mgrid, [d], 600.0)
        assert np.all(np.isinf(eta)) and np.all(which == -1)
        indptr, indices = dock_reach_sets(mgrid, [d])
        assert indptr.tolist() == [0, 0] and indices.shape == (0,)
    assert dock_reach(Dock("off", "off", *at, M3TD, in_service=False), 600.0).limit == "out_of_service"


def test_combines_with_unit_coverage_by_elementwise_min(mgrid: HexGrid, miraflores: Area) -> None:
    rng = np.random.default_rng(3)
    pts = random_points(miraflores, 6, rng)
    eta_model = StraightLineEta.from_names()
    units = coverage(mgrid, pts[:, 1], pts[:, 0], np.zeros(6, dtype=np.int8), 120.0, eta_model)
    docks = demo_like_docks()
    d_eta, _ = dock_eta(mgrid, docks, 120.0)
    both = np.minimum(units.best_eta_s, d_eta)
    # Every cell reached by either is reached by the union, and nothing else is.
    assert np.array_equal(np.isfinite(both), units.covered | np.isfinite(d_eta))
    geo_ref = geodesic_ratio(miraflores, docks, [expected_radius(d, 120.0, 30.0) for d in docks])
    assert area_ratio(mgrid, both) >= area_ratio(mgrid, d_eta) == pytest.approx(geo_ref, abs=0.01)
    assert kind_pace(eta_model).shape == (5,)


@settings(max_examples=40, deadline=None)
@given(
    battery=st.floats(0.0, 100.0),
    hold=st.floats(0.0, 1200.0),
    reserve=st.floats(0.0, 0.9),
    target=st.floats(30.0, 900.0),
    extra=st.floats(0.0, 600.0),
)
def test_reach_sets_with_hold_are_nested_and_match_eta(
    battery: float, hold: float, reserve: float, target: float, extra: float
) -> None:
    grid = _small_grid()
    prof = AircraftProfile("p", 15.0, 3000.0, reserve=reserve)
    docks = [
        Dock("a", "a", -12.120, -77.030, prof, battery_pct=battery, hold_s=hold),
        Dock("b", "b", -12.125, -77.025, M4TD, battery_pct=100.0 - battery),
    ]
    # More hold, less reach: the cells served with a longer hold are among those of a shorter one.
    ip1, ix1 = dock_reach_sets(grid, docks, hold_s=hold)
    ip2, ix2 = dock_reach_sets(grid, docks, hold_s=hold + extra)
    for q in range(2):
        assert set(ix2[ip2[q] : ip2[q + 1]].tolist()) <= set(ix1[ip1[q] : ip1[q + 1]].tolist())
    # With the docks' own holds and a target, each row is what that dock alone reaches (its finite ETAs).
    ip, ix = dock_reach_sets(grid, docks, target_s=target)
    for q, d in enumerate(docks):
        eta, _ = dock_eta(grid, [d], target)
        assert ix[ip[q] : ip[q + 1]].tolist() == np.flatnonzero(np.isfinite(eta)).tolist()
    # More charge never covers less.
    more = [Dock("a", "a", -12.120, -77.030, prof, battery_pct=min(100.0, battery + 10), hold_s=hold)]
    assert np.all(
        np.isfinite(dock_eta(grid, docks[:1], target)[0]) <= np.isfinite(dock_eta(grid, more, target)[0])
    )


_GRID: list[HexGrid] = []


def _small_grid() -> HexGrid:
    if not _GRID:
        _GRID.append(hexgrid(shapely.box(-77.05, -12.14, -77.01, -12.10), 9))
    return _GRID[0]


def test_many_docks_match_a_numpy_brute_force(mgrid: HexGrid) -> None:
    rng = np.random.default_rng(9)
    docks = [
        Dock(f"d{i}", "x", float(rng.uniform(-12.14, -12.10)), float(rng.uniform(-77.05, -77.01)), M3TD,
             battery_pct=float(rng.uniform(0, 100)), in_service=bool(rng.random() < 0.9))
        for i in range(25)
    ]  # fmt: skip
    target_s, takeoff_s = 200.0, 30.0
    eta, which = dock_eta(mgrid, docks, target_s, takeoff_s)
    p1, p2 = np.radians(mgrid.lat)[None, :], np.radians([d.lat for d in docks])[:, None]
    dl = np.radians(mgrid.lon)[None, :] - np.radians([d.lon for d in docks])[:, None]
    h = np.sin((p1 - p2) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    dist = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
    radius = np.array([expected_radius(d, target_s, takeoff_s) for d in docks])[:, None]
    ref = np.where(dist <= radius, takeoff_s + dist / 15.0, np.inf)
    edge = np.any(np.abs(dist - radius) < 1e-6, axis=0)
    np.testing.assert_allclose(eta[~edge], ref.min(axis=0)[~edge], rtol=1e-12)
    reached = np.isfinite(eta) & ~edge
    np.testing.assert_array_equal(which[reached], np.argmin(ref, axis=0)[reached])
    indptr, indices = dock_reach_sets(mgrid, docks, target_s=target_s)
    for q in range(len(docks)):
        row = set(indices[indptr[q] : indptr[q + 1]].tolist())
        want = set(np.flatnonzero(np.isfinite(ref[q])).tolist())
        assert row - set(np.flatnonzero(edge)) == want - set(np.flatnonzero(edge))


def feature(**props: object) -> dict[str, object]:
    geometry = props.pop("geometry", {"type": "Point", "coordinates": [-77.03, -12.12]})
    return {"type": "Feature", "properties": {"id": "d1", **props}, "geometry": geometry}


def test_docks_from_geojson_reads_properties_and_defaults() -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            feature(name="Palacio", profile="m4td", battery_pct=55, hold_s=120, aircraft="dron-01"),
            feature(
                id="d2",
                model="m30t",
                in_service=False,
                geometry={"type": "Point", "coordinates": [-77.0, -12.1, 30]},
            ),
            feature(id="d3"),
        ],
    }
    a, b, c = docks_from_geojson(fc, DockDefaults(hold_s=60.0))
    assert (a.name, a.profile, a.battery_pct, a.hold_s, a.aircraft_id, a.lat, a.lon) == (
        "Palacio", M4TD, 55.0, 120.0, "dron-01", -12.12, -77.03,
    )  # fmt: skip
    assert (b.profile_key, b.in_service, b.lat, b.lon) == ("m30t", False, -12.1, -77.0)
    assert (c.name, c.profile_key, c.hold_s, c.battery_pct) == ("d3", "m3td", 60.0, None)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"type": "Feature"}, "expected a GeoJSON FeatureCollection of dock Points, got 'Feature'"),
        ([], "expected a GeoJSON FeatureCollection"),
        ({"type": "FeatureCollection", "features": []}, "holds no dock features"),
        ({"type": "FeatureCollection", "features": [feature(id="bad id")]}, "property 'id' must be a string"),
        (
            {
                "type": "FeatureCollection",
                "features": [feature(geometry={"type": "Polygon", "coordinates": []})],
            },
            "feature 0 (dock 'd1'): geometry must be a Point",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [feature(geometry={"type": "Point", "coordinates": [-12, -100]})],
            },
            "is not [lon, lat] in degrees",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [feature(geometry={"type": "Point", "coordinates": ["a", 1]})],
            },
            "coordinates must be [lon, lat] numbers",
        ),
        (
            {"type": "FeatureCollection", "features": [feature(profile="m99")]},
            "unknown aircraft profile 'm99'; known: m30t, m30t_rc, m3e, m3td, m4td",
        ),
        ({"type": "FeatureCollection", "features": [feature(battery_pct=120)]}, "battery_pct must be 0..100"),
        (
            {"type": "FeatureCollection", "features": [feature(battery_pct="full")]},
            "'battery_pct' must be a number",
        ),
        ({"type": "FeatureCollection", "features": [feature(hold_s=-5)]}, "hold_s must be >= 0"),
        (
            {"type": "FeatureCollection", "features": [feature(in_service="yes")]},
            "'in_service' must be true or false",
        ),
        (
            {"type": "FeatureCollection", "features": [feature(aircraft="a b")]},
            "'aircraft' must be the unit id",
        ),
        ({"type": "FeatureCollection", "features": [feature(), feature()]}, "dock id 'd1' appears twice"),
        ({"type": "FeatureCollection", "features": ["x"]}, "feature 0 is not a GeoJSON Feature"),
    ],
)
def test_bad_dock_geojson_says_what_to_fix(obj: object, message: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        docks_from_geojson(obj)
    assert message in str(err.value)


def test_bad_profiles_and_arguments() -> None:
    with pytest.raises(ValueError, match="cruise_mps must be positive"):
        AircraftProfile("x", 0.0, 100.0)
    with pytest.raises(ValueError, match="derating must be in"):
        AircraftProfile("x", 10.0, 100.0, derating=1.5)
    with pytest.raises(ValueError, match="reserve must be in"):
        AircraftProfile("x", 10.0, 100.0, reserve=1.0)
    with pytest.raises(ValueError, match="is not a lat/lon"):
        Dock("x", "x", 95.0, 0.0, M3TD)
    with pytest.raises(ValueError, match="target time"):
        dock_eta(_small_grid(), [Dock("x", "x", -12.12, -77.03, M3TD)], -1.0)
    with pytest.raises(ValueError, match="take-off overhead"):
        dock_eta(_small_grid(), [Dock("x", "x", -12.12, -77.03, M3TD)], 60.0, takeoff_s=math.nan)
    eta, which = dock_eta(_small_grid(), [], 60.0)
    assert np.all(np.isinf(eta)) and np.all(which == -1)
