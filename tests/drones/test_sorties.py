"""Sortie planning against independent ground truth: Shapely, pyproj, Held–Karp and brute-force splits."""

from __future__ import annotations

import itertools
import json
import math
import xml.etree.ElementTree as ET

import h3
import numpy as np
import pytest
import shapely
from pyproj import Geod, Transformer
from shapely.geometry import LineString, Point, Polygon, box

from drones.sorties import (
    Sortie,
    SortiePlan,
    Target,
    giant_tour,
    plan_sorties,
    relocate,
    split_tour,
    targets_from_cells,
    targets_in_polygon,
    tour_length,
    trips_time,
)
from geo.docks import PROFILES, AircraftProfile, Dock
from geo.local_frame import LocalFrame

GEOD = Geod(ellps="WGS84")
UTM = Transformer.from_crs("EPSG:4326", "EPSG:32718", always_xy=True)  # UTM 18S: Lima
DOCK = Dock("dock-palacio", "Palacio", -12.1197, -77.0297, PROFILES["m3td"])
FRAME = LocalFrame(DOCK.lon, DOCK.lat)


def lonlat(geom_xy: shapely.Geometry) -> shapely.Geometry:
    """A geometry drawn in metres about the dock, back to lon/lat."""
    return shapely.transform(geom_xy, lambda c: np.column_stack(FRAME.to_lonlat(c[:, 0], c[:, 1])))


def utm(geom: shapely.Geometry) -> shapely.Geometry:
    return shapely.transform(geom, lambda c: np.column_stack(UTM.transform(c[:, 0], c[:, 1])))


def random_targets(rng: np.random.Generator, n: int, spread_m: float) -> list[Target]:
    x, y = rng.uniform(-spread_m, spread_m, n), rng.uniform(-spread_m, spread_m, n)
    lon, lat = FRAME.to_lonlat(x, y)
    return [Target(f"t{i}", float(la), float(lo)) for i, (la, lo) in enumerate(zip(lat, lon, strict=True))]


def route(s: Sortie) -> LineString:
    return LineString([(w.lon, w.lat) for w in s.waypoints])


def geodesic_length(s: Sortie) -> float:
    lons, lats = [w.lon for w in s.waypoints], [w.lat for w in s.waypoints]
    return float(GEOD.line_length(lons, lats))


# A hospital disc, a concave L-shaped zone and a wall, all within the area the targets spread over.
ZONES = [
    lonlat(Point(600, 500).buffer(250)),
    lonlat(Polygon([(-900, -300), (-300, -300), (-300, -450), (-750, -450), (-750, -1100), (-900, -1100)])),
    lonlat(box(-200, 900, 900, 960)),
]


