"""DJI Cloud API over MQTT: aircraft and dock OSD, device state and topology, decoded into telemetry.

DJI's Cloud API documentation is the contract. What this module relies on:

* Topic definition (dock-to-cloud and pilot-to-cloud, "Topic Definition"): every
  message is an envelope ``{"tid", "bid", "timestamp" (epoch milliseconds),
  "gateway" (the gateway's serial), "data"}``; ``sys/product/{gateway_sn}/status``
  carries ``"method": "update_topo"`` with ``data`` = the gateway's ``domain``,
  ``type``, ``sub_type`` and ``sub_devices`` (``[{"sn", "domain", "type",
  "sub_type", "index", …}]``); "sub-device offline" is the same message with
  ``"sub_devices": []``.
* Device domains (``DeviceDomainEnum`` in DJI's Cloud API SDK): 0 aircraft,
  1 payload, 2 remote controller, 3 dock.
* Aircraft properties (dock-to-cloud "Aircraft > Properties"; pilot-to-cloud
  M3/M4 series "Properties"), pushMode 0 on ``thing/product/{sn}/osd`` at 0.5 Hz,
  pushMode 1 on ``thing/product/{sn}/state`` when they change:
  ``latitude``/``longitude`` (degrees; 0, 0 while the aircraft has no fix, e.g.
  in the dock), ``elevation`` (m, "relative takeoff point height"), ``height``
  ("absolute height: relative to the Earth ellipsoid = height above take-off +
  the take-off point's ellipsoid height", m), ``attitude_head`` (yaw from true
  north, positive towards 0-6 o'clock, negative 6-12: -180..180 degrees),
  ``horizontal_speed`` / ``vertical_speed`` (m/s), ``wind_speed`` (unit
  "0.1 m/s", an estimate from the aircraft's attitude), ``battery``
  (``capacity_percent`` %, ``remain_flight_time`` s, ``return_home_power`` %,
  ``landing_power`` %), ``mode_code`` (0 Standby, 1 Takeoff preparation,
  2 Takeoff preparation completed, 3 Manual flight, 4 Automatic takeoff,
  5 Wayline flight, 6 Panoramic photography, 7 Intelligent tracking, 8 ADS-B
  avoidance, 9 Auto returning to home, 10 Automatic landing, 11 Forced landing,
  12 Three-blade landing, 13 Upgrading, 14 Not connected, 15 APAS, 16 Virtual
  stick state, 17 Live flight controls, 18 Airborne RTK fixing mode, 19 Dock
  address selecting, 20 POI), ``position_state`` (``is_fixed`` 0 not started /
  1 fixing / 2 fixed / 3 failed, ``quality`` gear 1-5 or 10 "RTK fixed",
  ``gps_number``, ``rtk_number``), ``height_limit`` (m, 20-1500); on the state
  topic ``home_latitude``/``home_longitude``, ``low_battery_warning_threshold``
  and ``serious_low_battery_warning_threshold`` (%).
* Dock properties (dock-to-cloud "Dock > Properties"): ``latitude``/``longitude``
  /``height`` (ellipsoid, m), ``mode_code`` (0 idle, 1 on-site debugging,
  2 remote debugging, 3 firmware upgrade, 4 in operation, 5 to be calibrated),
  ``drone_in_dock`` (0 outside, 1 inside), ``drone_charge_state``
  (``state`` 0 idle / 1 charging, ``capacity_percent``), ``rainfall`` (0 none …
  3 heavy), ``wind_speed`` (m/s — unlike the aircraft's 0.1 m/s),
  ``network_state`` (``type`` 1 4G / 2 Ethernet, ``quality`` 0-5, ``rate``),
  ``sub_device`` (``device_sn`` of the aircraft, ``device_online_status``),
  ``home_position_is_valid``. The documentation says the dock's property push
  "is sent across multiple messages" (its examples show three partial ``data``
  objects), so a dock's OSD is merged field by field, never replaced.

Field names and units come from those tables; the example payloads in the tests
are built from them. What the documentation leaves open, and what we chose:

* ``vertical_speed`` is taken as positive upwards (the documentation gives no sign).
* ``gps_fix`` on MAVLink's GPS_FIX_TYPE scale: RTK fixed (``quality`` 10 or
  ``is_fixed`` 2) → 6, RTK converging (``is_fixed`` 1) → 5, otherwise 3 (3D)
  with 4+ satellites and 1 (no fix) below or with a (0, 0) position;
  ``satellites`` is the larger of ``gps_number`` and ``rtk_number``.
* An aircraft's home point is its own (``home_latitude``/``home_longitude``),
  else, for an aircraft under a dock, the dock's position (a dock aircraft
  takes off from and returns to its dock) unless the dock says
  ``home_position_is_valid`` 0.
* Ping altitude stays empty: DJI gives heights above the take-off point and the
  ellipsoid, and a ping's ``alt`` is above sea level (no geoid here); both DJI
  heights are kept in the telemetry.

The codec keeps state between messages in a :class:`DjiState` (topology, merged
dock OSD, home points and thresholds), bounded in size so that a flood of made-up
serials cannot grow memory. A message about the aircraft that arrives on its
dock's topic (``update_topo`` going empty, the dock's ``drone_in_dock`` and
charge while the aircraft itself is silent) is decoded for the *aircraft's*
:class:`DeviceRef` — the unit is the aircraft (external id ``dji`` = aircraft
serial), never the dock. Like every codec, these functions never raise: bad input
is a :class:`Rejection` that says what is wrong, and a message with nothing to
store is :class:`Ignored` with a fixed reason.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from drones.telemetry import ALTITUDE_RANGE_M, WIND_LIMIT_MPS, check_telemetry
from tracker.json_fields import load_json, show_value, type_name, wrong_type
from tracker.model import (
    Decoded,
    DecodeResult,
    DeviceRef,
    DroneTelemetry,
    Ignored,
    Ping,
    PingFlag,
    Rejection,
    Source,
)

__all__ = [
    "AIRCRAFT_MODES",
    "DEFAULT_MAX_DEVICES",
    "AircraftState",
    "DeviceKind",
    "DjiState",
    "DockState",
    "decode_osd",
    "decode_state",
    "decode_status",
    "flight_mode",
    "is_valid_serial",
]

# Aircraft mode_code → drones.telemetry.FLIGHT_MODES (codes from the aircraft property tables).
AIRCRAFT_MODES: dict[int, str] = {
    0: "on_ground",  # Standby
    1: "taking_off",  # Takeoff preparation (the dock opens, the aircraft spins up)
    2: "taking_off",  # Takeoff preparation completed
    3: "manual",  # Manual flight
    4: "taking_off",  # Automatic takeoff
    5: "mission",  # Wayline flight
    6: "hovering",  # Panoramic photography: holds its position while it turns
    7: "other",  # Intelligent tracking (follows a target)
    8: "other",  # ADS-B avoidance
    9: "returning_home",  # Auto returning to home
    10: "landing",  # Automatic landing
    11: "landing",  # Forced landing
    12: "landing",  # Three-blade landing (emergency landing on three propellers)
    13: "on_ground",  # Upgrading (firmware is only updated on the ground)
    14: "disconnected",  # Not connected
    15: "manual",  # APAS: a pilot flies, assisted by obstacle avoidance
    16: "manual",  # Virtual stick: flown by stick commands from the cloud or an app
    17: "mission",  # Live flight controls: flies to a point commanded from the cloud
    18: "hovering",  # Airborne RTK fixing: hovers while RTK converges
    19: "hovering",  # Dock address selecting: hovers to check the site and RTK signal
    20: "other",  # POI: orbits a point of interest
}

# Codes of an aircraft that is on the ground (standby, take-off preparation, upgrading); every
# other documented code but 14 (not connected) means it is in the air. Newer than the dock's
# drone_in_dock, this decides "docked": a dock's last word may predate the take-off.
_ON_GROUND_CODES = frozenset({0, 1, 2, 13})

DEFAULT_MAX_DEVICES = 10_000  # per table; Lima's whole squadron is tens of docks and aircraft
# A dock reports drone_in_dock and the aircraft's charge every ~2 s; while the aircraft's own
# OSD is this recent (message time), it already carries docked/battery and the dock's
# message is only merged, so a docked aircraft does not get two telemetry rows per cycle.
AIRCRAFT_OSD_FRESH = timedelta(seconds=10)
# DJI timestamps are epoch milliseconds; anything before this (2001-09-09) is seconds sent by mistake.
MIN_TIMESTAMP_MS = 1_000_000_000_000
MAX_SERIAL = 60  # "dji." + serial stays within the 64-character unit id
_SERIAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_MAX_SUB_DEVICES = 16  # a dock or a remote controller has one aircraft (and a few payloads)

# Keys only a dock's OSD carries: how a dock is recognised before the topology says so.
_DOCK_KEYS = frozenset(
    {
        "drone_in_dock", "drone_charge_state", "cover_state", "putter_state", "rainfall",
        "sub_device", "job_number", "flighttask_step_code", "environment_temperature",
        "alternate_land_point", "emergency_stop_state", "air_conditioner", "backup_battery",
        "drone_battery_maintenance_info", "working_voltage", "working_current", "acc_time",
        "first_power_on", "home_position_is_valid", "battery_store_mode", "alarm_state",
        "supplement_light_state", "drc_state",
    }
)  # fmt: skip
# Keys only an aircraft's OSD carries.
_AIRCRAFT_KEYS = frozenset(
    {
        "attitude_head", "attitude_pitch", "attitude_roll", "horizontal_speed", "vertical_speed",
        "elevation", "battery", "home_distance", "gear", "height_limit", "total_flight_time",
        "total_flight_distance", "total_flight_sorties",
    }
)  # fmt: skip
# An aircraft OSD without any of these carries nothing we store (e.g. only camera state).
_FLIGHT_KEYS = frozenset(
    {
        "latitude", "longitude", "elevation", "height", "attitude_head", "horizontal_speed",
        "vertical_speed", "wind_speed", "battery", "mode_code", "position_state", "height_limit",
    }
)  # fmt: skip
_AIRCRAFT_FLOATS = (
    "latitude", "longitude", "elevation", "height", "attitude_head", "horizontal_speed",
    "vertical_speed", "wind_speed", "height_limit", "home_latitude", "home_longitude",
)  # fmt: skip
_AIRCRAFT_STATE_KEYS = frozenset(
    {
        "home_latitude", "home_longitude", "height_limit", "low_battery_warning_threshold",
        "serious_low_battery_warning_threshold",
    }
)  # fmt: skip


class DeviceKind(StrEnum):
    """What a serial is, as learnt from the topology or from what it reports."""

    AIRCRAFT = "aircraft"
    DOCK = "dock"
    REMOTE_CONTROLLER = "remote_controller"


_DOMAIN_KINDS = {0: DeviceKind.AIRCRAFT, 2: DeviceKind.REMOTE_CONTROLLER, 3: DeviceKind.DOCK}


@dataclass(slots=True)
class AircraftState:
    """What is kept about one aircraft between its messages."""

    gateway: str | None = None  # the dock or remote controller it is connected through
    home: tuple[float, float] | None = None  # (lat, lon) from its state topic
    height_limit_m: float | None = None
    low_battery_pct: float | None = None  # the pilot's low-battery warning threshold
    serious_low_battery_pct: float | None = None
    last_osd: datetime | None = None  # message time of its newest own OSD
    airborne: bool | None = None  # from that OSD's mode_code (None: unknown or not connected)


@dataclass(slots=True)
class DockState:
    """A dock's OSD, merged across the partial messages it sends (never replaced)."""

    lat: float | None = None
    lon: float | None = None
    height_m: float | None = None  # ellipsoid
    mode_code: int | None = None
    drone_in_dock: bool | None = None
    in_dock_at: datetime | None = None  # message time of the newest drone_in_dock
    charging: bool | None = None
    charge_pct: float | None = None
    rainfall: int | None = None  # 0 none, 1 light, 2 moderate, 3 heavy
    wind_speed_mps: float | None = None
    network_type: int | None = None  # 1 4G, 2 Ethernet
    network_quality: int | None = None  # 0 no signal … 5 good
    home_valid: bool | None = None
    aircraft_sn: str | None = None  # sub_device.device_sn
    aircraft_powered: bool | None = None  # sub_device.device_online_status

    def position(self) -> tuple[float, float] | None:
        """The dock's (lat, lon), or None when unknown or (0, 0)."""
        if self.lat is None or self.lon is None or (self.lat == 0.0 and self.lon == 0.0):
            return None
        return self.lat, self.lon


