"""geo.coverage against shapely buffers of each unit's reach (spherical aeqd metres), a numpy brute force,
and, for CoverageState, a full recompute after any sequence of moves, additions and removals.

Agreement with the buffers is statistical: the grid judges a cell by its centre, so
along the edge of each reach disc some cells count whole though partly outside and
others not at all though partly inside. The errors have both signs and cancel in
the sum; what remains shrinks with the cell size relative to the reach. With reaches
of 180 m or more and resolution-10 cells (edge ~76 m) over Miraflores, or
resolution 11 on smaller random shapes, the ratios agree within 1 %.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import CRS, Transformer
from shapely.geometry import MultiPolygon, Polygon, box

from geo.area import Area, random_points
from geo.codes import KIND_CODE, N_KINDS
from geo.coverage import CoverageState, coverage, kind_pace, reach_sets
from geo.distance import EARTH_RADIUS_M
from geo.eta import StraightLineEta
from geo.hexgrid import HexGrid, hexgrid

ETA = StraightLineEta.from_names()
PACE = kind_pace(ETA)
DRONE = KIND_CODE["drone"]


def buffer_ratio(area: Area, lat: np.ndarray, lon: np.ndarray, kind: np.ndarray, target_s: float) -> float:
    """Independent coverage ratio: reach discs buffered in a spherical azimuthal equidistant projection.

    On the same sphere as the haversine (radius EARTH_RADIUS_M) an aeqd keeps distances from its
    centre; across a few tens of km its distortion elsewhere is a few parts per million.
    """
    if lat.shape[0] == 0:
        return 0.0
    lon0, lat0 = area.centroid.x, area.centroid.y
    crs = CRS.from_proj4(f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +R={EARTH_RADIUS_M} +units=m +no_defs")
    fwd = Transformer.from_crs(
        CRS.from_proj4(f"+proj=longlat +R={EARTH_RADIUS_M} +no_defs"), crs, always_xy=True
    )
    area_m = shapely.transform(area, lambda c: np.column_stack(fwd.transform(c[:, 0], c[:, 1])))
    x, y = fwd.transform(lon, lat)
    discs = shapely.buffer(shapely.points(x, y), target_s / PACE[kind], quad_segs=64)
    covered = shapely.intersection(shapely.union_all(discs), area_m)
    return float(covered.area / area_m.area)


def brute(grid: HexGrid, lat: np.ndarray, lon: np.ndarray, kind: np.ndarray, t: float) -> np.ndarray:
    p1, p2 = np.radians(grid.lat)[:, None], np.radians(lat)[None, :]
    dl = np.radians(lon)[None, :] - np.radians(grid.lon)[:, None]
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    eta = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(h, 1.0))) * PACE[kind][None, :]
    eta[eta > t] = np.inf
    return eta.min(axis=1) if lat.shape[0] else np.full(grid.size, np.inf)


def random_fleet(
    area: Area, n: int, rng: np.random.Generator, margin: float = 0.01
) -> tuple[np.ndarray, ...]:
    minx, miny, maxx, maxy = area.bounds
    lon = rng.uniform(minx - margin, maxx + margin, n)
    lat = rng.uniform(miny - margin, maxy + margin, n)
    return lat, lon, rng.integers(0, N_KINDS, n).astype(np.int8)


@pytest.mark.parametrize(("n", "target_s"), [(12, 60.0), (25, 45.0), (40, 40.0)])
def test_miraflores_ratio_agrees_with_buffer_union(
    mgrid: HexGrid, miraflores: Area, n: int, target_s: float
) -> None:
    rng = np.random.default_rng(n)
    pts = random_points(miraflores, n, rng)
    # Cars, motorcycles and drones: reaches of 200 m and up at 40 s (foot units would give 40 m discs).
    kind = rng.choice([KIND_CODE["patrol_car"], KIND_CODE["motorcycle"], DRONE], n).astype(np.int8)
    r = coverage(mgrid, pts[:, 1], pts[:, 0], kind, target_s, ETA)
    ref = buffer_ratio(miraflores, pts[:, 1], pts[:, 0], kind, target_s)
    assert 0.05 < ref < 0.99  # real gaps, real coverage
    assert r.covered_area_ratio == pytest.approx(ref, abs=0.01)
    assert r.covered_demand_ratio == r.covered_area_ratio
    np.testing.assert_allclose(r.best_eta_s, brute(mgrid, pts[:, 1], pts[:, 0], kind, target_s), rtol=1e-12)


def random_boundary(rng: np.random.Generator) -> Area:
    """A star-shaped polygon of 1-2.5 km radius near Lima, sometimes with a hole, sometimes two parts."""

    def star(lon0: float, lat0: float, r_m: float) -> Polygon:
        ang = np.sort(rng.uniform(0, 2 * math.pi, 12))
        rad = r_m * rng.uniform(0.5, 1.0, 12)
        k = 111_320.0
        return Polygon(
            np.column_stack(
                [lon0 + rad * np.cos(ang) / (k * math.cos(math.radians(lat0))), lat0 + rad * np.sin(ang) / k]
            )
        )

    lon0, lat0 = -77.03 + rng.uniform(-0.05, 0.05), -12.1 + rng.uniform(-0.05, 0.05)
    shape: Area = star(lon0, lat0, rng.uniform(1500, 2500))
    choice = rng.integers(0, 3)
    if choice == 1:
        shape = shape.difference(box(lon0 - 0.003, lat0 - 0.003, lon0 + 0.003, lat0 + 0.003))
    elif choice == 2:
        shape = MultiPolygon([shape, star(lon0 + 0.06, lat0, 1200)])
    assert isinstance(shape, Polygon | MultiPolygon)
    return shape


@pytest.mark.parametrize("seed", range(5))
def test_random_boundaries_agree_with_buffer_union(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    area = random_boundary(rng)
    grid = hexgrid(area, 11)
    lat, lon, kind = random_fleet(area, 25, rng)
    target_s = 120.0
    kind[kind == KIND_CODE["foot"]] = KIND_CODE["bicycle"]  # reaches >= 370 m at 120 s
    r = coverage(grid, lat, lon, kind, target_s, ETA)
    ref = buffer_ratio(area, lat, lon, kind, target_s)
    assert r.covered_area_ratio == pytest.approx(ref, abs=0.01)


def test_kinds_mask_counts_drones_apart(mgrid: HexGrid, miraflores: Area) -> None:
    rng = np.random.default_rng(7)
    lat, lon, kind = random_fleet(miraflores, 60, rng)
    every = coverage(mgrid, lat, lon, kind, 90.0, ETA)
    drones = coverage(mgrid, lat, lon, kind, 90.0, ETA, kinds=[DRONE])
    ground = coverage(mgrid, lat, lon, kind, 90.0, ETA, kinds=[k for k in range(N_KINDS) if k != DRONE])
    assert np.all(kind[drones.best_unit[drones.best_unit >= 0]] == DRONE)
    assert np.all(kind[ground.best_unit[ground.best_unit >= 0]] != DRONE)
    np.testing.assert_array_equal(every.best_eta_s, np.minimum(drones.best_eta_s, ground.best_eta_s))
    assert max(drones.covered_area_ratio, ground.covered_area_ratio) <= every.covered_area_ratio


def test_demand_weights_and_gap_regions(mgrid: HexGrid, miraflores: Area) -> None:
    rng = np.random.default_rng(3)
    lat, lon, kind = random_fleet(miraflores, 10, rng, margin=0.0)
    r = coverage(mgrid, lat, lon, kind, 120.0, ETA)
    assert 0 < r.covered_area_ratio < 1
    # All demand in covered cells: ratio 1; all in gaps: ratio 0.
    assert (
        coverage(mgrid, lat, lon, kind, 120.0, ETA, demand=r.covered.astype(float)).covered_demand_ratio
        == 1.0
    )
    assert (
        coverage(mgrid, lat, lon, kind, 120.0, ETA, demand=(~r.covered).astype(float)).covered_demand_ratio
        == 0
    )
    assert set(r.gap_cells.tolist()) == set(mgrid.cells[~r.covered].tolist())
    gaps = shapely.geometry.shape(r.gap_regions())
    assert gaps.is_valid and miraflores.buffer(1e-9).contains(gaps)
    # The gap polygons weigh what the gap cells weigh (both clipped to the boundary).
    assert gaps.area / miraflores.area == pytest.approx(1 - r.covered_area_ratio, abs=2e-3)
    with pytest.raises(ValueError, match="demand"):
        coverage(mgrid, lat, lon, kind, 120.0, ETA, demand=np.ones(3))


def test_no_units_or_all_unavailable(mgrid: HexGrid, miraflores: Area) -> None:
    empty = np.empty(0)
    r = coverage(mgrid, empty, empty, np.empty(0, dtype=np.int8), 300.0, ETA)
    assert r.covered_area_ratio == 0.0 and r.covered_demand_ratio == 0.0 and r.covered_area_m2 == 0.0
    assert np.all(np.isinf(r.best_eta_s)) and np.all(r.best_unit == -1)
    assert r.gap_cells.shape[0] == mgrid.size
    whole = shapely.geometry.shape(r.gap_regions())
    assert whole.area == pytest.approx(miraflores.area, rel=1e-6)
    assert reach_sets(mgrid, empty, empty, 0, 60.0, ETA)[0].tolist() == [0]


def test_reach_sets_match_the_coverage_of_single_units(mgrid: HexGrid, miraflores: Area) -> None:
    rng = np.random.default_rng(11)
    pts = random_points(miraflores, 30, rng)
    indptr, indices = reach_sets(mgrid, pts[:, 1], pts[:, 0], KIND_CODE["motorcycle"], 60.0, ETA)
    for q in range(30):
        alone = coverage(mgrid, pts[q : q + 1, 1], pts[q : q + 1, 0], [KIND_CODE["motorcycle"]], 60.0, ETA)
        assert indices[indptr[q] : indptr[q + 1]].tolist() == np.flatnonzero(alone.covered).tolist()


def test_bad_input(mgrid: HexGrid) -> None:
    with pytest.raises(ValueError, match="kind codes"):
        coverage(mgrid, [-12.12], [-77.03], [9], 60.0, ETA)
    with pytest.raises(ValueError, match="target"):
        coverage(mgrid, [-12.12], [-77.03], [0], -1.0, ETA)
    with pytest.raises(ValueError, match="pace"):
        kind_pace([1.0, 2.0])


# ---------------------------------------------------------------------------------------------
# Incremental state: any sequence of changes ends where a full recompute starts.

BOX = box(-77.045, -12.13, -77.02, -12.11)
SMALL = hexgrid(BOX, 10)
coord = st.tuples(st.floats(-12.135, -12.105), st.floats(-77.05, -77.015))
op = st.one_of(
    st.tuples(st.just("add"), coord, st.integers(0, N_KINDS - 1)),
    st.tuples(st.just("move"), coord, st.integers(0, 10_000)),
    st.tuples(st.just("remove"), coord, st.integers(0, 10_000)),
)


def expected(state: CoverageState) -> tuple[np.ndarray, np.ndarray]:
    slots = np.flatnonzero(state.active)
    kinds = [k for k in range(N_KINDS) if (state.mask >> k) & 1]
    lat, lon, kind = state.lat[slots], state.lon[slots], state.kind[slots]
    r = coverage(state.grid, lat, lon, kind, state.target_s, state.pace, kinds=kinds)
    if slots.shape[0] == 0:
        return r.best_eta_s, r.best_unit
    return r.best_eta_s, np.where(r.best_unit >= 0, slots[np.maximum(r.best_unit, 0)], -1)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(op, max_size=40),
    target_s=st.sampled_from([20.0, 60.0, 150.0]),
    drones_only=st.booleans(),
)
def test_incremental_equals_full_recompute(ops: list, target_s: float, drones_only: bool) -> None:
    state = CoverageState(SMALL, target_s, ETA, kinds=[DRONE] if drones_only else None, capacity=2)
    live: list[int] = []
    for name, (lat, lon), n in ops:
        if name == "add":
            live.append(state.add(lat, lon, n))
        elif live and name == "move":
            state.move(live[n % len(live)], lat, lon)
        elif live:
            state.remove(live.pop(n % len(live)))
        eta, unit = expected(state)
        np.testing.assert_array_equal(state.best_eta_s, eta)
        np.testing.assert_array_equal(state.best_unit, unit)


def test_state_bulk_load_ties_and_errors() -> None:
    state = CoverageState(SMALL, 60.0, ETA)
    # Two units on the same spot: the lower slot wins every tie, and keeps winning after moves.
    slots = state.add_many([-12.12, -12.12], [-77.03, -77.03], [0, 0])
    assert set(state.best_unit[state.best_unit >= 0].tolist()) == {int(slots[0])}
    state.move(int(slots[0]), -12.12, -77.03)
    assert set(state.best_unit[state.best_unit >= 0].tolist()) == {int(slots[0])}
    state.remove(int(slots[0]))
    assert set(state.best_unit[state.best_unit >= 0].tolist()) == {int(slots[1])}
    assert state.result().covered_area_ratio > 0
    with pytest.raises(KeyError):
        state.remove(int(slots[0]))
    with pytest.raises(ValueError, match="kind"):
        state.add(-12.12, -77.03, 7)
