"""Codec for OwnTracks JSON (https://owntracks.org/booklet/tech/json/).

Topics ``owntracks/{user}/{device}`` and ``.../event``; the message's ``_type`` decides,
not the topic (the apps publish ``location``/``lwt`` on the base topic and
``transition`` on ``/event``, but a ``transition`` on the base topic means the same).

* ``location``: one :class:`Ping`. ``tst`` (epoch s) → ``ts``; ``acc`` → accuracy (m);
  ``alt`` (m); ``vel`` km/h → m/s; ``cog`` → heading; ``batt`` → battery %.
  ``vel: -1`` and ``cog: -1`` mean "unknown" (iOS, owntracks/ios#347) → None; other
  out-of-range values are left to :mod:`tracker.filters`, which drops and flags them.
  ``created_at`` (message build time), ``topic`` (HTTP mode; the MQTT topic is
  authoritative because the broker's ACL vouches for it), ``inregions``, ``tid``,
  ``t``, ``conn``… are ignored. A missing ``tst`` uses the receive time and flags
  ``TS_DEFAULTED``, as for native pings.
* ``transition``: a :class:`DeviceEvent` ``("transition", tst, {event, desc, …})`` plus a
  Ping at the transition point when ``lat``/``lon`` are present (the booklet marks
  them optional).
* ``lwt``: a :class:`DeviceEvent` ``("lwt", received_at, {"connected_at": tst})`` and no
  ping. The broker publishes the will when it *loses* the app, so the event time is
  the receive time; ``tst`` is when the app had connected.
* Known non-position types (card, cmd, waypoint(s), configuration, steps, encrypted,
  status, request, beacon) → :class:`Ignored`. An unknown ``_type`` → Rejection
  ``unknown_type`` so a new app version shows up in the dead letters.

Type drift seen in the wild is tolerated: numeric strings for any numeric field
(iOS sent ``"tst": "1571457804"``, owntracks/ios#604), floats where the booklet says
integer (Android ``"alt": 167.10000610351562``, owntracks/android#629).

A JSON *array* (HTTP mode exchanges lists of messages) is decoded element by element
into one :class:`Decoded`: pings in order; the event of the last element that has one
(a message carries at most one event); Ignored elements are skipped. If any element
is rejected the whole array is rejected (reason of the first bad element, detail
naming its index) so that no fix in it is silently lost: the dead letter keeps all.

Pings come out with ``unit_id=""`` (resolved later through the registry) and
``source=Source.OWNTRACKS``; ``ref`` is ``DeviceRef(OWNTRACKS, "owntracks/{user}/{device}")``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tracker.json_fields import (
    JsonObject,
    load_json,
    not_an_object,
    optional_float,
    parse_timestamp,
    required_float,
    type_name,
    wrong_type,
)
from tracker.model import (
    Decoded,
    DecodeResult,
    DeviceEvent,
    DeviceRef,
    Ignored,
    Ping,
    PingFlag,
    Rejection,
    Source,
)

KMH_TO_MPS = 1.0 / 3.6
UNKNOWN_SENTINEL = -1.0  # iOS publishes vel/cog -1 when the OS does not know them

IGNORED_TYPES = frozenset(
    {
        "beacon",
        "card",
        "cmd",
        "configuration",
        "encrypted",
        "request",
        "status",
        "steps",
        "waypoint",
        "waypoints",
    }
)
TRANSITION_EVENTS = frozenset({"enter", "leave"})
# Transition fields worth keeping on the event (scalars only; strings truncated).
_TRANSITION_DETAIL_KEYS = ("desc", "rid", "t", "tid", "wtst", "acc")
_MAX_DETAIL_STR = 200


def _scalar(value: object) -> object | None:
    """A JSON scalar safe to keep in an event's detail, or None to leave it out."""
    if isinstance(value, str):
        return value[:_MAX_DETAIL_STR]
    if isinstance(value, (int, float)):  # bool included; orjson never yields NaN or infinities
        return value
    return None


def _timestamp(obj: JsonObject, received_at: datetime) -> tuple[datetime, bool] | Rejection:
    """Read ``tst`` (defaulting to ``received_at``); returns ``(ts, defaulted)``."""
    raw = obj.get("tst")
    if raw is None:
        return received_at, True
    ts = parse_timestamp("tst", raw)
    if isinstance(ts, Rejection):
        return ts
    return ts, False


