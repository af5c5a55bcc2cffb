"""geo.geofence: validation reasons, containment against plain shapely, zones against pyproj.Geod,
and the hysteresis machine on jittering and crossing tracks."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod
from shapely.geometry import MultiPolygon, Point, Polygon

from geo.geofence import (
    OUTSIDE,
    Crossing,
    GeofenceError,
    GeofenceIndex,
    Hysteresis,
    Membership,
    Zone,
    inscribed_radius_m,
    parse_feature,
    parse_feature_collection,
    parse_geometry,
)
from geo.local_frame import LocalFrame

GEOD = Geod(ellps="WGS84")
ORIGIN = LocalFrame(-77.03, -12.12)  # Miraflores


def rect_m(x0: float, y0: float, x1: float, y1: float, frame: LocalFrame = ORIGIN) -> Polygon:
    """A lon/lat rectangle given in metres about ``frame``'s origin."""
    lon, lat = frame.to_lonlat([x0, x1, x1, x0], [y0, y0, y1, y1])
    return Polygon(list(zip(lon.tolist(), lat.tolist(), strict=True)))


def poly_json(coords: list[list[float]]) -> dict[str, object]:
    return {"type": "Polygon", "coordinates": [coords]}


SQUARE = [[-77.03, -12.12], [-77.02, -12.12], [-77.02, -12.11], [-77.03, -12.11], [-77.03, -12.12]]


# ----- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("geometry", "reason", "says"),
    [
        ({"type": "Point", "coordinates": [-77.0, -12.0]}, "not_polygon", "Polygon or MultiPolygon"),
        ({"type": "LineString", "coordinates": SQUARE}, "not_polygon", "LineString"),
        ([1, 2, 3], "not_polygon", "GeoJSON object"),
        ({"type": "Polygon"}, "bad_coordinates", "array of rings"),
        ({"type": "Polygon", "coordinates": []}, "bad_coordinates", "non-empty"),
        (poly_json([[-77.0, -12.0], [-77.01, -12.0], [-77.0, -12.0]]), "bad_coordinates", "at least 4"),
        (
            poly_json([[-77.0, -12.0], ["a", 1], [-77.01, -12.01], [-77.0, -12.0]]),
            "bad_coordinates",
            "[lon, lat]",
        ),
        (
            poly_json([[-77.0, -12.0], [True, 1], [-77.01, -12.01], [-77.0, -12.0]]),
            "bad_coordinates",
            "position 1",
        ),
        (
            poly_json([[-77.0, -12.0], [-277.0, -12.0], [-77.01, -12.01], [-77.0, -12.0]]),
            "coordinates_out_of_range",
            "longitude -277.0 is outside -180..180",
        ),
        (
            poly_json([[-12.0, -77.0], [-12.1, -77.0], [-12.1, -97.0], [-12.0, -77.0]]),
            "coordinates_out_of_range",
            "swapped",
        ),
        (
            poly_json([[-77.03, -12.12], [-77.02, -12.12], [-77.02, -12.11], [-77.03, -12.11]]),
            "ring_not_closed",
            "repeat its first position",
        ),
        (
            poly_json([[-77.03, -12.12], [-77.02, -12.12], [-77.01, -12.12], [-77.03, -12.12]]),
            "empty",
            "no area",
        ),
        (
            # A bow tie: its two edges cross at (-77.025, -12.115).
            poly_json(
                [[-77.03, -12.12], [-77.02, -12.11], [-77.02, -12.12], [-77.03, -12.11], [-77.03, -12.12]]
            ),
            "self_intersecting",
            "near lon -77.025000, lat -12.115000",
        ),
        ({"type": "MultiPolygon", "coordinates": [[]]}, "bad_coordinates", "polygon 0"),
    ],
)
def test_bad_geometry_is_refused_with_a_reason_that_says_what_to_fix(geometry, reason, says) -> None:
    with pytest.raises(GeofenceError) as err:
        parse_geometry(geometry)
    assert err.value.reason == reason
    assert says in str(err.value)