def check_plan(plan: SortiePlan, targets: list[Target], zones: list[shapely.Geometry]) -> None:
    """The invariants every plan keeps, measured independently of the planner."""
    covered = [t for s in plan.sorties for t in s.targets]
    unreachable = [u.target.id for u in plan.unreachable]
    assert len(covered) == len(set(covered)), "a target is in two sorties"
    assert sorted(covered + unreachable) == sorted(t.id for t in targets), (
        "every target is planned or reported"
    )
    zones_utm = [utm(z) for z in zones]
    by_id = {t.id: t for t in targets}
    for s in plan.sorties:
        wps = s.waypoints
        assert wps[0].role == "dock" and wps[-1].role == "dock"
        assert (wps[0].lat, wps[0].lon) == (DOCK.lat, DOCK.lon) == (wps[-1].lat, wps[-1].lon)
        line = route(s)
        line_utm = utm(line)
        for z, zu in zip(zones, zones_utm, strict=True):
            assert not line.intersects(z), "a leg crosses a restricted zone"
            assert line_utm.distance(zu) >= plan.clearance_m - 0.05, "a leg comes closer than the clearance"
        # Length and time from pyproj's geodesic, not the planner's frame (which is within 0.2 %).
        length = geodesic_length(s)
        assert s.distance_m == pytest.approx(length, rel=2e-3)
        flight = 2 * plan.takeoff_s + length / DOCK.profile.cruise_mps + plan.loiter_s * len(s.targets)
        assert s.flight_s == pytest.approx(flight, rel=2e-3)
        assert s.flight_s <= plan.budget_s + 1e-6
        assert flight <= plan.budget_s * 1.002
        assert plan.budget_s == pytest.approx(DOCK.profile.usable_s * (1 - DOCK.profile.reserve))
        assert s.battery_pct == pytest.approx(100 * s.flight_s / DOCK.profile.usable_s)
        for w in wps:
            if w.role == "target":
                assert w.target_id is not None
                assert (w.lat, w.lon) == (by_id[w.target_id].lat, by_id[w.target_id].lon)
                assert w.loiter_s == plan.loiter_s


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_plans_avoid_zones_fit_the_battery_and_cover_every_reachable_target(seed: int) -> None:
    rng = np.random.default_rng(seed)
    targets = random_targets(rng, 150, 1800.0)
    plan = plan_sorties(DOCK, targets, ZONES, altitude_m=100.0, loiter_s=20.0)
    check_plan(plan, targets, ZONES)
    assert len(plan.sorties) >= 2, "the fixture should need more than one battery"
    # Exactly the targets inside a zone grown by the clearance are left out, for that reason.
    grown = [utm(z).buffer(plan.clearance_m) for z in ZONES]
    inside = {t.id for t in targets if any(g.contains(utm(Point(t.lon, t.lat))) for g in grown)}
    assert inside, "the fixture should put targets inside zones"
    assert {u.target.id for u in plan.unreachable} == inside
    assert {u.reason for u in plan.unreachable} == {"inside_restricted_airspace"}
    assert sum(w.role == "via" for s in plan.sorties for w in s.waypoints) > 0, "some legs go round a zone"


def test_a_wall_is_flown_around_by_its_corners() -> None:
    # Dock at (0, 0), target at (0, 1000), a wall across y = 499..501 from x = -300 to 300: the shortest
    # way goes round a corner of the wall grown by the clearance (mitred: corners at ±(300 + c)).
    c = 10.0
    wall = lonlat(box(-300, 499, 300, 501))
    lon, lat = FRAME.to_lonlat(0.0, 1000.0)
    target = Target("t", float(lat), float(lon))
    plan = plan_sorties(DOCK, [target], [wall], clearance_m=c, loiter_s=0.0)
    (s,) = plan.sorties
    one_way = math.hypot(300 + c, 499 - c) + (2 + 2 * c) + math.hypot(300 + c, 1000 - 501 - c)
    assert s.distance_m == pytest.approx(2 * one_way, rel=1e-6)
    assert [w.role for w in s.waypoints] == ["dock", "via", "via", "target", "via", "via", "dock"]
    assert not route(s).intersects(wall)


def test_unreachable_targets_say_why() -> None:
    ring = lonlat(Point(-1500, 1500).buffer(400).difference(Point(-1500, 1500).buffer(250)))
    disc = lonlat(Point(1500, 0).buffer(200))
    far_profile = AircraftProfile("long radio link", 15.0, 50 * 60.0)  # no operating radius
    far_dock = Dock("far", "far", DOCK.lat, DOCK.lon, far_profile)
    pts = {
        "walled": (-1500.0, 1500.0),  # in the hole of the ring: outside every zone, but no way in
        "inside": (1500.0, 0.0),
        "near": (300.0, 300.0),
        "too_far": (0.0, 11_500.0),  # the energy radius is 11.36 km with no loiter; loiter makes it worse
    }
    targets = []
    for name, (x, y) in pts.items():
        lon, lat = FRAME.to_lonlat(x, y)
        targets.append(Target(name, float(lat), float(lon)))
    plan = plan_sorties(far_dock, targets, [ring, disc])
    reasons = {u.target.id: u.reason for u in plan.unreachable}
    assert reasons == {
        "walled": "no_route_around_restricted_airspace",
        "inside": "inside_restricted_airspace",
        "too_far": "too_far_for_one_battery",
    }
    assert [t for s in plan.sorties for t in s.targets] == ["near"]
    # The m3td's dock has a 10 km radio link: the far target is beyond it first.
    plan = plan_sorties(DOCK, targets[2:], [])
    assert {u.target.id: u.reason for u in plan.unreachable} == {"too_far": "beyond_operating_radius"}


