"""MAVLink 2 telemetry: frames in, per-system merged state, :class:`Ping` and :class:`DroneTelemetry` out.

Pure decoding, no sockets: :class:`MavlinkDecoder` is fed the bytes of a UDP
datagram (or a TCP stream), parses them with pymavlink's reference parser (the
ArduPilot dialect, a superset of ``common``) and merges each system's messages
into a :class:`SystemState` keyed by its ``sysid``. The gateway
(:mod:`drones.mavlink_gateway`) asks a state for its :meth:`SystemState.ping`
and :meth:`SystemState.telemetry` and publishes them on the native topics.

Messages read (units converted here, never later):

* ``HEARTBEAT``: ``autopilot``, ``type``, ``base_mode``, ``custom_mode``,
  ``system_status`` → the normalised flight mode (:func:`flight_mode`).
  Heartbeats from ground stations, cameras and gimbals (``autopilot`` =
  ``MAV_AUTOPILOT_INVALID``) say nothing about an aircraft and are skipped.
* ``GLOBAL_POSITION_INT``: ``lat``/``lon`` degE7; ``alt`` mm above mean sea
  level; ``relative_alt`` mm above home; ``vx``/``vy``/``vz`` cm/s
  north/east/down (vertical speed is reported positive *up*); ``hdg`` cdeg,
  65535 = unknown; ``time_boot_ms``. ``lat = lon = 0`` is what autopilots
  send before their first fix: no position.
* ``SYS_STATUS`` and ``BATTERY_STATUS``: ``battery_remaining`` %, −1 = not
  sent; ``time_remaining`` s, 0 = not provided.
* ``GPS_RAW_INT``: ``fix_type`` (GPS_FIX_TYPE), ``satellites_visible`` (255 =
  unknown), horizontal accuracy (see :func:`gps_accuracy_m`), the
  ``alt_ellipsoid`` extension.
* ``HOME_POSITION``: home latitude/longitude (degE7).
* ``SYSTEM_TIME``: ``time_unix_usec`` beside ``time_boot_ms`` gives the
  autopilot's boot instant in UTC, so every message stamped with
  ``time_boot_ms`` gets the time it was *measured*, not the time it arrived.
  Until a system has sent one (or while its clock is unset, ``time_unix_usec``
  = 0) the arrival time stands in and the result says so (``ts_defaulted``).

MAVLink 2 senders trim trailing zero bytes from payloads; pymavlink's parser
zero-fills them back to the message's full length (``MAVLink.decode``), which
the tests check on a frame whose payload ends in zeros. Garbage, CRC errors,
bad lengths and truncated frames come back as :class:`Rejection` values with a
stable reason (and are counted); :meth:`MavlinkDecoder.feed` never raises.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from drones.telemetry import check_telemetry
from tracker.model import DroneTelemetry, Ping, PingFlag, Rejection, Source

# --- MAVLink constants used here (values from common.xml / ardupilotmega.xml) ------------------
MAV_AUTOPILOT_ARDUPILOTMEGA = 3
MAV_AUTOPILOT_INVALID = 8  # not a flight controller: a ground station, camera, gimbal...
MAV_AUTOPILOT_PX4 = 12
MAV_TYPE_GCS = 6
MAV_MODE_FLAG_CUSTOM_MODE_ENABLED = 1
MAV_MODE_FLAG_AUTO_ENABLED = 4
MAV_MODE_FLAG_GUIDED_ENABLED = 8
MAV_MODE_FLAG_STABILIZE_ENABLED = 16
MAV_MODE_FLAG_MANUAL_INPUT_ENABLED = 64
MAV_MODE_FLAG_SAFETY_ARMED = 128
# MAV_STATE values in which the aircraft is not flying whatever its mode says.
_GROUND_STATES = frozenset({0, 1, 2, 3, 7})  # UNINIT, BOOT, CALIBRATING, STANDBY, POWEROFF
# MAV_TYPE values that fly ArduPlane (fixed wing and the VTOL family) rather than ArduCopter.
_PLANE_TYPES = frozenset({1, 16, 19, 20, 21, 22, 23, 24, 25})

UNKNOWN_HEADING = 65535  # GLOBAL_POSITION_INT.hdg
UNKNOWN_EPH = 65535  # GPS_RAW_INT.eph
UNKNOWN_SATELLITES = 255  # GPS_RAW_INT.satellites_visible
BATTERY_NOT_SENT = -1  # SYS_STATUS / BATTERY_STATUS battery_remaining

# GPS_RAW_INT.eph is HDOP x 100, a dimensionless geometry factor. Horizontal error is about
# HDOP x the user-equivalent range error (UERE). 5 m is a round 1-sigma UERE for a
# single-frequency civil receiver: it gives 4-8 m for the HDOP 0.8-1.6 of a healthy drone fix,
# the order of what u-blox receivers report as h_acc. When the sender fills the MAVLink 2
# extension h_acc (mm, the receiver's own estimate), that is used instead.
UERE_M = 5.0

# time_unix_usec below this (2001-09-09) is an unset clock counting from 1970, not UTC.
_MIN_UNIX_USEC = 1_000_000_000 * 1_000_000
# time_boot_ms going back by more than this means the autopilot rebooted: its old sync is void.
_REBOOT_SLACK_MS = 5_000
_INT32_MAX = 2**31 - 1

# --- flight modes ------------------------------------------------------------------------------
# ArduCopter custom_mode numbers (ArduCopter/mode.h) -> normalised mode.
ARDUCOPTER_MODES: dict[int, str] = {
    0: "manual",  # STABILIZE
    1: "manual",  # ACRO
    2: "manual",  # ALT_HOLD
    3: "mission",  # AUTO
    # GUIDED: flying to points a ground station (or a dock's software) sends, the way
    # drone-as-first-responder systems dispatch an aircraft: a route set from the ground.
    4: "mission",
    5: "hovering",  # LOITER
    6: "returning_home",  # RTL
    7: "mission",  # CIRCLE (an automatic orbit)
    9: "landing",  # LAND
    11: "manual",  # DRIFT
    13: "manual",  # SPORT
    14: "manual",  # FLIP
    15: "other",  # AUTOTUNE
    16: "hovering",  # POSHOLD
    17: "hovering",  # BRAKE
    18: "taking_off",  # THROW
    19: "other",  # AVOID_ADSB
    20: "other",  # GUIDED_NOGPS
    21: "returning_home",  # SMART_RTL
    22: "hovering",  # FLOWHOLD
    23: "mission",  # FOLLOW
    24: "mission",  # ZIGZAG
    25: "other",  # SYSTEMID
    26: "landing",  # AUTOROTATE
    27: "returning_home",  # AUTO_RTL
}
# ArduPlane custom_mode numbers (ArduPlane/mode.h), for fixed-wing and VTOL aircraft.
ARDUPLANE_MODES: dict[int, str] = {
    0: "manual",  # MANUAL
    1: "mission",  # CIRCLE
    2: "manual",  # STABILIZE
    3: "manual",  # TRAINING
    4: "manual",  # ACRO
    5: "manual",  # FBWA
    6: "manual",  # FBWB
    7: "manual",  # CRUISE
    8: "other",  # AUTOTUNE
    10: "mission",  # AUTO
    11: "returning_home",  # RTL
    12: "hovering",  # LOITER
    13: "taking_off",  # TAKEOFF
    14: "other",  # AVOID_ADSB
    15: "mission",  # GUIDED
    17: "manual",  # QSTABILIZE
    18: "hovering",  # QHOVER
    19: "hovering",  # QLOITER
    20: "landing",  # QLAND
    21: "returning_home",  # QRTL
    22: "other",  # QAUTOTUNE
    23: "manual",  # QACRO
    24: "other",  # THERMAL
    25: "landing",  # LOITER_ALT_QLAND
}
# PX4: custom_mode packs main mode in bits 16-23 and sub mode in bits 24-31 (px4_custom_mode.h).
PX4_MAIN_MODES: dict[int, str] = {
    1: "manual",  # MANUAL
    2: "manual",  # ALTCTL
    3: "hovering",  # POSCTL: holds position when the sticks are centred (ArduPilot's POSHOLD)
    5: "manual",  # ACRO
    6: "other",  # OFFBOARD
    7: "manual",  # STABILIZED
    8: "manual",  # RATTITUDE
}
PX4_AUTO = 4
PX4_AUTO_SUB_MODES: dict[int, str] = {
    1: "other",  # READY
    2: "taking_off",  # TAKEOFF
    3: "hovering",  # LOITER ("Hold")
    4: "mission",  # MISSION
    5: "returning_home",  # RTL
    6: "landing",  # LAND
    7: "returning_home",  # RTGS (return to ground station)
    8: "mission",  # FOLLOW_TARGET
    9: "landing",  # PRECLAND
    10: "taking_off",  # VTOL_TAKEOFF
}


def flight_mode(
    autopilot: int, vehicle_type: int, base_mode: int, custom_mode: int, system_status: int
) -> str:
    """The normalised flight mode (:data:`drones.telemetry.FLIGHT_MODES`) of a vehicle's HEARTBEAT.

    A disarmed aircraft, or one whose state is standby (or booting, calibrating,
    powering off), is on the ground whatever mode is selected for take-off.

    >>> flight_mode(MAV_AUTOPILOT_ARDUPILOTMEGA, 2, 128 | 1, 6, 4)  # armed quad in RTL
    'returning_home'
    >>> flight_mode(MAV_AUTOPILOT_PX4, 2, 128 | 1, (4 << 16) | (4 << 24), 4)  # PX4 AUTO.MISSION
    'mission'
    >>> flight_mode(MAV_AUTOPILOT_ARDUPILOTMEGA, 2, 1, 5, 3)  # disarmed, LOITER selected
    'on_ground'
    """
    if not base_mode & MAV_MODE_FLAG_SAFETY_ARMED or system_status in _GROUND_STATES:
        return "on_ground"
    if base_mode & MAV_MODE_FLAG_CUSTOM_MODE_ENABLED:
        if autopilot == MAV_AUTOPILOT_ARDUPILOTMEGA:
            table = ARDUPLANE_MODES if vehicle_type in _PLANE_TYPES else ARDUCOPTER_MODES
            return table.get(custom_mode, "other")
        if autopilot == MAV_AUTOPILOT_PX4:
            main = (custom_mode >> 16) & 0xFF
            if main == PX4_AUTO:
                return PX4_AUTO_SUB_MODES.get((custom_mode >> 24) & 0xFF, "other")
            return PX4_MAIN_MODES.get(main, "other")
    # No custom mode (or an autopilot we have no table for): the generic base_mode flags.
    if base_mode & MAV_MODE_FLAG_AUTO_ENABLED:
        return "mission"
    if base_mode & MAV_MODE_FLAG_GUIDED_ENABLED:
        return "other"
    if base_mode & (MAV_MODE_FLAG_MANUAL_INPUT_ENABLED | MAV_MODE_FLAG_STABILIZE_ENABLED):
        return "manual"
    return "other"


def gps_accuracy_m(eph: int, h_acc_mm: int) -> float | None:
    """Horizontal accuracy in metres from GPS_RAW_INT: ``h_acc`` when sent, else HDOP x :data:`UERE_M`.

    >>> gps_accuracy_m(120, 0)  # HDOP 1.2, no h_acc extension
    6.0
    >>> gps_accuracy_m(120, 2500)  # the receiver's own 2.5 m wins
    2.5
    >>> gps_accuracy_m(UNKNOWN_EPH, 0) is None
    True
    """
    if h_acc_mm > 0:  # 0 = not provided (also what a trimmed MAVLink 2 extension reads as)
        return h_acc_mm / 1000.0
    if eph == UNKNOWN_EPH:
        return None
    return eph / 100.0 * UERE_M


# --- results -----------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class MavlinkUpdate:
    """One accepted message that changed a system's state."""

    sysid: int
    msg_type: str  # "HEARTBEAT", "GLOBAL_POSITION_INT", ...
    received_at: datetime


