"""geo.placement: MCLP heuristics against HiGHS and brute force; move-up against brute force; edge cases."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable

import numpy as np
import pytest
from numpy.typing import NDArray

from geo.codes import KIND_CODE
from geo.coverage import reach_sets
from geo.distance import haversine_m
from geo.eta import StraightLineEta
from geo.hexgrid import hexgrid
from geo.placement import (
    coverage_csr,
    covered_demand,
    csr_rows,
    move_up,
    move_up_exact,
    place_exact,
    place_greedy,
    travel_times_s,
)
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE

Csr = tuple[NDArray[np.int64], NDArray[np.int64]]


def instance(
    seed: int, n: tuple[int, int] = (30, 201), m: tuple[int, int] = (20, 81)
) -> tuple[NDArray[np.float64], Csr, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], int]:
    """A random instance in a ~3.3 km square near Miraflores: weights, CSR, site lat/lon, a reach, p."""
    rng = np.random.default_rng(seed)
    nc, ns = int(rng.integers(*n)), int(rng.integers(*m))
    clat, clon = rng.uniform(-12.14, -12.11, nc), rng.uniform(-77.05, -77.02, nc)
    slat, slon = rng.uniform(-12.14, -12.11, ns), rng.uniform(-77.05, -77.02, ns)
    w = rng.exponential(1.0, nc)
    reach = float(rng.uniform(300.0, 900.0))
    return w, coverage_csr(slat, slon, clat, clon, reach), slat, slon, clat, int(rng.integers(2, 9))


def brute_force_mclp(w: NDArray[np.float64], csr: Csr, p: int) -> float:
    """The best covered demand over every p-subset of the sites."""
    m = csr[0].shape[0] - 1
    return max(covered_demand(w, *csr, list(s)) for s in itertools.combinations(range(m), min(p, m)))


def test_coverage_csr_equals_every_pair_by_haversine() -> None:
    rng = np.random.default_rng(7)
    clat, clon = rng.uniform(-12.14, -12.11, 300), rng.uniform(-77.05, -77.02, 300)
    # Sites inside and well outside the cells' box (they must clamp to the edge buckets correctly).
    slat, slon = rng.uniform(-12.16, -12.09, 80), rng.uniform(-77.07, -77.00, 80)
    for reach in (0.0, 150.0, 700.0, 5000.0):
        indptr, indices = coverage_csr(slat, slon, clat, clon, reach)
        for j in range(80):
            want = [i for i in range(300) if haversine_m(slat[j], slon[j], clat[i], clon[i]) <= reach]
            assert indices[indptr[j] : indptr[j + 1]].tolist() == want


def test_greedy_interchange_is_within_2_percent_of_highs(
    record_property: Callable[[str, object], None],
) -> None:
    gaps = []
    for seed in range(60):
        w, csr, *_, p = instance(seed)
        heuristic = place_greedy(w, *csr, p)
        exact = place_exact(w, *csr, p)
        assert exact.optimal is True and exact.upper_bound == pytest.approx(exact.covered_demand)
        assert len(heuristic.sites) == len(set(heuristic.sites)) == len(exact.sites) == p
        assert heuristic.covered_demand <= exact.covered_demand * (1 + 1e-9)
        assert heuristic.covered_demand == pytest.approx(covered_demand(w, *csr, heuristic.sites))
        if heuristic.optimal:  # claimed only when every coverable cell is covered
            assert heuristic.covered_demand == pytest.approx(exact.covered_demand)
        gaps.append(1.0 - heuristic.covered_demand / exact.covered_demand)
    worst = max(gaps)
    record_property("worst_gap", worst)
    print(f"greedy+interchange vs HiGHS over 60 instances: worst gap {worst:.4%}, mean {np.mean(gaps):.4%}")
    assert worst <= 0.02


def test_interchange_never_loses_to_plain_greedy() -> None:
    for seed in range(30):
        w, csr, *_, p = instance(seed)
        plain = place_greedy(w, *csr, p, interchange=False, starts=1)
        assert place_greedy(w, *csr, p).covered_demand >= plain.covered_demand - 1e-9


def test_exact_equals_brute_force_on_tiny_instances() -> None:
    for seed in range(25):
        w, csr, *_, p = instance(1000 + seed, n=(10, 40), m=(4, 13))
        p = min(p, 6)
        exact = place_exact(w, *csr, p)
        assert exact.covered_demand == pytest.approx(brute_force_mclp(w, csr, p), rel=1e-12)
        assert exact.optimal is True


def test_edge_cases() -> None:
    w, csr, *_ = instance(3)
    m = csr[0].shape[0] - 1
    # p at or past the number of sites: every site, and that is optimal.
    for solve in (place_greedy, place_exact):
        everything = solve(w, *csr, m + 3)
        assert everything.sites == list(range(m)) and everything.optimal is True
        assert everything.covered_demand == pytest.approx(covered_demand(w, *csr, range(m)))
        assert solve(w, *csr, 0).sites == []
    # Zero demand: p sites, nothing covered, coverage reported as full (nothing to cover).
    zero = np.zeros_like(w)
    for solve in (place_greedy, place_exact):
        pl = solve(zero, *csr, 3)
        assert len(pl.sites) == 3 and pl.covered_demand == 0.0 and pl.coverage == 1.0
    # No candidate sites at all.
    empty = (np.zeros(1, np.int64), np.zeros(0, np.int64))
    for solve in (place_greedy, place_exact):
        assert solve(w, *empty, 4).sites == []
    # Sites that cover nothing: the ones that do are preferred; the rest fill p.
    ptr = np.array([0, 0, 2, 2, 3], dtype=np.int64)
    idx = np.array([0, 1, 2], dtype=np.int64)
    ww = np.array([1.0, 2.0, 5.0])
    for solve in (place_greedy, place_exact):
        pl = solve(ww, ptr, idx, 2)
        assert sorted(pl.sites) == [1, 3] and pl.covered_demand == 8.0
        assert len(solve(ww, ptr, idx, 3).sites) == 3
    # No cells at all.
    assert place_exact(np.zeros(0), np.zeros(3, np.int64), np.zeros(0, np.int64), 1).covered_demand == 0.0


def test_bad_input_is_refused() -> None:
    ptr, idx = np.array([0, 1], dtype=np.int64), np.array([0], dtype=np.int64)
    with pytest.raises(ValueError, match="weights"):
        place_greedy([-1.0], ptr, idx, 1)
    with pytest.raises(ValueError, match="weights"):
        place_greedy([math.nan], ptr, idx, 1)
    with pytest.raises(ValueError, match="cell indices"):
        place_greedy([1.0], ptr, np.array([1]), 1)
    with pytest.raises(ValueError, match="indptr"):
        place_greedy([1.0], np.array([0, 2]), idx, 1)
    with pytest.raises(ValueError, match="reach"):
        coverage_csr([0.0], [0.0], [0.0], [0.0], -1.0)
    with pytest.raises(ValueError, match="finite"):
        coverage_csr([math.nan], [0.0], [0.0], [0.0], 10.0)


def test_results_are_json_ready() -> None:
    w, csr, slat, slon, *_ = instance(5)
    units = np.array([0, 3, 7])
    travel = travel_times_s(slat[units], slon[units], slat, slon, 1.35 / 6.9)
    plan = move_up(w, *csr, *csr_rows(*csr, units), travel, 2, unit_site=units)
    for result in (place_greedy(w, *csr, 3), place_exact(w, *csr, 3), plan):
        text = json.dumps(result.to_json())
        assert json.loads(text)["total_demand"] == pytest.approx(float(w.sum()))


# ---------------------------------------------------------------------------------------------
# Move-up


def move_up_instance(
    seed: int, units: int, sites: tuple[int, int]
) -> tuple[NDArray[np.float64], Csr, Csr, NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64]]:
    """Weights, site CSR, idle units' CSR (at random sites), travel (s), busy-covered mask, unit sites."""
    w, csr, slat, slon, _, _ = instance(seed, n=(20, 60), m=sites)
    rng = np.random.default_rng(seed + 99)
    m = csr[0].shape[0] - 1
    at = rng.choice(m, size=min(units, m), replace=False)
    travel = travel_times_s(slat[at], slon[at], slat, slon, 1.35 / 6.9)
    base = np.asarray(rng.random(w.shape[0]) < 0.2, dtype=np.bool_)
    return w, csr, csr_rows(*csr, at), travel, base, at