def test_bad_inputs_are_refused_with_what_to_fix() -> None:
    t = [Target("a", -12.12, -77.03)]
    with pytest.raises(ValueError, match="120 m limit"):
        plan_sorties(DOCK, t, altitude_m=150.0)
    with pytest.raises(ValueError, match="inside restricted airspace"):
        plan_sorties(DOCK, t, [Point(DOCK.lon, DOCK.lat).buffer(0.001)])
    with pytest.raises(ValueError, match="over the limit"):
        plan_sorties(DOCK, t * 5, max_targets=4)
    with pytest.raises(ValueError, match="loiter_s"):
        plan_sorties(DOCK, t, loiter_s=-1.0)


def test_no_targets_and_a_low_battery() -> None:
    assert plan_sorties(DOCK, []).sorties == ()
    low = Dock("low", "low", DOCK.lat, DOCK.lon, DOCK.profile, battery_pct=5.0)
    rng = np.random.default_rng(7)
    targets = random_targets(rng, 20, 1500.0)
    plan = plan_sorties(low, targets)
    assert plan.budget_s == pytest.approx(DOCK.profile.usable_s * 0.05 * 0.75)
    for s in plan.sorties:
        assert s.flight_s <= plan.budget_s
    assert all(u.reason == "too_far_for_one_battery" for u in plan.unreachable)


# ----- tour quality against exact solutions ---------------------------------------------------------


def held_karp(d: np.ndarray) -> float:
    """The shortest closed tour from node 0 over all nodes (Held–Karp dynamic programming)."""
    m = d.shape[0] - 1
    full = 1 << m
    dp = np.full((full, m), np.inf)
    for j in range(m):
        dp[1 << j, j] = d[0, j + 1]
    ks = np.arange(m)
    for s in range(1, full):
        for j in range(m):
            if not (s >> j) & 1 or not np.isfinite(dp[s, j]):
                continue
            free = ((s >> ks) & 1) == 0
            nxt = s | (1 << ks[free])
            dp[nxt, ks[free]] = np.minimum(dp[nxt, ks[free]], dp[s, j] + d[j + 1, ks[free] + 1])
    return float(np.min(dp[full - 1] + d[1:, 0]))


def geodesic_matrix(points: list[tuple[float, float]]) -> np.ndarray:
    n = len(points)
    d = np.zeros((n, n))
    for i, j in itertools.combinations(range(n), 2):
        d[i, j] = d[j, i] = GEOD.inv(points[i][1], points[i][0], points[j][1], points[j][0])[2]
    return d


@pytest.mark.parametrize("n", [5, 7, 9, 11])
def test_one_sortie_tours_are_within_ten_percent_of_held_karp(n: int) -> None:
    worst = 0.0
    for seed in range(6):
        rng = np.random.default_rng(100 * n + seed)
        targets = random_targets(rng, n, 1200.0)
        plan = plan_sorties(DOCK, targets, loiter_s=0.0)
        (s,) = plan.sorties  # 12 targets within 1.7 km: one battery
        exact = held_karp(geodesic_matrix([(DOCK.lat, DOCK.lon)] + [(t.lat, t.lon) for t in targets]))
        ratio = s.distance_m / exact
        assert ratio >= 1 - 2e-3, "shorter than the exact tour: the distances are wrong"
        worst = max(worst, ratio)
    assert worst <= 1.10


