"""``/api/v1/ws``: the live feed for consoles (snapshot, then every change; see :mod:`api.feed`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket

from api.context import ApiContext
from api.feed import CLOSE_INTERNAL_ERROR

router = APIRouter()

# More active incidents than this at once is beyond any security centre's day (Miraflores: ~690 a day).
SNAPSHOT_INCIDENTS_MAX = 500


@router.websocket("/api/v1/ws")
async def live_feed(websocket: WebSocket) -> None:
    """Send a ``snapshot``, then ``{"type", "data"}`` messages until the client leaves or is too slow.

    The client sends nothing; a client that falls too far behind is closed with
    code 1013 and a reason, and should reconnect (it gets a fresh snapshot).
    """
    ctx: ApiContext = websocket.app.state.ctx
    await websocket.accept()
    hub = ctx.feed
    if hub is None:
        await websocket.close(CLOSE_INTERNAL_ERROR, "the live feed is not running in this process")
        return
    service = ctx.incidents

    async def open_incidents() -> list[Mapping[str, Any]]:
        if service is None:
            return []
        page = await service.list(status="active", limit=SNAPSHOT_INCIDENTS_MAX)
        return [incident.to_json() for incident in page.items]

    peer = websocket.client
    name = f"{peer.host}:{peer.port}" if peer else ""
    await hub.serve(websocket, name=name, open_incidents=open_incidents)
