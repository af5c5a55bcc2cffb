"""The live feed hub behind the WebSocket: placeholder until the feed work fills it in."""

from __future__ import annotations


class LiveFeedHub:
    """Placeholder."""