K = TypeVar("K")
V = TypeVar("V")


class _Bounded(Generic[K, V]):
    """A dict that forgets its least recently used entry beyond ``limit`` entries."""

    __slots__ = ("_items", "limit")

    def __init__(self, limit: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self.limit = limit

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V:
        items = self._items
        items[key] = value
        items.move_to_end(key)
        if len(items) > self.limit:
            items.popitem(last=False)
        return value

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)


class DjiState:
    """What the DJI codec remembers between messages: kinds, topology, docks, aircraft.

    Each table holds at most ``max_devices`` serials and forgets the least
    recently heard one beyond that, so hostile traffic with endless made-up
    serials costs bounded memory (it can only push real devices out, which then
    re-learn their state from their next messages). Not thread-safe: one
    ingest pipeline owns one state.
    """

    def __init__(self, max_devices: int = DEFAULT_MAX_DEVICES) -> None:
        if max_devices < 1:
            raise ValueError("max_devices must be at least 1")
        self.kinds: _Bounded[str, DeviceKind] = _Bounded(max_devices)
        self.aircraft: _Bounded[str, AircraftState] = _Bounded(max_devices)
        self.docks: _Bounded[str, DockState] = _Bounded(max_devices)
        self.children: _Bounded[str, str] = _Bounded(max_devices)  # gateway serial -> aircraft serial

    def __len__(self) -> int:
        return len(self.kinds) + len(self.aircraft) + len(self.docks) + len(self.children)

    def kind(self, sn: str) -> DeviceKind | None:
        """What ``sn`` is known to be, or None."""
        return self.kinds.get(sn)

    def aircraft_state(self, sn: str) -> AircraftState | None:
        """The kept state of aircraft ``sn`` (home, thresholds, gateway), or None."""
        return self.aircraft.get(sn)

    def dock_state(self, sn: str) -> DockState | None:
        """The merged OSD of dock ``sn``, or None."""
        return self.docks.get(sn)

    def aircraft_under(self, gateway: str) -> str | None:
        """Serial of the aircraft connected through ``gateway``, or None."""
        return self.children.get(gateway)

    def _aircraft(self, sn: str) -> AircraftState:
        return self.aircraft.get(sn) or self.aircraft.put(sn, AircraftState())

    def _link(self, gateway: str, aircraft_sn: str) -> AircraftState:
        self.children.put(gateway, aircraft_sn)
        self.kinds.put(aircraft_sn, DeviceKind.AIRCRAFT)
        air = self._aircraft(aircraft_sn)
        air.gateway = gateway
        return air