@dataclass(slots=True)
class SystemState:
    """Everything known about one MAVLink system (an aircraft), merged across its messages."""

    sysid: int
    first_seen: datetime
    last_seen: datetime
    autopilot: int | None = None
    vehicle_type: int | None = None
    base_mode: int | None = None
    custom_mode: int | None = None
    system_status: int | None = None
    flight_mode: str | None = None
    # GLOBAL_POSITION_INT
    lat: float | None = None
    lon: float | None = None
    alt_msl_m: float | None = None
    alt_takeoff_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    vertical_speed_mps: float | None = None
    position_boot_ms: int | None = None
    position_received_at: datetime | None = None
    positions: int = 0  # GLOBAL_POSITION_INT messages with a fix, so far
    # GPS_RAW_INT
    gps_fix: int | None = None
    satellites: int | None = None
    accuracy_m: float | None = None
    alt_ellipsoid_m: float | None = None
    # SYS_STATUS / BATTERY_STATUS
    battery_pct: float | None = None
    remaining_flight_s: float | None = None
    # HOME_POSITION
    home_lat: float | None = None
    home_lon: float | None = None
    # SYSTEM_TIME: the autopilot's boot instant in UTC microseconds, once known.
    boot_epoch_us: int | None = None
    last_boot_ms: int | None = None  # newest time_boot_ms of any message
    last_boot_ms_received_at: datetime | None = None

    def wall_time(self, boot_ms: int) -> datetime | None:
        """UTC time of ``boot_ms`` on this autopilot's clock, or None before a SYSTEM_TIME sync."""
        if self.boot_epoch_us is None:
            return None
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=self.boot_epoch_us + boot_ms * 1000)

    def position_ts(self) -> tuple[datetime, bool] | None:
        """``(time of the newest position, defaulted)``: measured time, or arrival time (defaulted)."""
        if self.position_received_at is None or self.position_boot_ms is None:
            return None
        measured = self.wall_time(self.position_boot_ms)
        if measured is not None:
            return measured, False
        return self.position_received_at, True

    def telemetry_ts(self) -> tuple[datetime, bool]:
        """``(time of the newest state, defaulted)`` on the autopilot's clock, else the arrival time.

        The newest ``time_boot_ms`` in UTC, moved on by the time that passed
        between its arrival and the newest message's: HEARTBEAT and the battery
        messages carry no time of their own, and a state that changed (a new
        flight mode) must not reuse the time of the last stamped message.
        """
        if self.last_boot_ms is not None and self.last_boot_ms_received_at is not None:
            measured = self.wall_time(self.last_boot_ms)
            if measured is not None:
                return measured + (self.last_seen - self.last_boot_ms_received_at), False
        return self.last_seen, True

    def ping(self) -> Ping | None:
        """The newest position as a :class:`Ping` (``unit_id`` empty), or None before the first fix.

        A position whose time is the arrival time carries ``PingFlag.TS_DEFAULTED``.
        """
        when = self.position_ts()
        if when is None or self.lat is None or self.lon is None:
            return None
        ts, defaulted = when
        return Ping(
            "",
            ts,
            self.lat,
            self.lon,
            alt=self.alt_msl_m,
            speed=self.speed_mps,
            heading=self.heading_deg,
            accuracy=self.accuracy_m,
            battery=self.battery_pct,
            flags=PingFlag.TS_DEFAULTED if defaulted else PingFlag.NONE,
            source=Source.MAVLINK,
            received_at=self.position_received_at,
        )

    def telemetry(self) -> DroneTelemetry:
        """The merged drone state as a :class:`DroneTelemetry` (``unit_id`` empty) at :meth:`telemetry_ts`."""
        ts, _ = self.telemetry_ts()
        mode_code = (
            self.custom_mode if self.custom_mode is not None and self.custom_mode <= _INT32_MAX else None
        )
        return DroneTelemetry(
            "",
            ts,
            alt_takeoff_m=self.alt_takeoff_m,
            alt_msl_m=self.alt_msl_m,
            alt_ellipsoid_m=self.alt_ellipsoid_m,
            vertical_speed_mps=self.vertical_speed_mps,
            battery_pct=self.battery_pct,
            remaining_flight_s=self.remaining_flight_s,
            flight_mode=self.flight_mode,
            mode_code=mode_code,
            gps_fix=self.gps_fix,
            satellites=self.satellites,
            home_lat=self.home_lat,
            home_lon=self.home_lon,
            source=Source.MAVLINK,
        )


