"""Drone alerts: must return now, below reserve, telemetry lost, altitude exceeded.

In-memory logic, no I/O (the :class:`~tracker.events.EventEngine` calls it under
its lock, stores, publishes and feeds what it returns). Each alert is a
condition with hysteresis, so one episode gives one event, not one per report:

- ``drone_return_required``: the return-home margin of :mod:`drones.endurance`
  is at or below ``drones.return_margin_s`` while airborne and not already
  returning home or landing (then there is nothing to tell: it is on its way;
  running short on the way is ``drone_below_reserve``'s). Re-armed once the
  margin climbs above ``return_margin_s + return_rearm_s`` or the aircraft is on
  the ground. (Flying home at cruise keeps the margin about constant, so an
  aircraft that obeyed is not alerted again on the way.)
- ``drone_below_reserve``: airborne with the battery under the profile's reserve
  (``reserve × 100`` %). Re-armed above ``reserve + reserve_rearm_pct`` or on the ground.
- ``drone_telemetry_lost``: the last telemetry says airborne (not docked, not
  ``on_ground``) and the telemetry or the position is older than
  ``drones.telemetry_lost_s``; found by the engine's periodic sweep, like
  freshness. Re-armed when both are fresh again. The position's age counts from
  the take-off at the earliest: a docked DJI aircraft reports no fix, so its last
  one may be from its previous flight, and a fresh launch gets the same
  ``telemetry_lost_s`` to produce one.
- ``drone_altitude_exceeded``: ``alt_takeoff_m`` above ``drones.altitude_limit_m``.
  Re-armed ``altitude_rearm_m`` below the limit. Height above the take-off point
  stands in for height above ground: Miraflores is a flat terrace (about 70-90 m
  above the sea, within a few metres across the district), so over the district the
  two agree within the altimeter's error. It breaks at the Costa Verde cliffs: an
  aircraft launched on the terrace and flying out over the beach is 60-80 m higher
  above the ground than above its take-off point (an alert comes 60-80 m late
  there), and one launched from the beach overstates its height over the terrace.
  A terrain model would fix it; none is loaded.

**At start** conditions already true are adopted silently (as freshness and
battery are in :mod:`tracker.events`): the episode began before the restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from drones.endurance import Endurance, SquadronModel, is_airborne
from geo.docks import Dock
from tracker.config import DroneSettings, Settings
from tracker.errors import ConfigError
from tracker.events import Event, EventType
from tracker.fleet import FleetChange, UnitState
from tracker.model import UnitKind

# No "return now" for an aircraft already on its way home.
HOMEWARD_MODES = frozenset({"returning_home", "landing"})


def _r(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def watched(state: UnitState) -> bool:
    """Whether ``state`` is a drone the alerts watch: a drone unit, or any unit sending drone telemetry."""
    return state.drone is not None or state.unit.kind is UnitKind.DRONE


class DroneAlerts:
    """Fleet changes and sweeps in, drone events out; callers serialise the calls (no lock here)."""

    def __init__(self, settings: DroneSettings, model: SquadronModel) -> None:
        self.settings = settings
        self.model = model
        # Units whose alert fired and has not re-armed yet, one set per alert.
        self._return: set[str] = set()
        self._reserve: set[str] = set()
        self._lost: set[str] = set()
        self._altitude: set[str] = set()
        self._airborne_since: dict[str, datetime] = {}  # the first airborne report of the current flight

    # -- state -----------------------------------------------------------------------------------------

    def active(self, unit_id: str) -> list[str]:
        """The drone alerts fired for ``unit_id`` and not re-armed, as event types (sorted)."""
        pairs = (
            (self._return, EventType.DRONE_RETURN_REQUIRED),
            (self._reserve, EventType.DRONE_BELOW_RESERVE),
            (self._lost, EventType.DRONE_TELEMETRY_LOST),
            (self._altitude, EventType.DRONE_ALTITUDE_EXCEEDED),
        )
        return sorted(str(t) for s, t in pairs if unit_id in s)

    def seed(self, states: Iterable[UnitState], now: datetime) -> None:
        """Adopt the conditions that hold now without events (see the module docstring)."""
        for s in (self._return, self._reserve, self._lost, self._altitude):
            s.clear()
        drones = [s for s in states if watched(s) and s.drone is not None]
        for state, e in zip(drones, self._assess(drones), strict=True):
            self._update(state, e, emit=False)
        self.sweep(drones, now, emit=False)

    # -- events ----------------------------------------------------------------------------------------

    def on_changes(self, changes: Sequence[FleetChange]) -> list[Event]:
        """Events of one applied batch: the newest state of each drone whose telemetry or position changed."""
        newest: dict[str, UnitState] = {}
        for change in changes:
            if change.kind in ("telemetry", "position") and change.state.drone is not None:
                newest[change.unit_id] = change.state
        if not newest:
            return []
        states = list(newest.values())
        events: list[Event] = []
        for state, e in zip(states, self._assess(states), strict=True):
            events.extend(self._update(state, e, emit=True))
        return events

    def sweep(self, states: Iterable[UnitState], now: datetime, emit: bool = True) -> list[Event]:
        """``drone_telemetry_lost`` at ``now``: airborne drones whose telemetry or position is too old."""
        limit = self.settings.telemetry_lost_s
        events: list[Event] = []
        for state in states:
            tel = state.drone
            if tel is None:
                continue
            uid = state.unit.unit_id
            tel_age = (now - tel.ts).total_seconds()
            fix_age = None if state.fix is None else (now - state.fix.ts).total_seconds()
            # The position is judged from the take-off at the earliest (its last fix may be from the
            # previous flight); with no fix at all, from the take-off or the telemetry.
            since = self._airborne_since.get(uid, tel.ts)
            pos_age = (
                (now - since).total_seconds()
                if fix_age is None
                else min(fix_age, (now - since).total_seconds())
            )
            age = max(tel_age, pos_age)
            if not is_airborne(tel) or age <= limit:
                self._lost.discard(uid)
                continue
            if uid in self._lost:
                continue
            self._lost.add(uid)
            if emit:
                fix = state.fix
                events.append(
                    Event(
                        EventType.DRONE_TELEMETRY_LOST,
                        now,
                        uid,
                        detail={
                            "age_s": round(age, 1),
                            "threshold_s": limit,
                            "telemetry_age_s": round(tel_age, 1),
                            "position_age_s": _r(fix_age),
                            "last_telemetry_ts": tel.ts.isoformat(),
                            "last_fix_ts": None if fix is None else fix.ts.isoformat(),
                            "flight_mode": tel.flight_mode,
                            "battery_pct": tel.battery_pct,
                            "alt_takeoff_m": tel.alt_takeoff_m,
                            "lat": None if fix is None else fix.lat,
                            "lon": None if fix is None else fix.lon,
                        },
                    )
                )
        return events

    # -- internals -------------------------------------------------------------------------------------

    def _assess(self, states: Sequence[UnitState]) -> list[Endurance]:
        return self.model.assess_many([(s.unit.unit_id, s.drone, s.fix) for s in states])

    def _update(self, state: UnitState, e: Endurance, emit: bool) -> list[Event]:
        """Step the return, reserve and altitude machines of one drone; the events of the transitions."""
        tel = state.drone
        assert tel is not None
        uid = state.unit.unit_id
        cfg = self.settings
        fix = state.fix
        ts = tel.ts if fix is None or fix.ts <= tel.ts else fix.ts
        where: dict[str, Any] = {
            "lat": None if fix is None else fix.lat,
            "lon": None if fix is None else fix.lon,
            "alt_takeoff_m": tel.alt_takeoff_m,
            "battery_pct": tel.battery_pct,
            "flight_mode": tel.flight_mode,
            "profile": e.profile_key,
        }
        out: list[Event] = []
        airborne = e.airborne
        if not airborne:
            self._airborne_since.pop(uid, None)
        elif uid not in self._airborne_since:
            self._airborne_since[uid] = tel.ts

        # Return required: margin <= threshold (unknown margin: no decision either way).
        if not airborne:
            self._return.discard(uid)
        elif e.margin_s is not None:
            heading_home = tel.flight_mode in HOMEWARD_MODES
            if uid not in self._return and e.margin_s <= cfg.return_margin_s and not heading_home:
                self._return.add(uid)
                detail = {
                    "margin_s": round(e.margin_s, 1),
                    "threshold_s": cfg.return_margin_s,
                    "time_home_s": _r(e.time_home_s),
                    "distance_home_m": _r(e.distance_home_m),
                    "usable_remaining_s": _r(e.usable_remaining_s),
                    "limited_by": e.limited_by,
                    "home_source": e.home_source,
                    "home_lat": e.home_lat,
                    "home_lon": e.home_lon,
                    **where,
                }
                out.append(Event(EventType.DRONE_RETURN_REQUIRED, ts, uid, detail=detail))
            elif uid in self._return and e.margin_s > cfg.return_margin_s + cfg.return_rearm_s:
                self._return.discard(uid)

        # Below reserve: the battery under the profile's reserve while flying.
        reserve_pct = e.profile.reserve * 100.0
        if not airborne:
            self._reserve.discard(uid)
        elif tel.battery_pct is not None:
            if uid not in self._reserve and tel.battery_pct < reserve_pct:
                self._reserve.add(uid)
                detail = {"reserve_pct": reserve_pct, "margin_s": _r(e.margin_s), **where}
                out.append(Event(EventType.DRONE_BELOW_RESERVE, ts, uid, detail=detail))
            elif uid in self._reserve and tel.battery_pct >= reserve_pct + cfg.reserve_rearm_pct:
                self._reserve.discard(uid)

        # Altitude above the limit (above take-off standing in for above ground: see the module docstring).
        alt = tel.alt_takeoff_m
        if alt is not None:
            if uid not in self._altitude and alt > cfg.altitude_limit_m:
                self._altitude.add(uid)
                detail = {"limit_m": cfg.altitude_limit_m, "alt_msl_m": tel.alt_msl_m, **where}
                out.append(Event(EventType.DRONE_ALTITUDE_EXCEEDED, ts, uid, detail=detail))
            elif uid in self._altitude and alt <= cfg.altitude_limit_m - cfg.altitude_rearm_m:
                self._altitude.discard(uid)
        return out if emit else []


def squadron_model(settings: Settings, docks: Sequence[Dock] = ()) -> SquadronModel:
    """The endurance model of the settings: aircraft table, per-drone profiles, docks, landing overhead.

    Raises :class:`ConfigError` naming the setting to fix (an unknown profile key).
    """
    cs = settings.coverage
    try:
        return SquadronModel(
            cs.profiles(), cs.default_profile, settings.drones.profiles, docks, landing_s=cs.takeoff_s
        )
    except ValueError as exc:
        raise ConfigError(
            f"{exc}: fix SERENAZGO_DRONES__PROFILES (keys of SERENAZGO_COVERAGE__AIRCRAFT)"
        ) from exc