def _ping(obj: JsonObject, received_at: datetime, with_motion: bool) -> Ping | Rejection:
    """Build a Ping from ``lat``/``lon``/``tst``/``acc``/``alt`` (+``vel``/``cog``/``batt``)."""
    lat = required_float(obj, "lat", allow_string=True)
    if isinstance(lat, Rejection):
        return lat
    lon = required_float(obj, "lon", allow_string=True)
    if isinstance(lon, Rejection):
        return lon
    stamp = _timestamp(obj, received_at)
    if isinstance(stamp, Rejection):
        return stamp
    ts, defaulted = stamp
    acc = optional_float(obj, "acc", allow_string=True)
    if isinstance(acc, Rejection):
        return acc
    alt = optional_float(obj, "alt", allow_string=True)
    if isinstance(alt, Rejection):
        return alt
    speed: float | None = None
    heading: float | None = None
    battery: float | None = None
    if with_motion:
        vel = optional_float(obj, "vel", allow_string=True)
        if isinstance(vel, Rejection):
            return vel
        if vel is not None and vel != UNKNOWN_SENTINEL:
            speed = vel * KMH_TO_MPS
        cog = optional_float(obj, "cog", allow_string=True)
        if isinstance(cog, Rejection):
            return cog
        if cog is not None and cog != UNKNOWN_SENTINEL:
            heading = cog
        batt = optional_float(obj, "batt", allow_string=True)
        if isinstance(batt, Rejection):
            return batt
        battery = batt
    flags = PingFlag.TS_DEFAULTED if defaulted else PingFlag.NONE
    return Ping("", ts, lat, lon, alt, speed, heading, acc, battery, flags, Source.OWNTRACKS, received_at)


def _transition(ref: DeviceRef, obj: JsonObject, received_at: datetime) -> DecodeResult:
    """Decode ``_type: transition``: an event, plus a ping when it says where."""
    event = obj.get("event")
    if event is None:
        return Rejection("missing_field", "required field 'event' is missing (enter or leave)")
    if type(event) is not str:
        return wrong_type("event", event, "a string")
    if event not in TRANSITION_EVENTS:
        return Rejection("unknown_event", f"transition event {event[:40]!r} is neither 'enter' nor 'leave'")
    pings: list[Ping] = []
    if obj.get("lat") is not None or obj.get("lon") is not None:
        ping = _ping(obj, received_at, with_motion=False)
        if isinstance(ping, Rejection):
            return ping
        pings.append(ping)
        ts = ping.ts
    else:
        stamp = _timestamp(obj, received_at)
        if isinstance(stamp, Rejection):
            return stamp
        ts = stamp[0]
    detail: dict[str, object] = {"event": event}
    for key in _TRANSITION_DETAIL_KEYS:
        value = _scalar(obj.get(key))
        if value is not None:
            detail[key] = value
    return Decoded(ref, pings, event=DeviceEvent("transition", ts, detail))


def _lwt(ref: DeviceRef, obj: JsonObject, received_at: datetime) -> DecodeResult:
    """Decode ``_type: lwt``: the broker lost the app (the event time is the receive time)."""
    detail: dict[str, object] = {}
    raw = obj.get("tst")
    if raw is not None:
        connected = parse_timestamp("tst", raw)
        if isinstance(connected, Rejection):
            return connected
        detail["connected_at"] = connected.isoformat()
    return Decoded(ref, event=DeviceEvent("lwt", received_at, detail))


def decode_object(ref: DeviceRef, obj: JsonObject, received_at: datetime) -> DecodeResult:
    """Decode one OwnTracks JSON object (already parsed) sent by ``ref``."""
    kind = obj.get("_type")
    if kind == "location":
        ping = _ping(obj, received_at, with_motion=True)
        if isinstance(ping, Rejection):
            return ping
        return Decoded(ref, [ping])
    if kind == "transition":
        return _transition(ref, obj, received_at)
    if kind == "lwt":
        return _lwt(ref, obj, received_at)
    if kind is None:
        return Rejection("missing_field", "required field '_type' is missing (e.g. \"location\")")
    if type(kind) is not str:
        return wrong_type("_type", kind, "a string")
    if kind in IGNORED_TYPES:
        return Ignored(f"owntracks_{kind}")
    return Rejection("unknown_type", f"OwnTracks _type {kind[:40]!r} is not one serenazgo knows")


def _decode_array(ref: DeviceRef, items: list[Any], received_at: datetime) -> DecodeResult:
    """Decode a JSON array of OwnTracks objects into one result (rules in the module doc)."""
    if not items:
        return Ignored("owntracks_empty_array")
    merged = Decoded(ref)
    ignored: Ignored | None = None
    for i, item in enumerate(items):
        if type(item) is not dict:
            return Rejection(
                "not_an_object", f"array element [{i}] is a JSON {type_name(item)}, not an object"
            )
        result = decode_object(ref, item, received_at)
        if isinstance(result, Rejection):
            return Rejection(result.reason, f"array element [{i}]: {result.detail}")
        if isinstance(result, Ignored):
            ignored = ignored or result
            continue
        merged.pings.extend(result.pings)
        if result.event is not None:
            merged.event = result.event
    if not merged.pings and merged.event is None:
        return ignored or Ignored("owntracks_empty_array")
    return merged


def device_ref(user: str, device: str) -> DeviceRef:
    """The sender of ``owntracks/{user}/{device}[/...]``."""
    return DeviceRef(Source.OWNTRACKS, f"owntracks/{user}/{device}")


def decode(ref: DeviceRef, payload: bytes, received_at: datetime) -> DecodeResult:
    """Decode an OwnTracks message from ``ref`` (see :func:`device_ref`)."""
    data = load_json(payload)
    if type(data) is dict:
        return decode_object(ref, data, received_at)
    if isinstance(data, Rejection):
        return data
    if type(data) is list:
        return _decode_array(ref, data, received_at)
    return not_an_object(data)
