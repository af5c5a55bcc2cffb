"""LiveFleet: the latest known state of every unit, in memory, with change notifications.

Fed by the ingest bridge after each batch commits (so it never shows a position
the database does not have), loaded from ``unit_latest`` at start, and read by
the API and, later, the geospatial index. Subscribers get one call per batch
with every change in it; they run on the writer thread and must be quick
(asyncio consumers hand over with ``loop.call_soon_threadsafe``).

States are immutable and replaced on change, so readers and subscribers share
them without copies and never see a half-applied update.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from tracker.batch import NOT_LATEST
from tracker.freshness import DEFAULT_THRESHOLDS, FreshnessThresholds, classify_freshness
from tracker.model import DroneTelemetry, Freshness, Ping, PingFlag, StatusUpdate, Unit, UnitKind, UnitStatus

log = logging.getLogger(__name__)

_NOT_LATEST = int(NOT_LATEST)
_JITTER = int(PingFlag.JITTER)

ChangeKind = Literal["position", "status", "unit", "connection", "telemetry"]


@dataclass(slots=True, frozen=True)
class UnitState:
    """What is known about one unit right now (immutable: a change makes a new state)."""

    unit: Unit
    fix: Ping | None = None  # the position shown: newest trustworthy fix (jitter keeps the old place)
    status: UnitStatus = UnitStatus.AVAILABLE
    status_ts: datetime | None = None
    connected: bool | None = None  # False after an OwnTracks last-will; None when unknown
    drone: DroneTelemetry | None = None  # a drone's newest telemetry (battery, altitude, mode)


@dataclass(slots=True, frozen=True)
class FleetChange:
    """One change to one unit, as sent to subscribers."""

    kind: ChangeKind
    unit_id: str
    state: UnitState


Subscriber = Callable[[list[FleetChange]], None]


def _placed_at(ping: Ping, anchor: Ping) -> Ping:
    """``replace(ping, lat=anchor.lat, lon=anchor.lon, alt=anchor.alt)``, without replace's overhead."""
    p = ping
    return Ping(
        p.unit_id, p.ts, anchor.lat, anchor.lon, anchor.alt, p.speed, p.heading, p.accuracy, p.battery,
        p.flags, p.source, p.received_at,
    )  # fmt: skip