# -- readers: the value or a Rejection that says what is wrong ----------------------------


def _float(obj: dict[str, Any], key: str, path: str = "") -> float | Rejection | None:
    """An optional number as a finite float (orjson never yields NaN or infinities)."""
    value = obj.get(key)
    if value is None:
        return None
    t = type(value)
    if t is float:
        return value  # type: ignore[no-any-return]
    if t is int:
        f = float(value)
        return f if math.isfinite(f) else wrong_type(path + key, value, "a finite number")
    return wrong_type(path + key, value, "a number")


def _floats(obj: dict[str, Any], keys: tuple[str, ...], path: str) -> list[float | None] | Rejection:
    """Several optional numbers of one object, in ``keys`` order."""
    out: list[float | None] = []
    for key in keys:
        value = _float(obj, key, path)
        if isinstance(value, Rejection):
            return value
        out.append(value)
    return out


def _int(obj: dict[str, Any], key: str, path: str = "") -> int | Rejection | None:
    """An optional integer (an integral float such as 3.0 is accepted: some firmware sends them)."""
    value = obj.get(key)
    if value is None:
        return None
    t = type(value)
    if t is int:
        return value  # type: ignore[no-any-return]
    if t is float and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return wrong_type(path + key, value, "an integer")


def _flag(obj: dict[str, Any], key: str, path: str = "") -> bool | Rejection | None:
    """An optional 0/1 enum (the documentation's form) or a JSON boolean (the SDK's)."""
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is bool:
        return value  # type: ignore[no-any-return]
    if type(value) is int and value in (0, 1):
        return value == 1
    return wrong_type(path + key, value, "0, 1, true or false")