def brute_force_move_up(
    w: NDArray[np.float64], csr: Csr, units: Csr, travel: NDArray[np.float64], base: NDArray[np.bool_],
    max_moves: int, max_travel: float,
) -> float:  # fmt: skip
    """Best covered demand over every assignment (stay or one reachable site per unit, ≤ max_moves)."""
    nu, m = travel.shape
    best = -1.0
    options = [[-1, *[j for j in range(m) if travel[u, j] <= max_travel]] for u in range(nu)]
    for choice in itertools.product(*options):
        if sum(c >= 0 for c in choice) > max_moves:
            continue
        mask = base.copy()
        for u, c in enumerate(choice):
            (ptr, idx), row = (units, u) if c < 0 else (csr, c)
            mask[idx[ptr[row] : ptr[row + 1]]] = True
        best = max(best, float(w[mask].sum()))
    return best


def test_exact_move_up_equals_brute_force_and_greedy_never_beats_it() -> None:
    for seed in range(20):
        w, csr, units, travel, base, at = move_up_instance(2000 + seed, units=3, sites=(4, 8))
        for max_moves, max_travel in ((1, math.inf), (2, math.inf), (3, 300.0)):
            want = brute_force_move_up(w, csr, units, travel, base, max_moves, max_travel)
            exact = move_up_exact(w, *csr, *units, travel, max_moves, base, max_travel, unit_site=at)
            assert exact.optimal is True
            assert exact.covered_after == pytest.approx(want, rel=1e-12)
            heuristic = move_up(w, *csr, *units, travel, max_moves, base, max_travel, unit_site=at)
            assert heuristic.covered_after <= want + 1e-9


