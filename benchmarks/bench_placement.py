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

City scale (``--city-districts``, default all 42 of Lima at H3 res ``--city-resolution`` 9, ~22,200 cells
built as the service builds them; candidate sites = every cell; demand = cell area): for each ``--city-p``
(default 20 100) at ``--city-minutes`` (default 8): plain greedy (the peer, one start), ``place_greedy`` as
served (8 starts + interchange), the ratio of their times and covered demand, and the gap to an upper bound
(``placement_upper_bound``: LP relaxation when the matrix has at most ``--city-lp-max-nonzeros`` nonzeros,
else the marginal-gains bound); HiGHS itself when the matrix has at most ``--city-highs-max-nonzeros``.
Then move-up: ``--city-idle`` idle cars (placed by greedy, then shuffled) with at most 5 moves.

Printed: covered share, gap to the HiGHS optimum, times. Results: ``benchmarks/results/placement.json``.

Run: ``.venv/bin/python -m benchmarks.bench_placement [--quick] [--p 20] [--minutes 8 2 1] [--resolution 10]``
(the city case alone: ``--minutes`` as usual, ``--city-districts 0`` skips it).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import h3
import numpy as np
from numpy.typing import NDArray

from benchmarks.report import add_run_options, say, table, write_results
from geo.area import feature_names
from geo.codes import KIND_CODE
from geo.coverage import reach_sets
from geo.eta import StraightLineEta
from geo.hexgrid import hexgrid
from geo.placement import (
    Placement,
    coverage_csr,
    csr_rows,
    move_up,
    move_up_exact,
    place_exact,
    place_greedy,
    placement_upper_bound,
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


def run_city(
    districts: int, resolution: int, minutes: float, ps: list[int], idle: int, repeats: int,
    lp_max_nonzeros: int, highs_max_nonzeros: int, time_limit: float, rng: np.random.Generator,
) -> dict[str, Any]:  # fmt: skip
    """Greedy + interchange over the first ``districts`` of Lima's districts (all sites), beside its peers."""
    collection = json.loads(DEFAULT_DISTRICTS_FILE.read_text(encoding="utf-8"))
    names = feature_names(collection)[:districts]
    t0 = time.perf_counter()
    grid = hexgrid(load_area(DEFAULT_DISTRICTS_FILE, names), resolution)
    grid_ms = (time.perf_counter() - t0) * 1000.0
    model = StraightLineEta.from_names()
    car = KIND_CODE["patrol_car"]
    w = grid.clipped_area_m2
    csr_ms, (indptr, indices) = best_of(
        1, lambda: reach_sets(grid, grid.lat, grid.lon, car, minutes * 60.0, model)
    )
    nnz = int(indices.shape[0])
    say(f"city: {len(names)} districts, {grid.size:,} cells at res {resolution} ({grid_ms:,.0f} ms), "
        f"{minutes:g} min: {nnz:,} covering pairs in {csr_ms:,.0f} ms")  # fmt: skip
    out: dict[str, Any] = {"districts": len(names), "resolution": resolution, "cells": grid.size,
                           "minutes": minutes, "covering_pairs": nnz, "grid_ms": grid_ms, "csr_ms": csr_ms,
                           "runs": []}  # fmt: skip
    for p in ps:
        g_ms, g = best_of(repeats, lambda: place_greedy(w, indptr, indices, p, interchange=False, starts=1))  # noqa: B023
        gi_ms, gi = best_of(repeats, lambda: place_greedy(w, indptr, indices, p))  # noqa: B023
        t0 = time.perf_counter()
        bound = placement_upper_bound(w, indptr, indices, p, gi.sites, lp_max_nonzeros)
        bound_ms = (time.perf_counter() - t0) * 1000.0
        row: dict[str, Any] = {
            "p": p,
            "greedy": {"ms": g_ms, "coverage": g.coverage},
            "greedy_interchange": {
                "ms": gi_ms, "coverage": gi.coverage, "swaps": gi.swaps, "passes": gi.passes,
            },
            "time_ratio": gi_ms / g_ms if g_ms > 0 else math.nan,
            "covered_ratio": gi.covered_demand / g.covered_demand if g.covered_demand > 0 else math.nan,
            "bound": {"source": bound.source, "coverage": bound.value / gi.total_demand, "ms": bound_ms,
                      "gap": 1.0 - gi.covered_demand / bound.value if bound.value > 0 else 0.0},
        }  # fmt: skip
        if nnz <= highs_max_nonzeros:
            t0 = time.perf_counter()
            ex = place_exact(w, indptr, indices, p, time_limit_s=time_limit, shortcut=False)
            gap = 1.0 - gi.covered_demand / ex.covered_demand if ex.covered_demand else 0.0
            row["highs"] = {"ms": (time.perf_counter() - t0) * 1000.0, "coverage": ex.coverage,
                            "proven_optimal": ex.optimal, "gap": gap}  # fmt: skip
        say(f"p={p}: greedy {g_ms:.1f} ms {g.coverage:.3%}; greedy+interchange {gi_ms:.1f} ms "
            f"{gi.coverage:.3%} ({row['time_ratio']:.1f}x the time); {bound.source} bound "
            f"{row['bound']['coverage']:.3%}, gap {row['bound']['gap']:.3%}")  # fmt: skip
        out["runs"].append(row)
    if idle > 0:
        posts = np.array(place_greedy(w, indptr, indices, idle, starts=1).sites, dtype=np.int64)
        # Scatter half the cars off their posts so that moves matter.
        posts[: idle // 2] = rng.choice(grid.size, idle // 2, replace=False)
        units = csr_rows(indptr, indices, posts)
        travel = travel_times_s(grid.lat[posts], grid.lon[posts], grid.lat, grid.lon, float(model.pace[car]))
        args = (w, indptr, indices, *units, travel, 5, None, 15 * 60.0)
        mu_ms, plan = best_of(1, lambda: move_up(*args))
        say(f"city move-up: {idle} idle cars, ≤5 moves: {plan.covered_before / plan.total_demand:.3%} → "
            f"{plan.covered_after / plan.total_demand:.3%} in {mu_ms:,.0f} ms")  # fmt: skip
        total = plan.total_demand
        out["move_up"] = {"idle": idle, "ms": mu_ms, "before": plan.covered_before / total,
                          "after": plan.covered_after / total, "moves": len(plan.moves)}  # fmt: skip
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
    parser.add_argument(
        "--city-districts", type=int, default=42, help="Lima districts in the city case (0: skip)"
    )
    parser.add_argument("--city-resolution", type=int, default=9)
    parser.add_argument("--city-minutes", type=float, default=8.0)
    parser.add_argument("--city-p", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--city-idle", type=int, default=100, help="idle cars in the city move-up")
    parser.add_argument("--city-lp-max-nonzeros", type=int, default=100_000, help="LP bound up to this size")
    parser.add_argument("--city-highs-max-nonzeros", type=int, default=100_000, help="HiGHS up to this size")
    add_run_options(
        parser, argv,
        {"p": 8, "minutes": [2.0], "resolution": 9, "repeats": 2, "moves": [2], "city_districts": 3,
         "city_minutes": 2.0, "city_p": [10], "city_idle": 10},
    )  # fmt: skip
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
    city = None
    if args.city_districts > 0:
        city = run_city(args.city_districts, args.city_resolution, args.city_minutes, args.city_p,
                        args.city_idle, args.repeats, args.city_lp_max_nonzeros, args.city_highs_max_nonzeros,
                        args.time_limit, rng)  # fmt: skip
        print(f"\ncity: {city['districts']} districts of Lima, {city['cells']:,} cells = sites, res "
              f"{city['resolution']}, {city['minutes']:g} min, {city['covering_pairs']:,} pairs")  # fmt: skip
        print(table(
            ["p", "greedy cov", "greedy ms", "g+i cov", "g+i ms", "time ratio", "cover ratio", "bound",
             "bound cov", "gap to bound", "HiGHS cov", "HiGHS ms"],
            [[r["p"], f"{r['greedy']['coverage']:.3%}", r["greedy"]["ms"],
              f"{r['greedy_interchange']['coverage']:.3%}", r["greedy_interchange"]["ms"],
              f"{r['time_ratio']:.2f}", f"{r['covered_ratio']:.4f}", r["bound"]["source"],
              f"{r['bound']['coverage']:.3%}", f"{r['bound']['gap']:.3%}",
              f"{r['highs']['coverage']:.3%}" if "highs" in r else "-",
              r["highs"]["ms"] if "highs" in r else "-"] for r in city["runs"]],
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
            "city": city,
        },
        args.results_dir,
        args.quick,
    )
    say(f"results: {path}")


if __name__ == "__main__":
    main()
