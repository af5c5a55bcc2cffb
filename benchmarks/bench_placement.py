"""Placement (maximal covering location) over Miraflores: greedy + interchange beside the HiGHS optimum.

Demand cells: the H3 cells (``--resolution``, default 10) whose centres lie in the
Miraflores polygon of ``tracker/data/lima_districts.geojson``; candidate sites:
the same cell centres. Demand: a synthetic incident density, a few Gaussian
hotspots (seeded) over a thin uniform background. A site covers a cell when a
patrol car gets there within the reach time (``--minutes``, default 8, 2 and 1:
the 8-minute reach spans most of the district, the shorter ones make p sites
bind) at the default ETA model's pace (6.9 m/s, circuity 1.35: ~5.1 m of great
circle per second). Choose ``--p`` sites (default 20).

Timed per reach (best of ``--repeats`` after a warm-up, so numba's compile is not counted):

``csr``                 building the coverage structure (``geo.placement.coverage_csr``);
``greedy``              plain greedy on marginal gains (one start, no interchange);
``greedy+interchange``  ``place_greedy`` as the service runs it (8 starts, 1-swap interchange);
``highs``               ``place_exact(shortcut=False)``: the MILP solved to proven optimality by HiGHS
                        (one run, ``--time-limit`` s at most; "proven" says whether it finished);
``served``              ``place_exact`` as the service runs it: no HiGHS when greedy + interchange
                        already covers every coverable cell (then that is the optimum).

Move-up (at the last ``--minutes`` reach): the greedy + interchange placement of p units, then
``--busy`` of them (seeded) leave for incidents; the idle ones may move (at most ``--moves``, each
within ``--max-travel-min`` of driving) to win back covered demand. ``move_up`` (greedy +
interchange) beside ``move_up_exact`` (HiGHS, one binary per idle unit × reachable site).

Printed: covered share, gap to the HiGHS optimum, times. Results: ``benchmarks/results/placement.json``.

Run: ``.venv/bin/python -m benchmarks.bench_placement [--quick] [--p 20] [--minutes 8 2 1] [--resolution 10]``
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import h3
import numpy as np
from numpy.typing import NDArray

from benchmarks.report import add_run_options, say, table, write_results
from geo.codes import KIND_CODE
from geo.eta import StraightLineEta
from geo.placement import (
    Placement,
    coverage_csr,
    csr_rows,
    move_up,
    move_up_exact,
    place_exact,
    place_greedy,
    travel_times_s,
)
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE

T = TypeVar("T")
DISTRICT = "Miraflores"
# Incident hotspots (lat, lon, sigma m, weight): Parque Kennedy, Larcomar, Av. Benavides, Av. Angamos,
# Malecón; rough places only, the benchmark needs clustered demand, not an incident map.
HOTSPOTS = [
    (-12.1211, -77.0297, 300.0, 1.0),
    (-12.1318, -77.0306, 250.0, 0.7),
    (-12.1255, -77.0220, 400.0, 0.5),
    (-12.1130, -77.0270, 350.0, 0.5),
    (-12.1240, -77.0410, 450.0, 0.4),
]
BACKGROUND = 0.02  # of the peak weight, everywhere


def cells_of(resolution: int) -> tuple[list[str], NDArray[np.float64], NDArray[np.float64]]:
    """The H3 cells of Miraflores at ``resolution`` and their centres."""
    area = load_area(DEFAULT_DISTRICTS_FILE, DISTRICT)
    cells = sorted(h3.geo_to_cells(area.__geo_interface__, resolution))
    centres = np.array([h3.cell_to_latlng(c) for c in cells], dtype=np.float64).reshape(-1, 2)
    return cells, centres[:, 0], centres[:, 1]


def demand(
    lat: NDArray[np.float64], lon: NDArray[np.float64], rng: np.random.Generator
) -> NDArray[np.float64]:
    """Gaussian hotspots (jittered by ``rng``) over a uniform background: incidents per cell (arbitrary)."""
    m_per_deg = 111_195.0
    w = np.full(lat.shape[0], BACKGROUND)
    for hlat, hlon, sigma, weight in HOTSPOTS:
        clat = hlat + rng.normal(0.0, 0.001)
        clon = hlon + rng.normal(0.0, 0.001)
        dy = (lat - clat) * m_per_deg
        dx = (lon - clon) * m_per_deg * math.cos(math.radians(clat))
        w += weight * np.exp(-(dx * dx + dy * dy) / (2.0 * sigma * sigma))
    return w


def best_of(repeats: int, call: Callable[[], T]) -> tuple[float, T]:
    """Smallest wall time (ms) of ``repeats`` calls after one warm-up call, and the last result."""
    result = call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - t0) * 1000.0)
    return min(times), result


def run_reach(
    minutes: float, p: int, lat: NDArray[np.float64], lon: NDArray[np.float64], w: NDArray[np.float64],
    repeats: int, time_limit: float,
) -> dict[str, Any]:  # fmt: skip
    """Every method at one reach time; figures as a dict."""
    pace = float(StraightLineEta.from_names().pace[KIND_CODE["patrol_car"]])
    reach_m = minutes * 60.0 / pace
    csr_ms, (indptr, indices) = best_of(repeats, lambda: coverage_csr(lat, lon, lat, lon, reach_m))
    say(f"{minutes:g} min = {reach_m:,.0f} m: {indices.shape[0]:,} covering pairs in {csr_ms:.1f} ms")
    greedy_ms, greedy = best_of(
        repeats, lambda: place_greedy(w, indptr, indices, p, interchange=False, starts=1)
    )
    gi_ms, gi = best_of(repeats, lambda: place_greedy(w, indptr, indices, p))
    say(f"greedy {greedy_ms:.1f} ms, greedy+interchange {gi_ms:.1f} ms; HiGHS (limit {time_limit:g} s)...")
    t0 = time.perf_counter()
    exact = place_exact(w, indptr, indices, p, time_limit_s=time_limit, shortcut=False)  # HiGHS itself
    highs_ms = (time.perf_counter() - t0) * 1000.0
    say(f"HiGHS {highs_ms:,.0f} ms, proven optimal: {exact.optimal}")
    t0 = time.perf_counter()
    service = place_exact(w, indptr, indices, p, time_limit_s=time_limit)
    exact_ms = (time.perf_counter() - t0) * 1000.0
    say(f"place_exact as served: {exact_ms:,.0f} ms ({service.method})")

    def gap(pl: Placement) -> float:
        return 1.0 - pl.covered_demand / exact.covered_demand if exact.covered_demand > 0 else 0.0

    return {
        "minutes": minutes,
        "reach_m": reach_m,
        "cells": int(w.shape[0]),
        "sites": int(indptr.shape[0] - 1),
        "p": p,
        "covering_pairs": int(indices.shape[0]),
        "csr_ms": csr_ms,
        "greedy": {"ms": greedy_ms, "coverage": greedy.coverage, "gap": gap(greedy)},
        "greedy_interchange": {
            "ms": gi_ms, "coverage": gi.coverage, "gap": gap(gi), "swaps": gi.swaps, "passes": gi.passes,
        },
        "exact_served": {"ms": exact_ms, "method": service.method, "coverage": service.coverage},
        "highs": {
            "ms": highs_ms, "coverage": exact.coverage, "proven_optimal": exact.optimal,
            "upper_bound_coverage": (exact.upper_bound or math.nan) / exact.total_demand,
        },
    }  # fmt: skip


def run_move_up(
    minutes: float, p: int, lat: NDArray[np.float64], lon: NDArray[np.float64], w: NDArray[np.float64],
    busy: int, moves: list[int], max_travel_min: float, time_limit: float, rng: np.random.Generator,
) -> list[dict[str, Any]]:  # fmt: skip
    """Move-up after ``busy`` of p placed units leave: greedy + interchange and HiGHS per move limit."""
    pace = float(StraightLineEta.from_names().pace[KIND_CODE["patrol_car"]])
    indptr, indices = coverage_csr(lat, lon, lat, lon, minutes * 60.0 / pace)
    posts = np.array(place_greedy(w, indptr, indices, p).sites, dtype=np.int64)
    idle = np.delete(posts, rng.choice(posts.shape[0], min(busy, posts.shape[0]), replace=False))
    units = csr_rows(indptr, indices, idle)
    travel = travel_times_s(lat[idle], lon[idle], lat, lon, pace)
    out = []
    for m in moves:
        args = (w, indptr, indices, *units, travel, m, None, max_travel_min * 60.0)
        ms, plan = best_of(3, lambda: move_up(*args, unit_site=idle))  # noqa: B023 (called right here)
        t0 = time.perf_counter()
        exact = move_up_exact(*args, unit_site=idle, time_limit_s=time_limit)
        exact_ms = (time.perf_counter() - t0) * 1000.0
        total = plan.total_demand
        say(f"move-up ≤{m}: {plan.covered_before / total:.2%} → greedy+interchange "
            f"{plan.covered_after / total:.2%} ({ms:.1f} ms), HiGHS {exact.covered_after / total:.2%} "
            f"({exact_ms:,.0f} ms, proven {exact.optimal})")  # fmt: skip
        out.append({
            "max_moves": m, "idle_units": int(idle.shape[0]), "before": plan.covered_before / total,
            "greedy_interchange": {"ms": ms, "after": plan.covered_after / total, "moves": len(plan.moves)},
            "highs": {"ms": exact_ms, "after": exact.covered_after / total, "proven_optimal": exact.optimal,
                      "moves": len(exact.moves)},
        })  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print coverage, gaps and times per reach."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--p", type=int, default=20, help="sites to choose")
    parser.add_argument("--minutes", type=float, nargs="+", default=[8.0, 2.0, 1.0], help="patrol-car reach")
    parser.add_argument("--resolution", type=int, default=10, help="H3 resolution of the demand cells")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--time-limit", type=float, default=600.0, help="HiGHS time limit (s)")
    parser.add_argument("--seed", type=int, default=20240520)
    parser.add_argument("--busy", type=int, default=5, help="placed units that leave for incidents")
    parser.add_argument("--moves", type=int, nargs="+", default=[1, 3, 5], help="move-up limits")
    parser.add_argument("--max-travel-min", type=float, default=8.0, help="longest move-up drive")
    add_run_options(parser, argv, {"p": 8, "minutes": [2.0], "resolution": 9, "repeats": 2, "moves": [2]})
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    _, lat, lon = cells_of(args.resolution)
    w = demand(lat, lon, rng)
    say(f"{DISTRICT}: {lat.shape[0]:,} H3 cells at resolution {args.resolution}; p = {args.p}")
    runs = [run_reach(mi, args.p, lat, lon, w, args.repeats, args.time_limit) for mi in args.minutes]
    headers = ["reach", "pairs", "csr ms", "greedy cov", "greedy gap", "g+i cov", "g+i gap", "g+i ms",
               "HiGHS cov", "HiGHS ms", "proven", "served ms"]  # fmt: skip
    rows = [
        [f"{r['minutes']:g} min ({r['reach_m']:,.0f} m)", r["covering_pairs"], r["csr_ms"],
         f"{r['greedy']['coverage']:.4%}", f"{r['greedy']['gap']:.3%}",
         f"{r['greedy_interchange']['coverage']:.4%}", f"{r['greedy_interchange']['gap']:.3%}",
         r["greedy_interchange"]["ms"], f"{r['highs']['coverage']:.4%}", r["highs"]["ms"],
         str(r["highs"]["proven_optimal"]), r["exact_served"]["ms"]]
        for r in runs
    ]  # fmt: skip
    print(
        f"\nplacement p={args.p} over {DISTRICT} (H3 res {args.resolution}, {lat.shape[0]:,} cells = sites)"
    )
    print(table(headers, rows))
    mu = run_move_up(args.minutes[-1], args.p, lat, lon, w, args.busy, args.moves, args.max_travel_min,
                     args.time_limit, rng)  # fmt: skip
    print(f"\nmove-up at {args.minutes[-1]:g} min: {args.busy} of {args.p} units busy, "
          f"moves ≤ {args.max_travel_min:g} min of driving")  # fmt: skip
    print(table(
        ["max moves", "before", "g+i after", "g+i ms", "HiGHS after", "HiGHS ms", "proven"],
        [[r["max_moves"], f"{r['before']:.3%}", f"{r['greedy_interchange']['after']:.3%}",
          r["greedy_interchange"]["ms"], f"{r['highs']['after']:.3%}", r["highs"]["ms"],
          str(r["highs"]["proven_optimal"])] for r in mu],
    ))  # fmt: skip
    path = write_results(
        "placement",
        {
            "district": DISTRICT,
            "resolution": args.resolution,
            "p": args.p,
            "seed": args.seed,
            "runs": runs,
            "move_up": mu,
        },
        args.results_dir,
        args.quick,
    )
    say(f"results: {path}")


if __name__ == "__main__":
    main()