def test_move_up_never_worse_than_staying_and_respects_the_limits(
    record_property: Callable[[str, object], None],
) -> None:
    worst = 0.0
    for seed in range(40):
        w, csr, units, travel, base, at = move_up_instance(3000 + seed, units=6, sites=(20, 60))
        for max_moves in (0, 1, 2, 4):
            after = {}
            for solve in (move_up, move_up_exact):
                plan = solve(w, *csr, *units, travel, max_moves, base, 600.0, unit_site=at)
                after[solve] = plan.covered_after
                stay = covered_demand(w, *csr, at, base)
                assert plan.covered_before == pytest.approx(stay)
                assert plan.covered_after >= plan.covered_before - 1e-9
                assert len(plan.moves) <= max_moves
                assert len({mv.unit for mv in plan.moves}) == len(plan.moves)
                for mv in plan.moves:
                    assert mv.gain > 0  # a move that adds nothing is not suggested
                    assert mv.travel_s == travel[mv.unit, mv.to_site] <= 600.0
                    assert mv.from_site == at[mv.unit]
                # The plan's figure is what its moves really cover.
                final = at.copy()
                for mv in plan.moves:
                    final[mv.unit] = mv.to_site
                assert plan.covered_after == pytest.approx(covered_demand(w, *csr, final, base))
            assert after[move_up] <= after[move_up_exact] + 1e-9
            worst = max(worst, 1.0 - after[move_up] / after[move_up_exact])
    record_property("worst_move_up_gap", worst)
    print(f"move-up greedy+interchange vs HiGHS over 160 cases: worst gap {worst:.4%} of covered demand")
    assert worst <= 0.02


