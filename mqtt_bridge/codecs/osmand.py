"""Codec for the OsmAnd protocol as Traccar Client sends it (https://www.traccar.org/osmand/).

Two shapes, both decoded here (the HTTP layer hands over the request's fields as
an ``application/x-www-form-urlencoded`` string, or the JSON body as it came):

* **Query string or form** (Traccar Client up to 8.x, OsmAnd live tracking, many
  trackers): ``id`` (or ``deviceid``), ``lat``, ``lon`` (or ``location=lat,lon``),
  ``timestamp`` (epoch seconds, epoch ms, ISO-8601, or ``yyyy-MM-dd HH:mm:ss`` taken
  as UTC as Traccar does), ``speed`` in **knots** (→ m/s), ``bearing`` or
  ``heading`` (deg), ``altitude`` (m), ``accuracy`` (m), ``batt`` (percent).
  ``hdop``, ``charge``, ``valid``, ``cell``, ``wifi`` and custom fields are read
  and not stored (the positions table has no column for them). ``valid=false``
  is a fix the device itself does not trust: rejected (``invalid_fix``).
* **JSON** (Traccar Client 9, built on transistorsoft's background-geolocation):
  ``{"location": {"timestamp": ISO, "coords": {"latitude", "longitude",
  "accuracy", "speed" (m/s), "heading", "altitude"}, "battery": {"level" 0..1,
  "is_charging"}, "is_moving", "mock"}, "device_id": "…"}``. ``-1`` in speed,
  heading and battery level means "unknown" (iOS) → None; ``mock: true`` sets
  :attr:`PingFlag.MOCK`. The ``location`` may also be a list of such objects
  (the plugin's batch sync).

A missing timestamp uses the receive time and flags ``TS_DEFAULTED``. Out-of-range
optional values are left to :mod:`tracker.filters`, as for every codec.

Pings come out with ``unit_id=""`` and ``source=Source.OSMAND``; the sender is
``DeviceRef(OSMAND, id)``. Pure, never raises.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from tracker.json_fields import (
    JsonObject,
    load_json,
    missing,
    not_an_object,
    optional_float,
    parse_timestamp,
    required_float,
    show_value,
    wrong_type,
)
from tracker.model import Decoded, DecodeResult, DeviceRef, Ping, PingFlag, Rejection, Source

KNOTS_TO_MPS = 1852.0 / 3600.0
UNKNOWN_SENTINEL = -1.0  # background-geolocation reports speed/heading/battery -1 when unknown
MAX_DEVICE_ID = 64
MAX_FIELDS = 100  # a query string with more fields than this is not a phone's
_FALSE = frozenset({"false", "0"})


def _device_ref(raw: object) -> DeviceRef | Rejection:
    """The sender for a device id (non-empty text of at most 64 characters)."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = str(int(raw)) if float(raw).is_integer() else str(raw)
    if type(raw) is not str:
        return wrong_type("id", raw, "a string")
    text = raw.strip()
    if not text:
        return Rejection("missing_field", "the device id ('id' or 'deviceid') is empty")
    if len(text) > MAX_DEVICE_ID:
        detail = f"device id {show_value(text)} is over {MAX_DEVICE_ID} characters"
        return Rejection("invalid_device_id", detail)
    return DeviceRef(Source.OSMAND, text)


def _query_timestamp(value: str) -> datetime | Rejection:
    """Traccar's rules: epoch s/ms, ISO-8601, or ``yyyy-MM-dd HH:mm:ss`` (UTC)."""
    text = value.strip()
    if "T" not in text and " " in text:
        try:
            return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            return Rejection("invalid_timestamp", f"field 'timestamp': {show_value(value)} is not a time")
    return parse_timestamp("timestamp", text)


def _number(key: str, text: str) -> float | Rejection:
    """A query field as a finite float (``float()`` itself: the fields are always text here)."""
    try:
        f = float(text)
    except ValueError:
        return wrong_type(key, text, "a number")
    if "_" in text:  # Python's float() takes "1_000"; no client sends it, Java's parser refuses it
        return wrong_type(key, text, "a number")
    if not math.isfinite(f):
        return Rejection("wrong_type", f"field {key!r} must be a finite number, got {show_value(text)}")
    return f


def _optional(fields: dict[str, str], *keys: str) -> float | Rejection | None:
    """The first of ``keys`` present, as a finite float (None when none is)."""
    for key in keys:
        value = fields.get(key)
        if value:
            return _number(key, value)
    return None


