"""Drone telemetry shared by every drone codec: the flight-mode vocabulary and the range checks.

DJI Cloud API, MAVLink and serenazgo's native ``serenazgo/units/{id}/drone``
topic all end in a :class:`tracker.model.DroneTelemetry`; each codec maps its
protocol's mode numbers onto :data:`FLIGHT_MODES` and calls
:func:`check_telemetry` before handing the record on, so a value no aircraft
can report (a battery at 140 %, an altitude of 90 km) is refused with the same
reason whatever the protocol.
"""

from __future__ import annotations

import math

from tracker.model import DroneTelemetry, Rejection

# The normalised flight modes (protocol mode codes map onto these; anything else is "other").
FLIGHT_MODES: tuple[str, ...] = (
    "on_ground",  # standby, motors off, in or beside the dock
    "taking_off",
    "manual",  # a pilot flies it (DJI manual/ATTI, MAVLink manual/stabilize/acro)
    "hovering",  # position hold (DJI hover, MAVLink loiter/position hold)
    "mission",  # flying a waypoint route / wayline
    "returning_home",
    "landing",
    "disconnected",  # the dock or ground station lost the aircraft's link
    "other",
)
FLIGHT_MODE_SET = frozenset(FLIGHT_MODES)

# Plausible bounds; beyond them the report is corrupt, not an unusual flight.
ALTITUDE_RANGE_M = (-1_000.0, 10_000.0)  # Dead Sea shore to well above any civil drone's ceiling
VSPEED_MAX_MPS = 100.0
WIND_LIMIT_MPS = 100.0
REMAINING_FLIGHT_MAX_S = 24 * 3600.0
HEIGHT_LIMIT_RANGE_M = (0.0, 10_000.0)
MAX_TEXT = 64


def _outside(name: str, value: float | None, lo: float, hi: float, unit: str) -> Rejection | None:
    if value is None:
        return None
    if not math.isfinite(value) or not lo <= value <= hi:
        return Rejection(f"{name}_out_of_range", f"{name} {value!r} is outside {lo:g}..{hi:g} {unit}")
    return None


def check_telemetry(t: DroneTelemetry) -> Rejection | None:
    """Return why ``t`` cannot be stored (a field no aircraft can report), or None when it is fine.

    >>> from datetime import UTC, datetime
    >>> check_telemetry(DroneTelemetry("", datetime(2024, 5, 20, tzinfo=UTC), battery_pct=140.0)).reason
    'battery_pct_out_of_range'
    """
    alt_lo, alt_hi = ALTITUDE_RANGE_M
    checks = (
        _outside("alt_takeoff_m", t.alt_takeoff_m, alt_lo, alt_hi, "m"),
        _outside("alt_msl_m", t.alt_msl_m, alt_lo, alt_hi, "m"),
        _outside("alt_ellipsoid_m", t.alt_ellipsoid_m, alt_lo, alt_hi, "m"),
        _outside("vertical_speed_mps", t.vertical_speed_mps, -VSPEED_MAX_MPS, VSPEED_MAX_MPS, "m/s"),
        _outside("battery_pct", t.battery_pct, 0.0, 100.0, "%"),
        _outside("remaining_flight_s", t.remaining_flight_s, 0.0, REMAINING_FLIGHT_MAX_S, "s"),
        _outside("return_home_pct", t.return_home_pct, 0.0, 100.0, "%"),
        _outside("wind_speed_mps", t.wind_speed_mps, 0.0, WIND_LIMIT_MPS, "m/s"),
        _outside("height_limit_m", t.height_limit_m, *HEIGHT_LIMIT_RANGE_M, "m"),
        _outside("home_lat", t.home_lat, -90.0, 90.0, "degrees"),
        _outside("home_lon", t.home_lon, -180.0, 180.0, "degrees"),
        _outside("gps_fix", None if t.gps_fix is None else float(t.gps_fix), 0.0, 8.0, "(GPS_FIX_TYPE)"),
        _outside("satellites", None if t.satellites is None else float(t.satellites), 0.0, 255.0, ""),
    )
    for problem in checks:
        if problem is not None:
            return problem
    if (t.home_lat is None) != (t.home_lon is None):
        return Rejection("home_incomplete", "home needs both lat and lon, or neither")
    if t.flight_mode is not None and t.flight_mode not in FLIGHT_MODE_SET:
        known = ", ".join(FLIGHT_MODES)
        return Rejection("unknown_flight_mode", f"flight_mode {t.flight_mode[:40]!r} is not one of: {known}")
    if t.dock_id is not None and not (0 < len(t.dock_id) <= MAX_TEXT and t.dock_id.isprintable()):
        return Rejection("invalid_dock_id", f"dock_id must be 1-{MAX_TEXT} printable characters")
    return None


__all__ = ["FLIGHT_MODES", "FLIGHT_MODE_SET", "check_telemetry"]