# --- rejection reasons -------------------------------------------------------------------------


def _bad_data_reason(detail: str) -> str:
    """A stable reason code for one of pymavlink's ``MAVLink_bad_data`` explanations."""
    if detail.startswith("Bad prefix"):
        return "garbage_bytes"
    if "CRC" in detail:
        return "crc_error"
    if "message length" in detail:
        return "bad_length"
    if "signature" in detail:
        return "bad_signature"
    if "incompat_flags" in detail:
        return "unsupported_flags"
    return "malformed_frame"


class MavlinkDecoder:
    """Parses MAVLink byte streams and keeps each system's merged state (never raises on input).

    One parser per stream (a UDP peer, a TCP connection), because a parser holds
    the partial frame it has seen; datagrams are parsed whole (a frame never
    spans two), so bytes left over at a datagram's end are a truncated frame.
    """

    def __init__(self, max_systems: int = 256, max_streams: int = 1024) -> None:
        self.systems: dict[int, SystemState] = {}
        self.accepted: Counter[str] = Counter()  # message type -> count
        self.rejected: Counter[str] = Counter()  # reason -> count
        self.ignored: Counter[str] = Counter()  # message types read but not used, and why
        self.frames = 0
        self._parsers: dict[Hashable, Any] = {}
        self._max_systems = max_systems  # sysid is a byte: 255 vehicles at most on one link
        self._max_streams = max_streams

    def _parser(self, stream: Hashable) -> Any:
        parser = self._parsers.get(stream)
        if parser is None:
            if len(self._parsers) >= self._max_streams:
                # A flood of spoofed source addresses only empties the table, it cannot grow it.
                self._parsers.clear()
            parser = mavlink2.MAVLink(None)
            parser.robust_parsing = True  # bad data comes back as a message, not an exception
            self._parsers[stream] = parser
        return parser

    def feed(
        self, data: bytes, received_at: datetime, stream: Hashable = None, datagram: bool = True
    ) -> list[MavlinkUpdate | Rejection]:
        """Parse ``data`` (a datagram, or the next bytes of ``stream``) and merge what it says.

        Returns one :class:`MavlinkUpdate` per message that changed a system's
        state and one :class:`Rejection` per bad frame or implausible value;
        messages that carry nothing we use are counted in :attr:`ignored`.
        """
        out: list[MavlinkUpdate | Rejection] = []
        parser = self._parser(stream)
        try:
            messages = parser.parse_buffer(bytes(data)) or []
            # parse_buffer stops when the buffer is short of a whole frame.
            leftover = parser.buf_len()
        except Exception as exc:  # pymavlink bug on hostile bytes: drop this stream's state, go on
            self._parsers.pop(stream, None)
            out.append(self._reject("malformed_frame", f"parser failed ({type(exc).__name__})"))
            return out
        for msg in messages:
            self.frames += 1
            try:
                result = self._apply(msg, received_at)
            except Exception as exc:  # a value no test foresaw: one message is lost, not the gateway
                result = self._reject("malformed_frame", f"{msg.get_type()}: {type(exc).__name__}")
            if result is not None:
                out.append(result)
        if datagram and leftover:
            self._parsers.pop(stream, None)
            out.append(
                self._reject("truncated_frame", f"datagram ends {leftover} bytes into an incomplete frame")
            )
        return out

    def _reject(self, reason: str, detail: str) -> Rejection:
        self.rejected[reason] += 1
        return Rejection(reason, detail)

    def _apply(self, msg: Any, received_at: datetime) -> MavlinkUpdate | Rejection | None:
        """Merge one parsed message into its system's state."""
        msg_type: str = msg.get_type()
        if msg_type == "BAD_DATA":
            detail = str(msg.reason)
            return self._reject(_bad_data_reason(detail), f"{detail[:120]} ({len(msg.data)} bytes)")
        if msg_type.startswith("UNKNOWN_"):
            # Not in the dialect: its CRC cannot be checked and its fields not read.
            self.ignored["unknown_message"] += 1
            return None
        handler = _HANDLERS.get(msg_type)
        if handler is None:
            self.ignored[msg_type] += 1
            return None
        sysid: int = msg.get_srcSystem()
        if sysid == 0:
            return self._reject("invalid_sysid", f"{msg_type} from system id 0 (the broadcast address)")
        state = self.systems.get(sysid)
        if state is None:
            if msg_type == "HEARTBEAT" and msg.autopilot == MAV_AUTOPILOT_INVALID:
                self.ignored["non_vehicle_heartbeat"] += 1  # a ground station's own heartbeat
                return None
            if len(self.systems) >= self._max_systems:
                return self._reject("too_many_systems", f"already tracking {self._max_systems} systems")
            state = SystemState(sysid, received_at, received_at)
        result = handler(self, state, msg, received_at)
        if result is None:
            return None
        if isinstance(result, Rejection):
            self.rejected[result.reason] += 1
            return result
        self.systems[sysid] = state
        state.last_seen = received_at
        boot_ms = getattr(msg, "time_boot_ms", None)
        if boot_ms is not None:
            _note_boot_time(state, boot_ms, received_at)
        self.accepted[msg_type] += 1
        return MavlinkUpdate(sysid, msg_type, received_at)


