"""Field readers shared by the JSON codecs: parse a payload, read numbers and timestamps.

Each reader returns the value or a :class:`Rejection` (never raises), so a codec is
a straight line of "read, return early on Rejection". Numbers come out as finite
floats; timestamps as timezone-aware UTC datetimes. Ranges are *not* checked here
(that is :mod:`tracker.filters`), only types and finiteness.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from tracker.model import Rejection

# Wire contract: an epoch below 2**31 is seconds, at or above it milliseconds.
EPOCH_MS_THRESHOLD = 2**31

# A plain decimal number: what iOS OwnTracks puts in a *string* tst ("1571457804").
# Deliberately stricter than float(): no "nan", "inf", "1e9", "1_000", spaces.
_NUMERIC_STRING = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,12})?")
_MAX_ISO_LEN = 64
_MAX_SHOWN = 60
_fromtimestamp = datetime.fromtimestamp

JsonObject = dict[str, Any]


def show_value(value: object) -> str:
    """A short, safe rendering of a bad value for a Rejection detail."""
    return repr(value)[:_MAX_SHOWN]


def type_name(value: object) -> str:
    """JSON name of a decoded value's type (for wrong_type details)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def load_json(payload: bytes) -> Any | Rejection:
    """Parse ``payload`` as JSON; a Rejection (invalid_utf8 / invalid_json) on failure."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        # Only on the failure path: tell broken encodings from broken JSON.
        try:
            bytes(payload).decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Rejection("invalid_utf8", f"payload is not UTF-8 text (byte {uexc.start}): send JSON")
        return Rejection("invalid_json", f"payload is not valid JSON: {str(exc)[:120]}")


def not_an_object(data: object) -> Rejection:
    """Rejection for a payload that is valid JSON but not an object."""
    return Rejection("not_an_object", f"payload is a JSON {type_name(data)}, expected an object {{...}}")


def load_object(payload: bytes) -> JsonObject | Rejection:
    """Parse ``payload`` as one JSON object."""
    data = load_json(payload)
    if type(data) is dict:
        return data
    if isinstance(data, Rejection):
        return data
    return not_an_object(data)


def wrong_type(key: str, value: object, expected: str) -> Rejection:
    """Rejection for a field of the wrong JSON type."""
    return Rejection(
        "wrong_type", f"field {key!r} must be {expected}, got {type_name(value)} {show_value(value)}"
    )


def missing(key: str) -> Rejection:
    """Rejection for a required field that is absent or null."""
    return Rejection("missing_field", f"required field {key!r} is missing")


def as_float(key: str, value: object, allow_string: bool) -> float | Rejection:
    """Return ``value`` as a finite float; numeric strings only when ``allow_string``."""
    # bool is an int subclass: a JSON true must not read as 1.
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number or (allow_string and isinstance(value, str) and _NUMERIC_STRING.fullmatch(value)):
        f = float(value)  # type: ignore[arg-type]  # int, float or numeric str, checked above
    else:
        return wrong_type(key, value, "a number")
    if not math.isfinite(f):
        return Rejection("wrong_type", f"field {key!r} must be a finite number, got {show_value(value)}")
    return f


def required_float(obj: JsonObject, key: str, allow_string: bool = False) -> float | Rejection:
    """Read a required numeric field as a finite float."""
    value: Any = obj.get(key)
    t = type(value)
    if t is float:  # fast path: orjson never yields a non-finite float
        return value  # type: ignore[no-any-return]
    if t is int:  # orjson ints fit in 64 bits: always a finite float
        return float(value)
    if value is None:
        return missing(key)
    return as_float(key, value, allow_string)


def optional_float(obj: JsonObject, key: str, allow_string: bool = False) -> float | Rejection | None:
    """Read an optional numeric field: None when absent or null, else a finite float."""
    value: Any = obj.get(key)
    t = type(value)
    if t is float or value is None:
        return value  # type: ignore[no-any-return]
    if t is int:
        return float(value)
    return as_float(key, value, allow_string)


def epoch_to_datetime(key: str, epoch: float) -> datetime | Rejection:
    """Turn an epoch (seconds below 2**31, else milliseconds) into an aware UTC datetime."""
    seconds = epoch / 1000.0 if epoch >= EPOCH_MS_THRESHOLD else epoch
    try:
        return _fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return Rejection("invalid_timestamp", f"field {key!r}: epoch {epoch!r} is not a representable time")


def parse_timestamp(key: str, value: object) -> datetime | Rejection:
    """Read a timestamp: epoch number or numeric string (seconds or ms), or ISO-8601 with an offset."""
    t = type(value)
    if t is int or t is float:
        # Inlined epoch_to_datetime: this is the hot path of every native ping.
        epoch: float = value  # type: ignore[assignment]
        seconds = epoch / 1000.0 if epoch >= EPOCH_MS_THRESHOLD else epoch
        try:
            return _fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):  # also NaN, which orjson never yields
            return Rejection(
                "invalid_timestamp", f"field {key!r}: epoch {epoch!r} is not a representable time"
            )
    if t is not str:
        return Rejection(
            "invalid_timestamp",
            f"field {key!r} must be epoch seconds/milliseconds or an ISO-8601 string, "
            f"got {type_name(value)} {show_value(value)}",
        )
    text: str = value  # type: ignore[assignment]
    if _NUMERIC_STRING.fullmatch(text):
        return epoch_to_datetime(key, float(text))
    if len(text) > _MAX_ISO_LEN:
        return Rejection("invalid_timestamp", f"field {key!r}: {show_value(text)} is not an epoch timestamp")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return Rejection(
            "invalid_timestamp", f"field {key!r}: {show_value(text)} is neither an epoch nor ISO-8601"
        )
    if dt.tzinfo is None or dt.utcoffset() is None:
        # Lima is UTC-5: guessing the zone of a naive time would misplace fixes by hours.
        return Rejection(
            "invalid_timestamp",
            f"field {key!r}: {show_value(text)} has no UTC offset; add 'Z' or '+00:00'",
        )
    try:
        return dt.astimezone(UTC)
    except (OverflowError, ValueError):
        return Rejection("invalid_timestamp", f"field {key!r}: {show_value(text)} is out of range")
