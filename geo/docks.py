"""Drone docks: which cells a docked drone reaches within a target time T, with the battery to come back.

A dock (a DJI Dock 2 or 3 on a rooftop, say) hosts one aircraft. A cell is
*reached* from a dock within T when both hold:

- time: the one-way flight ``eta_s = takeoff_s + d / cruise_mps`` is at most T, where
  ``d`` is the great-circle distance from the dock to the cell centre (the same
  haversine as :mod:`geo.coverage`) and ``takeoff_s`` (default 30 s) the fixed cost
  of the lid opening, take-off and climb to cruise height;
- energy: the whole mission fits the charge left above the reserve,
  ``(takeoff_s + d / v) + hold_s + (d / v + takeoff_s) <= usable_s × battery_pct / 100 × (1 − reserve)``
  (the way back pays the same fixed overhead for descent and precision landing as the
  way out pays for take-off; ``hold_s`` is the time asked over the incident);
- range: ``d`` is within the dock's published operating radius (its radio link).

So the dock's reach radius is ``min(v·(T − takeoff_s), v·(E − hold_s − 2·takeoff_s) / 2, range)``
with ``E`` the energy budget in seconds of flight; a negative radius reaches nothing.
Per cell the engine gives the best ETA over the docks in service (``inf`` where
none reaches it), the same convention as :class:`geo.coverage.CoverageResult`, so
layers combine by an elementwise minimum.

Aircraft figures (manufacturers' published specifications, no wind, no payload,
flown to an empty battery):

- DJI Matrice 3TD (DJI Dock 2): max flight time 50 min, operating radius 10 km;
- DJI Matrice 4TD (DJI Dock 3): max flight time 54 min, operating radius 10 km;
- DJI Matrice 30T (DJI Dock): max flight time 40 min, operating radius 7 km;
- aircraft flown by a pilot from a remote controller (no dock, so no operating
  radius here; the endurance model of :mod:`drones.endurance` uses them):
  DJI Mavic 3 Enterprise (3E/3T): max flight time 45 min; DJI Matrice 30T
  (standard, non-dock version): max flight time 41 min (DJI's M30 series
  specifications; the dock version is rated 40 min);
- cruise 15 m/s for all of them: DJI's operation speed for dock missions (the maximum
  is 21-23 m/s, which drains the battery far faster; the Mavic 3E's normal-mode
  maximum is 15 m/s), as in :mod:`geo.eta`.

Derating (``DEFAULT_DERATING`` = 0.7): the published time is a best case. Real
missions carry a thermal/zoom payload running, hover and manoeuvre, fly in wind
(Lima's coast has a steady 4-8 m/s sea breeze in the afternoon) and age their
packs; operators of dock programmes plan on roughly 65-75 % of the brochure
figure, so the usable endurance is ``max_flight_s × 0.7``. The reserve
(``DEFAULT_RESERVE`` = 0.25) is kept on top for the landing, a go-around and
contingencies; it matches the demo simulator's return-home threshold (25 %).

Speed: a numba kernel visits dock × cell pairs, skipping cells outside a dock's
latitude band (its reach over the Earth's radius) before any trigonometry; the
per-cell ETA and the reach sets share one distance function, so they agree exactly.

Pure: docks and grids in, arrays out; reading a docks file belongs to ``tracker``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numba
import numpy as np
from numpy.typing import NDArray

from geo.distance import EARTH_RADIUS_M
from geo.hexgrid import HexGrid

DEFAULT_DERATING = 0.7
DEFAULT_RESERVE = 0.25
DEFAULT_TAKEOFF_S = 30.0
DEFAULT_PROFILE = "m3td"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")  # the unit-id contract: safe in URLs

Limit = Literal["time", "energy", "range", "out_of_service"]


@dataclass(frozen=True, slots=True)
class AircraftProfile:
    """What a dock's aircraft can do: cruise speed, published endurance and range, derating, reserve."""

    name: str
    cruise_mps: float
    max_flight_s: float  # the manufacturer's maximum flight time
    derating: float = DEFAULT_DERATING  # share of max_flight_s real missions get (see the module docstring)
    reserve: float = DEFAULT_RESERVE  # share of the charge kept for landing and contingencies
    max_radius_m: float = math.inf  # the dock's published operating radius

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cruise_mps) and self.cruise_mps > 0):
            raise ValueError(f"aircraft {self.name!r}: cruise_mps must be positive, got {self.cruise_mps}")
        if not (math.isfinite(self.max_flight_s) and self.max_flight_s > 0):
            raise ValueError(f"aircraft {self.name!r}: max_flight_s must be > 0, got {self.max_flight_s}")
        if not 0 < self.derating <= 1:
            raise ValueError(f"aircraft {self.name!r}: derating must be in (0, 1], got {self.derating}")
        if not 0 <= self.reserve < 1:
            raise ValueError(f"aircraft {self.name!r}: reserve must be in [0, 1), got {self.reserve}")
        if not self.max_radius_m > 0:
            raise ValueError(f"aircraft {self.name!r}: max_radius_m must be > 0, got {self.max_radius_m}")

    @property
    def usable_s(self) -> float:
        """Flight time of a full charge on a real mission: ``max_flight_s × derating``."""
        return self.max_flight_s * self.derating


