"""``/api/v1/ws``: the live feed for consoles (snapshot, then every change; see :mod:`api.feed`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket

from api.access import READ, UNAUTHENTICATED
from api.auth import authenticate, check_secret
from api.context import ApiContext
from api.feed import CLOSE_INTERNAL_ERROR, CLOSE_POLICY_VIOLATION

# How often an open feed checks that its session still stands (at least: the auth cache's time).
MIN_RECHECK_S = 1.0

router = APIRouter()

# More active incidents than this at once is beyond any security centre's day (Miraflores: ~690 a day).
SNAPSHOT_INCIDENTS_MAX = 500


@router.websocket("/api/v1/ws")
async def live_feed(websocket: WebSocket) -> None:
    """Send a ``snapshot``, then ``{"type", "data"}`` messages until the client leaves or is too slow.

    The client sends nothing; a client that falls too far behind is closed with
    code 1013 and a reason, and should reconnect (it gets a fresh snapshot).
    The handshake needs a session cookie or a bearer token of any role; refused
    before it completes, the client sees HTTP 403. An open feed checks its secret
    again every ``SERENAZGO_AUTH__CACHE_S`` (at least every second) and ends with
    1008 once the session is revoked or expired or the user disabled.
    """
    ctx: ApiContext = websocket.app.state.ctx
    principal = await authenticate(websocket)
    if principal is None or principal.role not in READ:
        await websocket.close(CLOSE_POLICY_VIOLATION, UNAUTHENTICATED[:120])
        return
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
    name = f"{principal.username}@{peer.host}:{peer.port}" if peer else principal.username

    async def still_allowed() -> bool:
        now = await check_secret(websocket)
        return now is not None and now.role in READ

    recheck_s = max(ctx.settings.auth.cache_s, MIN_RECHECK_S)
    await hub.serve(
        websocket, name=name, open_incidents=open_incidents, still_allowed=still_allowed, recheck_s=recheck_s
    )
