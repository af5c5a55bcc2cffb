"""HTTP ingest for phones that do not speak MQTT: OsmAnd (Traccar Client) and OwnTracks HTTP mode.

* ``GET|POST /api/v1/ingest/osmand`` — the OsmAnd protocol (query string, form or
  Traccar Client's JSON body; :mod:`mqtt_bridge.codecs.osmand`). The same handler
  answers ``/`` on the conventional port 5055 (``SERENAZGO_OSMAND_PORT``), served by
  ``serenazgo up`` beside the API (:func:`osmand_app`). 200 with an empty body.
* ``POST /api/v1/ingest/owntracks`` — OwnTracks HTTP mode: the JSON message (or
  list) as the app posts it; the sender is ``X-Limit-U``/``X-Limit-D`` (the app's
  user and device), or the ``u``/``d`` query parameters. Answers ``[]``.

Both end in :class:`mqtt_bridge.http_ingest.HttpIngest`, whose worker process
decodes with the MQTT path's codecs, resolves, filters and commits many requests
in one transaction. A request is answered 200 only after its fix is committed;
422 with the reason when it was rejected (kept as a dead letter); 503 with
``Retry-After`` when the database is down; 413 for a body over
``SERENAZGO_MAX_PAYLOAD_BYTES``. Here, in the API's process, only the token is read.

Device authentication (``SERENAZGO_INGEST_AUTH``, on by default): every request
carries its unit's token (``serenazgo unit credentials UNIT``) as
``Authorization: Bearer <token>``, as the password of HTTP Basic auth (what the
OwnTracks app sends), or as a ``token`` query parameter (Traccar Client cannot set
headers: put it in the server URL). No token or an unknown one: 401, and nothing is
stored. A valid token whose unit does not own the request's device id: 403. The
token is stripped from what is stored as a dead letter.
"""

from __future__ import annotations

import base64
import binascii
import time
from urllib.parse import unquote_plus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.applications import Starlette
from starlette.routing import Route

from api.access import public
from api.auth import device_unit
from api.context import ApiContext
from mqtt_bridge.codecs import OSMAND_HTTP_TOPIC
from mqtt_bridge.http_ingest_worker import RETRY_AFTER_S
from tracker.errors import StorageError

router = APIRouter(prefix="/api/v1/ingest", tags=["ingest"])

# Phones are not users: they authenticate with their unit's device token (SERENAZGO_INGEST_AUTH).
DEVICES = "devices authenticate with their unit's device token, not a user role"

_OWNTRACKS_OK = b"[]"
_MAX_NAME = 64
_BAD_NAME_CHARS = frozenset("/+#\x00")


def _error(status: int, reason: str, detail: str) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"reason": reason, "detail": detail}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes | JSONResponse:
    """The body, or 413 past ``limit`` bytes (checked on Content-Length and while reading)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> JSONResponse:
    # Built only when needed: a JSONResponse costs a JSON encoding and headers on the hot path.
    return _error(
        413, "payload_too_large", f"the body is over the {limit}-byte limit (SERENAZGO_MAX_PAYLOAD_BYTES)"
    )


def _split_token(fields: bytes) -> tuple[bytes, str | None]:
    """URL-encoded ``fields`` without their ``token`` field, and that token (it is never stored)."""
    if b"token=" not in fields:
        return fields, None
    kept: list[bytes] = []
    token: str | None = None
    for part in fields.split(b"&"):
        if part.startswith(b"token="):
            token = unquote_plus(part[6:].decode("ascii", "replace"))
        elif part:
            kept.append(part)
    return b"&".join(kept), token


def _token_from(request: Request, given: str | None) -> str | None:
    """The device token: Bearer, Basic auth's password, else the ``token`` field ``given``."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        value = value.strip()
        scheme = scheme.lower()
        if scheme == "bearer" and value:
            return value
        if scheme == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return decoded.partition(":")[2] or None
    return given or None


async def _authenticate(request: Request, ctx: ApiContext, given: str | None) -> str | JSONResponse | None:
    """The unit the request's token belongs to; None when auth is off; else a 401 response."""
    if not ctx.settings.ingest_auth:
        return None
    token = _token_from(request, given)
    if token is None:
        return _error(
            401,
            "missing_token",
            "a device token is required: Authorization: Bearer <token>, or ?token=<token> in the server URL "
            "(issue one with `serenazgo unit credentials UNIT`)",
        )
    try:
        unit_id = await device_unit(ctx, token)
    except StorageError as exc:
        return _error(503, "database_unavailable", f"cannot check the token: {exc}")
    if unit_id is None:
        return _error(401, "invalid_token", "the device token is unknown or revoked")
    return unit_id