# Published figures (see the module docstring); keys are what a docks file names in ``profile``.
PROFILES: dict[str, AircraftProfile] = {
    "m3td": AircraftProfile("DJI Matrice 3TD (DJI Dock 2)", 15.0, 50 * 60.0, max_radius_m=10_000.0),
    "m4td": AircraftProfile("DJI Matrice 4TD (DJI Dock 3)", 15.0, 54 * 60.0, max_radius_m=10_000.0),
    "m30t": AircraftProfile("DJI Matrice 30T (DJI Dock)", 15.0, 40 * 60.0, max_radius_m=7_000.0),
    # Flown from a remote controller, not from a dock (no operating radius: the pilot's link decides).
    "m3e": AircraftProfile("DJI Mavic 3 Enterprise", 15.0, 45 * 60.0),
    "m30t_rc": AircraftProfile("DJI Matrice 30T (remote controller)", 15.0, 41 * 60.0),
}


@dataclass(frozen=True, slots=True)
class Dock:
    """A drone dock and the aircraft it hosts."""

    dock_id: str
    name: str
    lat: float
    lon: float
    profile: AircraftProfile
    profile_key: str = DEFAULT_PROFILE
    in_service: bool = True
    battery_pct: float | None = None  # the aircraft's charge when known; None: charged (the dock charges it)
    hold_s: float = 0.0  # time the mission must be able to stay over the incident
    aircraft_id: str | None = None  # the unit id of its drone in the fleet, when it is tracked

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat) and -90 <= self.lat <= 90 and math.isfinite(self.lon)
                and -180 <= self.lon <= 180):  # fmt: skip
            raise ValueError(f"dock {self.dock_id!r}: position ({self.lat}, {self.lon}) is not a lat/lon")
        if self.battery_pct is not None and not 0 <= self.battery_pct <= 100:
            raise ValueError(f"dock {self.dock_id!r}: battery_pct must be 0..100, got {self.battery_pct}")
        if not (math.isfinite(self.hold_s) and self.hold_s >= 0):
            raise ValueError(f"dock {self.dock_id!r}: hold_s must be >= 0, got {self.hold_s}")

    @property
    def charge(self) -> float:
        """Battery as a fraction (1.0 when unknown)."""
        return 1.0 if self.battery_pct is None else self.battery_pct / 100.0

    def energy_s(self) -> float:
        """Seconds of flight the mission may spend: usable endurance × charge × (1 − reserve)."""
        return self.profile.usable_s * self.charge * (1.0 - self.profile.reserve)


@dataclass(frozen=True, slots=True)
class DockReach:
    """How far a dock reaches within T, and what limits it."""

    radius_m: float  # may be negative: reaches nothing (not even its own cell)
    limit: Limit
    time_radius_m: float
    energy_radius_m: float
    hold_s: float


def energy_radius_m(dock: Dock, takeoff_s: float = DEFAULT_TAKEOFF_S, hold_s: float | None = None) -> float:
    """Farthest distance (m) at which ``dock``'s aircraft can hold ``hold_s`` and return with its reserve.

    ``hold_s`` defaults to the dock's own. Negative when even a hover over the
    dock does not fit the charge.

    >>> d = Dock("d1", "d1", -12.12, -77.03, PROFILES["m3td"])
    >>> round(energy_radius_m(d, 30.0, 0.0))  # 50 min × 0.7 × 0.75 = 1575 s; (1575 - 60) / 2 × 15 m/s
    11362
    """
    hold = dock.hold_s if hold_s is None else float(hold_s)
    return dock.profile.cruise_mps * (dock.energy_s() - hold - 2.0 * float(takeoff_s)) / 2.0