def _struct(obj: dict[str, Any], key: str) -> dict[str, Any] | Rejection | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is not dict:
        return wrong_type(key, value, "an object")
    return value  # type: ignore[no-any-return]


def is_valid_serial(sn: str) -> bool:
    """True when ``sn`` can name a DJI device here (1-60 of A-Z a-z 0-9 _ . : -, letter or digit first)."""
    return 0 < len(sn) <= MAX_SERIAL and _SERIAL_RE.fullmatch(sn) is not None


def _serial(value: object, what: str) -> str | Rejection:
    if type(value) is not str:
        return wrong_type(what, value, "a serial number string")
    text: str = value  # type: ignore[assignment]
    if not is_valid_serial(text):
        return Rejection(
            "invalid_device_id",
            f"{what} {text[:80]!r} is not a usable serial: 1-{MAX_SERIAL} characters from "
            "A-Z a-z 0-9 _ . : -, starting with a letter or digit",
        )
    return text


@dataclass(slots=True, frozen=True)
class _Envelope:
    ts: datetime
    gateway: str | None
    data: dict[str, Any]
    method: str | None


def _envelope(payload: bytes, need_method: bool = False) -> _Envelope | Rejection:
    """Parse and check the Cloud API envelope (``tid``, ``bid``, ``timestamp`` ms, ``gateway``, ``data``)."""
    obj = load_json(payload)
    if isinstance(obj, Rejection):
        return obj
    if type(obj) is not dict:
        return Rejection(
            "not_an_object", f"payload is a JSON {type_name(obj)}, expected a DJI envelope object {{...}}"
        )
    for key in ("tid", "bid"):
        value = obj.get(key)
        if value is not None and type(value) is not str:
            return wrong_type(key, value, "a string")
    raw_ts = obj.get("timestamp")
    if raw_ts is None:
        return Rejection("missing_field", "DJI envelope field 'timestamp' (epoch milliseconds) is missing")
    if type(raw_ts) not in (int, float):
        return Rejection(
            "invalid_timestamp", f"field 'timestamp' must be epoch milliseconds, got {type_name(raw_ts)} "
            f"{show_value(raw_ts)}",
        )  # fmt: skip
    if raw_ts < MIN_TIMESTAMP_MS:
        return Rejection(
            "invalid_timestamp",
            f"field 'timestamp' {show_value(raw_ts)} is before 2001: DJI timestamps are epoch milliseconds",
        )
    try:
        ts = datetime.fromtimestamp(raw_ts / 1000.0, UTC)
    except (OverflowError, OSError, ValueError):
        return Rejection(
            "invalid_timestamp", f"field 'timestamp' {show_value(raw_ts)} is not a representable time"
        )
    gateway: str | None = None
    raw_gateway = obj.get("gateway")
    if raw_gateway is not None and raw_gateway != "":
        checked = _serial(raw_gateway, "gateway")
        if isinstance(checked, Rejection):
            return checked
        gateway = checked
    method: str | None = None
    raw_method = obj.get("method")
    if raw_method is not None:
        if type(raw_method) is not str:
            return wrong_type("method", raw_method, "a string")
        method = raw_method
    elif need_method:
        return Rejection("missing_field", "DJI status message field 'method' is missing (e.g. 'update_topo')")
    data = obj.get("data")
    if data is None:
        return Rejection("missing_field", "DJI envelope field 'data' is missing")
    if type(data) is not dict:
        return wrong_type("data", data, "an object")
    return _Envelope(ts, gateway, data, method)


