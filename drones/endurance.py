"""Endurance of an aircraft in flight: how long it can still fly, how far home is, and the margin.

Pure (aircraft profiles, telemetry and positions in; numbers out; no I/O). The
profiles are the one table of :data:`geo.docks.PROFILES` (configurable as
``SERENAZGO_COVERAGE__AIRCRAFT__*``): cruise speed ``v``, the manufacturer's
maximum flight time, the derating and the reserve.

Formulas (``p`` the battery as a fraction, ``r`` the profile's reserve as a
fraction of a full charge, ``U = max_flight_s × derating`` the usable endurance
of a full charge on a real mission, see :mod:`geo.docks`):

- **Endurance per full charge** ``E = min(U, t_own / p)``: ``t_own`` is the
  aircraft's own remaining-flight estimate (DJI ``battery.remain_flight_time``,
  MAVLink ``time_remaining``), which it makes from the draw it measures, so
  ``t_own / p`` is the full-charge endurance that draw implies. The smaller of
  the two is used: the profile is a planning figure that knows nothing of today's
  wind, payload or pack wear, while the aircraft's figure extrapolates the
  current draw (which drops while it hovers or flies downwind and rises on the
  way back against the sea breeze); a safety alert must not come later than
  either says it should. Without ``t_own``, ``E = U``; ``limited_by`` tells which.
- **Flight time left** ``T = E × p`` (to an empty battery); with no battery
  percentage but an aircraft estimate, ``T = t_own``.
- **Reserve** ``R = E × r``: the reserve is energy (``r`` of a full charge: the
  landing, a go-around, contingencies), so it is a fixed amount of flight time at
  the same rate, not a share of what is left. (:mod:`geo.docks` budgets a docked
  aircraft's mission as ``U × p × (1 − r)``: the same as here for the full charge
  a dock keeps, slightly more generous for a partly charged one.)
- **Usable time left** ``A = T − R`` (``E × (p − r)``): negative below the reserve.
- **Distance home** ``d``: the WGS84 geodesic from the aircraft to its home
  (pyproj; the home point it reports, else its dock from the docks file). The
  coverage kernels use a haversine over millions of dock × cell pairs; here a
  handful of aircraft afford the exact distance, and an alert computed from it
  fires on the step it should.
- **Time home** ``t_home = d / v + landing_s``: straight back at cruise plus the
  fixed descent and precision-landing overhead, the same ``takeoff_s`` constant
  that :mod:`geo.docks` charges for the way back (default 30 s).
- **Return margin** ``m = A − t_home`` (s): how long the aircraft may still go on
  before it must turn back to land with its reserve intact. ``m ≤ 0``: it can no
  longer get home without eating into the reserve.
- **Remaining range** ``v × max(A, 0)`` (m): the distance it can still fly at
  cruise before reaching the reserve (one way, not counting the way home).

Unknown inputs give NaN (no home: no distance or margin; no battery and no
estimate: no times), never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pyproj import Geod

from geo.docks import DEFAULT_TAKEOFF_S, AircraftProfile, Dock
from tracker.model import DroneTelemetry, Ping

_GEOD = Geod(ellps="WGS84")

HomeSource = Literal["telemetry", "dock"]
LimitedBy = Literal["profile", "aircraft"]
GROUNDED_MODES = frozenset({"on_ground"})


@dataclass(frozen=True, slots=True)
class EnduranceArrays:
    """The model's figures for many aircraft at once (NaN where an input is unknown)."""

    endurance_s: NDArray[np.float64]  # E: flight time of a full charge at the assumed draw
    aircraft_limited: NDArray[np.bool_]  # True where the aircraft's own estimate set E
    remaining_s: NDArray[np.float64]  # T: flight time to an empty battery
    reserve_s: NDArray[np.float64]  # R: the reserve as flight time
    usable_remaining_s: NDArray[np.float64]  # A = T - R
    distance_home_m: NDArray[np.float64]  # d
    time_home_s: NDArray[np.float64]  # d / v + landing
    margin_s: NDArray[np.float64]  # A - time home
    range_m: NDArray[np.float64]  # v * max(A, 0)


