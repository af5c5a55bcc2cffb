"""Codec for serenazgo's own JSON (``serenazgo/units/{unit_id}/position|status|drone|incident``).

Position: ``{"ts", "lat", "lon", "alt", "speed", "heading", "accuracy", "battery", "mock"}``,
SI units (m, m/s, degrees, percent); only ``lat`` and ``lon`` are required. ``ts`` is
ISO-8601 with an offset, or an epoch number or numeric string (below 2**31 seconds,
else milliseconds); when absent the receive time is used and the ping is flagged
``TS_DEFAULTED``. Status: ``{"status": <UnitStatus value>, "ts": …}``.

This is our own contract, so it is read strictly: a field of the wrong JSON type is
a ``wrong_type`` rejection (the dead letter tells the device developer at once),
and numeric strings are accepted for ``ts`` only.

Native senders name the unit itself in the topic, so pings come out with
``unit_id`` already set to the topic's unit id, ``ref.external_id`` (the registry
still checks that the unit exists); ``ref`` is ``DeviceRef(Source.NATIVE, unit_id)``,
built once per topic by :mod:`mqtt_bridge.codecs`.

This is the hot path (target: well under 5 µs per message), hence the flat code.
"""

from __future__ import annotations

from datetime import datetime

from orjson import JSONDecodeError
from orjson import loads as _loads

from drones.telemetry import check_telemetry
from tracker.incidents import PRIORITY_DEFAULT, PRIORITY_MAX, PRIORITY_MIN, TEXT_MAX, IncidentCategory
from tracker.json_fields import (
    JsonObject,
    as_float,
    load_object,
    missing,
    not_an_object,
    parse_timestamp,
    required_float,
    wrong_type,
)
from tracker.model import (
    Decoded,
    DecodeResult,
    DeviceRef,
    DroneTelemetry,
    FieldReport,
    Ping,
    PingFlag,
    Rejection,
    Source,
    StatusUpdate,
    UnitStatus,
)

_STATUSES: dict[str, UnitStatus] = {s.value: s for s in UnitStatus}
_CATEGORIES = frozenset(c.value for c in IncidentCategory)

# Precomputed: IntFlag's "|" runs Python-level enum code (about a microsecond).
_FLAGS: dict[tuple[bool, bool], PingFlag] = {
    (False, False): PingFlag.NONE,
    (True, False): PingFlag.TS_DEFAULTED,
    (False, True): PingFlag.MOCK,
    (True, True): PingFlag.TS_DEFAULTED | PingFlag.MOCK,
}


def decode_position(ref: DeviceRef, payload: bytes, received_at: datetime) -> DecodeResult:
    """Decode a native position message from ``ref`` (its unit id already checked by the topic parser)."""
    # The common case (a JSON object of floats) is inlined; anything else goes through
    # the shared readers in tracker.json_fields, which explain what is wrong.
    try:
        obj = _loads(payload)
    except JSONDecodeError:
        return load_object(payload)  # type: ignore[return-value]  # fails again, with the reason
    if type(obj) is not dict:
        return not_an_object(obj)
    get = obj.get
    lat = get("lat")
    if type(lat) is not float:
        lat = required_float(obj, "lat")
        if isinstance(lat, Rejection):
            return lat
    lon = get("lon")
    if type(lon) is not float:
        lon = required_float(obj, "lon")
        if isinstance(lon, Rejection):
            return lon
    raw_ts = get("ts")
    defaulted = raw_ts is None
    if defaulted:
        ts = received_at
    else:
        parsed = parse_timestamp("ts", raw_ts)
        if isinstance(parsed, Rejection):
            return parsed
        ts = parsed
    # Optional fields: None or float is final; anything else is converted or refused.
    alt = get("alt")
    if alt is not None and type(alt) is not float:
        alt = as_float("alt", alt, allow_string=False)
        if isinstance(alt, Rejection):
            return alt
    speed = get("speed")
    if speed is not None and type(speed) is not float:
        speed = as_float("speed", speed, allow_string=False)
        if isinstance(speed, Rejection):
            return speed
    heading = get("heading")
    if heading is not None and type(heading) is not float:
        heading = as_float("heading", heading, allow_string=False)
        if isinstance(heading, Rejection):
            return heading
    accuracy = get("accuracy")
    if accuracy is not None and type(accuracy) is not float:
        accuracy = as_float("accuracy", accuracy, allow_string=False)
        if isinstance(accuracy, Rejection):
            return accuracy
    battery = get("battery")
    if battery is not None and type(battery) is not float:
        battery = as_float("battery", battery, allow_string=False)
        if isinstance(battery, Rejection):
            return battery
    mock = get("mock", False)
    if type(mock) is not bool:
        if mock is not None:
            return wrong_type("mock", mock, "true or false")
        mock = False
    flags = _FLAGS[defaulted, mock]
    # Positional arguments: about twice as fast as keywords here.
    ping = Ping(
        ref.external_id,
        ts,
        lat,
        lon,
        alt,
        speed,
        heading,
        accuracy,
        battery,
        flags,
        Source.NATIVE,
        received_at,
    )
    return Decoded(ref, [ping])


