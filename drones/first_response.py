"""Drone as first responder: which drone reaches an incident first, and can it get back.

Drone-as-first-responder programmes pick the aircraft by proximity and battery
and aim to be airborne within seconds of the call. :class:`DroneTiming` plugs
into :class:`tracker.dispatch.Dispatcher` (its ``drone_timing``) and turns the
plain ETA of each available drone into the time it really needs:

- **Docked or on the ground** (telemetry says ``docked`` or ``on_ground``, or, without
  telemetry, the drone stands within ``at_dock_m`` of its dock): ``eta = launch_s +
  d / v``, ``launch_s`` being the lid, take-off and climb overhead that the dock
  coverage layer charges too (:data:`geo.docks.DEFAULT_TAKEOFF_S`, configurable as
  ``SERENAZGO_COVERAGE__TAKEOFF_S``), so dispatch and the drone layer agree.
- **Airborne**: ``eta = d / v``; it is already at cruise.

``d`` is the great-circle distance and ``v`` the cruise speed of the drone's
aircraft profile (:class:`drones.endurance.SquadronModel`: its assignment, its
dock's profile, or the default).

**Battery check.** The mission is the flight out, ``hold_s`` over the incident
(``SERENAZGO_DRONES__DISPATCH_HOLD_S``) and the flight from the incident to its
home plus the landing overhead: ``need = eta + hold_s + (d_home / v + landing_s)``.
It must fit the usable time left above the reserve from
:mod:`drones.endurance` (``E × (p − r)``); a docked drone with no battery report
is taken as charged (its dock charges it). A drone that cannot make it is not
offered. Without a battery report or a home for an airborne drone the check
cannot be made: the drone is offered with ``battery_checked: false``.

Each offered candidate carries the figures in ``Candidate.drone``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drones.endurance import SquadronModel, is_airborne
from geo.distance import haversine_m
from tracker.dispatch import Candidate
from tracker.fleet import LiveFleet
from tracker.model import DroneTelemetry

AT_DOCK_M = 60.0  # a drone this close to its dock, reporting nothing else, is taken as docked


@dataclass(frozen=True, slots=True)
class DroneTiming:
    """Re-times available drones for an incident and drops those whose battery cannot make the mission."""

    model: SquadronModel
    fleet: LiveFleet
    hold_s: float = 120.0
    at_dock_m: float = AT_DOCK_M

    def __call__(self, lat: float, lon: float, drones: list[Candidate]) -> list[Candidate]:
        """The drones of ``drones`` able to answer a call at (lat, lon), with their real ETA."""
        if not drones:
            return []
        states = [self.fleet.get(c.unit_id) for c in drones]
        rows = [
            (c.unit_id, None if s is None else s.drone, None if s is None else s.fix)
            for c, s in zip(drones, states, strict=True)
        ]
        assessed = self.model.assess_many(rows)
        out: list[Candidate] = []
        launch_s = self.model.landing_s
        for c, (_, tel, _fix), e in zip(drones, rows, assessed, strict=True):
            v = e.profile.cruise_mps
            docked = self._docked(tel, c, e.dock.lat if e.dock else None, e.dock.lon if e.dock else None)
            eta = (launch_s if docked else 0.0) + c.distance_m / v
            back_s = math.nan
            if e.home_lat is not None and e.home_lon is not None:
                back_s = haversine_m(lat, lon, e.home_lat, e.home_lon) / v + self.model.landing_s
            usable = e.usable_remaining_s
            if usable is None and docked:
                usable = e.profile.usable_s * (1.0 - e.profile.reserve)  # charged in its dock
            need = eta + self.hold_s + back_s
            checked = usable is not None and math.isfinite(need)
            if checked and usable is not None and usable < need:
                continue  # it would not get back with its reserve
            spare = usable - need if checked and usable is not None else None
            detail = {
                "docked": docked,
                "launch_s": launch_s if docked else 0.0,
                "cruise_mps": v,
                "profile": e.profile_key,
                "battery_pct": e.battery_pct,
                "hold_s": self.hold_s,
                "return_s": None if math.isnan(back_s) else round(back_s, 1),
                "mission_s": round(need, 1) if math.isfinite(need) else None,
                "usable_s": None if usable is None else round(usable, 1),
                "spare_s": None if spare is None else round(spare, 1),
                "battery_checked": checked,
            }
            out.append(c._replace(eta_s=eta, drone=detail))
        return out

    def _docked(
        self, tel: DroneTelemetry | None, c: Candidate, dock_lat: float | None, dock_lon: float | None
    ) -> bool:
        if tel is not None and (tel.docked is not None or tel.flight_mode is not None):
            return not is_airborne(tel)
        return (
            dock_lat is not None
            and dock_lon is not None
            and haversine_m(c.lat, c.lon, dock_lat, dock_lon) <= self.at_dock_m
        )


__all__ = ["AT_DOCK_M", "DroneTiming"]
