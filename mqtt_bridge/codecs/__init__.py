"""Codecs: bytes on a topic in, :data:`tracker.model.DecodeResult` out, never an exception.

:func:`decode_message` is the one entry for every transport (MQTT topics, and HTTP
ingest with an equivalent topic such as ``owntracks/{u}/{d}``): it checks the size,
routes by topic (:mod:`mqtt_bridge.topics`) and calls the codec for that route.
An empty payload (how MQTT clears a retained message) is Ignored, not rejected.
Each codec is a pure function of ``(identifiers, payload, received_at)``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from mqtt_bridge.codecs import native, owntracks
from mqtt_bridge.topics import Route, RouteKind, parse_topic
from tracker.model import DecodeResult, Ignored, Rejection

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "decode_message"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD_BYTES = 65536


def _decode(topic: str, payload: bytes, received_at: datetime, max_payload_bytes: int) -> DecodeResult:
    """The dispatch itself (see :func:`decode_message`)."""
    if type(topic) is not str:
        return Rejection("unknown_topic", f"topic must be text, got {type(topic).__name__}")
    size = len(payload)
    if size > max_payload_bytes:
        return Rejection(
            "payload_too_large",
            f"payload is {size} bytes, over the {max_payload_bytes}-byte limit (SERENAZGO_MAX_PAYLOAD_BYTES)",
        )
    route = parse_topic(topic)
    if type(route) is not Route:
        return route  # type: ignore[return-value]  # Ignored or Rejection
    if size == 0:
        # What MQTT clients publish to clear a retained message (mosquitto_pub -r -n).
        return Ignored("empty_payload")
    kind = route.kind
    if kind is RouteKind.NATIVE_POSITION:
        return native.decode_position(route.ids[0], payload, received_at)
    if kind is RouteKind.NATIVE_STATUS:
        return native.decode_status(route.ids[0], payload, received_at)
    return owntracks.decode(route.ids[0], route.ids[1], payload, received_at)


def decode_message(
    topic: str,
    payload: bytes,
    received_at: datetime,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> DecodeResult:
    """Decode one message: Decoded, Ignored, or Rejection with a reason; never raises.

    ``received_at`` must be timezone-aware UTC; it stands in for a missing timestamp.

    >>> from datetime import UTC, datetime
    >>> now = datetime(2024, 5, 20, 12, 0, tzinfo=UTC)
    >>> decode_message("serenazgo/units/moto-3/position", b'{"lat": -12.12, "lon": -77.03}', now).pings[0].lat
    -12.12
    >>> decode_message("serenazgo/units/moto-3/position", b'{"lat": "x"}', now).reason
    'wrong_type'
    """
    try:
        return _decode(topic, payload, received_at, max_payload_bytes)
    except Exception as exc:
        # Last line of defence: a codec bug must dead-letter one message, not stop ingest.
        # The hostile-input tests fuzz the codecs to keep this branch unreachable.
        log.exception("codec failure on topic %.200r", topic)
        return Rejection(
            "internal_error", f"decoder failed ({type(exc).__name__}); please report this payload"
        )
