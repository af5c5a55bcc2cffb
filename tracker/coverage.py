"""Live coverage of the service area: which H3 cells some available unit reaches within a target time.

The I/O-free engine is :mod:`geo.coverage` over a :mod:`geo.hexgrid` grid; this
module feeds it from the LiveFleet (available units whose fix is not lost, at
their shown position) with the same ETA model as dispatch, and keeps one grid
per resolution (building Lima's takes a second or two, Miraflores' 50 ms).

Layers: ``ground`` counts the ground units; ``drones`` the reach of the drone
docks in service (:mod:`geo.docks`: cruise speed within T, battery, reserve and
hold respected) together with the available drones that are airborne, at their
current position at cruise speed (a drone within ``at_dock_m`` of a dock is on
it and counts through the dock); ``combined`` is ground ∪ drones ∪ the static
camera viewsheds (:mod:`geo.viewsheds`: a seen cell has ETA 0, "seen now").
Layers combine by the elementwise minimum of per-cell ETAs.

A dock whose ``aircraft`` is a tracked unit follows it: while that drone is not
available, lost, or away from the dock, the dock covers nothing (the drone, if
airborne and available, counts where it is); on the dock, its reported battery
is the dock's charge.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import h3
import numpy as np
from numpy.typing import NDArray

from geo.area import Area
from geo.codes import KIND_CODE
from geo.coverage import CoverageResult, coverage, reach_sets, result_from_eta
from geo.distance import haversine_m
from geo.docks import DEFAULT_TAKEOFF_S, Dock, dock_eta, dock_reach
from geo.eta import StraightLineEta
from geo.hexgrid import DISTRICT_RES, HexGrid, estimated_cells, hexgrid
from geo.placement import (
    exact_nonzeros,
    move_up,
    move_up_exact,
    move_up_nonzeros,
    place_exact,
    place_greedy,
    placement_upper_bound,
    replace_method,
    travel_times_s,
)
from geo.viewsheds import SEEN_SHARE, ViewshedCover, Viewsheds, viewshed_cover
from tracker.config import EtaSettings, PlacementSettings
from tracker.errors import SerenazgoError
from tracker.fleet import LiveFleet, UnitState
from tracker.model import Freshness, UnitKind, UnitStatus

GROUND_KINDS = (UnitKind.PATROL_CAR, UnitKind.MOTORCYCLE, UnitKind.BICYCLE, UnitKind.FOOT)
# The coverage layers (the values of coverage_samples.layer) and the unit kinds each counts.
LAYER_KINDS: dict[str, tuple[UnitKind, ...]] = {
    "ground": GROUND_KINDS,
    "drones": (UnitKind.DRONE,),
    "combined": (*GROUND_KINDS, UnitKind.DRONE),
}
METROPOLIS_RES = 9
Method = Literal["greedy", "exact"]
# Above this area a district-sized resolution (10) would mean too many cells to redraw live.
DISTRICT_MAX_KM2 = 150.0
AT_DOCK_M = 60.0
CAMERA_UNIT = -2  # best_unit of a cell the cameras see


@dataclass(frozen=True, slots=True)
class CoverageAnswer:
    """One coverage computation and what it was computed from."""

    result: CoverageResult  # best_unit: unit index; units + dock index for a dock; CAMERA_UNIT; -1
    kinds: tuple[UnitKind, ...]
    units: int
    at: datetime
    docks: tuple[Dock, ...] = ()  # the docks considered (their state at ``at``)
    takeoff_s: float = DEFAULT_TAKEOFF_S
    cameras: Viewsheds | None = None  # the viewsheds included, if any
    seen: ViewshedCover | None = None

    def docks_json(self) -> list[dict[str, Any]]:
        """Each dock with its reach within T and what limits it (time, energy, range, out of service)."""
        out = []
        for d in self.docks:
            reach = dock_reach(d, self.result.target_s, self.takeoff_s)
            p = d.profile
            out.append(
                {
                    "id": d.dock_id,
                    "name": d.name,
                    "lat": d.lat,
                    "lon": d.lon,
                    "in_service": d.in_service,
                    "profile": d.profile_key,
                    "aircraft": p.name,
                    # the drone unit the dock follows: away, busy or lost, the dock is not in service
                    "aircraft_unit": d.aircraft_id,
                    "cruise_mps": p.cruise_mps,
                    "usable_flight_s": round(p.usable_s, 1),
                    "derating": p.derating,
                    "reserve": p.reserve,
                    "battery_pct": d.battery_pct,
                    "hold_s": d.hold_s,
                    "reach_m": round(max(reach.radius_m, 0.0), 1),
                    "limit": reach.limit,
                    "time_reach_m": round(max(reach.time_radius_m, 0.0), 1),
                    "energy_reach_m": round(max(reach.energy_radius_m, 0.0), 1),
                    "operating_radius_m": None if math.isinf(p.max_radius_m) else p.max_radius_m,
                }
            )
        return out

    def to_json(self, model: StraightLineEta, cells: bool = False) -> dict[str, Any]:
        """The API's answer: ratios, gaps as GeoJSON, the model used and (optionally) every cell's ETA."""
        r = self.result
        t = r.target_s
        seen = self.seen
        out: dict[str, Any] = {
            "at": self.at.isoformat(),
            "target_s": t,
            "resolution": r.grid.res,
            "cells": r.grid.size,
            "units": self.units,
            "area_km2": round(r.grid.total_area_m2 / 1e6, 3),
            "covered_area_ratio": round(r.covered_area_ratio, 5),
            "covered_demand_ratio": round(r.covered_demand_ratio, 5),
            "demand": "area (every square metre alike)",
            "gap_cells": int(r.gap_index.shape[0]),
            "gaps": {"type": "Feature", "properties": {"kind": "gap"}, "geometry": r.gap_regions()},
            "model": {
                "formula": "eta_s = great_circle_m * circuity / speed_mps; covered when eta_s <= target_s",
                "kinds": {
                    str(k): {
                        "speed_mps": float(model.speed_mps[KIND_CODE[k.value]]),
                        "circuity": float(model.circuity[KIND_CODE[k.value]]),
                        "reach_m": round(t / float(model.pace[KIND_CODE[k.value]]), 1),
                    }
                    for k in self.kinds
                },
                "docks": self.docks_json(),
                "dock_formula": (
                    "eta_s = takeoff_s + great_circle_m / cruise_mps <= target_s, and "
                    "2 * (takeoff_s + great_circle_m / cruise_mps) + hold_s <= "
                    "max_flight_s * derating * battery_pct / 100 * (1 - reserve), and "
                    "great_circle_m <= operating_radius_m"
                ),
                "takeoff_s": self.takeoff_s,
                "viewsheds": {
                    "included": self.cameras is not None,
                    "cameras": 0 if self.cameras is None else self.cameras.size,
                    "cells_seen": 0 if seen is None else int(seen.seen.sum()),
                    "seen_area_km2": 0.0 if seen is None else round(seen.seen_area_m2 / 1e6, 4),
                    "rule": f"a cell is seen (eta_s = 0) when >= {SEEN_SHARE:.0%} of its area inside the "
                    "boundary is inside some camera viewshed",
                },
            },
        }
        if cells:
            out["cell_eta_s"] = [
                {"h3": format(int(c), "x"), "eta_s": None if not np.isfinite(e) else round(float(e), 1)}
                for c, e in zip(r.grid.cells, r.best_eta_s, strict=True)
            ]
        return out


class CoverageService:
    """Coverage of one area from one LiveFleet, a grid per resolution built on first use."""

    def __init__(
        self,
        area: Area,
        fleet: LiveFleet,
        eta: EtaSettings | None = None,
        docks: tuple[Dock, ...] | list[Dock] = (),
        viewsheds: Viewsheds | None = None,
        takeoff_s: float = DEFAULT_TAKEOFF_S,
        at_dock_m: float = AT_DOCK_M,
    ) -> None:
        self.area = area
        self.fleet = fleet
        self.model = (eta or EtaSettings()).model()
        self.docks = tuple(docks)
        self.viewsheds = viewsheds
        self.takeoff_s = float(takeoff_s)
        self.at_dock_m = float(at_dock_m)
        self._grids: dict[int, HexGrid] = {}
        self._seen: dict[int, ViewshedCover] = {}  # cameras do not move: once per resolution
        # The area never changes: measure it once, not on every request.
        km2 = estimated_cells(area, DISTRICT_RES) * h3.average_hexagon_area(DISTRICT_RES, unit="km^2")
        self._default_res = DISTRICT_RES if km2 <= DISTRICT_MAX_KM2 else METROPOLIS_RES
        self._lock = threading.Lock()

    def default_resolution(self) -> int:
        """10 for a district, 9 for a metropolis (by the area's size, measured once)."""
        return self._default_res

    def grid(self, res: int) -> HexGrid:
        """The area's grid at ``res`` (built once; GridTooFineError when it would be too big)."""
        with self._lock:
            grid = self._grids.get(res)
        if grid is None:
            grid = hexgrid(self.area, res)
            with self._lock:
                grid = self._grids.setdefault(res, grid)
        return grid

    def seen(self, res: int) -> ViewshedCover | None:
        """What the cameras see of the grid at ``res`` (None without viewsheds), measured once."""
        if self.viewsheds is None:
            return None
        with self._lock:
            cover = self._seen.get(res)
        if cover is None:
            cover = viewshed_cover(self.grid(res), self.viewsheds)
            with self._lock:
                cover = self._seen.setdefault(res, cover)
        return cover

    def docks_now(self, at: datetime) -> tuple[Dock, ...]:
        """The docks at ``at``: one whose tracked aircraft is busy, lost or away is out of service."""
        out = []
        for d in self.docks:
            st = self.fleet.get(d.aircraft_id) if d.aircraft_id is not None else None
            if st is None or not d.in_service:
                out.append(d)
                continue
            ready = (
                st.fix is not None and st.status is UnitStatus.AVAILABLE
                and self.fleet.freshness(st, at) is not Freshness.LOST
                and haversine_m(st.fix.lat, st.fix.lon, d.lat, d.lon) <= self.at_dock_m
            )  # fmt: skip
            battery = st.fix.battery if ready and st.fix is not None else None
            charge = d.battery_pct if battery is None else battery
            out.append(replace(d, in_service=ready, battery_pct=charge))
        return tuple(out)

    def _on_a_dock(self, st: UnitState) -> bool:
        fix = st.fix
        return fix is not None and any(
            haversine_m(fix.lat, fix.lon, d.lat, d.lon) <= self.at_dock_m for d in self.docks
        )

    def available(self, kinds: tuple[UnitKind, ...], at: datetime) -> list[UnitState]:
        """The units that count for coverage: available, of ``kinds``, with a fix that is not lost."""
        wanted = set(kinds)
        return [
            st for st in self.fleet.snapshot()
            if st.fix is not None and st.status is UnitStatus.AVAILABLE and st.unit.kind in wanted
            and self.fleet.freshness(st, at) is not Freshness.LOST
        ]  # fmt: skip

    def compute(
        self,
        target_s: float,
        kinds: tuple[UnitKind, ...],
        res: int,
        now: datetime | None = None,
        demand: NDArray[np.float64] | None = None,
        cameras: bool = False,
    ) -> CoverageAnswer:
        """Coverage within ``target_s`` by the available, not lost units of ``kinds``.

        With drones among ``kinds``, the docks in service count too and a drone
        on a dock counts through it; ``cameras`` adds the viewsheds (the
        ``combined`` layer).
        """
        grid = self.grid(res)
        at = now or datetime.now(UTC)
        states = self.available(kinds, at)
        docks: tuple[Dock, ...] = ()
        if UnitKind.DRONE in kinds and self.docks:
            docks = self.docks_now(at)
            states = [st for st in states if st.unit.kind is not UnitKind.DRONE or not self._on_a_dock(st)]
        lat, lon, kind = _columns(states)
        codes = [KIND_CODE[k.value] for k in kinds]
        result = coverage(grid, lat, lon, kind, target_s, self.model, kinds=codes)
        best, arg = result.best_eta_s, result.best_unit
        if docks:
            eta, which = dock_eta(grid, docks, target_s, self.takeoff_s)
            better = eta < best
            best = np.where(better, eta, best)
            arg = np.where(better, which + lat.shape[0], arg)
        seen = self.seen(res) if cameras else None
        if seen is not None:
            best = np.where(seen.seen, 0.0, best)
            arg = np.where(seen.seen, CAMERA_UNIT, arg)
        result = result_from_eta(grid, target_s, best, arg, demand)
        return CoverageAnswer(
            result, kinds, int(lat.shape[0]), at, docks, self.takeoff_s,
            self.viewsheds if seen is not None else None, seen,
        )  # fmt: skip

    def recommend_moves(
        self,
        target_s: float,
        kinds: tuple[UnitKind, ...],
        movable: UnitKind,
        max_moves: int,
        res: int,
        demand: NDArray[np.float64] | None = None,
        max_travel_s: float = math.inf,
        now: datetime | None = None,
        candidates: NDArray[np.intp] | None = None,
        method: Method = "greedy",
        limits: PlacementSettings | None = None,
    ) -> dict[str, Any]:
        """Move-up: at most ``max_moves`` idle units of ``movable`` sent to cells that most raise coverage.

        The other available units of ``kinds`` stay where they are; candidate
        sites are the grid's cell centres, or only the rows ``candidates``;
        each move says its gain (in demand units, area m² by default) and its
        travel time. ``method="exact"`` solves the MILP with HiGHS
        (:class:`ExactTooLargeError` past ``limits.exact_max_nonzeros``).
        """
        lim = limits or PlacementSettings()
        grid = self.grid(res)
        at = now or datetime.now(UTC)
        weights = grid.clipped_area_m2 if demand is None else demand
        states = self.available(kinds, at)
        idle = [st for st in states if st.unit.kind is movable]
        fixed = [st for st in states if st.unit.kind is not movable]
        flat, flon, fkind = _columns(fixed)
        codes = [KIND_CODE[k.value] for k in kinds]
        base = coverage(grid, flat, flon, fkind, target_s, self.model, kinds=codes)
        code = KIND_CODE[movable.value]
        rows = _rows(grid, candidates)
        sites = reach_sets(grid, grid.lat[rows], grid.lon[rows], code, target_s, self.model)
        ilat, ilon, _ = _columns(idle)
        units = reach_sets(grid, ilat, ilon, code, target_s, self.model)
        travel = travel_times_s(ilat, ilon, grid.lat[rows], grid.lon[rows], float(self.model.pace[code]))
        args = (weights, *sites, *units, travel, max_moves, base.covered, max_travel_s)
        if method == "exact":
            size = move_up_nonzeros(sites[0], units[0], travel, max_travel_s)
            if size > lim.exact_max_nonzeros:
                raise ExactTooLargeError(size, lim.exact_max_nonzeros)
            plan = move_up_exact(*args, time_limit_s=lim.exact_time_limit_s)
        else:
            plan = move_up(*args, time_budget_s=lim.greedy_time_budget_s)
        total = float(np.sum(weights))
        moves = []
        for m in plan.moves:
            j = int(rows[m.to_site])
            moves.append({
                "unit_id": idle[m.unit].unit.unit_id,
                "callsign": idle[m.unit].unit.callsign,
                "from": {"lat": float(ilat[m.unit]), "lon": float(ilon[m.unit])},
                "to": {"lat": float(grid.lat[j]), "lon": float(grid.lon[j]),
                       "h3": format(int(grid.cells[j]), "x")},
                "gain_ratio": round(m.gain / total, 5) if total else 0.0,
                "travel_s": round(m.travel_s, 1),
            })  # fmt: skip
        objective: dict[str, Any] = {
            "covered_demand": plan.covered_after,
            "covered_ratio": _ratio(plan.covered_after, total),
            "optimal": plan.optimal,
        }
        if plan.upper_bound is not None:
            objective.update(_bound_fields(plan.covered_after, plan.upper_bound, total, "solver"))
        return {
            "mode": "move_up",
            "target_s": target_s,
            "resolution": res,
            "movable_kind": str(movable),
            "idle_units": len(idle),
            "candidates": int(rows.shape[0]),
            "covered_before": round(plan.covered_before / total, 5) if total else 1.0,
            "covered_after": round(plan.covered_after / total, 5) if total else 1.0,
            "moves": moves,
            "method": method,
            "solver": plan.method,
            "objective": objective,
        }

    def recommend_placement(
        self,
        target_s: float,
        kind: UnitKind,
        p: int,
        res: int,
        demand: NDArray[np.float64] | None = None,
        candidates: NDArray[np.intp] | None = None,
        method: Method = "greedy",
        limits: PlacementSettings | None = None,
    ) -> dict[str, Any]:
        """Maximal covering placement: ``p`` positions for units of ``kind`` that cover the most demand.

        Positions are cell centres of the grid, or only of the rows
        ``candidates``. Greedy answers carry their gap to an upper bound
        (:func:`geo.placement.placement_upper_bound`); exact ones HiGHS' proof.
        """
        lim = limits or PlacementSettings()
        grid = self.grid(res)
        weights = grid.clipped_area_m2 if demand is None else demand
        code = KIND_CODE[kind.value]
        rows = _rows(grid, candidates)
        sites = reach_sets(grid, grid.lat[rows], grid.lon[rows], code, target_s, self.model)
        if method == "exact":
            plan = place_greedy(weights, *sites, p, time_budget_s=lim.greedy_time_budget_s)
            # Greedy covering every coverable cell is the optimum, proven without HiGHS, whatever the size.
            if plan.optimal:
                plan = replace_method(
                    plan, f"{plan.method} (every coverable cell covered)", True, plan.covered_demand
                )
            else:
                size = exact_nonzeros(sites[0])
                if size > lim.exact_max_nonzeros:
                    raise ExactTooLargeError(size, lim.exact_max_nonzeros)
                plan = place_exact(weights, *sites, p, time_limit_s=lim.exact_time_limit_s, shortcut=False)
            bound, source = plan.upper_bound, "solver"
        else:
            plan = place_greedy(weights, *sites, p, time_budget_s=lim.greedy_time_budget_s)
            b = placement_upper_bound(weights, *sites, p, plan.sites, lim.lp_bound_max_nonzeros,
                                      lim.lp_bound_time_limit_s)  # fmt: skip
            bound, source = b.value, b.source
        total = float(np.sum(weights))
        objective: dict[str, Any] = {
            "covered_demand": plan.covered_demand,
            "covered_ratio": _ratio(plan.covered_demand, total),
            "optimal": plan.optimal,
        }
        if bound is not None:
            objective.update(_bound_fields(plan.covered_demand, bound, total, source))
        return {
            "mode": "placement",
            "target_s": target_s,
            "resolution": res,
            "kind": str(kind),
            "p": p,
            "candidates": int(rows.shape[0]),
            "coverage": round(plan.coverage, 5),
            "positions": [
                {"lat": float(grid.lat[r]), "lon": float(grid.lon[r]), "h3": format(int(grid.cells[r]), "x")}
                for r in (int(rows[j]) for j in plan.sites)
            ],
            "method": method,
            "solver": plan.method,
            "objective": objective,
        }


class ExactTooLargeError(SerenazgoError, ValueError):
    """The exact solve was asked for an instance over the configured size limit."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"the exact solve would have {size:,} nonzeros in its coverage matrix, over the limit of "
            f"{limit:,} (SERENAZGO_PLACEMENT__EXACT_MAX_NONZEROS): use method greedy, fewer candidate sites "
            "(sectors or candidates_geojson), a shorter target time, a coarser resolution or, for move-up, "
            "a shorter max_travel_minutes"
        )


def _rows(grid: HexGrid, candidates: NDArray[np.intp] | None) -> NDArray[np.intp]:
    """The candidate rows (every cell when None), checked against the grid."""
    if candidates is None:
        return np.arange(grid.size, dtype=np.intp)
    rows = np.asarray(candidates, dtype=np.intp).reshape(-1)
    if rows.shape[0] and (rows.min() < 0 or rows.max() >= grid.size):
        raise ValueError(f"candidate rows must lie in [0, {grid.size})")
    return rows


def _ratio(value: float, total: float) -> float:
    return round(value / total, 6) if total > 0 else 1.0


def _bound_fields(value: float, bound: float, total: float, source: str) -> dict[str, Any]:
    """Upper bound (demand and share) and the relative gap of ``value`` to it."""
    gap = max(0.0, 1.0 - value / bound) if bound > 0 else 0.0
    return {"upper_bound": bound, "upper_bound_ratio": _ratio(bound, total), "gap": round(gap, 6),
            "bound": source}  # fmt: skip


def _columns(states: list[UnitState]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int8]]:
    """lat, lon and kind-code columns of units that have a fix."""
    lat = np.array([st.fix.lat for st in states if st.fix is not None], dtype=np.float64)
    lon = np.array([st.fix.lon for st in states if st.fix is not None], dtype=np.float64)
    kind = np.array([KIND_CODE[st.unit.kind.value] for st in states if st.fix is not None], dtype=np.int8)
    return lat, lon, kind