def test_too_many_vertices() -> None:
    circle = Point(-77.03, -12.12).buffer(0.01, quad_segs=300)
    geom = shapely.geometry.mapping(circle)
    with pytest.raises(GeofenceError) as err:
        parse_geometry(geom, max_vertices=1000)
    assert err.value.reason == "too_many_vertices"
    assert "simplify" in str(err.value)
    assert parse_geometry(geom, max_vertices=2000).area == pytest.approx(circle.area)


def test_valid_multipolygon_with_a_hole() -> None:
    outer = SQUARE
    hole = [
        [-77.028, -12.118],
        [-77.028, -12.112],
        [-77.022, -12.112],
        [-77.022, -12.118],
        [-77.028, -12.118],
    ]
    far = [[-77.0, -12.0], [-76.99, -12.0], [-76.99, -11.99], [-77.0, -12.0]]
    geom = parse_geometry({"type": "MultiPolygon", "coordinates": [[outer, hole], [far]]})
    assert isinstance(geom, MultiPolygon)
    assert len(geom.geoms) == 2


def test_feature_parsing_ids_kinds_and_errors() -> None:
    f = parse_feature(
        {
            "type": "Feature",
            "properties": {"id": "S-2", "name": " Sector 2 ", "kind": "restricted", "colour": "red"},
            "geometry": poly_json(SQUARE),
        }
    )
    assert (f.geofence_id, f.name, f.kind, f.properties) == (
        "S-2",
        "Sector 2",
        "restricted",
        {"colour": "red"},
    )
    base = {"type": "Feature", "geometry": poly_json(SQUARE)}
    cases = [
        ({**base, "properties": {"name": "x"}}, "missing_id"),
        ({**base, "id": "bad id!"}, "bad_id"),
        ({**base, "id": "a", "properties": {"id": "b"}}, "bad_id"),
        ({**base, "id": "a", "properties": {"kind": "zone"}}, "bad_kind"),
        ({**base, "id": "a", "properties": {"name": ""}}, "bad_name"),
        ({"type": "Feature", "id": "a", "geometry": None}, "not_polygon"),
        ({"type": "FeatureCollection"}, "not_feature"),
    ]
    for obj, reason in cases:
        with pytest.raises(GeofenceError) as err:
            parse_feature(obj)
        assert err.value.reason == reason, (obj, err.value)
    with pytest.raises(GeofenceError) as err:
        parse_feature({"type": "Feature", "id": "S9", "geometry": {"type": "Point", "coordinates": [0, 0]}})
    assert "geofence 'S9'" in str(err.value)


def test_feature_collection_names_the_failing_feature() -> None:
    good = {"type": "Feature", "id": "a", "geometry": poly_json(SQUARE)}
    assert [
        f.geofence_id for f in parse_feature_collection({"type": "FeatureCollection", "features": [good]})
    ] == ["a"]
    with pytest.raises(GeofenceError, match="feature 1: geofence id 'a' is used twice"):
        parse_feature_collection({"type": "FeatureCollection", "features": [good, good]})
    with pytest.raises(GeofenceError, match="feature 0: geofence 'b'"):
        parse_feature_collection(
            {"type": "FeatureCollection", "features": [{**good, "id": "b", "geometry": {"type": "Point"}}]}
        )


# ----- containment: the index against plain (unprepared, unindexed) shapely -------------------------


@st.composite
def polygons(draw: st.DrawFn) -> Polygon:
    """A random valid polygon within ~2 km of Miraflores: the convex hull or a buffer of random points."""
    n = draw(st.integers(3, 8))
    xs = draw(st.lists(st.floats(-2000, 2000), min_size=n, max_size=n))
    ys = draw(st.lists(st.floats(-2000, 2000), min_size=n, max_size=n))
    lon, lat = ORIGIN.to_lonlat(xs, ys)
    pts = shapely.multipoints(np.column_stack([lon, lat]))
    hull = draw(st.booleans())
    geom = pts.convex_hull if hull else pts.buffer(draw(st.floats(0.0005, 0.004)), quad_segs=4)
    if not isinstance(geom, Polygon) or geom.area < 1e-9:
        geom = Point(float(lon[0]), float(lat[0])).buffer(0.001, quad_segs=4)
    return geom