def geodesic_m(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> NDArray[np.float64]:
    """WGS84 geodesic distances (m) between paired points (degrees); NaN where a coordinate is NaN.

    >>> round(float(geodesic_m(-12.12, -77.03, -12.11, -77.03)[0]), 1)  # 0.01° of latitude near Lima
    1106.2
    """
    la1, lo1, la2, lo2 = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (lat1, lon1, lat2, lon2))
    la1, lo1, la2, lo2 = np.broadcast_arrays(la1, lo1, la2, lo2)
    out = np.full(la1.shape, np.nan, dtype=np.float64)
    ok = np.isfinite(la1) & np.isfinite(lo1) & np.isfinite(la2) & np.isfinite(lo2)
    if ok.any():
        _, _, dist = _GEOD.inv(lo1[ok], la1[ok], lo2[ok], la2[ok])
        out[ok] = dist
    return out


def endurance_many(
    usable_s: ArrayLike,
    reserve: ArrayLike,
    cruise_mps: ArrayLike,
    battery_pct: ArrayLike,
    own_remaining_s: ArrayLike,
    lat: ArrayLike,
    lon: ArrayLike,
    home_lat: ArrayLike,
    home_lon: ArrayLike,
    landing_s: float = DEFAULT_TAKEOFF_S,
) -> EnduranceArrays:
    """The endurance figures of the module docstring for arrays of aircraft (NaN = unknown input).

    Per aircraft: its profile's usable endurance ``usable_s`` (``max_flight_s ×
    derating``), ``reserve`` (fraction of a full charge) and ``cruise_mps``; its
    battery percentage and own remaining-flight estimate (s); its position and
    its home's.

    >>> e = endurance_many(2100.0, 0.25, 15.0, 50.0, np.nan, -12.12, -77.03, -12.12, -77.03)
    >>> float(e.usable_remaining_s[0]), float(e.time_home_s[0]), float(e.margin_s[0])  # 2100 × 0.25; 30 s
    (525.0, 30.0, 495.0)
    """
    given = (usable_s, reserve, cruise_mps, battery_pct, own_remaining_s, lat, lon, home_lat, home_lon)
    u, r, v, pct, own, la, lo, hla, hlo = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in given)
    )
    p = pct / 100.0
    with np.errstate(divide="ignore", invalid="ignore"):
        implied = np.where((p > 0) & np.isfinite(own), own / p, np.nan)  # E implied by the aircraft's draw
    endurance = np.fmin(u, implied)  # fmin: NaN (no estimate) leaves the profile's figure
    aircraft_limited = np.isfinite(implied) & (implied < u)
    remaining = np.where(np.isfinite(p), endurance * p, own)
    reserve_s = endurance * r
    usable = remaining - reserve_s
    distance = geodesic_m(la, lo, hla, hlo)
    time_home = distance / v + float(landing_s)
    margin = usable - time_home
    range_m = v * np.maximum(usable, 0.0)  # NaN stays NaN (np.maximum propagates it)
    return EnduranceArrays(
        endurance, aircraft_limited, remaining, reserve_s, usable, distance, time_home, margin, range_m
    )


@dataclass(frozen=True, slots=True)
class Endurance:
    """One aircraft's endurance now (None where unknown); see the module docstring for each formula."""

    unit_id: str
    profile_key: str
    profile: AircraftProfile
    landing_s: float
    airborne: bool
    battery_pct: float | None
    home_lat: float | None
    home_lon: float | None
    home_source: HomeSource | None
    dock: Dock | None
    endurance_s: float | None
    limited_by: LimitedBy
    remaining_s: float | None
    reserve_s: float | None
    usable_remaining_s: float | None
    distance_home_m: float | None
    time_home_s: float | None
    margin_s: float | None
    range_m: float | None


def is_airborne(telemetry: DroneTelemetry | None) -> bool:
    """Whether the last telemetry says the aircraft is flying: not docked and not ``on_ground``.

    A mode the aircraft does not report (None, ``disconnected``, ``other``) counts
    as flying: the alerts then watch it rather than miss a real flight.
    """
    if telemetry is None:
        return False
    return telemetry.docked is not True and telemetry.flight_mode not in GROUNDED_MODES