def test_giant_tour_on_a_matrix_is_near_held_karp() -> None:
    rng = np.random.default_rng(5)
    for _ in range(10):
        pts = rng.random((10, 2)) * 1000
        d = np.hypot(pts[:, None, 0] - pts[None, :, 0], pts[:, None, 1] - pts[None, :, 1])
        tour = giant_tour(d)
        assert tour[0] == 0 and sorted(tour.tolist()) == list(range(10))
        assert tour_length(tour, d) <= 1.10 * held_karp(d)


def brute_split(
    order: list[int], d: np.ndarray, v: float, budget: float, fixed: float, loiter: float
) -> float:
    """The least total flight time over every cut of ``order`` into consecutive feasible trips."""
    best = math.inf
    n = len(order)
    for mask in range(1 << (n - 1)):
        cuts = [0] + [k + 1 for k in range(n - 1) if (mask >> k) & 1] + [n]
        total = 0.0
        for a, b in itertools.pairwise(cuts):
            trip = order[a:b]
            t = fixed + tour_length([0, *trip], d) / v + loiter * len(trip)
            if t > budget:
                total = math.inf
                break
            total += t
        best = min(best, total)
    return best


def test_the_split_is_exact() -> None:
    rng = np.random.default_rng(11)
    for k in range(25):
        n = int(rng.integers(3, 11))
        pts = rng.uniform(-2000, 2000, (n + 1, 2))
        pts[0] = 0
        d = np.hypot(pts[:, None, 0] - pts[None, :, 0], pts[:, None, 1] - pts[None, :, 1])
        order = rng.permutation(np.arange(1, n + 1)).tolist()
        need = max(60 + 2 * d[0, j] / 15 + 20 for j in order)
        budget = need * (1 + k / 10)
        trips = split_tour(order, d, 15.0, budget, 60.0, 20.0)
        assert [t for trip in trips for t in trip] == order
        total = sum(60 + tour_length([0, *t], d) / 15 + 20 * len(t) for t in trips)
        assert all(60 + tour_length([0, *t], d) / 15 + 20 * len(t) <= budget for t in trips)
        assert total == pytest.approx(brute_split(order, d, 15.0, budget, 60.0, 20.0), rel=1e-12)


# ----- targets and exports --------------------------------------------------------------------------


def test_polygon_targets_are_the_cell_centres_inside_it() -> None:
    area = lonlat(Polygon([(0, 0), (900, 100), (700, 800), (100, 600)]))
    targets = targets_in_polygon(area, 10)
    got = {t.id for t in targets}
    # Independent: every res-10 cell near the polygon, kept when Shapely puts its centre inside.
    c = area.centroid
    near = h3.grid_disk(h3.latlng_to_cell(c.y, c.x, 10), 12)
    want = {h for h in near if area.contains(Point(h3.cell_to_latlng(h)[::-1]))}
    assert got == want and len(got) > 20
    tiny = lonlat(box(0, 0, 5, 5))
    (only,) = targets_in_polygon(tiny, 10)
    assert tiny.contains(Point(only.lon, only.lat))
    cells = [int(h, 16) for h in sorted(got)[:3]]
    assert [t.id for t in targets_from_cells(cells)] == sorted(got)[:3]


@pytest.fixture(scope="module")
def plan() -> SortiePlan:
    rng = np.random.default_rng(3)
    return plan_sorties(DOCK, random_targets(rng, 120, 1800.0), ZONES, altitude_m=90.0, loiter_s=15.0)


