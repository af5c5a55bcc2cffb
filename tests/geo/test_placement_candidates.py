"""Placement with candidate sites restricted to streets/sectors, upper bounds and size measures.

Ground truth: brute force over every p-subset of the candidates, and an
independent HiGHS model over the *whole* grid with the other sites fixed to 0.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.optimize import Bounds, LinearConstraint, milp
from shapely.geometry import LineString, Polygon

from geo.candidates import candidate_rows
from geo.codes import KIND_CODE
from geo.coverage import reach_sets
from geo.eta import StraightLineEta
from geo.hexgrid import HexGrid, hexgrid
from geo.placement import (
    coverage_csr,
    covered_demand,
    csr_rows,
    exact_nonzeros,
    move_up,
    move_up_exact,
    move_up_nonzeros,
    place_exact,
    place_greedy,
    placement_upper_bound,
    travel_times_s,
)
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE

MIRAFLORES = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
MODEL = StraightLineEta.from_names()
CAR = KIND_CODE["patrol_car"]
LARCO = LineString([(-77.0300, -12.1200), (-77.0290, -12.1320)])  # roughly Av. Larco
SECTOR = Polygon([(-77.050, -12.112), (-77.044, -12.112), (-77.044, -12.106), (-77.050, -12.106)])


@pytest.fixture(scope="module")
def grid() -> HexGrid:
    return hexgrid(MIRAFLORES, 10)


def highs_restricted(
    w: NDArray[np.float64], grid: HexGrid, target_s: float, rows: NDArray[np.intp], p: int
) -> float:
    """Best covered demand with p sites among ``rows``: HiGHS on every grid site, the others bounded to 0."""
    ptr, idx = reach_sets(grid, grid.lat, grid.lon, CAR, target_s, MODEL)
    m, n = grid.size, w.shape[0]
    a = sp.csr_matrix((np.ones(idx.shape[0]), idx, ptr), shape=(m, n)).T.tocsr()  # cells × sites
    cover = sp.hstack([-a, sp.identity(n, format="csr")], format="csr")
    count = sp.csr_matrix(np.concatenate([np.ones(m), np.zeros(n)])[None, :])
    upper = np.concatenate([np.zeros(m), np.ones(n)])
    upper[rows] = 1.0
    res = milp(
        np.concatenate([np.zeros(m), -w]),
        constraints=[LinearConstraint(cover, -np.inf, 0.0), LinearConstraint(count, p, p)],
        integrality=np.concatenate([np.ones(m), np.zeros(n)]),
        bounds=Bounds(np.zeros(m + n), upper),
        options={"mip_rel_gap": 0.0},
    )
    assert res.status == 0
    return -float(res.fun)


@pytest.mark.parametrize(("seed", "minutes", "p"), [(1, 1.0, 3), (2, 1.5, 3), (3, 1.0, 2), (4, 2.0, 2)])
def test_restricted_placement_picks_only_candidates_and_finds_the_restricted_optimum(
    grid: HexGrid, seed: int, minutes: float, p: int
) -> None:
    rng = np.random.default_rng(seed)
    w = rng.exponential(1.0, grid.size)
    target = minutes * 60.0
    rows = candidate_rows(grid, [SECTOR], LARCO)
    assert 20 < rows.shape[0] < 120
    sites = reach_sets(grid, grid.lat[rows], grid.lon[rows], CAR, target, MODEL)
    exact = place_exact(w, *sites, p, shortcut=False)
    greedy = place_greedy(w, *sites, p)
    assert exact.optimal is True
    brute = max(covered_demand(w, *sites, list(s)) for s in itertools.combinations(range(rows.shape[0]), p))
    assert exact.covered_demand == pytest.approx(brute, rel=1e-9)
    assert exact.covered_demand == pytest.approx(highs_restricted(w, grid, target, rows, p), rel=1e-7)
    assert greedy.covered_demand >= 0.98 * exact.covered_demand
    # The answers name sites of the restricted list: mapped back, they are candidate cells.
    for pl in (exact, greedy):
        assert set(rows[pl.sites].tolist()) <= set(rows.tolist()) and len(pl.sites) == p
    # The restriction binds: the unrestricted optimum is at least as good, usually better.
    full = reach_sets(grid, grid.lat, grid.lon, CAR, target, MODEL)
    assert place_greedy(w, *full, p).covered_demand >= greedy.covered_demand * 0.98


@pytest.mark.parametrize("seed", range(12))
def test_upper_bounds_never_undercut_the_optimum(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n, m = int(rng.integers(40, 160)), int(rng.integers(15, 60))
    clat, clon = rng.uniform(-12.14, -12.11, n), rng.uniform(-77.05, -77.02, n)
    slat, slon = rng.uniform(-12.14, -12.11, m), rng.uniform(-77.05, -77.02, m)
    w = rng.exponential(1.0, n)
    csr = coverage_csr(slat, slon, clat, clon, float(rng.uniform(300.0, 900.0)))
    p = int(rng.integers(2, 8))
    best = place_exact(w, *csr, p, shortcut=False)
    assert best.optimal is True
    greedy = place_greedy(w, *csr, p)
    cheap = placement_upper_bound(w, *csr, p, greedy.sites)
    lp = placement_upper_bound(w, *csr, p, greedy.sites, lp_max_nonzeros=10**7)
    assert cheap.source in ("marginal_gains", "coverable_demand")
    assert cheap.value >= best.covered_demand * (1 - 1e-9)
    assert lp.value >= best.covered_demand * (1 - 1e-9)
    assert lp.value <= cheap.value + 1e-9  # the LP never loosens the bound


def test_the_lp_bound_is_tight_where_the_lp_is_integral() -> None:
    # Disjoint sets: the LP relaxation picks the p heaviest whole sets, as the optimum does.
    indptr = np.array([0, 2, 4, 6, 8])
    indices = np.arange(8)
    w = np.array([1.0, 1.0, 5.0, 5.0, 2.0, 2.0, 3.0, 3.0])
    b = placement_upper_bound(w, indptr, indices, 2, [1, 3], lp_max_nonzeros=100)
    assert b.source in ("lp_relaxation", "marginal_gains") and b.value == pytest.approx(16.0)


def test_time_budget_keeps_the_first_run() -> None:
    rng = np.random.default_rng(5)
    lat, lon = rng.uniform(-12.14, -12.11, 300), rng.uniform(-77.05, -77.02, 300)
    w = rng.exponential(1.0, 300)
    csr = coverage_csr(lat, lon, lat, lon, 400.0)
    one = place_greedy(w, *csr, 8, starts=1)
    hurried = place_greedy(w, *csr, 8, time_budget_s=0.0)
    assert hurried.sites == one.sites  # no second start began, the first completed
    units = rng.choice(300, 10, replace=False)
    travel = travel_times_s(lat[units], lon[units], lat, lon, 1.35 / 6.9)
    args = (w, *csr, *csr_rows(*csr, units), travel, 3)
    assert move_up(*args, time_budget_s=0.0).moves == move_up(*args, starts=1).moves


def test_size_measures_count_the_model_nonzeros() -> None:
    rng = np.random.default_rng(6)
    lat, lon = rng.uniform(-12.14, -12.11, 120), rng.uniform(-77.05, -77.02, 120)
    ptr, idx = coverage_csr(lat, lon, lat, lon, 500.0)
    assert exact_nonzeros(ptr) == idx.shape[0]
    units = np.array([3, 40, 77])
    uptr, uidx = csr_rows(ptr, idx, units)
    travel = travel_times_s(lat[units], lon[units], lat, lon, 1.35 / 6.9)
    limit = 300.0
    want = uidx.shape[0] + sum(
        int(ptr[j + 1] - ptr[j]) for u in range(3) for j in range(120) if travel[u, j] <= limit
    )
    assert move_up_nonzeros(ptr, uptr, travel, limit) == want


def test_restricted_move_up_sends_units_only_to_candidates(grid: HexGrid) -> None:
    rng = np.random.default_rng(9)
    w = rng.exponential(1.0, grid.size)
    target = 90.0
    rows = candidate_rows(grid, [SECTOR], LARCO)
    sites = reach_sets(grid, grid.lat[rows], grid.lon[rows], CAR, target, MODEL)
    at = rng.choice(grid.size, 4, replace=False)  # idle cars standing anywhere in the district
    units = reach_sets(grid, grid.lat[at], grid.lon[at], CAR, target, MODEL)
    travel = travel_times_s(
        grid.lat[at], grid.lon[at], grid.lat[rows], grid.lon[rows], float(MODEL.pace[CAR])
    )
    args = (w, *sites, *units, travel, 2)
    exact = move_up_exact(*args)
    greedy = move_up(*args)
    assert exact.optimal is True
    assert greedy.covered_after >= 0.98 * exact.covered_after
    assert exact.covered_after > exact.covered_before
    for plan in (exact, greedy):
        assert all(0 <= mv.to_site < rows.shape[0] for mv in plan.moves)
