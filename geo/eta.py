"""Travel-time (ETA) model of dispatch: how soon a unit of a given kind reaches a point.

The default, :class:`StraightLineEta`, is

    ETA = great-circle distance × circuity[kind] / speed[kind]

i.e. a constant *pace* (seconds per metre of great-circle distance) per kind.
Ground units follow streets, so their path is longer than the straight line by
the network's circuity; drones fly straight (circuity 1) at cruise speed.

Sources of the defaults (``tracker.config.EtaSettings`` holds the same numbers;
a test keeps them equal):

- foot 1.4 m/s: comfortable walking speed of adults, 1.27-1.46 m/s
  (Bohannon 1997, *Age and Ageing* 26:15-19); a sereno on call walks briskly.
- bicycle 4.2 m/s (15 km/h): typical urban cycling speed in mixed traffic
  (Copenhagen and Dutch city surveys report 15-16 km/h).
- motorcycle 8.3 m/s (30 km/h) and patrol car 6.9 m/s (25 km/h): Lima is among
  the most congested cities measured (TomTom Traffic Index: average peak speeds
  of 14-20 km/h; off-peak averages 25-30 km/h). Cars get the congested urban
  average; motorcycles filter through queues, so they keep a higher average.
- drone 15 m/s: DJI's published cruise speeds for its dock drones (Matrice 30
  dock: 15 m/s operation speed, 23 m/s maximum; Dock 2 / M3D: 15 m/s).
- circuity 1.35 for ground units: street distance over straight-line distance
  is 1.3-1.4 in urban road networks (Ballou, Rahardja & Sakai 2002,
  *Transportation Research A* 36:843-848, about 1.2-1.4 in cities; Boeing 2019,
  *Urban Spatial Order*, 1.3-1.4 for dense grids at these trip lengths).

The model is pluggable (:class:`EtaModel`): a road-network model can replace it
as long as it gives exact ETAs for candidate arrays and a *lower bound* of
seconds per metre of great-circle distance per kind, which the nearest-unit
search uses to stop early without losing exactness.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from geo.codes import KIND_CODE, KIND_NAMES, N_KINDS

# Defaults per kind name (see the module docstring for the sources).
DEFAULT_SPEED_MPS: dict[str, float] = {
    "foot": 1.4,
    "bicycle": 4.2,
    "motorcycle": 8.3,
    "patrol_car": 6.9,
    "drone": 15.0,
}
DEFAULT_CIRCUITY: dict[str, float] = {
    "foot": 1.35,
    "bicycle": 1.35,
    "motorcycle": 1.35,
    "patrol_car": 1.35,
    "drone": 1.0,
}


@runtime_checkable
class EtaModel(Protocol):
    """What the nearest-unit search needs from a travel-time model."""

    def eta_s(
        self,
        distance_m: NDArray[np.float64],
        kind: NDArray[np.int8],
        lat: NDArray[np.float64],
        lon: NDArray[np.float64],
        to_lat: float,
        to_lon: float,
    ) -> NDArray[np.float64]:
        """Exact ETA (s) of each candidate (great-circle distance, kind code, position) to the point."""
        ...

    def min_pace_s_per_m(self, kinds: Iterable[int]) -> float:
        """A lower bound of ETA / great-circle distance (s/m) over units of these kind codes."""
        ...


class StraightLineEta:
    """ETA = distance × circuity / speed per kind: a constant pace per kind (the default model)."""

    name = "straight_line"

    def __init__(self, speed_mps: Sequence[float], circuity: Sequence[float]) -> None:
        speed = np.asarray(speed_mps, dtype=np.float64)
        circ = np.asarray(circuity, dtype=np.float64)
        if speed.shape != (N_KINDS,) or circ.shape != (N_KINDS,):
            raise ValueError(f"speed and circuity need one value per kind ({', '.join(KIND_NAMES)})")
        if not np.all(np.isfinite(speed)) or np.any(speed <= 0):
            raise ValueError(f"speeds must be positive and finite, got {speed.tolist()}")
        if not np.all(np.isfinite(circ)) or np.any(circ < 1.0):
            # A path shorter than the great circle is impossible: the search's bound would be wrong.
            raise ValueError(
                f"circuity must be >= 1 (a path is never shorter than the straight line), got {circ.tolist()}"
            )
        self.speed_mps = speed
        self.circuity = circ
        self.pace: NDArray[np.float64] = circ / speed  # seconds per metre of great-circle distance

    @classmethod
    def from_names(
        cls, speed_mps: Mapping[str, float] | None = None, circuity: Mapping[str, float] | None = None
    ) -> StraightLineEta:
        """Build from per-kind-name mappings (missing kinds take the defaults).

        >>> StraightLineEta.from_names().eta_s_one(1000.0, KIND_CODE["drone"])
        66.66666666666667
        """
        speed = {**DEFAULT_SPEED_MPS, **{str(k): float(v) for k, v in (speed_mps or {}).items()}}
        circ = {**DEFAULT_CIRCUITY, **{str(k): float(v) for k, v in (circuity or {}).items()}}
        unknown = (set(speed) | set(circ)) - set(KIND_NAMES)
        if unknown:
            raise ValueError(f"unknown unit kinds {sorted(unknown)}; known: {', '.join(KIND_NAMES)}")
        return cls([speed[n] for n in KIND_NAMES], [circ[n] for n in KIND_NAMES])

    def eta_s(
        self,
        distance_m: NDArray[np.float64],
        kind: NDArray[np.int8],
        lat: NDArray[np.float64],
        lon: NDArray[np.float64],
        to_lat: float,
        to_lon: float,
    ) -> NDArray[np.float64]:
        """ETA (s) of each candidate: its distance times its kind's pace (positions are not needed)."""
        return np.asarray(distance_m, dtype=np.float64) * self.pace[np.asarray(kind, dtype=np.intp)]

    def eta_s_one(self, distance_m: float, kind: int) -> float:
        """ETA (s) of one unit of kind code ``kind`` at ``distance_m``."""
        return float(distance_m * self.pace[kind])

    def min_pace_s_per_m(self, kinds: Iterable[int]) -> float:
        """The smallest pace among ``kinds`` (exact for this model: it is the pace itself)."""
        codes = [int(k) for k in kinds]
        return float(self.pace[codes].min()) if codes else float("inf")

    def describe(self) -> dict[str, Any]:
        """Speeds, circuity and pace per kind name, JSON-ready (for API responses)."""
        return {
            "name": self.name,
            "formula": "eta_s = great_circle_m * circuity / speed_mps",
            "kinds": {
                name: {
                    "speed_mps": float(self.speed_mps[code]),
                    "circuity": float(self.circuity[code]),
                    "s_per_km": round(float(self.pace[code]) * 1000.0, 3),
                }
                for code, name in enumerate(KIND_NAMES)
            },
        }


__all__ = ["DEFAULT_CIRCUITY", "DEFAULT_SPEED_MPS", "KIND_CODE", "EtaModel", "StraightLineEta"]
