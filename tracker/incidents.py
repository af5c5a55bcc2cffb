"""Incidents and assignments: the dispatch life cycle, arrival detection and response-time statistics.

An incident is reported (``open``), gets units (``assigned``), a unit sets off
(``en_route``, reported by the unit on its status topic), a unit reaches it
(``on_scene``: detected from its positions, or reported by the unit), and it
ends ``closed`` (with a resolution) or ``cancelled``. :data:`TRANSITIONS` is the
whole table; every change goes through :func:`check_transition`.

Units follow their incident: assignment sets the unit ``dispatched`` (in the
database and in the LiveFleet, so nearest-unit queries stop offering it),
arrival sets it ``on_scene``, and release, close and cancel make it
``available`` again. Every state change writes an ``audit_log`` row and is
announced on the live feed as ``("incident", incident.to_json())``.

Arrival detection runs on the LiveFleet's change notifications, which arrive
on the ingest writer thread: there the service only looks the unit up in its
map of open assignments and measures one great-circle distance; the database
work goes to the asyncio loop (``run_coroutine_threadsafe``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection

from geo.distance import haversine_m
from tracker.config import DispatchSettings
from tracker.dispatch import Candidate
from tracker.errors import SerenazgoError, StorageError, UnitNotFoundError
from tracker.feed import FeedListener, no_feed
from tracker.fleet import FleetChange, LiveFleet, UnitState
from tracker.model import Freshness, Ping, StatusUpdate, Unit, UnitKind, UnitStatus
from tracker.store import audit as audit_store
from tracker.store import incidents as store
from tracker.store.pool import AsyncDb, connection, open_pool

log = logging.getLogger(__name__)

Recommender = Callable[[float, float, int], list[Candidate]]
# Aliases used inside IncidentService, whose ``list`` method shadows the builtin in its class body.
_Changes = list[FleetChange]
_Candidates = list[Candidate]
_Released = list[tuple[str, datetime | None]]

# How many ranked units assignment looks through for the chosen unit's predicted ETA.
ASSIGN_LOOKUP_K = 50
PRIORITY_MIN, PRIORITY_MAX, PRIORITY_DEFAULT = 1, 5, 3
TEXT_MAX = 4000  # description, address, resolution
SYSTEM_ACTOR = "system"
POOL_SIZE = 4  # connections of the service's own pool (when given a conninfo)
# Events out (DESIGN.md wire contract); the same topic and payload shape as tracker.events.Event.
EVENT_TOPIC = "serenazgo/events/{type}"
ARRIVAL_EVENT = "unit_arrived"


# ----- vocabulary ---------------------------------------------------------------------------


class IncidentCategory(StrEnum):
    """What kind of incident (the categories Miraflores' Central Alerta reports by)."""

    FISCALIZACION = "fiscalizacion"
    SEGURIDAD_CIUDADANA = "seguridad_ciudadana"
    OBRAS_SERVICIOS = "obras_servicios"
    DEFENSA_CIVIL = "defensa_civil"
    SEGURIDAD_VIAL = "seguridad_vial"
    APOYO_TURISTA = "apoyo_turista"
    OTRO = "otro"


class Channel(StrEnum):
    """How the incident reached the centre."""

    PATROL = "patrol"
    CAMERA = "camera"
    WHATSAPP = "whatsapp"
    PHONE = "phone"
    SOCIAL = "social"
    OTHER = "other"


class IncidentStatus(StrEnum):
    """Where an incident is in its life cycle."""

    OPEN = "open"
    ASSIGNED = "assigned"
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    CLOSED = "closed"
    CANCELLED = "cancelled"


_S = IncidentStatus

# Every allowed change of an incident's status. Back to OPEN: its last unit was released before
# anyone arrived. ASSIGNED -> ON_SCENE: a unit arrived without reporting en_route. CLOSED from
# ASSIGNED/EN_ROUTE: resolved before arrival (or arrival was never detected); ON_SCENE stays
# ON_SCENE when its units leave (someone was there) until an operator closes it.
TRANSITIONS: dict[IncidentStatus, frozenset[IncidentStatus]] = {
    _S.OPEN: frozenset({_S.ASSIGNED, _S.CANCELLED}),
    _S.ASSIGNED: frozenset({_S.OPEN, _S.EN_ROUTE, _S.ON_SCENE, _S.CLOSED, _S.CANCELLED}),
    _S.EN_ROUTE: frozenset({_S.OPEN, _S.ON_SCENE, _S.CLOSED, _S.CANCELLED}),
    _S.ON_SCENE: frozenset({_S.CLOSED, _S.CANCELLED}),
    _S.CLOSED: frozenset(),
    _S.CANCELLED: frozenset(),
}
TERMINAL = frozenset({_S.CLOSED, _S.CANCELLED})
# Statuses an operator sets directly; the others follow the units.
OPERATOR_STATUSES = frozenset({_S.CLOSED, _S.CANCELLED})
# Unit statuses that dispatch set, and that release therefore undoes (out_of_service is the unit's own).
_DISPATCH_UNIT_STATUSES = frozenset({UnitStatus.DISPATCHED, UnitStatus.EN_ROUTE, UnitStatus.ON_SCENE})


# ----- errors -------------------------------------------------------------------------------


class IncidentNotFoundError(SerenazgoError, LookupError):
    """No incident with that id."""

    def __init__(self, incident_id: int) -> None:
        self.incident_id = incident_id
        super().__init__(f"incident {incident_id} does not exist: list incidents with GET /api/v1/incidents")


class IncidentInputError(SerenazgoError, ValueError):
    """A request about incidents is malformed (the message says what to send instead)."""


class IncidentConflictError(SerenazgoError):
    """The request is well formed but the current state forbids it (HTTP 409)."""


class InvalidTransitionError(IncidentConflictError):
    """The incident's status cannot change that way."""

    def __init__(self, incident_id: int | None, current: IncidentStatus, wanted: IncidentStatus) -> None:
        self.current = current
        self.wanted = wanted
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none: it is final"
        subject = f"incident {incident_id}" if incident_id is not None else "an incident"
        super().__init__(f"{subject} is {current} and cannot become {wanted} (allowed: {allowed})")


class IncidentClosedError(IncidentConflictError):
    """The incident is closed or cancelled: nothing more can be sent to it."""

    def __init__(self, incident_id: int, status: IncidentStatus) -> None:
        self.incident_id = incident_id
        self.status = status
        super().__init__(
            f"incident {incident_id} is {status}: no unit can be assigned to it; create a new incident"
        )


class UnitUnavailableError(IncidentConflictError):
    """The unit cannot be assigned now: busy, out of service, inactive or with its position lost."""

    def __init__(self, unit_id: str, reason: str, message: str, *, status: str = "",
                 incident_id: int | None = None) -> None:  # fmt: skip
        self.unit_id = unit_id
        self.reason = reason  # busy | not_available | inactive | position_lost
        self.status = status
        self.incident_id = incident_id
        super().__init__(message)


class NotAssignedError(IncidentConflictError):
    """The unit has no open assignment on that incident."""

    def __init__(self, incident_id: int, unit_id: str) -> None:
        super().__init__(
            f"unit {unit_id!r} is not assigned to incident {incident_id} (or was already released): "
            f"see the incident's assignments with GET /api/v1/incidents/{incident_id}"
        )


def can_transition(current: IncidentStatus, wanted: IncidentStatus) -> bool:
    """True when the table allows ``current -> wanted``."""
    return wanted in TRANSITIONS[current]


def check_transition(current: IncidentStatus, wanted: IncidentStatus, incident_id: int | None = None) -> None:
    """Raise :class:`InvalidTransitionError` unless ``current -> wanted`` is allowed."""
    if not can_transition(current, wanted):
        raise InvalidTransitionError(incident_id, current, wanted)


# ----- values -------------------------------------------------------------------------------


def iso(ts: datetime | None) -> str | None:
    """``ts`` as UTC ISO-8601 with a ``Z`` (None stays None)."""
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


@dataclass(slots=True, frozen=True)
class Assignment:
    """A unit sent to an incident; open until released."""

    assignment_id: int
    incident_id: int
    unit_id: str
    assigned_at: datetime
    assigned_by: str
    eta_s: float | None = None  # predicted at assignment (when the unit was a ranked candidate)
    distance_m: float | None = None
    arrived_at: datetime | None = None
    released_at: datetime | None = None
    release_reason: str = ""

    @property
    def open(self) -> bool:
        """True until the unit is released."""
        return self.released_at is None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Assignment:
        """Build from a row of ``store.ASSIGNMENT_COLUMNS``."""
        return cls(*row[:10])

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "assignment_id": self.assignment_id,
            "incident_id": self.incident_id,
            "unit_id": self.unit_id,
            "assigned_at": iso(self.assigned_at),
            "assigned_by": self.assigned_by,
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "distance_m": None if self.distance_m is None else round(self.distance_m, 1),
            "arrived_at": iso(self.arrived_at),
            "travel_s": _seconds(self.assigned_at, self.arrived_at),
            "released_at": iso(self.released_at),
            "release_reason": self.release_reason,
            "open": self.open,
        }


