"""Unit events: geofences, restricted airspace, live → stale → lost and recovery, low battery, arrivals,
drone alerts.

Two layers:

- :class:`EventDetector` is the in-memory logic and does no I/O: it turns fleet
  changes and freshness sweeps into :class:`Event` values. Geofence membership
  goes through a :class:`~geo.geofence.GeofenceIndex` and the hysteresis machine
  of :mod:`geo.geofence` (enter on a fix ``geofence_margin_m`` deep inside, or
  after 3 consecutive fixes inside within the margin; exit likewise), battery
  through a re-armed threshold (``battery_low`` once at or below
  ``battery_low_pct``, again only after charging above ``battery_rearm_pct``),
  freshness through the per-kind thresholds of :mod:`tracker.freshness`.
  Restricted airspace (drones only) goes through a :class:`~geo.volumes.VolumeIndex`
  (footprint and altitude band, each with its margin) and the same hysteresis:
  ``airspace_entered`` / ``airspace_exited``. The altitude is the drone's newest
  ``alt_takeoff_m``; without one the footprint alone decides (the safe answer),
  and an aircraft reported docked or on the ground is in no airspace.
- :class:`EventEngine` wires it: it subscribes to the :class:`LiveFleet` (the
  callback runs on the ingest writer thread and does only the cheap in-memory
  work, under a lock), runs the periodic freshness sweep, and hands every event
  to one asyncio worker that stores it in ``events``, publishes it on
  ``serenazgo/events/{type}`` and passes it to the live feed. Ingest never
  waits for the database or the broker.

**What happens at start.** Membership, battery and freshness states are
computed from the fleet's current positions *without* emitting events: a unit
already inside a sector when the service starts is in it, not entering it (the
enter was reported before the restart, or happened while nobody watched). The
same holds for a geofence created later: units already inside it are members
at once, silently. Events report transitions observed while running.

**Geofence and airspace changes** rebuild their index from their table
(``geofences``, ``airspace_zones``) off the event loop and swap it in whole
under the engine's lock (copy-on-write), so the writer thread sees the old index
or the new one, never a half-built one. A deleted geofence or zone drops its
memberships without exit events.

**Several processes.** Each engine emits the events of the fleet it watches:
run one engine per deployment (next to the bridge), not one per API replica,
or events are stored once per replica. Geofences created through another
process are seen after :meth:`EventEngine.reload_geofences`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

from geo.geofence import (
    OUTSIDE,
    GeofenceError,
    GeofenceIndex,
    Hysteresis,
    Membership,
    Step,
    Zone,
    parse_feature,
    parse_feature_collection,
    parse_geometry,
)
from geo.volumes import VolumeIndex
from tracker.config import EventSettings
from tracker.errors import ConfigError, StorageError
from tracker.feed import FeedListener, no_feed
from tracker.fleet import FleetChange, LiveFleet, UnitState
from tracker.freshness import DEFAULT_THRESHOLDS, FreshnessThresholds, classify_freshness
from tracker.model import Freshness, UnitKind
from tracker.store import airspace as airspace_store
from tracker.store import events as event_store
from tracker.store import geofences as geofence_store
from tracker.store.geofences import StoredGeofence
from tracker.store.pool import AsyncDb, open_pool


class FleetWatcher(Protocol):
    """Extra alerts the engine steps with the fleet (the drones' endurance alerts, :mod:`drones.alerts`).

    A protocol rather than an import: ``tracker`` never imports ``drones``.
    """

    def seed(self, states: Iterable[UnitState], now: datetime) -> None:
        """Take over the conditions already true at start, silently."""

    def on_changes(self, changes: Sequence[FleetChange]) -> list[Event]:
        """Events raised by one batch of fleet changes."""

    def sweep(self, states: Iterable[UnitState], now: datetime, emit: bool = True) -> list[Event]:
        """Events raised by the passing of time (the periodic sweep)."""

    def active(self, unit_id: str) -> list[str]:
        """Event types active (fired, not re-armed) for ``unit_id``."""


log = logging.getLogger(__name__)

EVENT_TOPIC = "serenazgo/events/{type}"
DEFAULT_DWELL_FIXES = 3
STORE_ATTEMPTS = 3  # then the events are published and fed without an id (and counted as not stored)
MAX_QUEUED_EVENTS = 100_000  # beyond this (database down for long) new events are dropped and counted
_DELIVER_CHUNK = 1000
_ZONES = tuple(Zone)  # zone value -> Zone, without the enum call


class EventType(StrEnum):
    """What happened; also the last level of the MQTT topic ``serenazgo/events/{type}``."""

    GEOFENCE_ENTER = "geofence_enter"
    GEOFENCE_EXIT = "geofence_exit"
    UNIT_STALE = "unit_stale"  # live -> stale: no fix for the kind's stale threshold
    UNIT_LOST = "unit_lost"  # -> lost
    UNIT_LIVE = "unit_live"  # stale or lost -> live again (recovered)
    BATTERY_LOW = "battery_low"
    UNIT_ARRIVED = "unit_arrived"  # a dispatched unit reached its incident (written by the incident service)
    AIRSPACE_ENTERED = "airspace_entered"  # a drone entered a restricted zone (footprint and altitude band)
    AIRSPACE_EXITED = "airspace_exited"
    # Drones (drones.alerts, from the endurance model of drones.endurance):
    DRONE_RETURN_REQUIRED = "drone_return_required"  # return-home margin at or below drones.return_margin_s
    DRONE_BELOW_RESERVE = "drone_below_reserve"  # flying with the battery under the profile's reserve
    DRONE_TELEMETRY_LOST = "drone_telemetry_lost"  # airborne, no telemetry or fix for a while
    DRONE_ALTITUDE_EXCEEDED = "drone_altitude_exceeded"  # above drones.altitude_limit_m (above take-off)


@dataclass(frozen=True, slots=True)
class Event:
    """One event; ``event_id`` and ``recorded_at`` are set once stored."""

    type: str  # an EventType value (kept a str so rows of newer types still load)
    ts: datetime  # when it happened: the fix's time, or the sweep's for freshness changes
    unit_id: str | None = None
    geofence_id: str | None = None
    incident_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    event_id: int | None = None
    recorded_at: datetime | None = None

    @property
    def topic(self) -> str:
        """The MQTT topic this event is published on."""
        return EVENT_TOPIC.format(type=self.type)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the REST, WebSocket and MQTT shape).

        >>> ts = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        >>> Event("battery_low", ts, "ser-1", detail={"pct": 9}).to_json()  # doctest: +NORMALIZE_WHITESPACE
        {'event_id': None, 'type': 'battery_low', 'ts': '2026-01-02T03:04:05+00:00', 'unit_id': 'ser-1',
         'geofence_id': None, 'incident_id': None, 'detail': {'pct': 9}, 'recorded_at': None}
        """
        return {
            "event_id": self.event_id,
            "type": str(self.type),
            "ts": self.ts.isoformat(),
            "unit_id": self.unit_id,
            "geofence_id": self.geofence_id,
            "incident_id": self.incident_id,
            "detail": self.detail,
            "recorded_at": self.recorded_at.isoformat() if self.recorded_at else None,
        }


@dataclass(frozen=True, slots=True)
class GeofenceInfo:
    """What an event says about its geofence besides the id."""

    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class AirspaceInfo:
    """What an airspace event says about its zone besides the id (``ceiling_m`` inf: unlimited)."""

    name: str
    kind: str
    floor_m: float
    ceiling_m: float


_AIRBORNE_EXCLUDED_MODES = frozenset({"on_ground"})


def _airborne(state: UnitState) -> bool:
    """False when the drone's newest telemetry says it sits in its dock or on the ground."""
    d = state.drone
    return d is None or (d.docked is not True and d.flight_mode not in _AIRBORNE_EXCLUDED_MODES)


def _utcnow() -> datetime:
    return datetime.now(UTC)


# ----- the in-memory logic ------------------------------------------------------------------------


class EventDetector:
    """Fleet changes and sweeps in, events out; no I/O, no threads (callers serialise the calls)."""

    def __init__(
        self,
        settings: EventSettings,
        thresholds: Mapping[UnitKind, FreshnessThresholds] | None = None,
        dwell_fixes: int = DEFAULT_DWELL_FIXES,
    ) -> None:
        if not settings.battery_low_pct < settings.battery_rearm_pct:
            raise ConfigError(
                f"events: battery_rearm_pct ({settings.battery_rearm_pct}) must be above battery_low_pct "
                f"({settings.battery_low_pct}), or a unit at the threshold would re-arm and fire on every fix"
            )
        self.settings = settings
        self.thresholds = dict(thresholds or DEFAULT_THRESHOLDS)
        self.machine = Hysteresis(dwell_fixes)
        self.index = GeofenceIndex([], settings.geofence_margin_m)
        self.info: dict[str, GeofenceInfo] = {}
        # unit -> geofence -> membership, only for pairs that are not OUTSIDE (far away, settled).
        self._members: dict[str, dict[str, Membership]] = {}
        self._battery_low: set[str] = set()  # units whose battery_low fired and has not re-armed
        self._fresh: dict[str, Freshness] = {}  # last freshness of units that have a fix
        self._steps: dict[tuple[Membership, Zone], Step] = {}
        self.airspace = VolumeIndex([], settings.airspace_margin_m, settings.airspace_vertical_margin_m)
        self.airspace_info: dict[str, AirspaceInfo] = {}
        self._aloft: dict[str, dict[str, Membership]] = {}  # drone -> zone -> membership (not OUTSIDE)

    # -- state -------------------------------------------------------------------------------------

    def inside(self, unit_id: str) -> list[str]:
        """Ids of the geofences ``unit_id`` is a member of, sorted."""
        return sorted(g for g, m in self._members.get(unit_id, {}).items() if m.inside)

    def in_airspace(self, unit_id: str) -> list[str]:
        """Ids of the restricted zones drone ``unit_id`` is in, sorted."""
        return sorted(z for z, m in self._aloft.get(unit_id, {}).items() if m.inside)

    def freshness_of(self, unit_id: str) -> Freshness | None:
        """The freshness last seen for ``unit_id`` (None before its first fix)."""
        return self._fresh.get(unit_id)

    def battery_armed(self, unit_id: str) -> bool:
        """False while a fired battery_low waits for the battery to go above the re-arm level."""
        return unit_id not in self._battery_low

    def _freshness(self, kind: UnitKind, fix_ts: datetime, now: datetime) -> tuple[Freshness, float]:
        age = (now - fix_ts).total_seconds()
        return classify_freshness(age, kind, self.thresholds), age

    def seed(self, states: Iterable[UnitState], now: datetime) -> None:
        """Set every state from the fleet as it is now, without events (see the module docstring)."""
        placed = [s for s in states if s.fix is not None]
        self._members.clear()
        self._battery_low.clear()
        self._fresh.clear()
        self._aloft.clear()
        self._seed_members(placed, None)
        self._seed_aloft(placed, None)
        low = self.settings.battery_low_pct
        for s in placed:
            assert s.fix is not None
            if s.fix.battery is not None and s.fix.battery <= low:
                self._battery_low.add(s.unit.unit_id)
            self._fresh[s.unit.unit_id] = self._freshness(s.unit.kind, s.fix.ts, now)[0]

    def _seed_members(self, placed: Sequence[UnitState], only: set[str] | None) -> None:
        if not placed or len(self.index) == 0:
            return
        lat = np.fromiter((s.fix.lat for s in placed if s.fix), np.float64, len(placed))
        lon = np.fromiter((s.fix.lon for s in placed if s.fix), np.float64, len(placed))
        ids = self.index.ids
        for p, g, z in zip(*self.index.zones_many(lat, lon), strict=True):
            gid = ids[g]
            if only is not None and gid not in only:
                continue
            m = self.machine.initial(Zone(int(z)))
            if m != OUTSIDE:
                self._members.setdefault(placed[p].unit.unit_id, {})[gid] = m

    def _airspace_points(
        self, states: Sequence[UnitState]
    ) -> tuple[list[UnitState], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """The airborne drones among ``states`` with a fix, and their lat, lon, altitude (NaN: unknown)."""
        drones = [s for s in states if s.fix is not None and s.unit.kind is UnitKind.DRONE and _airborne(s)]
        n = len(drones)
        lat = np.fromiter((s.fix.lat for s in drones if s.fix), np.float64, n)
        lon = np.fromiter((s.fix.lon for s in drones if s.fix), np.float64, n)
        alt = np.fromiter(
            (
                np.nan if s.drone is None or s.drone.alt_takeoff_m is None else s.drone.alt_takeoff_m
                for s in drones
            ),
            np.float64,
            n,
        )
        return drones, lat, lon, alt

    def _seed_aloft(self, placed: Sequence[UnitState], only: set[str] | None) -> None:
        if not placed or len(self.airspace) == 0:
            return
        drones, lat, lon, alt = self._airspace_points(placed)
        ids = self.airspace.ids
        for p, v, z in zip(*self.airspace.zones_many(lat, lon, alt), strict=True):
            zid = ids[v]
            if only is not None and zid not in only:
                continue
            m = self.machine.initial(Zone(int(z)))
            if m != OUTSIDE:
                self._aloft.setdefault(drones[p].unit.unit_id, {})[zid] = m

    def set_airspace(
        self,
        index: VolumeIndex,
        info: Mapping[str, AirspaceInfo],
        states: Iterable[UnitState],
        reseed: Iterable[str] = (),
    ) -> None:
        """Swap in a new airspace index: drop removed zones' members, seed new (and ``reseed``) ones."""
        old_ids, new_ids = set(self.airspace.ids), set(index.ids)
        fresh_ids = (new_ids - old_ids) | (set(reseed) & new_ids)
        _drop(self._aloft, (old_ids - new_ids) | fresh_ids)
        self.airspace = index
        self.airspace_info = dict(info)
        if fresh_ids:
            self._seed_aloft([s for s in states if s.fix is not None], fresh_ids)

    def set_index(
        self,
        index: GeofenceIndex,
        info: Mapping[str, GeofenceInfo],
        states: Iterable[UnitState],
        reseed: Iterable[str] = (),
    ) -> None:
        """Swap in a new index: drop removed geofences' members, seed new (and ``reseed``) ones silently."""
        old_ids = set(self.index.ids)
        new_ids = set(index.ids)
        fresh_ids = (new_ids - old_ids) | (set(reseed) & new_ids)
        _drop(self._members, (old_ids - new_ids) | fresh_ids)
        self.index = index
        self.info = dict(info)
        if fresh_ids:
            self._seed_members([s for s in states if s.fix is not None], fresh_ids)

    # -- events ------------------------------------------------------------------------------------

    def on_changes(self, changes: Sequence[FleetChange], now: datetime) -> list[Event]:
        """Events from one applied batch: geofence crossings, battery low, recovery to live."""
        newest: dict[str, UnitState] = {}
        aloft: dict[str, UnitState] = {}  # drones: a telemetry report (altitude) can cross a floor too
        track_air = len(self.airspace) > 0 or bool(self._aloft)
        for change in changes:
            if change.kind == "position" and change.state.fix is not None:
                newest[change.unit_id] = change.state
            if (
                track_air
                and change.kind in ("position", "telemetry")
                and change.state.unit.kind is UnitKind.DRONE
            ):
                aloft[change.unit_id] = change.state  # the batch's last state holds its fix and telemetry
        events: list[Event] = []
        if aloft:
            self._airspace_events(list(aloft.values()), events)
        if not newest:
            return events
        states = list(newest.values())
        self._geofence_events(states, events)
        low, rearm = self.settings.battery_low_pct, self.settings.battery_rearm_pct
        for state in states:
            fix = state.fix
            assert fix is not None
            uid = state.unit.unit_id
            if fix.battery is not None:
                if uid not in self._battery_low and fix.battery <= low:
                    self._battery_low.add(uid)
                    events.append(
                        Event(
                            EventType.BATTERY_LOW,
                            fix.ts,
                            uid,
                            detail={"battery": fix.battery, "threshold": low, "lat": fix.lat, "lon": fix.lon},
                        )
                    )
                elif uid in self._battery_low and fix.battery > rearm:
                    self._battery_low.discard(uid)
            before = self._fresh.get(uid)
            if before is Freshness.LIVE:
                continue  # a new fix keeps a live unit live: nothing to decide (the common case)
            fresh, age = self._freshness(state.unit.kind, fix.ts, now)
            if fresh is Freshness.LIVE and before in (Freshness.STALE, Freshness.LOST):
                events.append(self._freshness_event(state, before, fresh, age, now))
            if before is None or fresh is Freshness.LIVE:
                # A late (old) fix never makes a unit staler here: the sweep decides that.
                self._fresh[uid] = fresh
        return events

    def _geofence_events(self, states: list[UnitState], events: list[Event]) -> None:
        index = self.index
        if len(index) == 0:
            return
        n = len(states)
        lat = np.fromiter((s.fix.lat for s in states if s.fix), np.float64, n)
        lon = np.fromiter((s.fix.lon for s in states if s.fix), np.float64, n)
        pi, gi, zi = index.zones_many(lat, lon)
        ids = index.ids
        near: dict[int, dict[str, Zone]] = {}  # state position -> geofence -> zone (not DEEP_OUT)
        for p, g, z in zip(pi.tolist(), gi.tolist(), zi.tolist(), strict=True):
            here = near.get(p)
            if here is None:
                near[p] = {ids[g]: _ZONES[z]}
            else:
                here[ids[g]] = _ZONES[z]
        self._apply_zones(self._members, states, near, self._geofence_event, events)

    def _airspace_events(self, states: list[UnitState], events: list[Event]) -> None:
        drones, lat, lon, alt = self._airspace_points(states)
        near: dict[int, dict[str, Zone]] = {}
        ids = self.airspace.ids
        for p, v, z in zip(*(a.tolist() for a in self.airspace.zones_many(lat, lon, alt)), strict=True):
            near.setdefault(p, {})[ids[v]] = _ZONES[z]
        # Drones on the ground (or without a fix) are in no airspace: a member among them exits.
        grounded = [
            s for s in states if s.unit.unit_id in self._aloft and s.fix is not None and not _airborne(s)
        ]
        self._apply_zones(self._aloft, drones + grounded, near, self._airspace_event, events)

    def _apply_zones(
        self,
        all_members: dict[str, dict[str, Membership]],
        states: list[UnitState],
        near: Mapping[int, dict[str, Zone]],
        make_event: Callable[[UnitState, str, Step], Event],
        events: list[Event],
    ) -> None:
        """Step each unit's memberships with its zones (``near``: state position -> zone id -> zone)."""
        step_cached = self._step_cached
        no_zones: dict[str, Zone] = {}
        for p, state in enumerate(states):
            uid = state.unit.unit_id
            members = all_members.get(uid)
            here = near.get(p)
            if here is None:
                if members is None:
                    continue  # far from every zone, as before: nothing to do (the common case)
                here = no_zones
            if members is None:
                members = all_members[uid] = {}
            # Usually the unit is near the same zones as before: no set union needed.
            gids = here.keys() if here.keys() == members.keys() else here.keys() | members.keys()
            for gid in gids:
                old = members.get(gid, OUTSIDE)
                step = step_cached(old, here.get(gid, Zone.DEEP_OUT))
                new = step.membership
                if new is not old:
                    if new == OUTSIDE:
                        members.pop(gid, None)
                    else:
                        members[gid] = new
                if step.crossing is not None:
                    events.append(make_event(state, gid, step))
            if not members:
                del all_members[uid]

    def _step_cached(self, membership: Membership, zone: Zone) -> Step:
        """The machine's step, memoised: there are only a few distinct (membership, zone) pairs."""
        key = (membership, zone)
        step = self._steps.get(key)
        if step is None:
            step = self._steps[key] = self.machine.step(membership, zone)
        return step

    def _geofence_event(self, state: UnitState, gid: str, step: Step) -> Event:
        fix = state.fix
        assert fix is not None
        info = self.info.get(gid, GeofenceInfo(gid, "other"))
        return Event(
            EventType.GEOFENCE_ENTER if step.membership.inside else EventType.GEOFENCE_EXIT,
            fix.ts,
            state.unit.unit_id,
            gid,
            detail={"name": info.name, "kind": info.kind, "lat": fix.lat, "lon": fix.lon, "rule": step.rule},
        )

    def _airspace_event(self, state: UnitState, zone_id: str, step: Step) -> Event:
        fix = state.fix
        assert fix is not None
        info = self.airspace_info.get(zone_id, AirspaceInfo(zone_id, "other", 0.0, float("inf")))
        drone = state.drone
        ts = fix.ts if drone is None or drone.ts < fix.ts else drone.ts
        return Event(
            EventType.AIRSPACE_ENTERED if step.membership.inside else EventType.AIRSPACE_EXITED,
            ts,
            state.unit.unit_id,
            detail={
                "zone_id": zone_id,
                "name": info.name,
                "kind": info.kind,
                "floor_m": info.floor_m,
                "ceiling_m": None if info.ceiling_m == float("inf") else info.ceiling_m,
                "lat": fix.lat,
                "lon": fix.lon,
                "alt_m": None if drone is None else drone.alt_takeoff_m,
                "on_ground": not _airborne(state),
                "rule": step.rule,
            },
        )

    def _freshness_event(
        self, state: UnitState, before: Freshness, after: Freshness, age: float, now: datetime
    ) -> Event:
        etype = {
            Freshness.LIVE: EventType.UNIT_LIVE,
            Freshness.STALE: EventType.UNIT_STALE,
            Freshness.LOST: EventType.UNIT_LOST,
        }[after]
        fix = state.fix
        assert fix is not None
        return Event(
            etype,
            now,
            state.unit.unit_id,
            detail={
                "from": str(before),
                "to": str(after),
                "age_s": round(age, 1),
                "last_fix_ts": fix.ts.isoformat(),
                "kind": str(state.unit.kind),
                "lat": fix.lat,
                "lon": fix.lon,
            },
        )

    def sweep(self, states: Iterable[UnitState], now: datetime) -> list[Event]:
        """Freshness transitions at ``now``: live → stale, → lost, and back to live.

        Lost → stale (an old fix uploaded late) is followed silently.
        """
        events: list[Event] = []
        for state in states:
            fix = state.fix
            if fix is None:
                continue
            uid = state.unit.unit_id
            fresh, age = self._freshness(state.unit.kind, fix.ts, now)
            before = self._fresh.get(uid)
            if before is fresh:
                continue
            self._fresh[uid] = fresh
            if before is None or (before is Freshness.LOST and fresh is Freshness.STALE):
                continue
            events.append(self._freshness_event(state, before, fresh, age, now))
        return events


def _drop(all_members: dict[str, dict[str, Membership]], ids: set[str]) -> None:
    """Forget every unit's membership of the zones ``ids`` (removed or re-seeded)."""
    if not ids:
        return
    for unit_id in list(all_members):
        members = all_members[unit_id]
        for gid in ids & members.keys():
            del members[gid]
        if not members:
            del all_members[unit_id]


# ----- the engine ---------------------------------------------------------------------------------


@dataclass(slots=True)
class EventStats:
    """Counters of one engine (read from any thread)."""

    emitted: int = 0
    stored: int = 0
    store_failed: int = 0  # published and fed without an id: the database refused them
    published: int = 0
    publish_failed: int = 0  # the broker was not connected (best effort)
    dropped: int = 0  # the queue was full, or the engine was not running
    queued: int = 0
    geofences: int = 0
    airspace_zones: int = 0


class EventEngine:
    """Detects unit events from a :class:`LiveFleet`, stores, publishes and feeds them; manages geofences.

    ``db``: an async pool (or connection) to use, or a conninfo string, in which
    case the engine opens (and closes) its own small pool. ``thresholds``:
    freshness per unit kind (``Settings.freshness``). ``publish(topic, payload)``:
    a best-effort publisher such as ``AckClient.publish``; events go to MQTT only
    when it is given and ``settings.publish_mqtt`` is on. ``feed``: the live feed
    listener. ``geofences_file``: a GeoJSON FeatureCollection upserted into the
    ``geofences`` table at start (``Settings.geofences``). ``clock``: the time
    of the freshness decisions (tests pass a controlled one). ``drones``: the
    drone alerts (:class:`drones.alerts.DroneAlerts`: return required,
    below reserve, telemetry lost, altitude), stepped with the same changes and
    sweeps under the same lock; None: no drone alerts.

    :meth:`start` and :meth:`stop` run on the event loop that serves the engine;
    geofence and event queries are coroutines on that same loop.
    """

    def __init__(
        self,
        db: AsyncDb | str,
        fleet: LiveFleet,
        settings: EventSettings,
        thresholds: Mapping[UnitKind, FreshnessThresholds] | None = None,
        publish: Callable[[str, bytes], bool] | None = None,
        feed: FeedListener = no_feed,
        *,
        geofences_file: Path | None = None,
        clock: Callable[[], datetime] = _utcnow,
        dwell_fixes: int = DEFAULT_DWELL_FIXES,
        max_queued: int = MAX_QUEUED_EVENTS,
        drones: FleetWatcher | None = None,
    ) -> None:
        self._conninfo = db if isinstance(db, str) else None
        self._db: AsyncDb | None = None if isinstance(db, str) else db
        self.fleet = fleet
        self.settings = settings
        self.publish = publish
        self.feed = feed
        self.geofences_file = geofences_file
        self.clock = clock
        self.max_queued = max_queued
        self.detector = EventDetector(settings, thresholds, dwell_fixes)
        self.drones = drones
        self.stats = EventStats()
        self._lock = threading.Lock()  # the detector's state: writer thread, sweep, geofence swaps
        self._count_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[list[Event] | None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._running = False
        self._reload_lock: asyncio.Lock | None = None
        self._geometries: dict[str, dict[str, Any]] = {}
        self._zone_rows: dict[str, tuple[Any, ...]] = {}  # zone id -> (geometry, floor, ceiling) indexed

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._running

    @property
    def db(self) -> AsyncDb:
        """The database the engine uses (its own pool once started with a conninfo)."""
        if self._db is None:
            raise StorageError("the event engine is not started (it opens its database pool at start)")
        return self._db

    async def start(self) -> None:
        """Open the pool (for a conninfo), load geofences, seed states silently, subscribe, start tasks."""
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._reload_lock = asyncio.Lock()
        if self._db is None:
            assert self._conninfo is not None
            self._db = await open_pool(self._conninfo, min_size=1, max_size=3)
        try:
            if self.geofences_file is not None:
                await self.load_geofences_file(self.geofences_file)
            index, info, geometries = await self._build_index()
            airspace, airspace_info, zone_rows = await self._build_airspace()
            self._queue = asyncio.Queue()
            self._running = True
            with self._lock:
                self.detector.set_index(index, info, ())
                self.detector.set_airspace(airspace, airspace_info, ())
                self._geometries = geometries
                self._zone_rows = zone_rows
                # Subscribing and seeding under the lock: a batch applied meanwhile waits for the seed.
                self._unsubscribe = self.fleet.subscribe(self._on_changes)
                snapshot, now = self.fleet.snapshot(), self.clock()
                self.detector.seed(snapshot, now)
                if self.drones is not None:
                    self.drones.seed(snapshot, now)
            self.stats.geofences = len(index)
            self.stats.airspace_zones = len(airspace)
        except BaseException:
            await self._close_pool()
            self._running = False
            raise
        self._worker = asyncio.create_task(self._work(), name="events-worker")
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="events-sweep")

    async def stop(self) -> None:
        """Unsubscribe, stop the sweep, deliver everything queued, close the own pool."""
        if not self._running:
            return
        self._running = False
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await asyncio.sleep(0)  # let hand-overs already scheduled by other threads land in the queue
        if self._queue is not None and self._worker is not None:
            self._queue.put_nowait(None)  # the stop marker
            await self._worker
        await self._close_pool()

    async def _close_pool(self) -> None:
        if self._conninfo is not None and self._db is not None:
            db, self._db = self._db, None
            await db.close()

    # -- hand-over -----------------------------------------------------------------------------------

    def _on_changes(self, changes: list[FleetChange]) -> None:
        """Fleet subscriber (ingest writer thread): in-memory detection only, then hand over."""
        now = self.clock()
        with self._lock:
            events = self.detector.on_changes(changes, now)
            if self.drones is not None:
                events.extend(self.drones.on_changes(changes))
        if events:
            self.emit(events)

    def emit(self, events: Sequence[Event]) -> None:
        """Queue events for storage, MQTT and the feed; callable from any thread, never blocks.

        The incident service reports ``unit_arrived`` through here.
        """
        if not events:
            return
        loop, queue = self._loop, self._queue
        n = len(events)
        with self._count_lock:
            if not self._running or loop is None or queue is None or self.stats.queued + n > self.max_queued:
                self.stats.dropped += n
                log.warning("dropped %d event(s): the event engine is not running or its queue is full", n)
                return
            self.stats.queued += n
            self.stats.emitted += n
        batch = list(events)
        try:
            loop.call_soon_threadsafe(queue.put_nowait, batch)
        except RuntimeError:  # the loop is closed (shutdown)
            with self._count_lock:
                self.stats.queued -= n
                self.stats.dropped += n

    async def flush(self) -> None:
        """Wait until every event queued so far is stored, published and fed (tests, shutdown)."""
        await asyncio.sleep(0)  # hand-overs from other threads scheduled before this call
        if self._queue is not None:
            await self._queue.join()

    # -- worker --------------------------------------------------------------------------------------

    async def _work(self) -> None:
        queue = self._queue
        assert queue is not None
        stopping = False
        while not stopping:
            item = await queue.get()
            taken = 1
            events: list[Event] = []
            if item is None:
                stopping = True
            else:
                events.extend(item)
            # Take what else is waiting: one transaction for many events.
            while not stopping and len(events) < _DELIVER_CHUNK and not queue.empty():
                item = queue.get_nowait()
                taken += 1
                if item is None:
                    stopping = True
                else:
                    events.extend(item)
            try:
                if events:
                    await self._deliver(events, final=stopping)
            except Exception:
                log.exception("event delivery failed")
            finally:
                with self._count_lock:
                    self.stats.queued -= len(events)
                for _ in range(taken):
                    queue.task_done()
        # Anything handed over after the stop marker (a racing writer thread) is delivered too.
        rest: list[Event] = []
        while not queue.empty():
            item = queue.get_nowait()
            if item is not None:
                rest.extend(item)
            queue.task_done()
        if rest:
            await self._deliver(rest, final=True)
            with self._count_lock:
                self.stats.queued -= len(rest)

    async def _deliver(self, events: list[Event], final: bool) -> None:
        stored: list[Event] | None = None
        for attempt in range(1 if final else STORE_ATTEMPTS):
            try:
                stored = await event_store.insert_events(self.db, events)
                break
            except StorageError as exc:
                log.warning("cannot store %d event(s) (attempt %d): %s", len(events), attempt + 1, exc)
                if attempt + 1 < STORE_ATTEMPTS and not final:
                    await asyncio.sleep(0.5 * 2**attempt)
        if stored is None:
            self.stats.store_failed += len(events)
            stored = events
        else:
            self.stats.stored += len(stored)
        publish = self.publish if self.settings.publish_mqtt else None
        for event in stored:
            payload = event.to_json()
            if publish is not None:
                try:
                    ok = publish(event.topic, orjson.dumps(payload))
                except Exception:
                    log.exception("publishing event %s failed", event.type)
                    ok = False
                if ok:
                    self.stats.published += 1
                else:
                    self.stats.publish_failed += 1
            try:
                self.feed("event", payload)
            except Exception:
                log.exception("the live feed refused an event")

    # -- freshness -----------------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        period = max(0.05, self.settings.freshness_sweep_s)
        while True:
            await asyncio.sleep(period)
            try:
                self.sweep_once()
            except Exception:
                log.exception("freshness sweep failed")

    def sweep_once(self, now: datetime | None = None) -> list[Event]:
        """Run one freshness sweep at ``now`` (default: the clock) and queue its events; return them."""
        states = self.fleet.snapshot()
        when = now or self.clock()
        with self._lock:
            events = self.detector.sweep(states, when)
            if self.drones is not None:
                events.extend(self.drones.sweep(states, when))
        self.emit(events)
        return events

    # -- state for readers -----------------------------------------------------------------------------

    def inside(self, unit_id: str) -> list[str]:
        """Ids of the geofences ``unit_id`` is in now (after hysteresis)."""
        with self._lock:
            return self.detector.inside(unit_id)

    def in_airspace(self, unit_id: str) -> list[str]:
        """Ids of the restricted zones drone ``unit_id`` is in now (after hysteresis)."""
        with self._lock:
            return self.detector.in_airspace(unit_id)

    def drone_alerts(self, unit_id: str) -> list[str]:
        """The drone alerts active for ``unit_id`` (fired, not re-armed), as event types."""
        if self.drones is None:
            return []
        with self._lock:
            return self.drones.active(unit_id)

    @property
    def index(self) -> GeofenceIndex:
        """The current geofence index (immutable; replaced whole on change)."""
        return self.detector.index

    # -- geofences -----------------------------------------------------------------------------------

    async def _build_index(
        self,
    ) -> tuple[GeofenceIndex, dict[str, GeofenceInfo], dict[str, dict[str, Any]]]:
        stored = await geofence_store.list_geofences(self.db, active_only=True)
        info = {g.geofence_id: GeofenceInfo(g.name, g.kind) for g in stored}
        geometries = {g.geofence_id: g.geometry for g in stored}
        margin = self.settings.geofence_margin_m

        def build() -> GeofenceIndex:
            pairs = []
            for g in stored:
                try:
                    pairs.append((g.geofence_id, parse_feature(g.to_feature()).area))
                except GeofenceError as exc:
                    # Rows written by other tools: one bad row must not take every geofence down.
                    log.error(
                        "geofence %r in the database is unusable and is ignored: %s", g.geofence_id, exc
                    )
            return GeofenceIndex(pairs, margin)

        return await asyncio.to_thread(build), info, geometries

    async def reload_geofences(self) -> None:
        """Rebuild the index from the ``geofences`` table and swap it in (memberships of new ones seeded)."""
        assert self._reload_lock is not None, "start the engine first"
        async with self._reload_lock:
            index, info, geometries = await self._build_index()
            with self._lock:
                changed = {g for g, geom in geometries.items() if self._geometries.get(g, geom) != geom}
                self.detector.set_index(index, info, self.fleet.snapshot(), changed)
                self._geometries = geometries
            self.stats.geofences = len(index)

    # -- restricted airspace -------------------------------------------------------------------------

    async def _build_airspace(
        self,
    ) -> tuple[VolumeIndex, dict[str, AirspaceInfo], dict[str, tuple[Any, ...]]]:
        stored = await airspace_store.list_zones(self.db)
        info = {z.zone_id: AirspaceInfo(z.name, z.kind, z.floor_m, z.ceiling_m) for z in stored}
        rows = {z.zone_id: (z.geometry, z.floor_m, z.ceiling_m) for z in stored}
        settings = self.settings

        def build() -> VolumeIndex:
            volumes = []
            for z in stored:
                try:
                    volumes.append((z.zone_id, parse_geometry(z.geometry), z.floor_m, z.ceiling_m))
                except GeofenceError as exc:
                    log.error(
                        "airspace zone %r in the database is unusable and is ignored: %s", z.zone_id, exc
                    )
            return VolumeIndex(volumes, settings.airspace_margin_m, settings.airspace_vertical_margin_m)

        return await asyncio.to_thread(build), info, rows

    async def reload_airspace(self) -> None:
        """Rebuild the airspace index from ``airspace_zones`` and swap it in (changed zones re-seeded).

        The API calls it after every change it makes; zones written by another
        process are seen after a call.
        """
        assert self._reload_lock is not None, "start the engine first"
        async with self._reload_lock:
            index, info, rows = await self._build_airspace()
            with self._lock:
                changed = {z for z, row in rows.items() if self._zone_rows.get(z, row) != row}
                self.detector.set_airspace(index, info, self.fleet.snapshot(), changed)
                self._zone_rows = rows
            self.stats.airspace_zones = len(index)

    # -- geofences (CRUD) ----------------------------------------------------------------------------

    async def list_geofences(self) -> list[StoredGeofence]:
        """Every stored geofence, in id order."""
        return await geofence_store.list_geofences(self.db)

    async def get_geofence(self, geofence_id: str) -> StoredGeofence:
        """One geofence; :class:`~tracker.store.geofences.GeofenceNotFoundError` if unknown."""
        return await geofence_store.get_geofence(self.db, geofence_id)

    async def create_geofence(self, feature: object, created_by: str = "") -> StoredGeofence:
        """Validate a GeoJSON Feature, store it and put it in the index.

        Raises :class:`~geo.geofence.GeofenceError` (what to fix in the GeoJSON) or
        :class:`~tracker.store.geofences.DuplicateGeofenceError`.
        """
        parsed = await asyncio.to_thread(parse_feature, feature)
        stored = await geofence_store.insert_geofence(
            self.db,
            StoredGeofence(
                parsed.geofence_id,
                parsed.name,
                parsed.kind,
                parsed.geometry,
                parsed.properties,
                created_by=created_by,
            ),
        )
        await self.reload_geofences()
        return stored

    async def delete_geofence(self, geofence_id: str) -> None:
        """Delete a geofence and drop it from the index (no exit events for its members)."""
        await geofence_store.delete_geofence(self.db, geofence_id)
        await self.reload_geofences()

    async def load_geofences_file(self, path: Path) -> int:
        """Upsert the geofences of a GeoJSON FeatureCollection file; return how many. ConfigError if bad."""
        try:
            collection = json.loads(await asyncio.to_thread(path.read_text, encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"geofences file {path} not found: fix SERENAZGO_GEOFENCES") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"geofences file {path} is not readable GeoJSON ({exc})") from exc
        try:
            features = await asyncio.to_thread(parse_feature_collection, collection)
        except GeofenceError as exc:
            raise ConfigError(f"geofences file {path}: {exc}") from exc
        await geofence_store.upsert_geofences(
            self.db,
            [
                StoredGeofence(
                    f.geofence_id, f.name, f.kind, f.geometry, f.properties, created_by=f"file:{path}"
                )
                for f in features
            ],
        )
        if self._running:
            await self.reload_geofences()
        return len(features)

    # -- events --------------------------------------------------------------------------------------

    async def list_events(
        self,
        *,
        after_id: int | None = None,
        since: datetime | None = None,
        types: Sequence[str] | None = None,
        unit_id: str | None = None,
        geofence_id: str | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Stored events, oldest id first (see :func:`tracker.store.events.list_events`)."""
        return await event_store.list_events(
            self.db,
            after_id=after_id,
            since=since,
            types=types,
            unit_id=unit_id,
            geofence_id=geofence_id,
            limit=limit,
        )
