"""Unit events (geofences, freshness, battery): placeholder until the events work fills it in."""

from __future__ import annotations


class EventEngine:
    """Placeholder."""