# -- aircraft ----------------------------------------------------------------------------


def flight_mode(mode_code: int | None) -> str | None:
    """The normalised flight mode of an aircraft ``mode_code`` (unknown codes are "other").

    >>> flight_mode(9), flight_mode(14), flight_mode(99)
    ('returning_home', 'disconnected', 'other')
    """
    if mode_code is None:
        return None
    return AIRCRAFT_MODES.get(mode_code, "other")


def _gps_fix(
    is_fixed: int | None, quality: int | None, gps: int | None, rtk: int | None, has_position: bool
) -> int | None:
    """GPS_FIX_TYPE from DJI's position_state (see the module docstring)."""
    if is_fixed is None and quality is None and gps is None and rtk is None:
        return None
    if not has_position:
        return 1
    if quality == 10 or is_fixed == 2:
        return 6
    if is_fixed == 1:
        return 5
    return 3 if max(gps or 0, rtk or 0) >= 4 else 1


def _airborne(mode_code: int | None) -> bool | None:
    if mode_code is None or mode_code == 14 or mode_code not in AIRCRAFT_MODES:
        return None
    return mode_code not in _ON_GROUND_CODES


def _docked(air: AircraftState | None, dock: DockState | None) -> bool | None:
    """Whether the aircraft sits in its dock: the newer of the dock's word and the aircraft's own."""
    if air is None or not air.airborne or air.last_osd is None:
        return None if dock is None else dock.drone_in_dock
    if dock is None or dock.in_dock_at is None or air.last_osd >= dock.in_dock_at:
        return False
    return None if dock is None else dock.drone_in_dock


def _home_of(state: DjiState, air: AircraftState | None, gateway: str | None) -> tuple[float, float] | None:
    """The aircraft's own home point, else its dock's position (see the module docstring)."""
    if air is not None and air.home is not None:
        return air.home
    if gateway is not None and state.kinds.get(gateway) is DeviceKind.DOCK:
        dock = state.docks.get(gateway)
        if dock is not None and dock.home_valid is not False:
            return dock.position()
    return None


def _aircraft_osd(state: DjiState, ref: DeviceRef, env: _Envelope, received_at: datetime) -> DecodeResult:
    data = env.data
    if _FLIGHT_KEYS.isdisjoint(data):
        return Ignored("dji_osd_no_flight_data")
    floats: dict[str, float | None] = {}
    for key in _AIRCRAFT_FLOATS:
        value = _float(data, key)
        if isinstance(value, Rejection):
            return value
        floats[key] = value
    mode_code = _int(data, "mode_code")
    if isinstance(mode_code, Rejection):
        return mode_code
    battery = _struct(data, "battery")
    if isinstance(battery, Rejection):
        return battery
    capacity: float | None = None
    remain: float | None = None
    rth: float | None = None
    if battery is not None:
        values = _floats(battery, ("capacity_percent", "remain_flight_time", "return_home_power"), "battery.")
        if isinstance(values, Rejection):
            return values
        capacity, remain, rth = values
    pos = _struct(data, "position_state")
    if isinstance(pos, Rejection):
        return pos
    fix_parts: list[int | None] = [None, None, None, None]
    if pos is not None:
        for i, key in enumerate(("is_fixed", "quality", "gps_number", "rtk_number")):
            value = _int(pos, key, "position_state.")
            if isinstance(value, Rejection):
                return value
            fix_parts[i] = value
    is_fixed, quality, gps, rtk = fix_parts

    lat, lon = floats["latitude"], floats["longitude"]
    has_position = lat is not None and lon is not None and not (lat == 0.0 and lon == 0.0)
    sats = None if gps is None and rtk is None else max(gps or 0, rtk or 0)
    wind = floats["wind_speed"]
    own_home = None
    home_lat, home_lon = floats["home_latitude"], floats["home_longitude"]
    if home_lat is not None and home_lon is not None and not (home_lat == 0.0 and home_lon == 0.0):
        own_home = (home_lat, home_lon)

    sn = ref.external_id
    air = state.aircraft.get(sn)
    gateway = env.gateway if env.gateway is not None and env.gateway != sn else None
    if gateway is None and air is not None:
        gateway = air.gateway
    is_dock = gateway is not None and state.kinds.get(gateway) is DeviceKind.DOCK
    dock = state.docks.get(gateway) if is_dock and gateway is not None else None
    home = own_home or _home_of(state, air, gateway)
    height_limit = floats["height_limit"]
    if height_limit is None and air is not None:
        height_limit = air.height_limit_m
    ts = env.ts
    telemetry = DroneTelemetry(
        "",
        ts,
        alt_takeoff_m=floats["elevation"],
        alt_ellipsoid_m=floats["height"],
        vertical_speed_mps=floats["vertical_speed"],
        battery_pct=capacity,
        remaining_flight_s=remain,
        return_home_pct=rth,
        flight_mode=flight_mode(mode_code),
        mode_code=mode_code,
        gps_fix=_gps_fix(is_fixed, quality, gps, rtk, has_position),
        satellites=sats,
        wind_speed_mps=None if wind is None else wind / 10.0,  # the aircraft reports 0.1 m/s units
        height_limit_m=height_limit,
        home_lat=None if home is None else home[0],
        home_lon=None if home is None else home[1],
        docked=False if _airborne(mode_code) else (None if dock is None else dock.drone_in_dock),
        dock_id=gateway if is_dock else None,
        source=Source.DJI,
    )
    problem = check_telemetry(telemetry)
    if problem is not None:
        return problem

    # Valid: only now is anything remembered.
    if env.gateway is not None and env.gateway != sn:
        air = state._link(env.gateway, sn)
    else:
        state.kinds.put(sn, DeviceKind.AIRCRAFT)
        air = state._aircraft(sn)
    if air.last_osd is None or ts >= air.last_osd:
        air.last_osd = ts
        air.airborne = _airborne(mode_code)
    if own_home is not None:
        air.home = own_home
    if floats["height_limit"] is not None:
        air.height_limit_m = floats["height_limit"]

    pings: list[Ping] = []
    if has_position:
        assert lat is not None
        assert lon is not None
        head = floats["attitude_head"]
        flags = PingFlag.NONE
        heading: float | None = None
        if head is not None:
            if -180.0 <= head <= 180.0:
                heading = head % 360.0  # -180..180 from true north → 0..360
                if heading >= 360.0:
                    heading = 0.0
            else:
                flags = PingFlag.FIELD_DROPPED  # outside the documented range: dropped, as the filters do
        speed = floats["horizontal_speed"]
        pings.append(
            Ping("", ts, lat, lon, None, speed, heading, None, capacity, flags, Source.DJI, received_at)
        )
    return Decoded(ref, pings, telemetry=[telemetry])


