"""``/api/v1/ws``: the live feed for consoles (snapshot, then every change; see :mod:`api.feed`)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from api.context import ApiContext
from api.feed import CLOSE_INTERNAL_ERROR

router = APIRouter()


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
    client = websocket.client
    await hub.serve(websocket, name=f"{client.host}:{client.port}" if client else "")
