"""Live coverage of the service area: which H3 cells some available unit reaches within a target time.

The I/O-free engine is :mod:`geo.coverage` over a :mod:`geo.hexgrid` grid; this
module feeds it from the LiveFleet (available units whose fix is not lost, at
their shown position) with the same ETA model as dispatch, and keeps one grid
per resolution (building Lima's takes a second or two, Miraflores' 50 ms).

Demand is the cell's area for now (every square metre counts the same);
incident-weighted demand and dock-based drone reach come next (see the
coverage issue).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import h3
import numpy as np

from geo.area import Area
from geo.codes import KIND_CODE
from geo.coverage import CoverageResult, coverage
from geo.eta import StraightLineEta
from geo.hexgrid import DISTRICT_RES, HexGrid, estimated_cells, hexgrid
from tracker.config import EtaSettings
from tracker.fleet import LiveFleet
from tracker.model import Freshness, UnitKind, UnitStatus

GROUND_KINDS = (UnitKind.PATROL_CAR, UnitKind.MOTORCYCLE, UnitKind.BICYCLE, UnitKind.FOOT)
# The coverage layers (the values of coverage_samples.layer) and the unit kinds each counts.
LAYER_KINDS: dict[str, tuple[UnitKind, ...]] = {
    "ground": GROUND_KINDS,
    "drones": (UnitKind.DRONE,),
    "combined": (*GROUND_KINDS, UnitKind.DRONE),
}
METROPOLIS_RES = 9
# Above this area a district-sized resolution (10) would mean too many cells to redraw live.
DISTRICT_MAX_KM2 = 150.0


@dataclass(frozen=True, slots=True)
class CoverageAnswer:
    """One coverage computation and what it was computed from."""

    result: CoverageResult
    kinds: tuple[UnitKind, ...]
    units: int
    at: datetime

    def to_json(self, model: StraightLineEta, cells: bool = False) -> dict[str, Any]:
        """The API's answer: ratios, gaps as GeoJSON, the model used and (optionally) every cell's ETA."""
        r = self.result
        t = r.target_s
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

    def __init__(self, area: Area, fleet: LiveFleet, eta: EtaSettings | None = None) -> None:
        self.area = area
        self.fleet = fleet
        settings = eta or EtaSettings()
        speeds = [settings.speed_mps[UnitKind(name)] for name in KIND_CODE]
        circuity = [settings.circuity[UnitKind(name)] for name in KIND_CODE]
        self.model = StraightLineEta(speeds, circuity)
        self._grids: dict[int, HexGrid] = {}
        self._lock = threading.Lock()

    def default_resolution(self) -> int:
        """10 for a district, 9 for a metropolis (by the area's size)."""
        km2 = estimated_cells(self.area, DISTRICT_RES) * h3.average_hexagon_area(DISTRICT_RES, unit="km^2")
        return DISTRICT_RES if km2 <= DISTRICT_MAX_KM2 else METROPOLIS_RES

    def grid(self, res: int) -> HexGrid:
        """The area's grid at ``res`` (built once; GridTooFineError when it would be too big)."""
        with self._lock:
            grid = self._grids.get(res)
        if grid is None:
            grid = hexgrid(self.area, res)
            with self._lock:
                grid = self._grids.setdefault(res, grid)
        return grid

    def compute(
        self, target_s: float, kinds: tuple[UnitKind, ...], res: int, now: datetime | None = None
    ) -> CoverageAnswer:
        """Coverage within ``target_s`` by the available, not lost units of ``kinds``."""
        grid = self.grid(res)
        at = now or datetime.now(UTC)
        wanted = set(kinds)
        lat: list[float] = []
        lon: list[float] = []
        kind: list[int] = []
        for state in self.fleet.snapshot():
            fix = state.fix
            if fix is None or state.status is not UnitStatus.AVAILABLE or state.unit.kind not in wanted:
                continue
            if self.fleet.freshness(state, at) is Freshness.LOST:
                continue
            lat.append(fix.lat)
            lon.append(fix.lon)
            kind.append(KIND_CODE[state.unit.kind.value])
        result = coverage(
            grid, np.array(lat), np.array(lon), np.array(kind, dtype=np.int8), target_s, self.model,
            kinds=[KIND_CODE[k.value] for k in kinds],
        )  # fmt: skip
        return CoverageAnswer(result, kinds, len(lat), at)