def dock_reach(
    dock: Dock, target_s: float, takeoff_s: float = DEFAULT_TAKEOFF_S, hold_s: float | None = None
) -> DockReach:
    """The dock's reach radius within ``target_s`` (min of time, energy and operating-radius limits)."""
    hold = dock.hold_s if hold_s is None else float(hold_s)
    t_r = dock.profile.cruise_mps * (float(target_s) - float(takeoff_s))
    e_r = energy_radius_m(dock, takeoff_s, hold)
    if not dock.in_service:
        return DockReach(-math.inf, "out_of_service", t_r, e_r, hold)
    radius = min(t_r, e_r, dock.profile.max_radius_m)
    limit: Limit = "time" if radius == t_r else "energy" if radius == e_r else "range"
    return DockReach(radius, limit, t_r, e_r, hold)


def _check(target_s: float, takeoff_s: float) -> tuple[float, float]:
    t, o = float(target_s), float(takeoff_s)
    if math.isnan(t) or t < 0:
        raise ValueError(f"target time must be >= 0 s, got {target_s}")
    if not (math.isfinite(o) and o >= 0):
        raise ValueError(f"take-off overhead must be finite and >= 0 s, got {takeoff_s}")
    return t, o


def _columns(
    docks: Sequence[Dock], hold_s: float | None, takeoff_s: float
) -> tuple[NDArray[np.float64], ...]:
    """Per dock: lat, lon (rad), cos(lat), cruise speed, and the limit radius from energy and range."""
    lat = np.radians(np.array([d.lat for d in docks], dtype=np.float64))
    lon = np.radians(np.array([d.lon for d in docks], dtype=np.float64))
    speed = np.array([d.profile.cruise_mps for d in docks], dtype=np.float64)
    limit = np.array(
        [min(energy_radius_m(d, takeoff_s, hold_s), d.profile.max_radius_m) if d.in_service else -math.inf
         for d in docks],
        dtype=np.float64,
    )  # fmt: skip
    return lat, lon, np.cos(lat), speed, limit


@numba.njit(cache=True, inline="always")
def _reach_eta(
    dlat: float, dlon: float, dcos: float, speed: float, limit: float, takeoff_s: float, target_s: float,
    clat: float, clon: float, ccos: float,
) -> float:  # fmt: skip
    """ETA (s) of one dock to one cell (radians, with cosines) when it reaches it, else inf."""
    s_dlat = math.sin((clat - dlat) * 0.5)
    s_dlon = math.sin((clon - dlon) * 0.5)
    h = s_dlat * s_dlat + dcos * ccos * s_dlon * s_dlon
    d = 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(min(h, 1.0)))  # geo.coverage's haversine
    e = takeoff_s + d / speed
    if e <= target_s and d <= limit:
        return e
    return math.inf


@numba.njit(cache=True, inline="always")
def _band(speed: float, limit: float, takeoff_s: float, target_s: float) -> float:
    """Latitude half-band (rad) holding every cell a dock may reach; negative when it reaches nothing.

    A great circle is never shorter than its latitude difference: cells outside the band are out of reach.
    """
    radius = min(limit, speed * (target_s - takeoff_s))
    if not radius >= 0.0:
        return -1.0
    return radius / EARTH_RADIUS_M * (1.0 + 1e-9) + 1e-12


@numba.njit(cache=True)
def _eta_kernel(
    dlat: NDArray[np.float64], dlon: NDArray[np.float64], dcos: NDArray[np.float64],
    speed: NDArray[np.float64], limit: NDArray[np.float64], takeoff_s: float, target_s: float,
    clat: NDArray[np.float64], clon: NDArray[np.float64], ccos: NDArray[np.float64],
    best: NDArray[np.float64], arg: NDArray[np.int64],
) -> None:  # fmt: skip
    """Best ETA and dock per cell; docks in order, so a tie keeps the lowest dock index."""
    for q in range(dlat.shape[0]):
        band = _band(speed[q], limit[q], takeoff_s, target_s)
        if band < 0.0:
            continue
        for i in range(clat.shape[0]):
            if abs(clat[i] - dlat[q]) > band:
                continue
            e = _reach_eta(dlat[q], dlon[q], dcos[q], speed[q], limit[q], takeoff_s, target_s,
                           clat[i], clon[i], ccos[i])  # fmt: skip
            if e < best[i]:
                best[i] = e
                arg[i] = q


