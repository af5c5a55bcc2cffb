"""Sortie planning: every gap cell of Miraflores (resolution 10) flown from two docks, and tour quality.

Scenario: Miraflores at H3 resolution 10 (~730 cells); a ground fleet of
``--units`` units (default 150) placed uniformly with bench_coverage's mixed
kinds; the gap cells are those no ground unit reaches within ``--target-s``
(default 30 s). Two demo docks (tracker/data: dock-palacio, dock-costaverde)
share the gaps, each cell going to its nearer dock, and
:func:`drones.sorties.plan_sorties` plans each dock's sorties at 100 m with
20 s over each cell. Two airspace cases: open sky, and two synthetic
restricted zones (discs of 250 m and 180 m, the kind of footprint a hospital
or a helipad gets), so the legs route around them.

Printed per case: planning time (ms, both docks), sorties, cells covered and
unreachable, total flight time and distance. Every plan is checked (no leg
crosses a zone, no sortie over its budget, every cell planned or reported).

Quality, in the same run, on small instances drawn from the gap cells
(``--instances`` per size), against exact solutions:

- one sortie (a full battery): the planner's tour against Held–Karp's exact
  shortest tour over pyproj geodesic distances;
- several sorties (a charge cut to ~25 %, so 2-4 trips): the planner's total
  flight time against the exact optimum of the capacitated problem (every
  subset's Held–Karp tour, then an exact set-partition DP).

Goal: within 10 % of exact (ratio ≤ 1.10) on every instance.
Results: ``benchmarks/results/sorties.json``.

Run: ``.venv/bin/python -m benchmarks.bench_sorties [--quick] [--units 150] [--target-s 30]``
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import Geod
from shapely.geometry import LineString, Point

from benchmarks.bench_coverage import fleet
from benchmarks.report import add_run_options, say, table, write_results
from drones.sorties import SortiePlan, Target, plan_sorties, warm_up
from geo.area import area_from_geojson
from geo.codes import KIND_CODE
from geo.coverage import coverage
from geo.coverage import warm_up as warm_up_coverage
from geo.docks import Dock
from geo.eta import StraightLineEta
from geo.hexgrid import DISTRICT_RES, hexgrid
from geo.local_frame import LocalFrame
from tracker.config import DEFAULT_DISTRICTS_FILE
from tracker.coverage_files import DEMO_DOCKS_FILE, load_docks

QUICK = {"units": 100, "instances": 3, "max_n": 9, "repeats": 1}
GEOD = Geod(ellps="WGS84")
DOCK_IDS = ("dock-palacio", "dock-costaverde")


def synthetic_zones(frame: LocalFrame) -> list[shapely.Geometry]:
    """Two restricted discs inside Miraflores (metres about the frame's origin), as lon/lat polygons."""
    out = []
    for x, y, r in ((700.0, 600.0, 250.0), (-900.0, -300.0, 180.0)):
        disc = Point(x, y).buffer(r, quad_segs=8)
        out.append(shapely.transform(disc, lambda c: np.column_stack(frame.to_lonlat(c[:, 0], c[:, 1]))))
    return out


def check(plan: SortiePlan, targets: list[Target], zones: list[shapely.Geometry]) -> bool:
    """Every target planned once or reported; no leg through a zone; no sortie over budget."""
    got = [t for s in plan.sorties for t in s.targets] + [u.target.id for u in plan.unreachable]
    ok = sorted(got) == sorted(t.id for t in targets)
    for s in plan.sorties:
        line = LineString([(w.lon, w.lat) for w in s.waypoints])
        ok = ok and s.flight_s <= plan.budget_s and not any(line.intersects(z) for z in zones)
    return ok


def geodesic_matrix(lat: NDArray[np.float64], lon: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pairwise WGS84 geodesic distances (m)."""
    n = lat.shape[0]
    i, j = np.triu_indices(n, 1)
    _, _, d = GEOD.inv(lon[i], lat[i], lon[j], lat[j])
    out = np.zeros((n, n))
    out[i, j] = out[j, i] = d
    return out


def subset_tours(d: NDArray[np.float64]) -> NDArray[np.float64]:
    """Held–Karp: the shortest closed tour from node 0 through each subset of the other nodes (bitmask)."""
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
            free = ks[((s >> ks) & 1) == 0]
            nxt = s | (1 << free)
            dp[nxt, free] = np.minimum(dp[nxt, free], dp[s, j] + d[j + 1, free + 1])
    tours: NDArray[np.float64] = np.min(dp + d[1:, 0][None, :], axis=1)
    tours[0] = 0.0
    return tours


def exact_fleet_time(d: NDArray[np.float64], v: float, fixed: float, loiter: float, budget: float) -> float:
    """Least total flight time to visit every node in trips from node 0, each within ``budget`` (exact)."""
    m = d.shape[0] - 1
    tours = subset_tours(d)
    sizes = np.array([bin(s).count("1") for s in range(1 << m)])
    trip = fixed + tours / v + loiter * sizes
    trip[~(trip <= budget)] = np.inf
    best = np.full(1 << m, np.inf)
    best[0] = 0.0
    for s in range(1, 1 << m):
        low = s & -s
        rest = s ^ low
        sub = rest
        while True:  # every subset T of s holding its lowest node
            t = sub | low
            c = trip[t] + best[s ^ t]
            if c < best[s]:
                best[s] = c
            if sub == 0:
                break
            sub = (sub - 1) & rest
    return float(best[-1])


def quality(
    dock: Dock, gaps: list[Target], rng: np.random.Generator, instances: int, max_n: int
) -> list[dict[str, Any]]:
    """Planner against exact solutions on small instances drawn from the gap cells."""
    rows = []
    p = dock.profile
    for n in range(5, max_n + 1, 2):
        one, many = [], []
        for _ in range(instances):
            pick = [gaps[int(k)] for k in rng.choice(len(gaps), n, replace=False)]
            lat = np.array([dock.lat] + [t.lat for t in pick])
            lon = np.array([dock.lon] + [t.lon for t in pick])
            d = geodesic_matrix(lat, lon)
            plan = plan_sorties(dock, pick, loiter_s=0.0)
            if len(plan.sorties) != 1 or plan.unreachable:
                raise RuntimeError("a small instance should fit one full battery: the fixture is wrong")
            one.append(plan.sorties[0].distance_m / float(subset_tours(d)[-1]))
            # A charge that needs several trips: about the time of a third of the single tour, not below
            # the farthest round trip.
            need = max(60.0 + 2 * d[0, 1:].max() / p.cruise_mps + 20.0, (60 + d.sum() / n / p.cruise_mps) / 3)
            pct = min(100.0, 100 * need * 1.15 / (p.usable_s * (1 - p.reserve)))
            low = Dock(dock.dock_id, dock.name, dock.lat, dock.lon, p, battery_pct=pct)
            plan = plan_sorties(low, pick, loiter_s=20.0)
            if plan.unreachable:
                raise RuntimeError("every target of a small instance should fit the cut charge")
            exact = exact_fleet_time(d, p.cruise_mps, 60.0, 20.0, plan.budget_s)
            many.append((plan.total_flight_s / exact, len(plan.sorties)))
        rows.append(
            {
                "targets": n,
                "instances": instances,
                "one_sortie_ratio_max": round(max(one), 4),
                "one_sortie_ratio_mean": round(statistics.mean(one), 4),
                "multi_sortie_ratio_max": round(max(r for r, _ in many), 4),
                "multi_sortie_ratio_mean": round(statistics.mean(r for r, _ in many), 4),
                "multi_sorties_mean": round(statistics.mean(k for _, k in many), 2),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Plan the Miraflores gaps from two docks, compare small instances with exact solutions, report."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=150, help="ground units (their gaps are the targets)")
    ap.add_argument("--target-s", type=float, default=30.0, help="ground coverage target time")
    ap.add_argument("--instances", type=int, default=10, help="small instances per size for the exact check")
    ap.add_argument("--max-n", type=int, default=11, help="largest small instance (Held–Karp is 2^n n²)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2024)
    add_run_options(ap, argv, QUICK)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    warm_up()
    warm_up_coverage()
    say(f"kernels ready in {time.perf_counter() - t0:.1f} s")

    districts = json.loads(DEFAULT_DISTRICTS_FILE.read_text(encoding="utf-8"))
    area = area_from_geojson(districts, "Miraflores")
    grid = hexgrid(area, DISTRICT_RES)
    lat, lon, kind = fleet(area, args.units, rng)
    ground = kind != KIND_CODE["drone"]  # the ground fleet: the docks are what the plan flies from
    model = StraightLineEta.from_names()
    result = coverage(grid, lat[ground], lon[ground], kind[ground], args.target_s, model)
    gap = result.gap_index
    docks = {d.dock_id: d for d in load_docks(DEMO_DOCKS_FILE)}
    chosen = [docks[k] for k in DOCK_IDS]
    frame = LocalFrame(chosen[0].lon, chosen[0].lat)
    gx, gy = frame.to_xy(grid.lon[gap], grid.lat[gap])
    dx, dy = frame.to_xy([d.lon for d in chosen], [d.lat for d in chosen])
    nearest = np.argmin(np.hypot(gx[:, None] - dx[None, :], gy[:, None] - dy[None, :]), axis=1)
    per_dock = [
        [
            Target(format(int(grid.cells[i]), "x"), float(grid.lat[i]), float(grid.lon[i]))
            for i in gap[nearest == q]
        ]
        for q in range(len(chosen))
    ]
    say(f"Miraflores: {grid.size} cells, {int(ground.sum())} ground units, {gap.shape[0]} gap cells within "
        f"{args.target_s:g} s; docks {', '.join(DOCK_IDS)} take {[len(t) for t in per_dock]}")  # fmt: skip

    runs = []
    ok = True
    for case, zones in (("open sky", []), ("2 zones", synthetic_zones(frame))):
        times = []
        plans: list[SortiePlan] = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            plans = [plan_sorties(d, targets, zones) for d, targets in zip(chosen, per_dock, strict=True)]
            times.append(time.perf_counter() - t)
        valid = all(check(pl, tg, zones) for pl, tg in zip(plans, per_dock, strict=True))
        ok = ok and valid
        runs.append(
            {
                "case": case,
                "gap_cells": int(gap.shape[0]),
                "plan_ms": round(1000 * min(times), 1),
                "sorties": sum(len(pl.sorties) for pl in plans),
                "covered": sum(len(s.targets) for pl in plans for s in pl.sorties),
                "unreachable": sum(len(pl.unreachable) for pl in plans),
                "flight_min": round(sum(pl.total_flight_s for pl in plans) / 60, 1),
                "distance_km": round(sum(pl.total_distance_m for pl in plans) / 1000, 2),
                "battery_pct_mean": round(
                    statistics.mean(s.battery_pct for pl in plans for s in pl.sorties), 1
                ),
                "vias": sum(w.role == "via" for pl in plans for s in pl.sorties for w in s.waypoints),
                "valid": valid,
            }
        )
    headers = ["case", "gap cells", "plan ms", "sorties", "covered", "unreachable", "flight min", "km",
               "battery % mean", "vias", "valid"]  # fmt: skip
    print(table(headers, [list(r.values()) for r in runs]))

    gaps_all = [t for ts in per_dock for t in ts]
    qual = quality(chosen[0], gaps_all, rng, args.instances, args.max_n)
    headers = ["targets", "instances", "1 sortie ÷ Held–Karp max", "mean", "sorties ÷ exact max", "mean",
               "sorties"]  # fmt: skip
    print(table(headers, [list(r.values()) for r in qual]))
    worst = max(max(r["one_sortie_ratio_max"], r["multi_sortie_ratio_max"]) for r in qual)
    say(f"worst ratio to exact: {worst:.4f} (goal ≤ 1.10)")
    path = write_results("sorties", {"runs": runs, "quality": qual}, args.results_dir, args.quick)
    say(f"results: {path}")
    return 0 if ok and worst <= 1.10 and not math.isnan(worst) else 1


if __name__ == "__main__":
    raise SystemExit(main())