def _note_boot_time(state: SystemState, boot_ms: int, received_at: datetime) -> None:
    """Track the newest time_boot_ms; a clock that jumps back means a reboot, so drop the sync."""
    last = state.last_boot_ms
    if last is not None and boot_ms + _REBOOT_SLACK_MS < last:
        state.boot_epoch_us = None
    if last is None or boot_ms >= last or state.boot_epoch_us is None:
        state.last_boot_ms = boot_ms
        state.last_boot_ms_received_at = received_at


# --- per-message handlers: return True when the state changed, a Rejection, or None to ignore --
Handled = bool | Rejection | None


def _heartbeat(dec: MavlinkDecoder, state: SystemState, msg: Any, received_at: datetime) -> Handled:
    if msg.autopilot == MAV_AUTOPILOT_INVALID or msg.type == MAV_TYPE_GCS:
        dec.ignored["non_vehicle_heartbeat"] += 1  # a camera or gimbal sharing the aircraft's sysid
        return None
    state.autopilot = msg.autopilot
    state.vehicle_type = msg.type
    state.base_mode = msg.base_mode
    state.custom_mode = msg.custom_mode
    state.system_status = msg.system_status
    state.flight_mode = flight_mode(
        msg.autopilot, msg.type, msg.base_mode, msg.custom_mode, msg.system_status
    )
    return True