def test_move_up_edge_cases() -> None:
    w, csr, units, travel, base, _ = move_up_instance(11, units=3, sites=(6, 10))
    # Everything already covered by busy units: nothing to gain, no moves.
    for solve in (move_up, move_up_exact):
        plan = solve(w, *csr, *units, travel, 3, np.ones_like(base))
        assert plan.moves == [] and plan.gain == 0.0
    # No candidate sites, or no idle units.
    no_sites = (np.zeros(1, np.int64), np.zeros(0, np.int64))
    no_units = (np.zeros(1, np.int64), np.zeros(0, np.int64))
    for solve in (move_up, move_up_exact):
        assert solve(w, *no_sites, *units, np.zeros((3, 0)), 2, base).moves == []
        assert solve(w, *csr, *no_units, np.zeros((0, travel.shape[1])), 2, base).moves == []
        # Nothing reachable in time.
        assert solve(w, *csr, *units, travel, 2, base, max_travel_s=-1.0).moves == []


def test_shortcut_answers_as_highs_does() -> None:
    for seed in range(15):
        w, csr, *_, p = instance(4000 + seed)
        assert place_exact(w, *csr, p).covered_demand == pytest.approx(
            place_exact(w, *csr, p, shortcut=False).covered_demand, rel=1e-12
        )
    # A reach spanning the whole square: greedy covers every cell, which needs no solver to prove.
    rng = np.random.default_rng(1)
    clat, clon = rng.uniform(-12.14, -12.11, 50), rng.uniform(-77.05, -77.02, 50)
    wide = coverage_csr(clat, clon, clat, clon, 5000.0)
    assert place_greedy(np.ones(50), *wide, 3).optimal is True
    pl = place_exact(np.ones(50), *wide, 3)
    assert pl.optimal is True and pl.covered_demand == 50.0 and pl.upper_bound == 50.0
    assert place_exact(np.ones(50), *wide, 3, shortcut=False).covered_demand == 50.0


def test_coverage_reach_sets_feed_placement_like_our_builder() -> None:
    # geo.coverage.reach_sets (H3 grid of a boundary, ETA within T) gives the same CSR for the same reach.
    area = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
    grid = hexgrid(area, 9)
    eta = StraightLineEta.from_names()
    kind = KIND_CODE["patrol_car"]
    theirs = reach_sets(grid, grid.lat, grid.lon, kind, 120.0, eta)
    ours = coverage_csr(grid.lat, grid.lon, grid.lat, grid.lon, 120.0 / float(eta.pace[kind]))
    assert theirs[0].tolist() == ours[0].tolist() and theirs[1].tolist() == ours[1].tolist()
    w = np.random.default_rng(3).exponential(1.0, grid.size)
    assert place_greedy(w, *theirs, 5).sites == place_greedy(w, *ours, 5).sites


def test_time_limit_returns_the_best_known_answer_and_says_it_is_unproven() -> None:
    rng = np.random.default_rng(9)
    lat, lon = rng.uniform(-12.14, -12.11, 600), rng.uniform(-77.05, -77.02, 600)
    w = rng.exponential(1.0, 600)
    csr = coverage_csr(lat, lon, lat, lon, 300.0)
    heuristic = place_greedy(w, *csr, 20)
    pl = place_exact(w, *csr, 20, time_limit_s=0.01, shortcut=False)
    assert len(pl.sites) == 20 and pl.covered_demand >= heuristic.covered_demand - 1e-9
    if not pl.optimal:  # the usual outcome at 10 ms; a fast machine may still prove it
        assert pl.upper_bound is None or pl.upper_bound >= pl.covered_demand - 1e-9
    units = rng.choice(600, 15, replace=False)
    travel = travel_times_s(lat[units], lon[units], lat, lon, 1.35 / 6.9)
    args = (w, *csr, *csr_rows(*csr, units), travel, 3)
    plan = move_up_exact(*args, time_limit_s=0.01)
    assert plan.covered_after >= move_up(*args).covered_after - 1e-9
    assert len(plan.moves) <= 3