def optional_timestamp(obj: dict[str, object], received_at: datetime) -> datetime | Rejection:
    """The message's ``ts`` when present (epoch or ISO-8601), else the receive time."""
    raw_ts = obj.get("ts")
    return received_at if raw_ts is None else parse_timestamp("ts", raw_ts)


def _required_str(obj: JsonObject, key: str) -> str | Rejection:
    """``obj[key]`` when it is a string; else why not (missing, or of the wrong type)."""
    raw = obj.get(key)
    if raw is None:
        return missing(key)
    if type(raw) is not str:
        return wrong_type(key, raw, "a string")
    return raw


def decode_status(ref: DeviceRef, payload: bytes, received_at: datetime) -> DecodeResult:
    """Decode a native status message; ``ts`` defaults to the receive time."""
    obj = load_object(payload)
    if isinstance(obj, Rejection):
        return obj
    raw = _required_str(obj, "status")
    if isinstance(raw, Rejection):
        return raw
    status = _STATUSES.get(raw)
    if status is None:
        return Rejection(
            "unknown_status",
            f"status {raw[:40]!r} is not one of: {', '.join(_STATUSES)}",
        )
    ts = optional_timestamp(obj, received_at)
    if isinstance(ts, Rejection):
        return ts
    return Decoded(ref, status=StatusUpdate(status, ts))


# The drone topic's fields: DroneTelemetry's own names (SI units), by JSON type.
_DRONE_FLOATS = (
    "alt_takeoff_m", "alt_msl_m", "alt_ellipsoid_m", "vertical_speed_mps", "battery_pct",
    "remaining_flight_s", "return_home_pct", "wind_speed_mps", "height_limit_m",
)  # fmt: skip
_DRONE_INTS = ("mode_code", "gps_fix", "satellites")
_DRONE_TEXTS = ("flight_mode", "dock_id")


