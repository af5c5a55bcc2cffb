"""One audit line per state-changing API request: who, what, when, from where, and how it ended.

Every POST, PUT, PATCH and DELETE under the API is recorded, refused ones included
(a 403 is exactly what an auditor looks for), with the route's template as the
action (``POST /api/v1/incidents/{incident_id}/assign``), the path as the subject
and the status code. Login attempts are recorded under the user name they tried.
Domain services add their own detailed lines inside their transactions (an
assignment, an evidence export); this layer makes sure nothing done through the
API goes unrecorded.

Device ingest (``/api/v1/ingest/...``) is not audited here: positions are the
data itself, stored with their source; a phone sends thousands a day.

A pure ASGI middleware (not ``BaseHTTPMiddleware``): it adds nothing to GETs or to
ingest, and writes after the response is sent, so the line costs the caller no time.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.context import ApiContext
from tracker.errors import StorageError
from tracker.store.audit import append_audit

log = logging.getLogger(__name__)

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOT_AUDITED = ("/api/v1/ingest/",)


class AuditMiddleware:
    """Wraps the app; see the module docstring."""

    def __init__(self, app: ASGIApp, ctx: ApiContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through, then record it when it was a change."""
        if scope["type"] != "http" or scope["method"] not in CHANGES or scope["path"].startswith(NOT_AUDITED):
            await self.app(scope, receive, send)
            return
        outcome = {"status": 500}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            await self._record(scope, outcome["status"])

    async def _record(self, scope: Scope, status: int) -> None:
        pool = self.ctx.pool
        if pool is None:
            return
        state: dict[str, Any] = scope.get("state", {})
        principal = state.get("principal")
        actor = principal.username if principal is not None else str(state.get("audit_actor", ""))[:64]
        actor = actor or "anonymous"
        client = scope.get("client")
        method, path = scope["method"], scope["path"]
        detail: dict[str, Any] = {"status": status, "role": principal.role.value if principal else None}
        query = scope.get("query_string", b"").decode("latin-1")
        if query:
            detail["query"] = query[:500]
        try:
            await append_audit(
                pool,
                actor=actor,
                origin=client[0] if client else "",
                action=f"{method} {_template(scope) or path}",
                subject=path[:500],
                detail=detail,
            )
        except StorageError as exc:  # the change itself is done; say loudly that its record is not
            log.error("audit line not written for %s %s by %s: %s", method, path, actor, exc)


def _template(scope: Scope) -> str | None:
    """The route's path template (``/api/v1/incidents/{incident_id}``), or None when nothing matched.

    FastAPI puts the matched route in the scope; a request no route took keeps its plain path.
    """
    route = scope.get("route")
    return str(route.path) if route is not None and hasattr(route, "path") else None