# -- dock --------------------------------------------------------------------------------


def _dock_updates(data: dict[str, Any]) -> dict[str, object] | Rejection:
    """The dock fields this message carries (only those: the rest of the merged state stays)."""
    out: dict[str, object] = {}
    # Checked here, before anything is merged: the aircraft's reports reuse them later.
    for key, name, lo, hi, unit in (
        ("latitude", "lat", -90.0, 90.0, "degrees"),
        ("longitude", "lon", -180.0, 180.0, "degrees"),
        ("height", "height_m", *ALTITUDE_RANGE_M, "m"),
        ("wind_speed", "wind_speed_mps", 0.0, WIND_LIMIT_MPS, "m/s"),
    ):
        value = _float(data, key)
        if isinstance(value, Rejection):
            return value
        if value is not None:
            if not lo <= value <= hi:
                return Rejection(
                    f"dock_{key}_out_of_range", f"dock {key} {value!r} is outside {lo:g}..{hi:g} {unit}"
                )
            out[name] = value
    for key, name in (("mode_code", "mode_code"), ("rainfall", "rainfall")):
        ivalue = _int(data, key)
        if isinstance(ivalue, Rejection):
            return ivalue
        if ivalue is not None:
            out[name] = ivalue
    for key, name in (("drone_in_dock", "drone_in_dock"), ("home_position_is_valid", "home_valid")):
        flag = _flag(data, key)
        if isinstance(flag, Rejection):
            return flag
        if flag is not None:
            out[name] = flag
    charge = _struct(data, "drone_charge_state")
    if isinstance(charge, Rejection):
        return charge
    if charge is not None:
        pct = _float(charge, "capacity_percent", "drone_charge_state.")
        charging = _flag(charge, "state", "drone_charge_state.")
        if isinstance(pct, Rejection):
            return pct
        if isinstance(charging, Rejection):
            return charging
        if pct is not None:
            if not 0.0 <= pct <= 100.0:
                return Rejection(
                    "battery_pct_out_of_range",
                    f"drone_charge_state.capacity_percent {pct!r} is outside 0..100 %",
                )
            out["charge_pct"] = pct
        if charging is not None:
            out["charging"] = charging
    network = _struct(data, "network_state")
    if isinstance(network, Rejection):
        return network
    if network is not None:
        for key, name in (("type", "network_type"), ("quality", "network_quality")):
            ivalue = _int(network, key, "network_state.")
            if isinstance(ivalue, Rejection):
                return ivalue
            if ivalue is not None:
                out[name] = ivalue
    sub = _struct(data, "sub_device")
    if isinstance(sub, Rejection):
        return sub
    if sub is not None:
        raw_sn = sub.get("device_sn")
        if raw_sn is not None and raw_sn != "":
            sn = _serial(raw_sn, "sub_device.device_sn")
            if isinstance(sn, Rejection):
                return sn
            out["aircraft_sn"] = sn
        powered = _flag(sub, "device_online_status", "sub_device.")
        if isinstance(powered, Rejection):
            return powered
        if powered is not None:
            out["aircraft_powered"] = powered
    return out