def _global_position_int(dec: MavlinkDecoder, state: SystemState, msg: Any, received_at: datetime) -> Handled:
    lat = msg.lat / 1e7
    lon = msg.lon / 1e7
    if not -90.0 <= lat <= 90.0:
        return Rejection("lat_out_of_range", f"GLOBAL_POSITION_INT lat {lat!r} is outside -90..90")
    if not -180.0 <= lon <= 180.0:
        return Rejection("lon_out_of_range", f"GLOBAL_POSITION_INT lon {lon!r} is outside -180..180")
    has_fix = msg.lat != 0 or msg.lon != 0  # autopilots send 0, 0 before their first fix
    alt_msl = msg.alt / 1000.0 if has_fix else None
    alt_takeoff = msg.relative_alt / 1000.0
    vertical = -msg.vz / 100.0  # vz is positive down
    problem = check_telemetry(
        DroneTelemetry(
            "", received_at, alt_takeoff_m=alt_takeoff, alt_msl_m=alt_msl, vertical_speed_mps=vertical
        )
    )
    if problem is not None:
        return Rejection(problem.reason, f"GLOBAL_POSITION_INT: {problem.detail}")
    state.alt_takeoff_m = alt_takeoff
    state.vertical_speed_mps = vertical
    if has_fix:
        state.lat = lat
        state.lon = lon
        state.alt_msl_m = alt_msl
        state.speed_mps = math.hypot(msg.vx, msg.vy) / 100.0
        state.heading_deg = None if msg.hdg == UNKNOWN_HEADING else (msg.hdg / 100.0) % 360.0
        state.position_boot_ms = msg.time_boot_ms
        state.position_received_at = received_at
        state.positions += 1
    return True