async def _ingest(
    ctx: ApiContext, topic: str, payload: bytes, received: float, unit_id: str | None, ok: bytes
) -> Response:
    """Submit to the group commit (which decodes and checks the sender against the token) and answer."""
    ingest = ctx.http_ingest
    if ingest is None:
        return _error(503, "not_running", "HTTP ingest is not running")
    outcome = await ingest.submit(topic, payload, received, unit_id)
    if outcome.status == 200:
        return Response(ok, media_type="application/json" if ok else None)
    return _error(outcome.status, outcome.reason, outcome.detail)


def _is_json(request: Request, body: bytes) -> bool:
    ctype = request.headers.get("content-type", "")
    return "json" in ctype or body.lstrip()[:1] in (b"{", b"[")


async def osmand(request: Request) -> Response:
    """OsmAnd / Traccar Client: query string, form or JSON body (see the module docstring)."""
    ctx: ApiContext = request.app.state.ctx
    received = time.time()
    body = b""
    if request.method != "GET":
        read = await _read_body(request, ctx.settings.max_payload_bytes)
        if isinstance(read, JSONResponse):
            return read
        body = read
    # The raw query string, parsed once by the codec (Starlette's own parsing would be a second pass).
    payload, token = _split_token(request.scope.get("query_string", b""))
    if body:
        if _is_json(request, body):
            payload = body
        else:
            form, form_token = _split_token(body)
            token = token or form_token
            payload = payload + b"&" + form if payload else form
    unit_id = await _authenticate(request, ctx, token)
    if isinstance(unit_id, JSONResponse):
        return unit_id
    return await _ingest(ctx, OSMAND_HTTP_TOPIC, payload, received, unit_id, b"")


def _name(value: str | None, what: str) -> str | JSONResponse:
    if not value:
        return _error(
            422, "missing_field", f"the OwnTracks {what} is missing: send X-Limit-{what[0].upper()} (set the "
            f"app's {what} in its HTTP settings) or ?{what[0]}=…",
        )  # fmt: skip
    if len(value) > _MAX_NAME or any(c in _BAD_NAME_CHARS for c in value):
        return _error(422, "invalid_name", f"the OwnTracks {what} {value[:80]!r} is not a valid topic level")
    return value


@router.get("/osmand", summary="OsmAnd / Traccar Client position (query string)", **public(DEVICES))
async def ingest_osmand_get(request: Request) -> Response:
    """One position from Traccar Client or any OsmAnd-protocol device; 200 once stored."""
    return await osmand(request)


@router.post(
    "/osmand", summary="OsmAnd / Traccar Client position (query, form or JSON body)", **public(DEVICES)
)
async def ingest_osmand_post(request: Request) -> Response:
    """One position (form or Traccar Client's JSON body); 200 once stored."""
    return await osmand(request)


@router.post("/owntracks", summary="OwnTracks HTTP mode", **public(DEVICES))
async def ingest_owntracks(request: Request) -> Response:
    """One OwnTracks message (or list) from the app in HTTP mode; ``[]`` once stored."""
    return await owntracks(request)


async def owntracks(request: Request) -> Response:
    """OwnTracks HTTP mode (see the module docstring)."""
    ctx: ApiContext = request.app.state.ctx
    received = time.time()
    user = _name(request.headers.get("x-limit-u") or request.query_params.get("u"), "user")
    if isinstance(user, JSONResponse):
        return user
    device = _name(request.headers.get("x-limit-d") or request.query_params.get("d"), "device")
    if isinstance(device, JSONResponse):
        return device
    body = await _read_body(request, ctx.settings.max_payload_bytes)
    if isinstance(body, JSONResponse):
        return body
    unit_id = await _authenticate(request, ctx, _split_token(request.scope.get("query_string", b""))[1])
    if isinstance(unit_id, JSONResponse):
        return unit_id
    return await _ingest(ctx, f"owntracks/{user}/{device}", body, received, unit_id, _OWNTRACKS_OK)


def fast_routes() -> list[Route]:
    """The ingest endpoints as plain Starlette routes (served before the app: api.app.served_app)."""
    return [
        Route(f"{router.prefix}/osmand", osmand, methods=["GET", "POST"]),
        Route(f"{router.prefix}/owntracks", owntracks, methods=["POST"]),
    ]


def osmand_app(ctx: ApiContext) -> Starlette:
    """The OsmAnd endpoint alone at ``/``, for the conventional port 5055 (shares ``ctx`` with the API)."""
    app = Starlette(routes=[Route("/", osmand, methods=["GET", "POST"])])
    app.state.ctx = ctx
    return app


__all__ = ["fast_routes", "osmand_app", "router"]