def _merge(dock: DockState, updates: dict[str, object], ts: datetime) -> None:
    """Apply a partial dock message: the fields it lacks keep their values."""
    for name, value in updates.items():
        setattr(dock, name, value)
    if "drone_in_dock" in updates and (dock.in_dock_at is None or ts > dock.in_dock_at):
        dock.in_dock_at = ts


def _dock_report(
    state: DjiState, dock_sn: str, dock: DockState, aircraft_sn: str, ts: datetime, mode: str
) -> DroneTelemetry:
    """Telemetry for the aircraft of ``dock_sn`` from what the dock knows about it."""
    air = state.aircraft.get(aircraft_sn)
    home = _home_of(state, air, dock_sn)
    docked = _docked(air, dock)
    return DroneTelemetry(
        "",
        ts,
        battery_pct=dock.charge_pct if docked else None,  # the dock's charge reading is its aircraft's
        flight_mode=mode,
        wind_speed_mps=dock.wind_speed_mps,  # the dock reports m/s
        height_limit_m=None if air is None else air.height_limit_m,
        home_lat=None if home is None else home[0],
        home_lon=None if home is None else home[1],
        docked=docked,
        dock_id=dock_sn,
        source=Source.DJI,
    )


def _dock_osd(state: DjiState, ref: DeviceRef, env: _Envelope) -> DecodeResult:
    updates = _dock_updates(env.data)
    if isinstance(updates, Rejection):
        return updates
    sn = ref.external_id
    state.kinds.put(sn, DeviceKind.DOCK)
    dock = state.docks.get(sn) or state.docks.put(sn, DockState())
    _merge(dock, updates, env.ts)
    aircraft_sn = updates.get("aircraft_sn")
    if isinstance(aircraft_sn, str):
        state._link(sn, aircraft_sn)
    else:
        aircraft_sn = state.children.get(sn)
    about_aircraft = "drone_in_dock" in updates or "charge_pct" in updates
    air = state.aircraft.get(aircraft_sn) if aircraft_sn is not None else None
    if aircraft_sn is None or not about_aircraft or _docked(air, dock) is not True:
        return Ignored("dji_dock_osd_merged")
    if air is not None and air.last_osd is not None and abs(env.ts - air.last_osd) <= AIRCRAFT_OSD_FRESH:
        return Ignored("dji_dock_osd_merged")  # the aircraft's own OSD speaks for it
    report = _dock_report(state, sn, dock, aircraft_sn, env.ts, "on_ground")
    problem = check_telemetry(report)
    if problem is not None:
        return problem
    return Decoded(DeviceRef(Source.DJI, aircraft_sn), telemetry=[report])


def _classify(state: DjiState, sn: str, env: _Envelope) -> DeviceKind | None:
    kind = state.kinds.get(sn)
    if kind is not None:
        return kind
    if env.gateway is not None and env.gateway != sn:
        return DeviceKind.AIRCRAFT  # a sub-device reports through its gateway
    if not _DOCK_KEYS.isdisjoint(env.data):
        return DeviceKind.DOCK
    if not _AIRCRAFT_KEYS.isdisjoint(env.data):
        return DeviceKind.AIRCRAFT
    return None


# -- entry points (called by mqtt_bridge.codecs with the topic's serial as ``ref``) -------


def decode_osd(state: DjiState, ref: DeviceRef, payload: bytes, received_at: datetime) -> DecodeResult:
    """Decode ``thing/product/{sn}/osd``: an aircraft's (ping + telemetry) or a dock's (merged)."""
    env = _envelope(payload)
    if isinstance(env, Rejection):
        return env
    kind = _classify(state, ref.external_id, env)
    if kind is DeviceKind.AIRCRAFT:
        return _aircraft_osd(state, ref, env, received_at)
    if kind is DeviceKind.DOCK:
        return _dock_osd(state, ref, env)
    if kind is DeviceKind.REMOTE_CONTROLLER:
        return Ignored("dji_remote_controller_osd")
    return Ignored("dji_osd_unknown_device")