def _battery_pct(value: int, where: str) -> float | Rejection | None:
    if value == BATTERY_NOT_SENT:
        return None
    if not 0 <= value <= 100:
        return Rejection("battery_pct_out_of_range", f"{where} battery_remaining {value} is outside 0..100 %")
    return float(value)


def _sys_status(dec: MavlinkDecoder, state: SystemState, msg: Any, received_at: datetime) -> Handled:
    pct = _battery_pct(msg.battery_remaining, "SYS_STATUS")
    if isinstance(pct, Rejection):
        return pct
    if pct is None:
        dec.ignored["battery_not_sent"] += 1
        return None
    state.battery_pct = pct
    return True


def _battery_status(dec: MavlinkDecoder, state: SystemState, msg: Any, received_at: datetime) -> Handled:
    if msg.id != 0:
        # An aircraft with several packs reports each; the first is the one autopilots put in
        # SYS_STATUS too, so the two sources agree.
        dec.ignored["battery_status_other_pack"] += 1
        return None
    pct = _battery_pct(msg.battery_remaining, "BATTERY_STATUS")
    if isinstance(pct, Rejection):
        return pct
    remaining = float(msg.time_remaining) if msg.time_remaining > 0 else None  # 0 = not provided
    problem = check_telemetry(DroneTelemetry("", received_at, remaining_flight_s=remaining))
    if problem is not None:
        return Rejection(problem.reason, f"BATTERY_STATUS: {problem.detail}")
    if pct is None and remaining is None:
        dec.ignored["battery_not_sent"] += 1
        return None
    if pct is not None:
        state.battery_pct = pct
    if remaining is not None:
        state.remaining_flight_s = remaining
    return True


