"""Domain model: units, pings, statuses and the values codecs produce.

Everything here is plain data (slotted dataclasses and string enums) so that
codecs, filters and storage can pass it around cheaply at tens of thousands of
pings per second. Speeds are m/s, angles degrees, times timezone-aware UTC.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntFlag, StrEnum

from tracker.errors import InvalidUnitIdError

UNIT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_UNIT_ID_RE = re.compile(UNIT_ID_PATTERN)


def is_valid_unit_id(unit_id: str) -> bool:
    """Return True when ``unit_id`` matches the wire contract (safe in topics, URLs, files)."""
    # fullmatch, not match: "$" would also accept a trailing newline.
    return _UNIT_ID_RE.fullmatch(unit_id) is not None


def validate_unit_id(unit_id: str) -> str:
    """Return ``unit_id`` unchanged, or raise :class:`InvalidUnitIdError`."""
    if not is_valid_unit_id(unit_id):
        raise InvalidUnitIdError(unit_id)
    return unit_id


class UnitKind(StrEnum):
    """What kind of field unit this is; drives speeds and freshness thresholds."""

    PATROL_CAR = "patrol_car"
    MOTORCYCLE = "motorcycle"
    BICYCLE = "bicycle"
    FOOT = "foot"
    DRONE = "drone"


class UnitStatus(StrEnum):
    """Operational status of a unit, as set by dispatch or by the unit itself."""

    AVAILABLE = "available"
    DISPATCHED = "dispatched"
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    OUT_OF_SERVICE = "out_of_service"


class Freshness(StrEnum):
    """How much to trust a unit's last fix, from its age (see :mod:`tracker.freshness`)."""

    LIVE = "live"
    STALE = "stale"
    LOST = "lost"


class Source(StrEnum):
    """The protocol a ping arrived through."""

    NATIVE = "native"
    OWNTRACKS = "owntracks"
    OSMAND = "osmand"
    DJI = "dji"
    MAVLINK = "mavlink"


# Prefix of the unit id derived for an auto-registered device, per protocol.
DERIVED_ID_PREFIX: dict[Source, str] = {
    Source.OWNTRACKS: "ot",
    Source.OSMAND: "osm",
    Source.DJI: "dji",
    Source.MAVLINK: "mav",
}


class PingFlag(IntFlag):
    """Quality flags stored on each position row (a bit mask, never a silent drop)."""

    NONE = 0
    TS_DEFAULTED = 1  # no timestamp in the payload: receive time used
    POOR_ACCURACY = 2  # reported accuracy worse than the configured limit
    MOCK = 4  # the device says the fix is simulated
    SUSPECT = 8  # implausible speed into this fix; held back from "latest" until the next fix
    OUTLIER = 16  # implausible speed both into and out of this fix
    JITTER = 32  # moved less than the two accuracies combined: a stationary unit
    LATE = 64  # older than the unit's latest fix: stored, never moves "latest" backwards
    FIELD_DROPPED = 128  # an optional field was out of range and was dropped (set to null)


@dataclass(slots=True)
class Unit:
    """A field unit: a sereno on foot, a car, a motorcycle, a bicycle or a drone."""

    unit_id: str
    kind: UnitKind
    callsign: str = ""
    sector: str = ""
    capabilities: frozenset[str] = frozenset()
    # protocol -> external id, e.g. {"owntracks": "owntracks/jane/phone"}
    external_ids: dict[str, str] = field(default_factory=dict)
    status: UnitStatus = UnitStatus.AVAILABLE
    active: bool = True


@dataclass(slots=True, frozen=True)
class DeviceRef:
    """Who sent a message, in the sender's own terms (protocol + external id)."""

    source: Source
    external_id: str

    def derived_unit_id(self) -> str:
        """Unit id used when this device is auto-registered (``ot.jane.phone``, ``osm.4824``)."""
        if self.source is Source.NATIVE:
            return self.external_id
        tail = self.external_id
        if self.source is Source.OWNTRACKS and tail.startswith("owntracks/"):
            tail = tail[len("owntracks/") :]
        safe = re.sub(r"[^A-Za-z0-9_.:-]", ".", tail.replace("/", "."))
        return f"{DERIVED_ID_PREFIX[self.source]}.{safe}"[:64]