def test_qgc_plan_follows_the_documented_format(plan: SortiePlan) -> None:
    assert len(plan.sorties) >= 2
    for i, s in enumerate(plan.sorties):
        doc = json.loads(json.dumps(plan.to_qgc_plan(i), allow_nan=False))
        assert {"fileType", "version", "groundStation", "mission", "geoFence", "rallyPoints"} <= doc.keys()
        assert (doc["fileType"], doc["version"], doc["groundStation"]) == ("Plan", 1, "QGroundControl")
        assert doc["geoFence"] == {"circles": [], "polygons": [], "version": 2}
        assert doc["rallyPoints"] == {"points": [], "version": 2}
        m = doc["mission"]
        assert {"version", "firmwareType", "vehicleType", "cruiseSpeed", "hoverSpeed", "items",
                "plannedHomePosition"} <= m.keys()  # fmt: skip
        assert m["version"] == 2 and m["plannedHomePosition"][:2] == [DOCK.lat, DOCK.lon]
        items = m["items"]
        for k, it in enumerate(items, start=1):
            assert it["type"] == "SimpleItem" and it["autoContinue"] is True
            assert it["doJumpId"] == k and len(it["params"]) == 7
            assert it["frame"] == 3  # MAV_FRAME_GLOBAL_RELATIVE_ALT
        assert items[0]["command"] == 22 and items[0]["params"][4:6] == [DOCK.lat, DOCK.lon]  # take-off
        assert items[-1]["command"] == 21 and items[-1]["params"][4:6] == [DOCK.lat, DOCK.lon]  # land
        wps = items[1:-1]
        assert all(it["command"] == 16 for it in wps)
        assert [(it["params"][4], it["params"][5]) for it in wps] == [(w.lat, w.lon) for w in s.waypoints[1:]]
        assert all(it["params"][6] == 90.0 and it["Altitude"] == 90.0 for it in [items[0], *wps])
        holds = [it["params"][0] for it in wps]
        assert holds == [w.loiter_s for w in s.waypoints[1:]]
        assert holds.count(15.0) == len(s.targets)


def test_geojson_and_kml_exports_hold_the_routes(plan: SortiePlan) -> None:
    fc = json.loads(json.dumps(plan.to_geojson(), allow_nan=False))
    assert fc["type"] == "FeatureCollection"
    lines = [f for f in fc["features"] if f["properties"]["kind"] == "sortie"]
    assert len(lines) == len(plan.sorties)
    for f, s in zip(lines, plan.sorties, strict=True):
        geom = shapely.geometry.shape(f["geometry"])
        assert geom.equals(route(s))
        assert f["properties"]["flight_s"] == round(s.flight_s, 1)
    unreachable = [f for f in fc["features"] if f["properties"]["kind"] == "unreachable"]
    assert len(unreachable) == len(plan.unreachable) > 0
    points = [f for f in fc["features"] if f["properties"]["kind"] == "waypoint"]
    assert len(points) == sum(len(s.waypoints) for s in plan.sorties)

    ns = {"k": "http://www.opengis.net/kml/2.2"}
    root = ET.fromstring(plan.to_kml())
    folders = root.findall("k:Document/k:Folder", ns)
    assert len(folders) == len(plan.sorties)
    for folder, s in zip(folders, plan.sorties, strict=True):
        text = folder.find("k:Placemark/k:LineString/k:coordinates", ns)
        assert text is not None and text.text is not None
        coords = [tuple(map(float, c.split(","))) for c in text.text.split()]
        assert len(coords) == len(s.waypoints)
        for (lon, lat, alt), w in zip(coords, s.waypoints, strict=True):
            assert (lon, lat, alt) == pytest.approx((w.lon, w.lat, 90.0), abs=1e-6)
        assert folder.find("k:Placemark/k:LineString/k:altitudeMode", ns).text == "relativeToGround"  # type: ignore[union-attr]
    one = ET.fromstring(plan.to_kml([1]))
    assert [f.find("k:name", ns).text for f in one.findall("k:Document/k:Folder", ns)] == ["Sortie 2"]  # type: ignore[union-attr]


def test_held_karp_agrees_with_enumeration() -> None:
    rng = np.random.default_rng(2)
    pts = rng.random((8, 2))
    d = np.hypot(pts[:, None, 0] - pts[None, :, 0], pts[:, None, 1] - pts[None, :, 1])
    brute = min(tour_length([0, *p], d) for p in itertools.permutations(range(1, 8)))
    assert held_karp(d) == pytest.approx(brute, rel=1e-12)