@dataclass(slots=True, frozen=True)
class Incident:
    """One reported incident with its milestones and its assignments (oldest first)."""

    incident_id: int
    lat: float
    lon: float
    category: IncidentCategory
    channel: Channel
    priority: int
    description: str
    address: str
    status: IncidentStatus
    reported_by: str
    created_at: datetime
    updated_at: datetime
    first_assigned_at: datetime | None = None
    first_arrival_at: datetime | None = None
    closed_at: datetime | None = None
    resolution: str = ""
    assignments: tuple[Assignment, ...] = ()

    @classmethod
    def from_row(cls, row: Sequence[Any], assignments: Iterable[Assignment] = ()) -> Incident:
        """Build from a row of ``store.INCIDENT_COLUMNS``."""
        r = row
        return cls(
            r[0], r[1], r[2], IncidentCategory(r[3]), Channel(r[4]), r[5], r[6], r[7], IncidentStatus(r[8]),
            r[9], r[10], r[11], r[12], r[13], r[14], r[15], tuple(assignments),
        )  # fmt: skip

    @property
    def active(self) -> bool:
        """True until closed or cancelled."""
        return self.status not in TERMINAL

    @property
    def response_s(self) -> float | None:
        """Seconds from report to the first unit on scene (None until then)."""
        return _seconds(self.created_at, self.first_arrival_at)

    @property
    def assign_s(self) -> float | None:
        """Seconds from report to the first assignment (None until then)."""
        return _seconds(self.created_at, self.first_assigned_at)

    def open_units(self) -> list[str]:
        """Ids of the units still assigned."""
        return [a.unit_id for a in self.assignments if a.open]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (``geometry`` is a GeoJSON Point, lon/lat order)."""
        return {
            "incident_id": self.incident_id,
            "lat": self.lat,
            "lon": self.lon,
            "geometry": {"type": "Point", "coordinates": [self.lon, self.lat]},
            "category": str(self.category),
            "channel": str(self.channel),
            "priority": self.priority,
            "description": self.description,
            "address": self.address,
            "status": str(self.status),
            "reported_by": self.reported_by,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "first_assigned_at": iso(self.first_assigned_at),
            "first_arrival_at": iso(self.first_arrival_at),
            "closed_at": iso(self.closed_at),
            "resolution": self.resolution,
            "assign_s": self.assign_s,
            "response_s": self.response_s,
            "units": self.open_units(),
            "assignments": [a.to_json() for a in self.assignments],
        }


@dataclass(slots=True, frozen=True)
class IncidentPatch:
    """Fields an operator may change; None leaves a field as it is."""

    description: str | None = None
    priority: int | None = None
    category: IncidentCategory | None = None
    address: str | None = None
    status: IncidentStatus | None = None  # closed or cancelled only
    resolution: str | None = None

    def empty(self) -> bool:
        """True when nothing would change."""
        return all(getattr(self, f) is None for f in self.__slots__)


@dataclass(slots=True, frozen=True)
class IncidentPage:
    """One page of incidents, newest first; ``next_before`` asks for the next page (None at the end)."""

    items: tuple[Incident, ...]
    next_before: int | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"items": [i.to_json() for i in self.items], "next_before": self.next_before}


@dataclass(slots=True, frozen=True)
class GroupStats:
    """Response-time figures of one group of incidents."""

    count: int
    assigned: int
    arrived: int
    closed: int
    cancelled: int
    response_p50_s: float | None
    response_p90_s: float | None
    response_mean_s: float | None
    assign_p50_s: float | None
    assign_p90_s: float | None
    assign_mean_s: float | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (seconds rounded to 0.1 s)."""

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 1)

        return {
            "count": self.count,
            "assigned": self.assigned,
            "arrived": self.arrived,
            "closed": self.closed,
            "cancelled": self.cancelled,
            "response_s": {"p50": r(self.response_p50_s), "p90": r(self.response_p90_s),
                           "mean": r(self.response_mean_s)},
            "assign_s": {"p50": r(self.assign_p50_s), "p90": r(self.assign_p90_s),
                         "mean": r(self.assign_mean_s)},
        }  # fmt: skip