def decode_drone(ref: DeviceRef, payload: bytes, received_at: datetime) -> DecodeResult:
    """Decode a native drone telemetry message (``serenazgo/units/{id}/drone``).

    Fields are :class:`tracker.model.DroneTelemetry`'s own (``battery_pct``,
    ``alt_takeoff_m``, ``flight_mode``…) plus ``home: {"lat", "lon"}``; every one
    is optional, ``ts`` defaults to the receive time. The MAVLink gateway
    publishes here; a drone that speaks our protocol may too.
    """
    obj = load_object(payload)
    if isinstance(obj, Rejection):
        return obj
    values: dict[str, object] = {}
    for key in _DRONE_FLOATS:
        raw = obj.get(key)
        if raw is not None:
            value = as_float(key, raw, allow_string=False)
            if isinstance(value, Rejection):
                return value
            values[key] = value
    for key in _DRONE_INTS:
        raw = obj.get(key)
        if raw is not None:
            if type(raw) is not int:
                return wrong_type(key, raw, "an integer")
            values[key] = raw
    for key in _DRONE_TEXTS:
        raw = obj.get(key)
        if raw is not None:
            if type(raw) is not str:
                return wrong_type(key, raw, "a string")
            values[key] = raw
    docked = obj.get("docked")
    if docked is not None:
        if type(docked) is not bool:
            return wrong_type("docked", docked, "true or false")
        values["docked"] = docked
    home = obj.get("home")
    if home is not None:
        if type(home) is not dict:
            return wrong_type("home", home, 'an object {"lat": …, "lon": …}')
        for key, name in (("lat", "home_lat"), ("lon", "home_lon")):
            value = required_float(home, key)
            if isinstance(value, Rejection):
                return Rejection(value.reason, f"home: {value.detail}")
            values[name] = value
    ts = optional_timestamp(obj, received_at)
    if isinstance(ts, Rejection):
        return ts
    telemetry = DroneTelemetry(ref.external_id, ts, source=Source.NATIVE, **values)  # type: ignore[arg-type]
    problem = check_telemetry(telemetry)
    if problem is not None:
        return problem
    return Decoded(ref, telemetry=[telemetry])


def decode_incident(ref: DeviceRef, payload: bytes, received_at: datetime) -> DecodeResult:
    """Decode a field incident report (``serenazgo/units/{id}/incident``).

    ``{"category", "priority"?, "description"?, "lat"?, "lon"?, "ts"?}``: ``category``
    is one of :class:`tracker.incidents.IncidentCategory`, ``priority`` an integer
    1..5 (default 3), ``lat``/``lon`` both or neither (neither: the unit's latest
    position), ``ts`` defaults to the receive time. The report's time is its
    identity: the same unit and ``ts`` is stored once, however often it is delivered.
    """
    obj = load_object(payload)
    if isinstance(obj, Rejection):
        return obj
    raw = _required_str(obj, "category")
    if isinstance(raw, Rejection):
        return raw
    if raw not in _CATEGORIES:
        return Rejection(
            "unknown_category", f"category {raw[:40]!r} is not one of: {', '.join(sorted(_CATEGORIES))}"
        )
    priority = obj.get("priority", PRIORITY_DEFAULT)
    if priority is None:
        priority = PRIORITY_DEFAULT
    if type(priority) is not int:
        return wrong_type("priority", priority, f"an integer {PRIORITY_MIN}..{PRIORITY_MAX}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        return Rejection(
            "priority_out_of_range",
            f"priority {priority} out of range: {PRIORITY_MIN} (highest)..{PRIORITY_MAX}",
        )
    description = obj.get("description", "")
    if description is None:
        description = ""
    if type(description) is not str:
        return wrong_type("description", description, "a string")
    if len(description) > TEXT_MAX:
        return Rejection("description_too_long", f"description longer than {TEXT_MAX} characters")
    lat: float | None = None
    lon: float | None = None
    if obj.get("lat") is not None or obj.get("lon") is not None:  # both, or neither
        got_lat = required_float(obj, "lat")
        if isinstance(got_lat, Rejection):
            return got_lat
        got_lon = required_float(obj, "lon")
        if isinstance(got_lon, Rejection):
            return got_lon
        lat, lon = got_lat, got_lon
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            return Rejection(
                "lat_lon_out_of_range",
                f"lat {lat} / lon {lon} out of range: lat in -90..90, lon in -180..180",
            )
    ts = optional_timestamp(obj, received_at)
    if isinstance(ts, Rejection):
        return ts
    report = FieldReport(ref.external_id, ts, raw, priority, description, lat, lon, received_at, payload)
    return Decoded(ref, report=report)
