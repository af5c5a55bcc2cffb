"""The live feed contract: how domain services announce changes to consoles.

Services in ``tracker/`` (incidents, events) do not know about WebSockets; they
call a :data:`FeedListener` with a message type and a JSON-ready payload, the
same shape their REST resource has. ``api/`` supplies the listener that fans
messages out to WebSocket clients. A listener may be called from any thread and
must return at once (hand over, never block): ingest calls it on its writer
thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Message types on the live feed (``{"type": <type>, "data": <payload>}`` on the WebSocket).
FEED_TYPES = ("snapshot", "position", "status", "unit", "connection", "incident", "event", "keepalive")

FeedListener = Callable[[str, dict[str, Any]], None]


def no_feed(kind: str, payload: dict[str, Any]) -> None:
    """A listener that drops everything (services built without a console)."""