def decode_state(state: DjiState, ref: DeviceRef, payload: bytes, received_at: datetime) -> DecodeResult:
    """Decode ``thing/product/{sn}/state``: keep an aircraft's home point, height limit, thresholds."""
    env = _envelope(payload)
    if isinstance(env, Rejection):
        return env
    sn = ref.external_id
    data = env.data
    kind = _classify(state, sn, env)
    if kind is None and not _AIRCRAFT_STATE_KEYS.isdisjoint(data):
        kind = DeviceKind.AIRCRAFT
    if kind is DeviceKind.DOCK:
        updates = _dock_updates(data)
        if isinstance(updates, Rejection):
            return updates
        if not updates:
            return Ignored("dji_state_nothing_to_keep")
        state.kinds.put(sn, DeviceKind.DOCK)
        dock = state.docks.get(sn) or state.docks.put(sn, DockState())
        _merge(dock, updates, env.ts)
        return Ignored("dji_state_kept")
    if kind is not DeviceKind.AIRCRAFT or _AIRCRAFT_STATE_KEYS.isdisjoint(data):
        return Ignored("dji_state_nothing_to_keep")
    values: dict[str, float | None] = {}
    for key in _AIRCRAFT_STATE_KEYS:
        value = _float(data, key)
        if isinstance(value, Rejection):
            return value
        values[key] = value
    home_lat, home_lon = values["home_latitude"], values["home_longitude"]
    if (home_lat is None) != (home_lon is None):
        return Rejection("home_incomplete", "home_latitude and home_longitude come together, or neither")
    problem = check_telemetry(
        DroneTelemetry(
            sn, env.ts, home_lat=home_lat, home_lon=home_lon, height_limit_m=values["height_limit"]
        )
    )  # the same bounds as telemetry (degrees, metres)
    if problem is not None:
        return problem
    for key in ("low_battery_warning_threshold", "serious_low_battery_warning_threshold"):
        pct = values[key]
        if pct is not None and not 0.0 <= pct <= 100.0:
            return Rejection("threshold_out_of_range", f"{key} {pct!r} is outside 0..100 %")
    if env.gateway is not None and env.gateway != sn:
        air = state._link(env.gateway, sn)
    else:
        state.kinds.put(sn, DeviceKind.AIRCRAFT)
        air = state._aircraft(sn)
    if home_lat is not None and home_lon is not None:
        air.home = None if home_lat == 0.0 and home_lon == 0.0 else (home_lat, home_lon)
    if values["height_limit"] is not None:
        air.height_limit_m = values["height_limit"]
    if values["low_battery_warning_threshold"] is not None:
        air.low_battery_pct = values["low_battery_warning_threshold"]
    if values["serious_low_battery_warning_threshold"] is not None:
        air.serious_low_battery_pct = values["serious_low_battery_warning_threshold"]
    return Ignored("dji_state_kept")


def _domain(value: object, what: str) -> int | Rejection | None:
    """A device domain: the documentation's examples send it as an int or a numeric string."""
    if value is None:
        return None
    if type(value) is int:
        return value  # type: ignore[return-value]
    if type(value) is str and value.isdigit() and len(value) <= 3:
        return int(value)
    return wrong_type(what, value, "a device domain (0 aircraft, 2 remote controller, 3 dock)")


def decode_status(state: DjiState, ref: DeviceRef, payload: bytes, received_at: datetime) -> DecodeResult:
    """Decode ``sys/product/{gateway_sn}/status``: ``update_topo`` says which aircraft is under the gateway.

    An empty ``sub_devices`` means the aircraft went offline: the aircraft that
    was under this gateway gets a ``disconnected`` report (docked or not, as the
    dock last said).
    """
    env = _envelope(payload, need_method=True)
    if isinstance(env, Rejection):
        return env
    if env.method != "update_topo":
        return Ignored("dji_status_other_method")
    data = env.data
    domain = _domain(data.get("domain"), "domain")
    if isinstance(domain, Rejection):
        return domain
    subs = data.get("sub_devices")
    if subs is None:
        return Rejection(
            "missing_field", "update_topo field 'sub_devices' is missing (an empty list means offline)"
        )
    if type(subs) is not list:
        return wrong_type("sub_devices", subs, "an array")
    if len(subs) > _MAX_SUB_DEVICES:
        return Rejection(
            "too_many_sub_devices", f"update_topo lists {len(subs)} sub-devices; a gateway has a few"
        )
    aircraft: list[str] = []
    for i, sub in enumerate(subs):
        what = f"sub_devices[{i}]"
        if type(sub) is not dict:
            return wrong_type(what, sub, "an object")
        sn = _serial(sub.get("sn"), f"{what}.sn")
        if isinstance(sn, Rejection):
            return sn
        sub_domain = _domain(sub.get("domain"), f"{what}.domain")
        if isinstance(sub_domain, Rejection):
            return sub_domain
        if sub_domain is None or sub_domain == 0:
            aircraft.append(sn)
    gateway = ref.external_id
    kind = _DOMAIN_KINDS.get(domain) if domain is not None else None
    if kind is DeviceKind.AIRCRAFT:
        kind = None  # an aircraft is never a gateway; keep what we knew
    if kind is not None:
        state.kinds.put(gateway, kind)
    if aircraft:
        state._link(gateway, aircraft[0])
        return Ignored("dji_topology_updated")
    gone = state.children.pop(gateway)
    if gone is None:
        return Ignored("dji_gateway_without_aircraft")
    if state.kinds.get(gateway) is DeviceKind.DOCK:
        dock = state.docks.get(gateway) or DockState()
        report = _dock_report(state, gateway, dock, gone, env.ts, "disconnected")
    else:
        air = state.aircraft.get(gone)
        report = DroneTelemetry(
            "",
            env.ts,
            flight_mode="disconnected",
            height_limit_m=None if air is None else air.height_limit_m,
            home_lat=None if air is None or air.home is None else air.home[0],
            home_lon=None if air is None or air.home is None else air.home[1],
            source=Source.DJI,
        )
    problem = check_telemetry(report)
    if problem is not None:
        return problem
    return Decoded(DeviceRef(Source.DJI, gone), telemetry=[report])