class LiveFleet:
    """Latest state per unit; thread-safe; notifies subscribers of changes per batch."""

    def __init__(self, thresholds: dict[UnitKind, FreshnessThresholds] | None = None) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, UnitState] = {}
        self._subscribers: list[Subscriber] = []
        self._thresholds = thresholds or DEFAULT_THRESHOLDS

    def __len__(self) -> int:
        return len(self._states)

    def load(
        self, units: Iterable[Unit], latest: Iterable[Ping], telemetry: Iterable[DroneTelemetry] = ()
    ) -> None:
        """Fill the fleet from the database at start (units, their latest fixes and drone telemetry)."""
        with self._lock:
            for unit in units:
                self._states[unit.unit_id] = UnitState(unit=unit, status=unit.status)
            for ping in latest:
                state = self._states.get(ping.unit_id)
                if state is not None:
                    self._states[ping.unit_id] = replace(state, fix=ping)
            for report in telemetry:
                state = self._states.get(report.unit_id)
                if state is not None:
                    self._states[report.unit_id] = replace(state, drone=report)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(changes)`` after every applied batch; returns the unsubscribe function."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def get(self, unit_id: str) -> UnitState | None:
        """Return one unit's state, or None if unknown."""
        return self._states.get(unit_id)

    def snapshot(self) -> list[UnitState]:
        """Return every unit's state, in unit id order."""
        with self._lock:
            states = dict(self._states)
        return [states[k] for k in sorted(states)]

    def freshness(self, state: UnitState, now: datetime) -> Freshness:
        """Return the freshness of ``state``'s fix at ``now`` (LOST when it has none)."""
        if state.fix is None:
            return Freshness.LOST
        age = (now - state.fix.ts).total_seconds()
        return classify_freshness(age, state.unit.kind, self._thresholds)

    def upsert_unit(self, unit: Unit) -> None:
        """Add a unit (or replace its description, keeping its position and status)."""
        with self._lock:
            old = self._states.get(unit.unit_id)
            state = UnitState(unit=unit, status=unit.status) if old is None else replace(old, unit=unit)
            self._states[unit.unit_id] = state
            changes = [FleetChange("unit", unit.unit_id, state)]
        self._notify(changes)

    def apply(
        self,
        pings: Iterable[Ping] = (),
        statuses: Iterable[tuple[str, StatusUpdate]] = (),
        disconnected: Iterable[str] = (),
        telemetry: Iterable[DroneTelemetry] = (),
    ) -> list[FleetChange]:
        """Apply a committed batch with the same rules as ``unit_latest``; notify and return the changes.

        A ping moves a unit only forward in time and only when it is not SUSPECT,
        OUTLIER or LATE; a JITTER ping refreshes time, speed and battery but keeps
        the previous position so a stationary unit does not wander on the map.
        """
        # Per unit, the newest eligible ping of the batch (only it can become the shown fix)
        # and the newest one that moved (where a JITTER newest fix really stands).
        newest: dict[str, Ping] = {}
        moved: dict[str, Ping] = {}
        get_new, get_moved = newest.get, moved.get
        for ping in pings:
            flags = int(ping.flags)  # IntFlag's "&" runs Python-level enum code (~1 µs)
            if flags & _NOT_LATEST:
                continue
            uid = ping.unit_id
            seen = get_new(uid)
            if seen is None or ping.ts > seen.ts:
                newest[uid] = ping
            if not flags & _JITTER:
                seen = get_moved(uid)
                if seen is None or ping.ts > seen.ts:
                    moved[uid] = ping
        newest_telemetry: dict[str, DroneTelemetry] = {}
        for report in telemetry:
            seen_t = newest_telemetry.get(report.unit_id)
            if seen_t is None or report.ts > seen_t.ts:
                newest_telemetry[report.unit_id] = report
        changes: list[FleetChange] = []
        with self._lock:
            states = self._states
            for unit_id, ping in newest.items():
                state = states.get(unit_id)
                if state is None:
                    continue
                old = state.fix
                if old is not None and old.ts >= ping.ts:
                    continue
                if int(ping.flags) & _JITTER:
                    anchor = get_moved(unit_id)
                    if anchor is None or (old is not None and anchor.ts <= old.ts):
                        anchor = old
                    if anchor is not None:
                        ping = _placed_at(ping, anchor)
                state = states[unit_id] = UnitState(
                    state.unit, ping, state.status, state.status_ts, True, state.drone
                )
                changes.append(FleetChange("position", unit_id, state))
            for unit_id, update in statuses:
                state = states.get(unit_id)
                if state is None or (state.status_ts is not None and state.status_ts >= update.ts):
                    continue
                state = states[unit_id] = replace(state, status=update.status, status_ts=update.ts)
                changes.append(FleetChange("status", unit_id, state))
            for unit_id in disconnected:
                state = states.get(unit_id)
                if state is not None and state.connected is not False:
                    state = states[unit_id] = replace(state, connected=False)
                    changes.append(FleetChange("connection", unit_id, state))
            for unit_id, report in newest_telemetry.items():
                state = states.get(unit_id)
                if state is None or (state.drone is not None and state.drone.ts >= report.ts):
                    continue
                state = states[unit_id] = replace(state, drone=report)
                changes.append(FleetChange("telemetry", unit_id, state))
        self._notify(changes)
        return changes

    def _notify(self, changes: list[FleetChange]) -> None:
        if not changes:
            return
        for callback in list(self._subscribers):
            try:
                callback(changes)
            except Exception:
                # A broken subscriber must never stop ingest.
                log.exception("LiveFleet subscriber %r failed", callback)
