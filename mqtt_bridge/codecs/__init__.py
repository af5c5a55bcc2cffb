"""Codecs: bytes on a topic in, :data:`tracker.model.DecodeResult` out, never an exception.

:func:`decode_message` is the one entry for every transport (MQTT topics, and HTTP
ingest with an equivalent topic such as ``owntracks/{u}/{d}``): it checks the size,
routes by topic (:mod:`mqtt_bridge.topics`) and calls the codec for that route.
An empty payload (how MQTT clears a retained message) is Ignored, not rejected.
Each codec is a pure function of ``(sender, payload, received_at)``.

Every unit publishes on the same topic again and again, so the route and sender
of a topic are worked out once and kept in a bounded table.

The DJI Cloud API codecs (:mod:`drones.dji`) also need what earlier messages
said (topology, a dock's merged OSD, home points): they take a
:class:`drones.dji.DjiState`, the caller's (an ingest pipeline keeps its own) or
else this module's default one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from drones import dji
from drones.dji import DjiState
from mqtt_bridge.codecs import native, osmand, owntracks
from mqtt_bridge.topics import Route, RouteKind, parse_topic
from tracker.model import DecodeResult, DeviceRef, Ignored, Rejection, Source

__all__ = ["DEFAULT_DJI_STATE", "DEFAULT_MAX_PAYLOAD_BYTES", "OSMAND_HTTP_TOPIC", "decode_message"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD_BYTES = 65536
# The pseudo-topic of an OsmAnd HTTP request (the device id is in the payload, not the topic).
# Not an MQTT route: the bridge subscribes to nothing under "http/", so only HTTP ingest uses it.
OSMAND_HTTP_TOPIC = "http/osmand"
# Topics remembered: a metropolis has ~10,000 units (x2 for status topics). A flood of
# distinct hostile topics only empties the table, it cannot grow it.
ROUTE_CACHE_SIZE = 50_000

Codec = Callable[[DeviceRef, bytes, datetime], DecodeResult]
StatefulCodec = Callable[[DjiState, DeviceRef, bytes, datetime], DecodeResult]


@dataclass(slots=True, frozen=True)
class _DjiTarget:
    """A DJI route: its codec needs the DJI state besides the sender."""

    codec: StatefulCodec
    ref: DeviceRef


_Target = tuple[Codec, DeviceRef] | _DjiTarget | Ignored | Rejection
_routes: dict[str, _Target] = {}
_DJI_CODECS: dict[RouteKind, StatefulCodec] = {
    RouteKind.DJI_OSD: dji.decode_osd,
    RouteKind.DJI_STATE: dji.decode_state,
    RouteKind.DJI_STATUS: dji.decode_status,
}
DEFAULT_DJI_STATE = DjiState()
"""The DJI state used when a caller passes none (HTTP ingest, tools); pipelines pass their own."""


def _target(topic: str) -> _Target:
    """Work out the codec and sender for ``topic`` (or why there is none) and remember it."""
    route = parse_topic(topic)
    target: _Target
    if isinstance(route, Route):
        kind = route.kind
        if kind is RouteKind.NATIVE_POSITION:
            target = (native.decode_position, DeviceRef(Source.NATIVE, route.ids[0]))
        elif kind is RouteKind.NATIVE_STATUS:
            target = (native.decode_status, DeviceRef(Source.NATIVE, route.ids[0]))
        elif kind is RouteKind.NATIVE_DRONE:
            target = (native.decode_drone, DeviceRef(Source.NATIVE, route.ids[0]))
        elif kind is RouteKind.NATIVE_INCIDENT:
            target = (native.decode_incident, DeviceRef(Source.NATIVE, route.ids[0]))
        elif kind in _DJI_CODECS:
            target = _DjiTarget(_DJI_CODECS[kind], DeviceRef(Source.DJI, route.ids[0]))
        else:
            target = (owntracks.decode, owntracks.device_ref(route.ids[0], route.ids[1]))
    else:
        target = route
    if len(_routes) >= ROUTE_CACHE_SIZE:
        _routes.clear()
    _routes[topic] = target
    return target


def decode_message(
    topic: str,
    payload: bytes,
    received_at: datetime,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    dji_state: DjiState | None = None,
) -> DecodeResult:
    """Decode one message: Decoded, Ignored, or Rejection with a reason; never raises.

    ``received_at`` must be timezone-aware UTC; it stands in for a missing timestamp.
    ``dji_state`` is what the DJI codecs remember (:data:`DEFAULT_DJI_STATE` when None).

    >>> from datetime import UTC, datetime
    >>> now = datetime(2024, 5, 20, 12, 0, tzinfo=UTC)
    >>> decode_message("serenazgo/units/moto-3/position", b'{"lat": -12.12, "lon": -77.03}', now).pings[0].lat
    -12.12
    >>> decode_message("serenazgo/units/moto-3/position", b'{"lat": "x"}', now).reason
    'wrong_type'
    """
    try:
        if type(topic) is not str:
            return Rejection("unknown_topic", f"topic must be text, got {type(topic).__name__}")
        size = len(payload)
        if size > max_payload_bytes:
            return Rejection(
                "payload_too_large",
                f"payload is {size} bytes, over the {max_payload_bytes}-byte limit "
                "(SERENAZGO_MAX_PAYLOAD_BYTES)",
            )
        if topic == OSMAND_HTTP_TOPIC:
            if size == 0:
                return Rejection("missing_field", "empty OsmAnd request")
            return osmand.decode(payload, received_at)
        target = _routes.get(topic) or _target(topic)
        if type(target) is not tuple:
            if type(target) is not _DjiTarget:
                return target  # type: ignore[return-value]  # Ignored or Rejection
            if size == 0:
                return Ignored("empty_payload")
            dji_target: _DjiTarget = target  # type: ignore[assignment]
            state = DEFAULT_DJI_STATE if dji_state is None else dji_state
            return dji_target.codec(state, dji_target.ref, payload, received_at)
        if size == 0:
            # What MQTT clients publish to clear a retained message (mosquitto_pub -r -n).
            return Ignored("empty_payload")
        codec, ref = target
        return codec(ref, payload, received_at)
    except Exception as exc:
        # Last line of defence: a codec bug must dead-letter one message, not stop ingest.
        # The hostile-input tests fuzz the codecs to keep this branch unreachable.
        log.exception("codec failure on topic %.200r", topic)
        return Rejection(
            "internal_error", f"decoder failed ({type(exc).__name__}); please report this payload"
        )