@dataclass(slots=True, frozen=True)
class ResponseStats:
    """Response times of incidents created in ``[since, until)``: overall and per value of each dimension."""

    since: datetime
    until: datetime
    overall: GroupStats
    groups: dict[str, dict[str, GroupStats]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form: ``{"overall": {...}, "by": {"category": {"otro": {...}}, ...}}``."""
        return {
            "since": iso(self.since),
            "until": iso(self.until),
            "overall": self.overall.to_json(),
            "by": {dim: {v: g.to_json() for v, g in vals.items()} for dim, vals in self.groups.items()},
        }


def validate_point(lat: float, lon: float) -> None:
    """Raise :class:`IncidentInputError` unless (lat, lon) is a real place."""
    if not (-90.0 <= lat <= 90.0) or not (-180.0 <= lon <= 180.0) or lat != lat or lon != lon:
        raise IncidentInputError(f"lat {lat} / lon {lon} out of range: lat in -90..90, lon in -180..180")


def validate_priority(priority: int) -> None:
    """Raise :class:`IncidentInputError` unless the priority is 1 (highest) .. 5."""
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise IncidentInputError(f"priority {priority} out of range: use 1 (highest) to 5 (lowest)")


# ----- the service --------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class _Watch:
    """An open assignment as the arrival detector sees it (immutable: replaced on change)."""

    assignment_id: int
    incident_id: int
    lat: float
    lon: float
    assigned_at: datetime
    arrived: bool = False


def _utcnow() -> datetime:
    return datetime.now(UTC)


class IncidentService:
    """Incidents, assignments and arrival detection over the database, the LiveFleet and the live feed.

    ``pool``: an open async pool (the API's), or a conninfo string for a pool of
    its own opened by :meth:`start`. ``recommend(lat, lon, k)``: the
    ranked available units, usually ``Dispatcher.nearest``; None means no
    recommendations. ``feed``: the live feed listener (incidents, and the
    ``unit_arrived`` events). ``publish(topic, payload)``: a best-effort MQTT
    publisher (``AckClient.publish``); when given, each arrival event also goes
    out on ``serenazgo/events/unit_arrived``. Call :meth:`start` on the event
    loop before use (it loads the open assignments and subscribes to the fleet)
    and :meth:`stop` at the end.
    """

    def __init__(
        self,
        pool: AsyncDb | str,
        fleet: LiveFleet,
        settings: DispatchSettings,
        recommend: Recommender | None = None,
        feed: FeedListener = no_feed,
        *,
        publish: Callable[[str, bytes], bool] | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        # A conninfo string: the service opens (at start) and closes (at stop) a small pool of its own.
        self._conninfo = pool if isinstance(pool, str) else None
        self._db: AsyncDb | None = None if isinstance(pool, str) else pool
        self._publish = publish
        self._fleet = fleet
        self._settings = settings
        self._recommend = recommend
        self._feed = feed
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        # unit_id -> its open assignment. Written on the loop, read on the ingest writer thread:
        # single dict operations are atomic, and entries are immutable.
        self._watch: dict[str, _Watch] = {}
        self._arriving: set[str] = set()  # units whose arrival is being recorded (no duplicate work)
        self._pending: set[concurrent.futures.Future[None]] = set()

    # ----- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the open assignments, subscribe to the fleet, and catch up on what happened meanwhile."""
        self._loop = asyncio.get_running_loop()
        if self._db is None and self._conninfo is not None:
            try:
                self._db = await open_pool(self._conninfo, max_size=POOL_SIZE)
            except psycopg.Error as exc:
                raise StorageError(f"incidents: cannot open a database pool: {exc}") from exc
        # Subscribe first: a change arriving during the load is then seen (for units loaded in time)
        # rather than lost; the catch-up below covers the rest, and recording is idempotent.
        self._unsubscribe = self._fleet.subscribe(self._on_fleet_changes)
        try:
            async with self._conn() as conn:
                rows = await store.select_open_assignments(conn)
        except StorageError:
            self._unsubscribe()
            self._unsubscribe = None
            raise
        for row in rows:
            a = Assignment.from_row(row)
            self._watch[a.unit_id] = _Watch(
                a.assignment_id, a.incident_id, row[10], row[11], a.assigned_at, a.arrived_at is not None
            )
        self._catch_up(list(self._watch))

    async def stop(self) -> None:
        """Unsubscribe from the fleet and wait for the arrival work already handed over."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.drain()
        if self._conninfo is not None and self._db is not None:
            db, self._db = self._db, None
            assert not isinstance(db, AsyncConnection)
            await db.close()

    async def drain(self) -> None:
        """Wait until the background work handed over so far (arrivals, en_route) is done."""
        while self._pending:
            await asyncio.gather(
                *(asyncio.wrap_future(f) for f in list(self._pending)), return_exceptions=True
            )

    def learn(self, incident_ids: Sequence[int]) -> None:
        """Announce incidents stored by someone else (field reports committed by the ingest bridge).

        Safe from any thread (the bridge calls it on its commit thread, after commit): the
        incidents are read back and pushed to the live feed on the service's loop.
        """
        if incident_ids:
            self._submit(self._learn(list(incident_ids)))

    async def _learn(self, incident_ids: Sequence[int]) -> None:
        try:
            async with self._conn() as conn:
                found = [await self._load(conn, i) for i in incident_ids]
        except (StorageError, IncidentNotFoundError):
            log.exception("incidents: cannot read back field reports %s", list(incident_ids)[:10])
            return
        for incident in found:
            self._announce(incident)

    def watched(self) -> dict[str, int]:
        """unit_id -> incident_id of every open assignment the arrival detector follows."""
        return {u: w.incident_id for u, w in self._watch.items()}

    # ----- reads -----------------------------------------------------------------------------

    async def get(self, incident_id: int) -> Incident:
        """One incident with its assignments; :class:`IncidentNotFoundError` if unknown."""
        async with self._conn() as conn:
            return await self._load(conn, incident_id)

    async def list(
        self,
        *,
        status: str = "all",
        since: datetime | None = None,
        until: datetime | None = None,
        category: IncidentCategory | None = None,
        channel: Channel | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> IncidentPage:
        """Incidents newest first. ``status``: ``all``, ``active`` (not closed/cancelled) or one status."""
        statuses: Sequence[str] | None = None
        active_only = False
        if status == "active":
            active_only = True
        elif status != "all":
            try:
                statuses = [str(IncidentStatus(status))]
            except ValueError:
                raise IncidentInputError(
                    f"unknown status filter {status[:40]!r}: use all, active, or one of "
                    f"{', '.join(s.value for s in IncidentStatus)}"
                ) from None
        if not 1 <= limit <= 500:
            raise IncidentInputError(f"limit {limit} out of range: use 1..500 and page with 'before'")
        async with self._conn() as conn:
            rows = await store.select_incidents(
                conn, statuses=statuses, active_only=active_only, since=since, until=until,
                category=None if category is None else str(category),
                channel=None if channel is None else str(channel), before_id=before, limit=limit,
            )  # fmt: skip
            by_incident = await self._assignments(conn, [r[0] for r in rows])
        items = tuple(Incident.from_row(r, by_incident.get(r[0], ())) for r in rows)
        next_before = items[-1].incident_id if len(items) == limit else None
        return IncidentPage(items, next_before)

    async def stats(
        self, since: datetime, until: datetime, by: Sequence[str] = ("category", "channel")
    ) -> ResponseStats:
        """Response time (first arrival - report) and time to assign, overall and per group, in SQL."""
        unknown = [d for d in by if d not in store.STATS_DIMENSIONS]
        if unknown:
            raise IncidentInputError(
                f"cannot group by {unknown[0][:40]!r}: use {', '.join(store.STATS_DIMENSIONS)}"
            )
        if until <= since:
            raise IncidentInputError(f"until ({iso(until)}) must be after since ({iso(since)})")
        async with self._conn() as conn:
            rows = await store.response_stats(conn, since, until, list(dict.fromkeys(by)))
        overall = GroupStats(0, 0, 0, 0, 0, None, None, None, None, None, None)
        groups: dict[str, dict[str, GroupStats]] = {d: {} for d in by}
        for r in rows:
            g = GroupStats(*r.figures)
            if r.dimension is None:
                overall = g
            else:
                groups[r.dimension][str(r.value)] = g
        return ResponseStats(since, until, overall, groups)

    # ----- changes made by operators ------------------------------------------------------------

    async def create(
        self,
        *,
        lat: float,
        lon: float,
        category: IncidentCategory,
        channel: Channel,
        priority: int = PRIORITY_DEFAULT,
        description: str = "",
        address: str = "",
        reported_by: str = "",
        operator: str = "",
        origin: str = "",
        reported_at: datetime | None = None,
    ) -> tuple[Incident, _Candidates]:
        """Record a new incident; return it with the ranked units recommended for it.

        ``reported_at``: when the reporter saw it (a field report's own time); the incident
        is dated then, but never later than now (a clock running ahead).
        """
        validate_point(lat, lon)
        validate_priority(priority)
        try:
            category, channel = IncidentCategory(category), Channel(channel)
        except ValueError as exc:
            raise IncidentInputError(
                f"{exc}: categories are {', '.join(IncidentCategory)}; channels are {', '.join(Channel)}"
            ) from None
        now = self._clock()
        if reported_at is not None:
            now = min(now, reported_at)
        async with self._conn() as conn, conn.transaction():
            row = await store.insert_incident(
                conn, lat=lat, lon=lon, category=str(category), channel=str(channel), priority=priority,
                description=description, address=address, reported_by=reported_by, created_at=now,
            )  # fmt: skip
            incident = Incident.from_row(row)
            await self._audit(
                conn, now, operator or reported_by, origin, "create", incident.incident_id,
                {"lat": lat, "lon": lon, "category": str(category), "channel": str(channel),
                 "priority": priority},
            )  # fmt: skip
        self._announce(incident)
        return incident, self._candidates(lat, lon, self._settings.recommendations)

    async def report_from_unit(
        self,
        unit_id: str,
        *,
        category: IncidentCategory,
        priority: int = PRIORITY_DEFAULT,
        description: str = "",
        lat: float | None = None,
        lon: float | None = None,
        reported_at: datetime | None = None,
        origin: str = "",
    ) -> tuple[Incident, _Candidates]:
        """A unit reports an incident from the field (channel ``patrol``), by default where it is.

        The place is (``lat``, ``lon``) when given, else the unit's position in the LiveFleet.
        :class:`UnitNotFoundError` for an unknown unit; :class:`IncidentConflictError` when
        neither a place nor a position is known.
        """
        state = self._fleet.get(unit_id)
        if state is None:
            raise UnitNotFoundError(unit_id)
        if (lat is None) != (lon is None):
            raise IncidentInputError(
                "send both lat and lon, or neither (the unit's current position is used)"
            )
        if lat is None or lon is None:
            if state.fix is None:
                raise IncidentConflictError(
                    f"unit {unit_id} has no position yet: send lat and lon with the report"
                )
            lat, lon = state.fix.lat, state.fix.lon
        return await self.create(
            lat=lat, lon=lon, category=category, channel=Channel.PATROL, priority=priority,
            description=description, reported_by=unit_id, origin=origin, reported_at=reported_at,
        )  # fmt: skip

    async def patch(
        self, incident_id: int, changes: IncidentPatch, operator: str, origin: str = ""
    ) -> Incident:
        """Change an incident's fields, or close (with a resolution) or cancel it, releasing its units."""
        if changes.empty():
            raise IncidentInputError(
                "nothing to change: send description, priority, category, address, resolution or status"
            )
        if changes.priority is not None:
            validate_priority(changes.priority)
        if changes.status is not None and changes.status not in OPERATOR_STATUSES:
            raise IncidentInputError(
                f"status {changes.status} cannot be set directly: send closed or cancelled; assigned, "
                "en_route and on_scene follow the units (assignment, their status reports, arrival detection)"
            )
        now = self._clock()
        released: _Released = []
        async with self._conn() as conn, conn.transaction():
            current = await self._load(conn, incident_id, for_update=True)
            updates: dict[str, Any] = {}
            before: dict[str, Any] = {}
            for name in ("description", "priority", "category", "address", "resolution"):
                value = getattr(changes, name)
                if value is not None and value != getattr(current, name):
                    updates[name] = str(value) if isinstance(value, StrEnum) else value
                    before[name] = getattr(current, name)
            action = "update"
            if changes.status is not None and changes.status is not current.status:
                check_transition(current.status, changes.status, incident_id)
                updates["status"] = str(changes.status)
                updates["closed_at"] = now
                before["status"] = str(current.status)
                action = "close" if changes.status is IncidentStatus.CLOSED else "cancel"
                released = await self._release_all(conn, incident_id, now, f"incident {changes.status}")
            elif changes.status is not None:
                check_transition(current.status, changes.status, incident_id)  # closing twice: 409
            if updates:
                await store.update_incident(conn, incident_id, updates, now)
                detail: dict[str, Any] = {"changes": {k: (str(v) if isinstance(v, datetime) else v)
                                      for k, v in updates.items()}, "before": before}  # fmt: skip
                if released:
                    detail["released_units"] = [u for u, _ in released]
                await self._audit(conn, now, operator, origin, action, incident_id, detail)
            incident = await self._load(conn, incident_id)
        self._after_release(released)
        if updates:
            self._announce(incident)
        return incident

    async def close(self, incident_id: int, resolution: str, operator: str, origin: str = "") -> Incident:
        """Close an incident with its resolution (releases its units)."""
        return await self.patch(
            incident_id, IncidentPatch(status=IncidentStatus.CLOSED, resolution=resolution), operator, origin
        )

    async def cancel(self, incident_id: int, operator: str, origin: str = "", reason: str = "") -> Incident:
        """Cancel an incident (a duplicate, a false alarm; releases its units)."""
        patch = IncidentPatch(status=IncidentStatus.CANCELLED, resolution=reason or None)
        return await self.patch(incident_id, patch, operator, origin)

    async def assign(
        self, incident_id: int, unit_id: str, operator: str, origin: str = ""
    ) -> tuple[Incident, Assignment]:
        """Send an available unit with a usable position to an active incident.

        Raises IncidentNotFoundError, UnitNotFoundError, IncidentClosedError or
        UnitUnavailableError (busy, out of service, inactive, position lost).
        """
        now = self._clock()
        incident_place: tuple[float, float] | None = None
        try:
            async with self._conn() as conn, conn.transaction():
                current = await self._load(conn, incident_id, for_update=True)
                if not current.active:
                    raise IncidentClosedError(incident_id, current.status)
                incident_place = (current.lat, current.lon)
                unit = await store.select_unit_for_update(conn, unit_id)
                if unit is None:
                    raise UnitNotFoundError(unit_id)
                await self._check_available(conn, unit, now)
                candidate = self._candidate_for(unit_id, current.lat, current.lon)
                row = await store.insert_assignment(
                    conn, incident_id=incident_id, unit_id=unit_id, assigned_at=now, assigned_by=operator,
                    eta_s=None if candidate is None else candidate.eta_s,
                    distance_m=None if candidate is None else candidate.distance_m,
                )  # fmt: skip
                assignment = Assignment.from_row(row)
                stamp = await store.set_unit_status(conn, unit_id, str(UnitStatus.DISPATCHED), now)
                updates: dict[str, Any] = {}
                if current.first_assigned_at is None:
                    updates["first_assigned_at"] = now
                if current.status is IncidentStatus.OPEN:
                    check_transition(current.status, IncidentStatus.ASSIGNED, incident_id)
                    updates["status"] = str(IncidentStatus.ASSIGNED)
                if updates:
                    await store.update_incident(conn, incident_id, updates, now)
                await self._audit(
                    conn, now, operator, origin, "assign", incident_id,
                    {"unit_id": unit_id, "assignment_id": assignment.assignment_id,
                     "eta_s": assignment.eta_s, "distance_m": assignment.distance_m,
                     "incident_status": updates.get("status", str(current.status))},
                )  # fmt: skip
                incident = await self._load(conn, incident_id)
        except psycopg.errors.UniqueViolation as exc:
            # Another process assigned this unit between our check and our insert.
            raise await self._busy_error(unit_id) from exc
        assert incident_place is not None
        assert stamp is not None
        self._watch[unit_id] = _Watch(assignment.assignment_id, incident_id, *incident_place, now)
        self._fleet.apply(statuses=[(unit_id, StatusUpdate(UnitStatus.DISPATCHED, stamp))])
        self._announce(incident)
        # A unit already standing at the scene arrives at once.
        self._catch_up([unit_id])
        return incident, assignment

    async def release(
        self, incident_id: int, unit_id: str, operator: str, origin: str = "", reason: str = "released"
    ) -> Incident:
        """Free a unit from an incident (back to available); the incident reopens if nobody was left."""
        now = self._clock()
        async with self._conn() as conn, conn.transaction():
            current = await self._load(conn, incident_id, for_update=True)
            rows = await store.release_assignments(conn, incident_id, now, reason, unit_id)
            if not rows:
                raise NotAssignedError(incident_id, unit_id)
            released = [(unit_id, await self._free_unit(conn, unit_id, now))]
            new_status = current.status
            if (
                current.status in (IncidentStatus.ASSIGNED, IncidentStatus.EN_ROUTE)
                and await store.count_open_assignments(conn, incident_id) == 0
            ):
                check_transition(current.status, IncidentStatus.OPEN, incident_id)
                new_status = IncidentStatus.OPEN
                await store.update_incident(conn, incident_id, {"status": str(new_status)}, now)
            else:
                await store.update_incident(conn, incident_id, {}, now)
            await self._audit(
                conn, now, operator, origin, "release", incident_id,
                {"unit_id": unit_id, "assignment_id": rows[0][0], "reason": reason,
                 "incident_status": str(new_status)},
            )  # fmt: skip
            incident = await self._load(conn, incident_id)
        self._after_release(released)
        self._announce(incident)
        return incident

    # ----- changes the units make (fleet notifications) ------------------------------------------

    def _on_fleet_changes(self, changes: _Changes, *, current: bool = False) -> None:
        """LiveFleet subscriber, on the ingest writer thread: a dict lookup and a distance, no I/O.

        A new fix counts only if taken after the assignment (a buffered upload of older
        fixes says where the unit was, not that it came). ``current``: the changes are
        the units' present states, judged at assignment or after a restart; then a live
        fix taken before the assignment counts too (a unit standing at the scene, whose
        app stays quiet while it does not move, has arrived), at the assignment's time.
        """
        watch = self._watch
        if not watch:
            return
        radius = self._settings.arrival_radius_m
        for change in changes:
            w = watch.get(change.unit_id)
            if w is None:
                continue
            uid = change.unit_id
            state = change.state
            if change.kind == "position":
                fix = state.fix
                if w.arrived or fix is None or uid in self._arriving:
                    continue
                if fix.ts < w.assigned_at and not current:
                    continue
                distance = haversine_m(fix.lat, fix.lon, w.lat, w.lon)
                if distance <= radius:
                    self._arriving.add(uid)
                    arrived_at = max(fix.ts, w.assigned_at)  # already there when assigned: arrived then
                    self._submit(self._arrive(uid, w, arrived_at, distance, "position"))
            elif change.kind == "status":
                if state.status is UnitStatus.EN_ROUTE:
                    self._submit(self._unit_en_route(uid, w, state.status_ts))
                elif state.status is UnitStatus.ON_SCENE and not w.arrived and uid not in self._arriving:
                    self._arriving.add(uid)
                    fix = state.fix
                    away = None if fix is None else haversine_m(fix.lat, fix.lon, w.lat, w.lon)
                    arrived_at = max(state.status_ts or w.assigned_at, w.assigned_at)
                    self._submit(self._arrive(uid, w, arrived_at, away, "status"))

    def _catch_up(self, unit_ids: Iterable[str]) -> None:
        """Judge the units' current fleet state as if it had just changed (at assignment, after a start)."""
        now = self._clock()
        changes: _Changes = []
        for uid in unit_ids:
            state = self._fleet.get(uid)
            if state is None:
                continue
            if self._fleet.freshness(state, now) is Freshness.LIVE:
                changes.append(FleetChange("position", uid, state))
            if state.status in (UnitStatus.EN_ROUTE, UnitStatus.ON_SCENE):
                changes.append(FleetChange("status", uid, state))
        if changes:
            self._on_fleet_changes(changes, current=True)

    def _submit(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` on the service's loop, from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            return
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop is shutting down
            coro.close()
            return
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def _arrive(
        self, uid: str, w: _Watch, arrived_at: datetime, distance: float | None, source: str
    ) -> None:
        """Record a unit's arrival: assignment, incident milestone and status, unit on_scene, event, audit."""
        try:
            now = self._clock()
            stamp: datetime | None = None
            async with self._conn() as conn, conn.transaction():
                current = await self._load(conn, w.incident_id, for_update=True)
                row = await store.mark_arrived(conn, w.assignment_id, arrived_at)
                if row is None:
                    # Recorded already, or released meanwhile (perhaps by another process): stop
                    # judging this unit's fixes for it.
                    self._settle(uid, w, current)
                    return
                updates: dict[str, Any] = {}
                if current.first_arrival_at is None or arrived_at < current.first_arrival_at:
                    updates["first_arrival_at"] = arrived_at
                if current.status in (IncidentStatus.ASSIGNED, IncidentStatus.EN_ROUTE):
                    check_transition(current.status, IncidentStatus.ON_SCENE, w.incident_id)
                    updates["status"] = str(IncidentStatus.ON_SCENE)
                await store.update_incident(conn, w.incident_id, updates, now)
                if source == "position":
                    stamp = await store.set_unit_status(conn, uid, str(UnitStatus.ON_SCENE), arrived_at)
                detail: dict[str, Any] = {"source": source, "assignment_id": w.assignment_id,
                                          "distance_m": None if distance is None else round(distance, 1),
                                          "radius_m": self._settings.arrival_radius_m}  # fmt: skip
                event_id, recorded_at = await store.insert_event(
                    conn,
                    ts=arrived_at,
                    type_=ARRIVAL_EVENT,
                    unit_id=uid,
                    incident_id=w.incident_id,
                    detail=detail,
                )
                await self._audit(
                    conn, now, SYSTEM_ACTOR if source == "position" else f"unit:{uid}",
                    "arrival_detection" if source == "position" else "status_report",
                    "arrive", w.incident_id,
                    {**detail, "unit_id": uid, "arrived_at": iso(arrived_at),
                     "incident_status": updates.get("status", str(current.status))},
                )  # fmt: skip
                incident = await self._load(conn, w.incident_id)
            self._settle(uid, w, incident)
            self._announce_event(
                {"event_id": event_id, "type": ARRIVAL_EVENT, "ts": arrived_at.isoformat(), "unit_id": uid,
                 "geofence_id": None, "incident_id": w.incident_id, "detail": detail,
                 "recorded_at": recorded_at.isoformat()}
            )  # fmt: skip
            if stamp is not None:
                self._fleet.apply(statuses=[(uid, StatusUpdate(UnitStatus.ON_SCENE, stamp))])
            self._announce(incident)
        except Exception:
            # The next fix inside the radius tries again (the unit is no longer marked as arriving).
            log.exception("cannot record the arrival of unit %s at incident %s", uid, w.incident_id)
        finally:
            self._arriving.discard(uid)

    def _settle(self, uid: str, w: _Watch, incident: Incident) -> None:
        """Bring the watch of ``uid`` in line with its assignment as stored: arrived, or gone if released."""
        if self._watch.get(uid) != w:
            return  # replaced meanwhile (released, or assigned again)
        stored = next((a for a in incident.assignments if a.assignment_id == w.assignment_id), None)
        if stored is None or not stored.open:
            self._watch.pop(uid, None)
        elif stored.arrived_at is not None:
            self._watch[uid] = _Watch(w.assignment_id, w.incident_id, w.lat, w.lon, w.assigned_at, True)

    async def _unit_en_route(self, uid: str, w: _Watch, reported_at: datetime | None) -> None:
        """The unit reported en_route: its incident is en_route (if it was only assigned)."""
        try:
            now = self._clock()
            async with self._conn() as conn, conn.transaction():
                current = await self._load(conn, w.incident_id, for_update=True)
                if current.status is not IncidentStatus.ASSIGNED or uid not in current.open_units():
                    return
                check_transition(current.status, IncidentStatus.EN_ROUTE, w.incident_id)
                await store.update_incident(
                    conn, w.incident_id, {"status": str(IncidentStatus.EN_ROUTE)}, now
                )
                await self._audit(
                    conn,
                    now,
                    f"unit:{uid}",
                    "status_report",
                    "en_route",
                    w.incident_id,
                    {"unit_id": uid, "reported_at": iso(reported_at), "incident_status": "en_route"},
                )
                incident = await self._load(conn, w.incident_id)
            self._announce(incident)
        except Exception:
            log.exception("cannot record that unit %s is en route to incident %s", uid, w.incident_id)

    # ----- helpers -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection from the pool; database failures become StorageError (HTTP 503).

        A unique violation passes through: assignment turns it into "unit busy".
        """
        db = self._db
        if db is None:
            raise StorageError("the incident service is not started (it opens its database pool at start)")
        try:
            async with connection(db) as conn:
                yield conn
        except psycopg.errors.UniqueViolation:
            raise
        except psycopg.Error as exc:
            raise StorageError(f"incidents: the database failed: {exc}") from exc

    async def _load(
        self, conn: AsyncConnection[Any], incident_id: int, *, for_update: bool = False
    ) -> Incident:
        row = await store.select_incident(conn, incident_id, for_update=for_update)
        if row is None:
            raise IncidentNotFoundError(incident_id)
        found = await self._assignments(conn, [incident_id])
        return Incident.from_row(row, found.get(incident_id, ()))

    @staticmethod
    async def _assignments(
        conn: AsyncConnection[Any], ids: Sequence[int]
    ) -> dict[int, tuple[Assignment, ...]]:
        grouped: dict[int, tuple[Assignment, ...]] = {}
        for row in await store.select_assignments(conn, ids):
            a = Assignment.from_row(row)
            grouped[a.incident_id] = (*grouped.get(a.incident_id, ()), a)
        return grouped

    async def _audit(
        self, conn: AsyncConnection[Any], at: datetime, actor: str, origin: str, action: str,
        incident_id: int, detail: dict[str, Any],
    ) -> None:  # fmt: skip
        await audit_store.insert_audit(
            conn, at=at, actor=actor or "unknown", origin=origin, action=action,
            subject=f"incident:{incident_id}", detail=detail,
        )  # fmt: skip

    async def _check_available(self, conn: AsyncConnection[Any], unit: store.UnitRow, now: datetime) -> None:
        """Raise UnitUnavailableError unless ``unit`` can be sent now."""
        uid = unit.unit_id
        busy = await store.select_open_assignment_of_unit(conn, uid)
        if busy is not None:
            raise self._busy(uid, unit.status, busy[1])
        if not unit.active:
            raise UnitUnavailableError(
                uid, "inactive", f"unit {uid!r} is deactivated: choose another unit", status=unit.status
            )
        if unit.status != UnitStatus.AVAILABLE:
            raise UnitUnavailableError(
                uid, "not_available",
                f"unit {uid!r} is {unit.status}, not available: choose another unit, or wait until it "
                "reports available",
                status=unit.status,
            )  # fmt: skip
        fix = (
            None if unit.fix_ts is None else Ping(uid, unit.fix_ts, unit.fix_lat or 0.0, unit.fix_lon or 0.0)
        )
        state = UnitState(unit=Unit(uid, UnitKind(unit.kind)), fix=fix)
        if self._fleet.freshness(state, now) is Freshness.LOST:
            when = "it never reported a position" if fix is None else f"its last fix is from {iso(fix.ts)}"
            raise UnitUnavailableError(
                uid, "position_lost",
                f"unit {uid!r} has lost its position ({when}): its place is unknown; choose a unit "
                "with a live position, or reach it by radio first",
                status=unit.status,
            )  # fmt: skip

    @staticmethod
    def _busy(uid: str, status: str, incident_id: int) -> UnitUnavailableError:
        return UnitUnavailableError(
            uid, "busy",
            f"unit {uid!r} is busy: assigned to incident {incident_id} (its status: {status}); release it "
            f"there first (POST /api/v1/incidents/{incident_id}/release) or choose another unit",
            status=status, incident_id=incident_id,
        )  # fmt: skip

    async def _busy_error(self, unit_id: str) -> UnitUnavailableError:
        """The 409 for a unit whose open assignment another process just inserted."""
        try:
            async with self._conn() as conn:
                row = await store.select_open_assignment_of_unit(conn, unit_id)
                unit = await conn.execute("SELECT status FROM units WHERE unit_id = %s", [unit_id])
                status_row = await unit.fetchone()
        except (psycopg.Error, StorageError):
            row, status_row = None, None
        status = str(status_row[0]) if status_row else "dispatched"
        if row is None:
            return UnitUnavailableError(unit_id, "busy", f"unit {unit_id!r} was just assigned elsewhere: "
                                        "choose another unit", status=status)  # fmt: skip
        return self._busy(unit_id, status, row[1])

    async def _free_unit(self, conn: AsyncConnection[Any], unit_id: str, now: datetime) -> datetime | None:
        """Set a released unit available (only if dispatch had set its status); return the stamp."""
        unit = await store.select_unit_for_update(conn, unit_id)
        if unit is None or UnitStatus(unit.status) not in _DISPATCH_UNIT_STATUSES:
            return None  # out_of_service (or available) is the unit's own word: keep it
        return await store.set_unit_status(conn, unit_id, str(UnitStatus.AVAILABLE), now)

    async def _release_all(
        self, conn: AsyncConnection[Any], incident_id: int, now: datetime, reason: str
    ) -> _Released:
        rows = await store.release_assignments(conn, incident_id, now, reason)
        return [(row[2], await self._free_unit(conn, row[2], now)) for row in rows]

    def _after_release(self, released: _Released) -> None:
        """After commit: stop watching released units and show them available in the fleet."""
        statuses = [(uid, StatusUpdate(UnitStatus.AVAILABLE, stamp)) for uid, stamp in released if stamp]
        for uid, _ in released:
            self._watch.pop(uid, None)
        if statuses:
            self._fleet.apply(statuses=statuses)

    def _candidates(self, lat: float, lon: float, k: int) -> _Candidates:
        if self._recommend is None or k <= 0:
            return []
        try:
            return list(self._recommend(lat, lon, k))
        except Exception:
            # A failing recommender must not stop an incident from being recorded or a unit sent.
            log.exception("recommending units for (%s, %s) failed", lat, lon)
            return []

    def _candidate_for(self, unit_id: str, lat: float, lon: float) -> Candidate | None:
        k = max(ASSIGN_LOOKUP_K, self._settings.recommendations)
        return next((c for c in self._candidates(lat, lon, k) if c.unit_id == unit_id), None)

    def _announce_event(self, payload: dict[str, Any]) -> None:
        """An arrival event to the live feed and, when a publisher was given, to MQTT (best effort)."""
        try:
            self._feed("event", payload)
        except Exception:
            log.exception("the live feed listener failed on an arrival event")
        if self._publish is not None:
            try:
                self._publish(EVENT_TOPIC.format(type=ARRIVAL_EVENT), orjson.dumps(payload))
            except Exception:
                log.exception("publishing an arrival event failed")

    def _announce(self, incident: Incident) -> None:
        try:
            self._feed("incident", incident.to_json())
        except Exception:
            log.exception("the live feed listener failed on incident %s", incident.incident_id)