def _gps_raw_int(dec: MavlinkDecoder, state: SystemState, msg: Any, received_at: datetime) -> Handled:
    fix = int(msg.fix_type)
    satellites = None if msg.satellites_visible == UNKNOWN_SATELLITES else int(msg.satellites_visible)
    # alt_ellipsoid is a MAVLink 2 extension: 0 is what a sender without it (or a trimmed
    # payload) reads as, and a fix exactly on the ellipsoid is too unlikely to matter.
    ellipsoid = msg.alt_ellipsoid / 1000.0 if msg.alt_ellipsoid != 0 and fix >= 3 else None
    problem = check_telemetry(
        DroneTelemetry("", received_at, gps_fix=fix, satellites=satellites, alt_ellipsoid_m=ellipsoid)
    )
    if problem is not None:
        return Rejection(problem.reason, f"GPS_RAW_INT: {problem.detail}")
    state.gps_fix = fix
    state.satellites = satellites
    state.alt_ellipsoid_m = ellipsoid
    # No fix, no accuracy: the position the autopilot reports then is dead reckoning.
    state.accuracy_m = gps_accuracy_m(msg.eph, msg.h_acc) if fix >= 2 else None
    return True


def _home_position(dec: MavlinkDecoder, state: SystemState, msg: Any, received_at: datetime) -> Handled:
    lat = msg.latitude / 1e7
    lon = msg.longitude / 1e7
    problem = check_telemetry(DroneTelemetry("", received_at, home_lat=lat, home_lon=lon))
    if problem is not None:
        return Rejection(problem.reason, f"HOME_POSITION: {problem.detail}")
    state.home_lat = lat
    state.home_lon = lon
    return True


def _system_time(dec: MavlinkDecoder, state: SystemState, msg: Any, received_at: datetime) -> Handled:
    if msg.time_unix_usec < _MIN_UNIX_USEC:
        dec.ignored["system_time_unset"] += 1  # no GPS time yet: the clock counts from 1970
        return None
    state.boot_epoch_us = int(msg.time_unix_usec) - int(msg.time_boot_ms) * 1000
    # A sync is by definition the newest boot time; set it so a reboot is not mistaken later.
    state.last_boot_ms = msg.time_boot_ms
    state.last_boot_ms_received_at = received_at
    return True


_HANDLERS = {
    "HEARTBEAT": _heartbeat,
    "GLOBAL_POSITION_INT": _global_position_int,
    "SYS_STATUS": _sys_status,
    "BATTERY_STATUS": _battery_status,
    "GPS_RAW_INT": _gps_raw_int,
    "HOME_POSITION": _home_position,
    "SYSTEM_TIME": _system_time,
}


__all__ = [
    "ARDUCOPTER_MODES",
    "ARDUPLANE_MODES",
    "PX4_AUTO_SUB_MODES",
    "PX4_MAIN_MODES",
    "UERE_M",
    "MavlinkDecoder",
    "MavlinkUpdate",
    "SystemState",
    "flight_mode",
    "gps_accuracy_m",
]