def _opt(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


class SquadronModel:
    """The endurance model of a squadron: which profile and home each drone has, and its figures.

    ``profiles``: the aircraft table (profile key → profile, e.g.
    ``CoverageSettings.profiles()``); ``assignments``: unit id → profile key
    (``DroneSettings.profiles``); ``docks``: the docks file's docks (a dock names
    its aircraft's unit id, and its profile is that aircraft's); ``landing_s``: the
    descent and landing overhead (``CoverageSettings.takeoff_s``).
    """

    def __init__(
        self,
        profiles: Mapping[str, AircraftProfile],
        default_profile: str,
        assignments: Mapping[str, str] | None = None,
        docks: Sequence[Dock] = (),
        landing_s: float = DEFAULT_TAKEOFF_S,
    ) -> None:
        known = ", ".join(sorted(profiles))
        if default_profile not in profiles:
            raise ValueError(f"default aircraft profile {default_profile!r} is not one of: {known}")
        for unit_id, key in (assignments or {}).items():
            if key not in profiles:
                raise ValueError(f"drone {unit_id!r}: aircraft profile {key!r} is not one of: {known}")
        if not (math.isfinite(landing_s) and landing_s >= 0):
            raise ValueError(f"landing overhead must be finite and >= 0 s, got {landing_s}")
        self.profiles = dict(profiles)
        self.default_profile = default_profile
        self.assignments = dict(assignments or {})
        self.docks = tuple(docks)
        self.landing_s = float(landing_s)
        self._by_aircraft = {d.aircraft_id: d for d in self.docks if d.aircraft_id is not None}
        self._by_id = {d.dock_id: d for d in self.docks}

    def dock_for(self, unit_id: str, telemetry: DroneTelemetry | None = None) -> Dock | None:
        """Its dock: the one naming it ``aircraft``, else the one its telemetry's ``dock_id`` names."""
        dock = self._by_aircraft.get(unit_id)
        if dock is None and telemetry is not None and telemetry.dock_id is not None:
            dock = self._by_id.get(telemetry.dock_id)
        return dock

    def profile_for(self, unit_id: str, dock: Dock | None = None) -> tuple[str, AircraftProfile]:
        """The drone's profile key and profile: its assignment, else its dock's, else the default."""
        key = self.assignments.get(unit_id)
        if key is None and dock is not None and dock.profile_key in self.profiles:
            key = dock.profile_key
        key = key or self.default_profile
        return key, self.profiles[key]

    def assess_many(
        self, drones: Sequence[tuple[str, DroneTelemetry | None, Ping | None]]
    ) -> list[Endurance]:
        """The endurance of each ``(unit_id, telemetry, fix)`` (one vectorised evaluation)."""
        n = len(drones)
        cols = np.full((9, n), np.nan, dtype=np.float64)
        meta: list[tuple[str, AircraftProfile, Dock | None, HomeSource | None]] = []
        for i, (unit_id, tel, fix) in enumerate(drones):
            dock = self.dock_for(unit_id, tel)
            key, prof = self.profile_for(unit_id, dock)
            home: HomeSource | None = None
            if tel is not None and tel.home_lat is not None and tel.home_lon is not None:
                cols[7, i], cols[8, i], home = tel.home_lat, tel.home_lon, "telemetry"
            elif dock is not None:
                cols[7, i], cols[8, i], home = dock.lat, dock.lon, "dock"
            cols[0, i], cols[1, i], cols[2, i] = prof.usable_s, prof.reserve, prof.cruise_mps
            if tel is not None:
                if tel.battery_pct is not None:
                    cols[3, i] = tel.battery_pct
                if tel.remaining_flight_s is not None:
                    cols[4, i] = tel.remaining_flight_s
            if fix is not None:
                cols[5, i], cols[6, i] = fix.lat, fix.lon
            meta.append((key, prof, dock, home))
        if n == 0:
            return []
        c = cols
        e = endurance_many(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], self.landing_s)
        out: list[Endurance] = []
        for i, (unit_id, tel, _) in enumerate(drones):
            key, prof, dock, home = meta[i]
            out.append(
                Endurance(
                    unit_id=unit_id,
                    profile_key=key,
                    profile=prof,
                    landing_s=self.landing_s,
                    airborne=is_airborne(tel),
                    battery_pct=None if tel is None else tel.battery_pct,
                    home_lat=_opt(cols[7, i]),
                    home_lon=_opt(cols[8, i]),
                    home_source=home,
                    dock=dock,
                    endurance_s=_opt(e.endurance_s[i]),
                    limited_by="aircraft" if e.aircraft_limited[i] else "profile",
                    remaining_s=_opt(e.remaining_s[i]),
                    reserve_s=_opt(e.reserve_s[i]),
                    usable_remaining_s=_opt(e.usable_remaining_s[i]),
                    distance_home_m=_opt(e.distance_home_m[i]),
                    time_home_s=_opt(e.time_home_s[i]),
                    margin_s=_opt(e.margin_s[i]),
                    range_m=_opt(e.range_m[i]),
                )
            )
        return out

    def assess(self, unit_id: str, telemetry: DroneTelemetry | None, fix: Ping | None) -> Endurance:
        """The endurance of one drone (see :meth:`assess_many`)."""
        return self.assess_many([(unit_id, telemetry, fix)])[0]