def decode_query(text: str, received_at: datetime) -> DecodeResult:
    """Decode OsmAnd query/form fields (``id=…&lat=…``)."""
    # parse_qsl's rules (keep blank values, "+" is a space), without its cost for the common
    # case of plain fields: only a field with "%" or "+" is unquoted.
    parts = text.split("&")
    if len(parts) > MAX_FIELDS:
        return Rejection("too_many_fields", f"more than {MAX_FIELDS} fields: not an OsmAnd request")
    fields: dict[str, str] = {}
    for part in parts:
        if not part:
            continue
        key, _, value = part.partition("=")
        if "%" in part or "+" in part:
            key, value = unquote_plus(key), unquote_plus(value)
        fields.setdefault(key, value)  # the first of repeated keys (cell, wifi) is enough here
    raw_id = fields.get("id") or fields.get("deviceid")
    if raw_id is None:
        return Rejection("missing_field", "required field 'id' (or 'deviceid') is missing")
    ref = _device_ref(raw_id)
    if isinstance(ref, Rejection):
        return ref
    if "location" in fields and "lat" not in fields:
        parts = fields["location"].split(",")
        if len(parts) != 2:
            return Rejection("wrong_type", "field 'location' must be 'lat,lon'")
        fields["lat"], fields["lon"] = parts
    for key in ("lat", "lon"):
        if not fields.get(key):
            return Rejection("missing_field", f"required field {key!r} is missing")
    lat = _number("lat", fields["lat"])
    if isinstance(lat, Rejection):
        return lat
    lon = _number("lon", fields["lon"])
    if isinstance(lon, Rejection):
        return lon
    if fields.get("valid", "").lower() in _FALSE:
        return Rejection("invalid_fix", "the device marked this fix invalid (valid=false)")
    stamp = fields.get("timestamp")
    flags = PingFlag.NONE
    if stamp:
        ts = _query_timestamp(stamp)
        if isinstance(ts, Rejection):
            return ts
    else:
        ts, flags = received_at, PingFlag.TS_DEFAULTED
    values: list[float | None] = []
    for keys in (("altitude",), ("speed",), ("bearing", "heading"), ("accuracy",), ("batt",)):
        v = _optional(fields, *keys)
        if isinstance(v, Rejection):
            return v
        values.append(v)
    alt, knots, heading, accuracy, battery = values
    speed = None if knots is None else knots * KNOTS_TO_MPS
    ping = Ping("", ts, lat, lon, alt, speed, heading, accuracy, battery, flags, Source.OSMAND, received_at)
    return Decoded(ref, [ping])


def _known(value: float | Rejection | None) -> float | Rejection | None:
    """None for the -1 "unknown" sentinel."""
    return None if value == UNKNOWN_SENTINEL else value


def _json_ping(loc: JsonObject, received_at: datetime) -> Ping | Rejection:
    """One Ping from a background-geolocation ``location`` object."""
    coords = loc.get("coords")
    if coords is None:
        return missing("location.coords")
    if type(coords) is not dict:
        return wrong_type("location.coords", coords, "an object")
    lat = required_float(coords, "latitude", allow_string=True)
    if isinstance(lat, Rejection):
        return lat
    lon = required_float(coords, "longitude", allow_string=True)
    if isinstance(lon, Rejection):
        return lon
    raw_ts = loc.get("timestamp")
    flags = PingFlag.NONE
    if raw_ts is None:
        ts, flags = received_at, PingFlag.TS_DEFAULTED
    else:
        parsed = parse_timestamp("location.timestamp", raw_ts)
        if isinstance(parsed, Rejection):
            return parsed
        ts = parsed
    out: list[float | None] = []
    for key in ("altitude", "speed", "heading", "accuracy"):
        v = optional_float(coords, key, allow_string=True)
        if isinstance(v, Rejection):
            return v
        out.append(v if key == "altitude" else _known(v))  # type: ignore[arg-type]
    alt, speed, heading, accuracy = out
    battery: float | None = None
    batt = loc.get("battery")
    if isinstance(batt, dict):
        level = _known(optional_float(batt, "level", allow_string=True))
        if isinstance(level, Rejection):
            return level
        battery = None if level is None else level * 100.0
    elif batt is not None:
        return wrong_type("location.battery", batt, "an object")
    if loc.get("mock") is True:
        flags |= PingFlag.MOCK
    return Ping("", ts, lat, lon, alt, speed, heading, accuracy, battery, flags, Source.OSMAND, received_at)


def decode_json(data: Any, received_at: datetime) -> DecodeResult:
    """Decode Traccar Client's JSON body (already parsed)."""
    if type(data) is not dict:
        return not_an_object(data)
    raw_id = data.get("device_id")
    if raw_id is None:
        return missing("device_id")
    ref = _device_ref(raw_id)
    if isinstance(ref, Rejection):
        return ref
    loc = data.get("location")
    if loc is None:
        return missing("location")
    items = loc if type(loc) is list else [loc]
    if not items:
        return Rejection("missing_field", "'location' is an empty list")
    pings: list[Ping] = []
    for i, item in enumerate(items):
        if type(item) is not dict:
            return wrong_type("location", item, "an object")
        ping = _json_ping(item, received_at)
        if isinstance(ping, Rejection):
            return ping if len(items) == 1 else Rejection(ping.reason, f"location[{i}]: {ping.detail}")
        pings.append(ping)
    return Decoded(ref, pings)


def decode(payload: bytes, received_at: datetime) -> DecodeResult:
    """Decode one OsmAnd request: a JSON body, or urlencoded fields (see the module docstring)."""
    head = payload.lstrip()[:1]
    if head in (b"{", b"["):
        data = load_json(payload)
        if isinstance(data, Rejection):
            return data
        return decode_json(data, received_at)
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        return Rejection("invalid_encoding", "OsmAnd fields must be URL-encoded ASCII")
    return decode_query(text, received_at)


__all__ = ["KNOTS_TO_MPS", "decode", "decode_json", "decode_query"]