@numba.njit(cache=True)
def _csr_kernel(
    dlat: NDArray[np.float64], dlon: NDArray[np.float64], dcos: NDArray[np.float64],
    speed: NDArray[np.float64], limit: NDArray[np.float64], takeoff_s: float, target_s: float,
    clat: NDArray[np.float64], clon: NDArray[np.float64], ccos: NDArray[np.float64],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:  # fmt: skip
    """Cells each dock reaches, as CSR (two passes: count, then fill; cells ascending per dock)."""
    n = dlat.shape[0]
    indptr = np.zeros(n + 1, dtype=np.int64)
    for pass_ in range(2):
        indices = np.empty(indptr[n], dtype=np.int64)
        for q in range(n):
            band = _band(speed[q], limit[q], takeoff_s, target_s)
            k = indptr[q]
            count = 0
            if band >= 0.0:
                for i in range(clat.shape[0]):
                    if abs(clat[i] - dlat[q]) > band:
                        continue
                    e = _reach_eta(dlat[q], dlon[q], dcos[q], speed[q], limit[q], takeoff_s, target_s,
                                   clat[i], clon[i], ccos[i])  # fmt: skip
                    if e < math.inf:
                        if pass_ == 1:
                            indices[k + count] = i
                        count += 1
            if pass_ == 0:
                indptr[q + 1] = indptr[q] + count
    return indptr, indices


def _cells(grid: HexGrid) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    clat = np.radians(grid.lat)
    return clat, np.radians(grid.lon), np.cos(clat)


def dock_eta(
    grid: HexGrid, docks: Sequence[Dock], target_s: float, takeoff_s: float = DEFAULT_TAKEOFF_S
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Per cell: the best ETA (s) from the docks in service and which dock gives it.

    ETA is ``inf`` and the dock ``-1`` where no dock reaches the cell within
    ``target_s`` with the battery to hold (each dock's ``hold_s``) and return;
    ties go to the lowest dock index. Combine with :class:`geo.coverage.CoverageResult`'s
    ``best_eta_s`` by ``np.minimum``.
    """
    t, o = _check(target_s, takeoff_s)
    best = np.full(grid.size, np.inf, dtype=np.float64)
    arg = np.full(grid.size, -1, dtype=np.int64)
    if not docks or grid.size == 0:
        return best, arg
    lat, lon, cos, speed, limit = _columns(docks, None, o)
    clat, clon, ccos = _cells(grid)
    _eta_kernel(lat, lon, cos, speed, limit, o, t, clat, clon, ccos, best, arg)
    return best, arg


def dock_reach_sets(
    grid: HexGrid,
    docks: Sequence[Dock],
    hold_s: float | None = None,
    target_s: float = math.inf,
    takeoff_s: float = DEFAULT_TAKEOFF_S,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Which cells each dock can reach and hold over for ``hold_s`` (default: each dock's own), as CSR.

    Row q (dock q) holds the sorted row numbers of the cells it serves:
    ``indices[indptr[q]:indptr[q + 1]]``; with ``target_s`` the flight out must
    also arrive within it. Docks out of service have empty rows. The same
    structure as :func:`geo.coverage.reach_sets`, for placement and sortie planning.
    """
    t, o = _check(target_s, takeoff_s)
    indptr = np.zeros(len(docks) + 1, dtype=np.int64)
    if not docks or grid.size == 0:
        return indptr, np.zeros(0, dtype=np.int64)
    lat, lon, cos, speed, limit = _columns(docks, hold_s, o)
    clat, clon, ccos = _cells(grid)
    indptr, indices = _csr_kernel(lat, lon, cos, speed, limit, o, t, clat, clon, ccos)
    out: tuple[NDArray[np.int64], NDArray[np.int64]] = (indptr, indices)
    return out


# ---------------------------------------------------------------------------------------------
# Docks from a parsed GeoJSON FeatureCollection (the caller reads the file).


@dataclass(frozen=True, slots=True)
class DockDefaults:
    """What a dock feature that says nothing about it gets."""

    profile: str = DEFAULT_PROFILE
    hold_s: float = 0.0
    profiles: Mapping[str, AircraftProfile] = field(default_factory=lambda: dict(PROFILES))


def _number(props: Mapping[str, Any], key: str, where: str) -> float | None:
    v = props.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{where}: property {key!r} must be a number, got {v!r}")
    return float(v)


def dock_from_feature(feature: Any, where: str, defaults: DockDefaults) -> Dock:
    """One dock from a GeoJSON Point feature; ``ValueError`` says what to fix, prefixed by ``where``."""
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise ValueError(f"{where} is not a GeoJSON Feature")
    props = feature.get("properties") or {}
    if not isinstance(props, Mapping):
        raise ValueError(f"{where}: properties must be an object")
    dock_id = props.get("id", feature.get("id"))
    if not isinstance(dock_id, str) or not _ID_RE.fullmatch(dock_id):
        raise ValueError(
            f"{where}: property 'id' must be a string of letters, digits and _.:- (up to 64), got {dock_id!r}"
        )
    where = f"{where} (dock {dock_id!r})"
    geom = feature.get("geometry")
    coords = geom.get("coordinates") if isinstance(geom, Mapping) else None
    if not isinstance(geom, Mapping) or geom.get("type") != "Point" or not isinstance(coords, list | tuple):
        raise ValueError(f"{where}: geometry must be a Point [lon, lat]")
    if len(coords) < 2 or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in coords[:2]):
        raise ValueError(f"{where}: Point coordinates must be [lon, lat] numbers, got {coords!r}")
    lon, lat = float(coords[0]), float(coords[1])
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValueError(f"{where}: [{lon}, {lat}] is not [lon, lat] in degrees (GeoJSON: longitude first)")
    key = props.get("profile", props.get("model", defaults.profile))
    if not isinstance(key, str) or key not in defaults.profiles:
        known = ", ".join(sorted(defaults.profiles))
        raise ValueError(f"{where}: unknown aircraft profile {key!r}; known: {known}")
    in_service = props.get("in_service", True)
    if not isinstance(in_service, bool):
        raise ValueError(f"{where}: property 'in_service' must be true or false, got {in_service!r}")
    battery = _number(props, "battery_pct", where)
    if battery is not None and not 0 <= battery <= 100:
        raise ValueError(f"{where}: battery_pct must be 0..100, got {battery}")
    hold = _number(props, "hold_s", where)
    if hold is not None and hold < 0:
        raise ValueError(f"{where}: hold_s must be >= 0, got {hold}")
    aircraft = props.get("aircraft")
    if aircraft is not None and (not isinstance(aircraft, str) or not _ID_RE.fullmatch(aircraft)):
        raise ValueError(f"{where}: property 'aircraft' must be the unit id of its drone, got {aircraft!r}")
    name = props.get("name", dock_id)
    return Dock(
        dock_id=dock_id,
        name=str(name),
        lat=lat,
        lon=lon,
        profile=defaults.profiles[key],
        profile_key=key,
        in_service=in_service,
        battery_pct=battery,
        hold_s=defaults.hold_s if hold is None else hold,
        aircraft_id=aircraft,
    )


def docks_from_geojson(collection: Any, defaults: DockDefaults | None = None) -> list[Dock]:
    """Docks from a GeoJSON FeatureCollection of Points with properties ``id``, ``name``, ``profile``…

    Optional properties: ``name``, ``profile`` (or ``model``: a key of the
    profiles table), ``in_service`` (true), ``battery_pct`` (unknown: charged),
    ``hold_s``, ``aircraft`` (the unit id of its drone). Raises ``ValueError``
    naming the feature and what to fix.
    """
    dflt = defaults or DockDefaults()
    if not isinstance(collection, Mapping) or collection.get("type") != "FeatureCollection":
        got = collection.get("type") if isinstance(collection, Mapping) else type(collection).__name__
        raise ValueError(f"expected a GeoJSON FeatureCollection of dock Points, got {got!r}")
    features = collection.get("features")
    if not isinstance(features, list) or not features:
        raise ValueError("the FeatureCollection holds no dock features")
    docks = [dock_from_feature(f, f"feature {i}", dflt) for i, f in enumerate(features)]
    seen: set[str] = set()
    for d in docks:
        if d.dock_id in seen:
            raise ValueError(f"dock id {d.dock_id!r} appears twice: dock ids must be unique")
        seen.add(d.dock_id)
    return docks


def warm_up() -> None:
    """Compile (or load from the disk cache) the dock kernels on a tiny grid."""
    from shapely.geometry import box

    from geo.hexgrid import hexgrid

    grid = hexgrid(box(-77.031, -12.121, -77.029, -12.119), 10)
    dock = Dock("warm", "warm", -12.12, -77.03, PROFILES[DEFAULT_PROFILE])
    dock_eta(grid, [dock], 60.0)
    dock_reach_sets(grid, [dock], 0.0, 60.0)


__all__ = [
    "DEFAULT_DERATING",
    "DEFAULT_PROFILE",
    "DEFAULT_RESERVE",
    "DEFAULT_TAKEOFF_S",
    "PROFILES",
    "AircraftProfile",
    "Dock",
    "DockDefaults",
    "DockReach",
    "dock_eta",
    "dock_from_feature",
    "dock_reach",
    "dock_reach_sets",
    "docks_from_geojson",
    "energy_radius_m",
    "warm_up",
]