@dataclass(slots=True)
class Ping:
    """One position fix of one unit, in SI units, after decoding.

    ``unit_id`` is empty until the device reference is resolved to a registered
    unit (codecs know the sender's external id, not our unit id).
    """

    unit_id: str
    ts: datetime
    lat: float
    lon: float
    alt: float | None = None  # metres above sea level
    speed: float | None = None  # m/s
    heading: float | None = None  # degrees from true north, 0-360
    accuracy: float | None = None  # metres (horizontal, 1 sigma as the device reports it)
    battery: float | None = None  # percent 0-100
    flags: PingFlag = PingFlag.NONE
    source: Source = Source.NATIVE
    received_at: datetime | None = None

    def __reduce__(self) -> tuple[type[Ping], tuple[object, ...]]:
        # HTTP ingest's worker sends every committed fix to the API process: the fields as a
        # tuple pickle in 0.4 µs instead of 2.6 (and load in 0.4 instead of 1.1).
        return (Ping, (
            self.unit_id, self.ts, self.lat, self.lon, self.alt, self.speed, self.heading,
            self.accuracy, self.battery, self.flags, self.source, self.received_at,
        ))  # fmt: skip


@dataclass(slots=True)
class DroneTelemetry:
    """What a drone reports beside its position, in SI units (stored in ``drone_telemetry``).

    Codecs fill what their protocol carries and leave the rest None; ``unit_id``
    is empty until the sender is resolved, like a :class:`Ping`'s. Altitudes are
    kept in the three references the protocols use, never converted into one
    another (that needs a geoid or terrain model): above the take-off/home point
    (DJI ``elevation``, MAVLink ``relative_alt``), above mean sea level (MAVLink
    ``alt``) and above the WGS84 ellipsoid (DJI ``height``).
    """

    unit_id: str
    ts: datetime
    alt_takeoff_m: float | None = None  # above the take-off / home point
    alt_msl_m: float | None = None  # above mean sea level
    alt_ellipsoid_m: float | None = None  # above the WGS84 ellipsoid
    vertical_speed_mps: float | None = None  # positive up
    battery_pct: float | None = None  # 0-100
    remaining_flight_s: float | None = None  # the aircraft's own estimate
    return_home_pct: float | None = None  # battery percent the aircraft says it needs to get home
    flight_mode: str | None = None  # normalised (drones.telemetry.FLIGHT_MODES)
    mode_code: int | None = None  # the protocol's raw mode number
    gps_fix: int | None = None  # MAVLink GPS_FIX_TYPE: 0-1 none, 2 2D, 3 3D, 4 DGPS, 5 RTK float, 6 RTK fixed
    satellites: int | None = None
    wind_speed_mps: float | None = None
    height_limit_m: float | None = None  # the aircraft's configured ceiling
    home_lat: float | None = None
    home_lon: float | None = None
    docked: bool | None = None  # True while the aircraft sits in its dock
    dock_id: str | None = None  # serial of the dock (DJI gateway) the aircraft belongs to
    source: Source = Source.NATIVE


@dataclass(slots=True, frozen=True)
class StatusUpdate:
    """A unit's operational status changed (native status topic or dispatch)."""

    status: UnitStatus
    ts: datetime


@dataclass(slots=True, frozen=True)
class DeviceEvent:
    """A non-position message from a device worth recording (OwnTracks lwt, transition)."""

    kind: str  # "lwt" | "transition"
    ts: datetime
    detail: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class FieldReport:
    """An incident a unit reports from the field (``serenazgo/units/{id}/incident``), channel ``patrol``.

    ``lat``/``lon`` None: the incident is placed at the unit's latest stored position
    (resolved in the writer's transaction). ``unit_id`` is set once the sender is resolved.
    """

    unit_id: str
    ts: datetime
    category: str
    priority: int
    description: str
    lat: float | None
    lon: float | None
    received_at: datetime
    payload: bytes = b""  # the message as received, kept for a dead letter (no_location)


@dataclass(slots=True)
class Decoded:
    """What a codec made of one message: who sent it and what it says."""

    ref: DeviceRef
    pings: list[Ping] = field(default_factory=list)
    status: StatusUpdate | None = None
    event: DeviceEvent | None = None
    # Drones only; an immutable empty default, so the ~50,000 position messages a second that carry
    # none do not each allocate a list.
    telemetry: Sequence[DroneTelemetry] = ()
    report: FieldReport | None = None  # a field incident report


@dataclass(slots=True, frozen=True)
class Ignored:
    """A well-formed message that carries nothing to store (e.g. an OwnTracks ``card``)."""

    reason: str


@dataclass(slots=True, frozen=True)
class Rejection:
    """Why an input was refused: a stable machine code and a sentence for people.

    ``reason`` is a short snake_case code (``invalid_json``, ``lat_out_of_range``)
    used as a metrics label; ``detail`` says what was wrong and what to do.
    """

    reason: str
    detail: str = ""


DecodeResult = Decoded | Ignored | Rejection
