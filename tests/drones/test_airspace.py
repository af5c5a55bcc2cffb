"""drones.airspace against Shapely ground truth: points, paths, sorties, altitude bands, avoidance."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.ops import substring

from drones.airspace import (
    Airspace,
    AirspaceZone,
    avoidance_polygons,
    check_path,
    check_sortie,
    parse_zone,
    parse_zones,
    zones_at,
)
from geo.geofence import GeofenceError, Zone
from geo.local_frame import LocalFrame
from geo.volumes import VolumeIndex

FRAME = LocalFrame(-77.03, -12.12)
GEOD = Geod(ellps="WGS84")


def lonlat(x: float, y: float) -> tuple[float, float]:
    lon, lat = FRAME.to_lonlat(x, y)
    return float(lon), float(lat)


def square(x0: float, y0: float, size: float) -> Polygon:
    return Polygon(
        [lonlat(x0, y0), lonlat(x0 + size, y0), lonlat(x0 + size, y0 + size), lonlat(x0, y0 + size)]
    )


def feature(zid: str, poly: Polygon | MultiPolygon, **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "id": zid, "geometry": shapely.geometry.mapping(poly), "properties": props}


def zone(
    zid: str, poly: Polygon | MultiPolygon, floor: float = 0.0, ceiling: float | None = None
) -> AirspaceZone:
    return parse_zone(feature(zid, poly, kind="other", floor_m=floor, ceiling_m=ceiling))


def star(rng: np.random.Generator) -> Polygon:
    """A random star-shaped polygon (often concave) a few hundred metres across."""
    cx, cy = rng.uniform(-800, 800, 2)
    n = int(rng.integers(3, 11))
    ang = np.sort(rng.uniform(0, 2 * math.pi, n))
    r = rng.uniform(40, 400, n)
    ring = [lonlat(cx + ri * math.cos(a), cy + ri * math.sin(a)) for a, ri in zip(ang, r, strict=True)]
    poly = Polygon(ring)
    return poly if poly.is_valid and poly.area > 0 else shapely.convex_hull(poly)


def random_zones(rng: np.random.Generator, n: int) -> list[AirspaceZone]:
    out = []
    for i in range(n):
        poly = star(rng)
        floor = 0.0 if rng.random() < 0.4 else float(rng.uniform(5, 80))
        ceiling = None if rng.random() < 0.2 else floor + float(rng.uniform(10, 120))
        out.append(zone(f"Z{i}", poly, floor, ceiling))
    return out


def random_path(rng: np.random.Generator, constant: bool) -> list[tuple[float, float, float]]:
    n = int(rng.integers(2, 7))
    alt = float(rng.uniform(0, 200))
    pts = []
    for _ in range(n):
        x, y = rng.uniform(-1300, 1300, 2)
        pts.append((*lonlat(x, y), alt if constant else float(rng.uniform(0, 200))))
    return pts


def truth_bounds(z: AirspaceZone) -> tuple[float, float]:
    return (-math.inf if z.floor_m == 0 else z.floor_m), z.ceiling_m


# ----- validation ------------------------------------------------------------------------------------


def test_parse_defaults_and_round_trip() -> None:
    z = parse_zone(feature("H-1", square(0, 0, 100), name="Helipuerto", kind="heliport", colour="red"))
    assert (z.floor_m, z.ceiling_m, z.kind, z.name) == (0.0, math.inf, "heliport", "Helipuerto")
    f = z.to_feature()
    assert f["properties"]["ceiling_m"] is None and f["properties"]["colour"] == "red"
    again = parse_zone(f)
    assert (again.zone_id, again.floor_m, again.ceiling_m, again.properties["colour"]) == (
        "H-1",
        0.0,
        math.inf,
        "red",
    )


@pytest.mark.parametrize(
    ("props", "reason", "words"),
    [
        ({"kind": "stadium"}, "bad_kind", "must be one of airport, heliport"),
        ({"floor_m": 50, "ceiling_m": 40}, "bad_altitude", "must be above floor_m"),
        ({"floor_m": -5}, "bad_altitude", "between 0 and"),
        ({"ceiling_m": "high"}, "bad_altitude", "must be a number"),
        ({"name": ""}, "bad_name", "non-empty"),
    ],
)
def test_bad_properties_say_what_to_fix(props: dict[str, Any], reason: str, words: str) -> None:
    with pytest.raises(GeofenceError, match=words) as err:
        parse_zone(feature("Z1", square(0, 0, 100), **props))
    assert err.value.reason == reason


def test_geometry_errors_reuse_geofence_messages() -> None:
    bow = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    with pytest.raises(GeofenceError, match="zone 'B1': the polygon's edges cross each other") as err:
        parse_zone({"type": "Feature", "id": "B1", "geometry": bow, "properties": {}})
    assert err.value.reason == "self_intersecting"
    swapped = {
        "type": "Polygon",
        "coordinates": [[[-12.1, -97.0], [-12.0, -97.0], [-12.0, -97.1], [-12.1, -97.0]]],
    }
    with pytest.raises(GeofenceError, match="are they swapped"):
        parse_zone({"type": "Feature", "id": "S1", "geometry": swapped})
    with pytest.raises(GeofenceError, match="feature 1: zone id 'A' is used twice"):
        parse_zones({"type": "FeatureCollection", "features": [feature("A", square(0, 0, 9))] * 2})
    with pytest.raises(GeofenceError, match="needs an id"):
        parse_zone({"type": "Feature", "geometry": shapely.geometry.mapping(square(0, 0, 9))})


def test_path_positions_are_validated() -> None:
    air = Airspace([zone("Z", square(0, 0, 100))])
    with pytest.raises(GeofenceError, match="at least 2"):
        air.check_path([(-77.03, -12.12, 10.0)])
    with pytest.raises(GeofenceError, match=r"position 1: expected \[lon, lat, altitude"):
        air.check_path([(-77.03, -12.12, 10.0), (-77.03, -12.12)])
    with pytest.raises(GeofenceError, match="swapped"):
        air.check_path([(-77.03, -12.12, 10.0), (-12.12, -97.03, 10.0)])


# ----- altitude bands --------------------------------------------------------------------------------


BAND = zone("B", square(0, 0, 200), floor=30.0, ceiling=90.0)
ACROSS = [lonlat(-100, 100), lonlat(300, 100)]  # a leg across the square, 200 m of it over the footprint


@pytest.mark.parametrize("profile", ["envelope", "linear"])
def test_leg_above_the_ceiling_or_below_the_floor_is_fine(profile: Any) -> None:
    for alt in (95.0, 20.0):
        assert check_path([BAND], [(*ACROSS[0], alt), (*ACROSS[1], alt)], profile) == []
    # Touching the ceiling counts (both bounds are inside).
    hit = check_path([BAND], [(*ACROSS[0], 90.0), (*ACROSS[1], 90.0)], profile)
    assert [(v.zone_id, v.segment) for v in hit] == [("B", 0)]
    assert hit[0].from_m == pytest.approx(100.0, abs=0.05) and hit[0].to_m == pytest.approx(300.0, abs=0.05)


@pytest.mark.parametrize("profile", ["envelope", "linear"])
def test_crossing_the_band_is_a_violation(profile: Any) -> None:
    # Climbing from 0 to 120 m over 400 m: between 100 m and 300 m along, the linear altitude is 30..90.
    hit = check_path([BAND], [(*ACROSS[0], 0.0), (*ACROSS[1], 120.0)], profile)
    assert len(hit) == 1
    v = hit[0]
    if profile == "linear":
        assert [v.from_m, v.to_m] == pytest.approx([100.0, 300.0], abs=0.05)
        assert list(v.alt_range_m) == pytest.approx([30.0, 90.0], abs=0.01)
    else:
        assert v.alt_range_m == (0.0, 120.0)


def test_linear_is_exact_where_envelope_is_conservative() -> None:
    # Climbing 0 -> 40 m over 400 m: the aircraft is at 10..30 m over the footprint (floor 30 reached at its
    # far border only): linear says it touches at the border, envelope flags the whole stretch.
    low = zone("L", square(0, 0, 200), floor=35.0, ceiling=90.0)
    path = [(*ACROSS[0], 0.0), (*ACROSS[1], 40.0)]
    assert check_path([low], path, "linear") == []
    env = check_path([low], path, "envelope")
    assert len(env) == 1 and env[0].from_m == pytest.approx(100.0, abs=0.05)


def test_floor_zero_reaches_below_take_off_and_vertical_climbs() -> None:
    z = zone("G", square(0, 0, 200), floor=0.0, ceiling=60.0)
    assert [x.zone_id for x in zones_at([z], *lonlat(100, 100), -15.0)] == ["G"]
    assert zones_at([z], *lonlat(100, 100), 61.0) == []
    climb = check_path([z], [(*lonlat(100, 100), 0.0), (*lonlat(100, 100), 120.0)], "linear")
    assert len(climb) == 1 and climb[0].alt_range_m == (0.0, 60.0)


def test_sortie_reports_leg_and_segment() -> None:
    z1 = zone("A", square(0, 0, 100), 0.0, 150.0)
    z2 = zone("C", square(500, 0, 100), 0.0, 150.0)
    legs = [
        [(*lonlat(-50, 50), 80.0), (*lonlat(-50, 300), 80.0), (*lonlat(50, 300), 80.0)],  # clear
        [
            (*lonlat(50, 300), 80.0),
            (*lonlat(50, -50), 80.0),
            (*lonlat(550, -50), 80.0),
            (*lonlat(550, 50), 80.0),
        ],
    ]
    hit = check_sortie([z1, z2], legs)
    assert [(v.zone_id, v.leg, v.segment) for v in hit] == [("A", 1, 0), ("C", 1, 2)]
    entry = hit[0].entry
    assert Point(entry[:2]).distance(z1.footprint.boundary) < 1e-9  # the entry is on the border


# ----- against Shapely on random zones and paths -----------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_points_match_shapely(seed: int) -> None:
    rng = np.random.default_rng(seed)
    zones = random_zones(rng, int(rng.integers(1, 8)))
    air = Airspace(zones)
    for _ in range(40):
        x, y = rng.uniform(-1300, 1300, 2)
        alt = float(rng.uniform(-10, 220))
        lon, lat = lonlat(x, y)
        want = [
            z.zone_id
            for z in zones
            if z.footprint.intersects(Point(lon, lat)) and truth_bounds(z)[0] <= alt <= truth_bounds(z)[1]
        ]
        assert [z.zone_id for z in air.zones_at(lon, lat, alt)] == want


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), constant=st.booleans())
def test_paths_match_shapely(seed: int, constant: bool) -> None:
    rng = np.random.default_rng(seed)
    zones = random_zones(rng, int(rng.integers(1, 6)))
    air = Airspace(zones)
    path = random_path(rng, constant)
    linear = air.check_path(path, "linear")
    envelope = air.check_path(path, "envelope")
    got_lin = {(v.zone_id, v.segment) for v in linear}
    got_env = {(v.zone_id, v.segment) for v in envelope}
    want_lin, want_env = set(), set()
    for s in range(len(path) - 1):
        (x0, y0, z0), (x1, y1, z1) = path[s], path[s + 1]
        line = LineString([(x0, y0), (x1, y1)])
        for z in zones:
            lo, hi = truth_bounds(z)
            # Linear ground truth: clip by altitude first (a substring of the line), then test the footprint.
            if z0 == z1:
                t_lo, t_hi = (0.0, 1.0) if lo <= z0 <= hi else (1.0, 0.0)
            else:
                a, b = sorted(((lo - z0) / (z1 - z0), (hi - z0) / (z1 - z0)))
                t_lo, t_hi = max(0.0, a), min(1.0, b)
            if t_lo <= t_hi:
                sub = substring(line, t_lo, t_hi, normalized=True)
                if sub.intersects(z.footprint):
                    want_lin.add((z.zone_id, s))
                    inside = sub.intersection(z.footprint).length / line.length
                    got = sum(v.to_m - v.from_m for v in linear if (v.zone_id, v.segment) == (z.zone_id, s))
                    length_m = float(np.hypot(*np.subtract(FRAME.to_xy(x1, y1), FRAME.to_xy(x0, y0))))
                    assert got == pytest.approx(inside * length_m, abs=0.05)
            if max(z0, z1) >= lo and min(z0, z1) <= hi and line.intersects(z.footprint):
                want_env.add((z.zone_id, s))
    assert got_lin == want_lin
    assert got_env == want_env
    assert got_lin <= got_env  # the envelope is conservative
    if constant:
        assert got_lin == got_env


# ----- avoidance polygons ------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), buffer_m=st.sampled_from([0.0, 5.0, 30.0, 120.0]))
def test_avoidance_polygons_contain_the_zones_with_their_buffer(seed: int, buffer_m: float) -> None:
    rng = np.random.default_rng(seed)
    zones = random_zones(rng, int(rng.integers(1, 6)))
    altitude = float(rng.uniform(0, 200))
    polys = avoidance_polygons(zones, altitude, buffer_m)
    assert all(isinstance(p, Polygon) and p.is_valid for p in polys)
    union = shapely.unary_union(polys) if polys else Polygon()
    relevant = [z for z in zones if truth_bounds(z)[0] <= altitude <= truth_bounds(z)[1]]
    for z in relevant:
        assert union.covers(z.footprint)
    if not relevant:
        assert polys == []
        return
    if buffer_m > 0:
        # Every vertex of the obstacles' outer boundary is at least buffer_m (geodesic) from every zone.
        footprints = shapely.unary_union([z.footprint for z in relevant])
        for p in polys:
            for lon, lat in list(p.exterior.coords)[::7]:
                near = shapely.ops.nearest_points(footprints, Point(lon, lat))[0]
                d = GEOD.inv(lon, lat, near.x, near.y)[2]
                assert d >= buffer_m * 0.995
    # Zones outside the band are no obstacle: a point of one is covered only near a relevant zone.
    near_m = buffer_m * 1.05 + 1.0
    for z in zones:
        if z in relevant:
            continue
        c = z.footprint.representative_point()
        if union.contains(c):
            gap = FRAME.geometry_to_xy(shapely.unary_union([r.footprint for r in relevant]))
            assert gap.distance(FRAME.geometry_to_xy(c)) <= near_m


def test_avoidance_polygons_by_altitude() -> None:
    low = zone("low", square(0, 0, 100), 0.0, 50.0)
    high = zone("high", square(500, 0, 100), 60.0, None)
    [only] = avoidance_polygons([low, high], 40.0, 0.0)
    # No buffer: the footprint itself, grown by 1 cm (4 m² more on a 100 m square).
    assert only.covers(low.footprint)
    in_m2 = FRAME.geometry_to_xy(only).area
    assert in_m2 == pytest.approx(100 * 100 + 4 * 100 * 0.01, abs=0.05)
    at_70 = avoidance_polygons([low, high], 70.0, 20.0)
    assert len(at_70) == 1 and at_70[0].covers(high.footprint) and not at_70[0].intersects(low.footprint)
    with pytest.raises(ValueError, match="buffer_m"):
        avoidance_polygons([low], 10.0, -1.0)


# ----- the volume index used by events -----------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_volume_index_inside_matches_zones_at(seed: int) -> None:
    rng = np.random.default_rng(seed)
    zones = random_zones(rng, int(rng.integers(1, 6)))
    idx = VolumeIndex([(z.zone_id, z.footprint, z.floor_m, z.ceiling_m) for z in zones], 10.0, 5.0)
    air = Airspace(zones)
    xs, ys = rng.uniform(-1300, 1300, (2, 200))
    lon, lat = FRAME.to_lonlat(xs, ys)
    alt = rng.uniform(-10, 220, 200)
    pi, vi, zi = idx.zones_many(lat, lon, alt)
    inside = {(int(p), idx.ids[v]) for p, v, z in zip(pi, vi, zi, strict=True) if z >= Zone.SHALLOW_IN}
    want = {(p, z.zone_id) for p in range(200) for z in air.zones_at(lon[p], lat[p], alt[p])}
    assert inside == want
    # Deep inside means at least the margins away from the border, floor and ceiling.
    for p, v, z in zip(pi, vi, zi, strict=True):
        if z == Zone.DEEP_IN:
            zz = zones[int(v)]
            lo, hi = truth_bounds(zz)
            assert min(alt[p] - lo, hi - alt[p]) >= min(5.0, (hi - lo) / 4) - 1e-9
    # Unknown altitude: the footprint alone decides.
    pi2, vi2, zi2 = idx.zones_many(lat, lon, np.full(200, np.nan))
    inside2 = {(int(p), idx.ids[v]) for p, v, z in zip(pi2, vi2, zi2, strict=True) if z >= Zone.SHALLOW_IN}
    assert inside2 == {
        (p, z.zone_id) for p in range(200) for z in zones if z.footprint.intersects(Point(lon[p], lat[p]))
    }