def subset_tour_lengths(d: np.ndarray) -> np.ndarray:
    """Held–Karp over every subset: the shortest closed tour from node 0 through each subset (bitmask)."""
    m = d.shape[0] - 1
    out = np.zeros(1 << m)
    for s in range(1, 1 << m):
        members = [k + 1 for k in range(m) if (s >> k) & 1]
        out[s] = (
            held_karp(d[np.ix_([0, *members], [0, *members])]) if len(members) > 1 else 2 * d[0, members[0]]
        )
    return out


def exact_total_time(d: np.ndarray, v: float, fixed: float, loiter: float, budget: float) -> float:
    """The least total flight time over every partition of the targets into feasible sorties (exact)."""
    m = d.shape[0] - 1
    trip = fixed + subset_tour_lengths(d) / v + loiter * np.array([bin(s).count("1") for s in range(1 << m)])
    trip[trip > budget] = np.inf
    best = np.full(1 << m, np.inf)
    best[0] = 0.0
    for s in range(1, 1 << m):
        low = s & -s
        rest = s ^ low
        sub = rest
        while True:
            best[s] = min(best[s], trip[sub | low] + best[s ^ (sub | low)])
            if sub == 0:
                break
            sub = (sub - 1) & rest
    return float(best[-1])


def test_several_sorties_are_within_ten_percent_of_the_exact_optimum() -> None:
    worst = 0.0
    for seed in range(8):
        rng = np.random.default_rng(500 + seed)
        targets = random_targets(rng, 7, 1500.0)
        d = geodesic_matrix([(DOCK.lat, DOCK.lon)] + [(t.lat, t.lon) for t in targets])
        # A charge for about a third of the whole tour: several sorties, every target still in reach.
        need = max(60 + 2 * d[0].max() / 15 + 20, (60 + held_karp(d) / 15 + 7 * 20) / 3)
        low = Dock("low", "low", DOCK.lat, DOCK.lon, DOCK.profile, battery_pct=100 * need * 1.1 / 1575)
        plan = plan_sorties(low, targets, loiter_s=20.0)
        assert not plan.unreachable and len(plan.sorties) >= 2
        exact = exact_total_time(d, 15.0, 60.0, 20.0, plan.budget_s)
        ratio = plan.total_flight_s / exact
        assert ratio >= 1 - 2e-3
        worst = max(worst, ratio)
    assert worst <= 1.10


def test_relocation_never_breaks_the_budget_or_loses_a_target() -> None:
    rng = np.random.default_rng(9)
    pts = rng.uniform(-2000, 2000, (40, 2))
    pts[0] = 0
    d = np.hypot(pts[:, None, 0] - pts[None, :, 0], pts[:, None, 1] - pts[None, :, 1])
    budget = 900.0
    trips = split_tour(list(range(1, 40)), d, 15.0, budget, 60.0, 20.0)  # a poor order: the relocations help
    before = trips_time(trips, d, 15.0, 60.0, 20.0)
    after = relocate([list(t) for t in trips], d, 15.0, budget, 60.0, 20.0)
    assert sorted(t for trip in after for t in trip) == list(range(1, 40))
    assert all(60 + tour_length([0, *t], d) / 15 + 20 * len(t) <= budget for t in after)
    assert trips_time(after, d, 15.0, 60.0, 20.0) < before


def test_the_visibility_kernel_agrees_with_shapely() -> None:
    from drones.sorties import _Router  # the routing internals, checked segment by segment

    router = _Router(FRAME, ZONES, 10.0)
    assert router.blocked is not None
    rng = np.random.default_rng(4)
    xy = rng.uniform(-1500, 1500, (300, 2))
    xy = xy[~router.inside(xy)]
    hits = router._hits(xy, xy, True)
    i, j = np.triu_indices(xy.shape[0], 1)
    lines = shapely.linestrings(np.stack([xy[i], xy[j]], axis=1))
    want = shapely.intersects(lines, router.blocked)
    assert 0.05 < want.mean() < 0.95
    assert np.array_equal(hits[i, j], want)