@settings(max_examples=40, deadline=None)
@given(
    geoms=st.lists(polygons(), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
    margin=st.sampled_from([0.0, 5.0, 15.0, 40.0]),
)
def test_containing_matches_shapely_ground_truth(geoms: list[Polygon], seed: int, margin: float) -> None:
    ids = [f"g{i}" for i in range(len(geoms))]
    index = GeofenceIndex(zip(ids, geoms, strict=True), margin_m=margin)
    rng = np.random.default_rng(seed)
    lon, lat = ORIGIN.to_lonlat(rng.uniform(-2500, 2500, 300), rng.uniform(-2500, 2500, 300))
    # Some points exactly on vertices: the border counts as inside.
    verts = np.concatenate([np.asarray(g.exterior.coords)[:2] for g in geoms])
    lon = np.concatenate([lon, verts[:, 0]])
    lat = np.concatenate([lat, verts[:, 1]])
    truth = [
        [gid for gid, g in zip(ids, geoms, strict=True) if g.covers(Point(x, y))]
        for x, y in zip(lon, lat, strict=True)
    ]
    assert [index.containing(float(y), float(x)) for x, y in zip(lon, lat, strict=True)] == truth
    pi, gi = index.containing_many(lat, lon)
    many: list[list[str]] = [[] for _ in lon]
    for p, g in zip(pi, gi, strict=True):
        many[p].append(index.ids[g])
    assert many == truth


def test_multipolygon_and_empty_index() -> None:
    a = rect_m(0, 0, 100, 100)
    b = rect_m(500, 0, 600, 100)
    index = GeofenceIndex([("ab", MultiPolygon([a, b])), ("c", rect_m(550, 50, 700, 200))], margin_m=10)
    lon, lat = ORIGIN.to_lonlat([50, 300, 560, 650], [50, 50, 60, 150])
    assert [index.containing(float(y), float(x)) for x, y in zip(lon, lat, strict=True)] == [
        ["ab"],
        [],
        ["ab", "c"],
        ["c"],
    ]
    empty = GeofenceIndex([])
    assert len(empty) == 0
    assert empty.containing(-12.0, -77.0) == []
    assert [a.size for a in empty.zones_many(lat, lon)] == [0, 0, 0]


# ----- zones against geodesic distances (pyproj.Geod) ------------------------------------------------


def test_zones_follow_geodesic_distance_to_the_border() -> None:
    # A 600 m x 400 m rectangle; probe along a parallel through its middle, across its east edge.
    poly = rect_m(-300, -200, 300, 200)
    margin = 15.0
    index = GeofenceIndex([("r", poly)], margin_m=margin)
    east_lon = poly.bounds[2]
    mid_lat = (poly.bounds[1] + poly.bounds[3]) / 2
    checked = 0
    for az, signed in ((90.0, -1.0), (270.0, 1.0)):  # east of the edge: outside; west: inside
        for dist in np.arange(0.5, 60.0, 0.7):
            lon, lat, _ = GEOD.fwd(east_lon, mid_lat, az, dist)
            depth = signed * GEOD.inv(lon, lat, east_lon, lat)[2]  # to the edge's foot point
            if min(abs(abs(depth) - margin), abs(depth)) < 0.3:
                continue  # the frame's sub-metre error decides right at a threshold
            expected = (
                Zone.DEEP_IN
                if depth >= margin
                else Zone.SHALLOW_IN
                if depth > 0
                else Zone.SHALLOW_OUT
                if depth > -margin
                else Zone.DEEP_OUT
            )
            assert index.zones(lat, lon).get("r", Zone.DEEP_OUT) == expected, (az, dist)
            checked += 1
    assert checked > 150


def test_small_polygon_has_a_reduced_enter_margin_and_a_deep_middle() -> None:
    kiosk = rect_m(0, 0, 10, 10)  # narrower than 2 x margin
    assert inscribed_radius_m(kiosk) == pytest.approx(5.0, abs=0.05)
    index = GeofenceIndex([("k", kiosk)], margin_m=15)
    assert index.enter_margin_m("k") == pytest.approx(2.5, abs=0.05)
    lon, lat = ORIGIN.to_lonlat([5, 1, -5, -20], [5, 5, 5, 5])
    zones = [index.zones(float(y), float(x)).get("k", Zone.DEEP_OUT) for x, y in zip(lon, lat, strict=True)]
    assert zones == [Zone.DEEP_IN, Zone.SHALLOW_IN, Zone.SHALLOW_OUT, Zone.DEEP_OUT]
    big = GeofenceIndex([("b", rect_m(0, 0, 500, 500))], margin_m=15)
    assert big.enter_margin_m("b") == 15


# ----- hysteresis ------------------------------------------------------------------------------------


def run_track(index: GeofenceIndex, gid: str, xs: np.ndarray, ys: np.ndarray, dwell: int = 3) -> list[str]:
    """Feed a track (metres about ORIGIN) through the index and the machine; return the crossings."""
    machine = Hysteresis(dwell_fixes=dwell)
    lon, lat = ORIGIN.to_lonlat(xs, ys)
    pi, gi, zone = index.zones_many(lat, lon)
    zones = np.full(len(xs), Zone.DEEP_OUT, dtype=np.int8)
    zones[pi[gi == index.ids.index(gid)]] = zone[gi == index.ids.index(gid)]
    m, out = OUTSIDE, []
    for z in zones:
        step = machine.step(m, Zone(int(z)))
        m = step.membership
        if step.crossing is not None:
            out.append(step.crossing.value)
    return out


def jitter(rng: np.random.Generator, n: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets uniform in a disc of ``radius`` metres (bounded GPS noise of several metres)."""
    r = radius * np.sqrt(rng.uniform(0, 1, n))
    a = rng.uniform(0, 2 * np.pi, n)
    return r * np.cos(a), r * np.sin(a)


SECTOR = rect_m(0, -300, 400, 300)  # the unit jitters on its west edge, x = 0


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("noise_m", [4.0, 8.0, 12.0])
def test_unit_jittering_on_a_border_enters_once_and_never_flaps(seed: int, noise_m: float) -> None:
    index = GeofenceIndex([("s", SECTOR)], margin_m=15)
    rng = np.random.default_rng(seed)
    approach = np.linspace(-300, 0, 30)  # from far outside, driving up to the border
    dx, dy = jitter(rng, 600, noise_m)
    xs = np.concatenate([approach, dx])
    ys = np.concatenate([np.zeros(30), dy])
    assert run_track(index, "s", xs, ys) == ["enter"]


@pytest.mark.parametrize("seed", range(5))
def test_unit_that_entered_then_parks_on_the_border_decides_once(seed: int) -> None:
    # Deep inside, then parked on the border with noise straddling it: the dwell rule may take the unit
    # out once (it stands on the line: either answer is right), and nothing else happens after that.
    index = GeofenceIndex([("s", SECTOR)], margin_m=15)
    rng = np.random.default_rng(seed)
    dx, dy = jitter(rng, 500, 10.0)
    xs = np.concatenate([np.linspace(-200, 100, 20), np.linspace(100, 0, 10), dx])
    ys = np.concatenate([np.zeros(30), dy])
    assert run_track(index, "s", xs, ys) in (["enter"], ["enter", "exit"])


@pytest.mark.parametrize("seed", range(5))
def test_real_crossing_gives_enter_then_exit(seed: int) -> None:
    index = GeofenceIndex([("s", SECTOR)], margin_m=15)
    rng = np.random.default_rng(seed)
    xs = np.arange(-300.0, 700.0, 8.0)  # a patrol car driving east through the sector, a fix every 8 m
    dx, dy = jitter(rng, xs.size, 6.0)
    assert run_track(index, "s", xs + dx, dy) == ["enter", "exit"]
    # And back again, after a pause far outside.
    back = np.concatenate([xs + dx, (xs + dx)[::-1]])
    assert run_track(index, "s", back, np.concatenate([dy, dy])) == ["enter", "exit", "enter", "exit"]


@pytest.mark.parametrize("seed", range(5))
def test_small_polygon_crossing_and_jitter(seed: int) -> None:
    kiosk = rect_m(0, 0, 12, 12)
    index = GeofenceIndex([("k", kiosk)], margin_m=15)
    rng = np.random.default_rng(seed)
    # A sereno walks through the kiosk's middle (a fix every 1.5 m, 1 m noise).
    xs = np.arange(-40.0, 52.0, 1.5)
    dx, dy = jitter(rng, xs.size, 1.0)
    assert run_track(index, "k", xs + dx, 6 + dy) == ["enter", "exit"]
    # Standing on its edge with 3 m noise: one enter at most, never a flap.
    dx, dy = jitter(rng, 400, 3.0)
    crossings = run_track(
        index, "k", np.concatenate([np.linspace(-60, 0, 20), dx]), np.concatenate([np.full(20, 6.0), 6 + dy])
    )
    assert crossings == ["enter"]


def test_machine_rules_step_by_step() -> None:
    h = Hysteresis(dwell_fixes=2)
    assert h.initial(Zone.SHALLOW_IN) == Membership(True, False, 0)
    assert h.initial(Zone.DEEP_OUT) == OUTSIDE
    # Dwell enters only when the unit was settled outside; streaks reset on the own side.
    m = OUTSIDE
    s = h.step(m, Zone.SHALLOW_IN)
    assert s.crossing is None
    s = h.step(s.membership, Zone.SHALLOW_OUT)
    assert s.membership.streak == 0
    s = h.step(s.membership, Zone.SHALLOW_IN)
    s = h.step(s.membership, Zone.SHALLOW_IN)
    assert (s.crossing, s.rule) == (Crossing.ENTER, "dwell")
    # Not settled after a dwell enter: no dwell exit, only a deep fix exits.
    m = s.membership
    for _ in range(10):
        s = h.step(m, Zone.SHALLOW_OUT)
        assert s.crossing is None
        m = s.membership
    s = h.step(m, Zone.DEEP_OUT)
    assert (s.crossing, s.rule) == (Crossing.EXIT, "margin")
    with pytest.raises(ValueError, match="dwell_fixes"):
        Hysteresis(0)


@settings(max_examples=300, deadline=None)
@given(
    zones=st.lists(st.sampled_from(list(Zone)), max_size=200),
    dwell=st.integers(1, 6),
    start=st.sampled_from(list(Zone)),
)
def test_crossings_alternate_and_agree_with_membership(zones: list[Zone], dwell: int, start: Zone) -> None:
    h = Hysteresis(dwell)
    m = h.initial(start)
    for z in zones:
        step = h.step(m, z)
        if step.crossing is Crossing.ENTER:
            assert not m.inside and step.membership.inside
        elif step.crossing is Crossing.EXIT:
            assert m.inside and not step.membership.inside
        else:
            assert step.membership.inside == m.inside
        # Deep fixes always decide: deep inside means inside, deep outside means outside.
        if z == Zone.DEEP_IN:
            assert step.membership.inside
        if z == Zone.DEEP_OUT:
            assert not step.membership.inside
        m = step.membership


@settings(max_examples=300, deadline=None)
@given(
    zones=st.lists(st.sampled_from([Zone.SHALLOW_OUT, Zone.SHALLOW_IN]), max_size=300),
    dwell=st.integers(1, 6),
)
def test_noise_within_the_margin_crosses_at_most_once(zones: list[Zone], dwell: int) -> None:
    # Whatever the noise does inside the band, a unit that came from far away crosses once at most.
    h = Hysteresis(dwell)
    m, crossings = OUTSIDE, 0
    for z in zones:
        step = h.step(m, z)
        crossings += step.crossing is not None
        m = step.membership
    assert crossings <= 1
