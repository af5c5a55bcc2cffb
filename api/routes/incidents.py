"""``/api/v1/incidents``: report incidents, send and release units, close or cancel, response-time stats.

``POST /api/v1/units/{unit_id}/incidents``: a unit reports one from the field (channel ``patrol``).

Responses are the incident's JSON form (:meth:`tracker.incidents.Incident.to_json`),
the same shape the live feed sends as ``{"type": "incident", "data": ...}``.
Who acts is the logged-in user (or the API token's user); an integration may
name whom it acts for with ``operator`` in the body. The audit log also records
the client's address as ``origin``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.access import DISPATCH, READ, REPORT, Actor, acting_as, admits, admits_unit
from api.deps import Context
from api.schemas import Problem
from tracker.errors import UnitNotFoundError
from tracker.incidents import (
    Channel,
    IncidentCategory,
    IncidentConflictError,
    IncidentInputError,
    IncidentNotFoundError,
    IncidentPatch,
    IncidentService,
    IncidentStatus,
)
from tracker.model import UNIT_ID_PATTERN

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])
unit_router = APIRouter(prefix="/api/v1/units", tags=["incidents"])  # a unit's own reports

DEFAULT_STATS_WINDOW = timedelta(days=30)
MAX_STATS_WINDOW = timedelta(days=400)

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)]
Operator = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=128),
    Field(description="whom an integration acts for (recorded beside its own user in the audit log)"),
]
UnitId = Annotated[str, Field(pattern=UNIT_ID_PATTERN, description="the unit's id")]

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such incident or unit"},
    409: {"model": Problem, "description": "the current state forbids it (the detail says why)"},
    422: {"model": Problem, "description": "malformed request (the detail says what to send)"},
    503: {"model": Problem, "description": "incidents are not running, or the database failed"},
}


class IncidentCreate(BaseModel):
    """Body of ``POST /api/v1/incidents``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "lat": -12.1219,
                    "lon": -77.0297,
                    "category": "seguridad_ciudadana",
                    "channel": "whatsapp",
                    "priority": 2,
                    "description": "robo al paso, sospechoso huye hacia el parque Kennedy",
                    "address": "Av. José Larco 400",
                    "reported_by": "+51 9XX XXX XXX",
                    "operator": "op-ana",
                }
            ]
        },
    )

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    category: IncidentCategory
    channel: Channel
    priority: int = Field(3, ge=1, le=5, description="1 (highest) .. 5")
    description: Text = ""
    address: Text = ""
    reported_by: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""
    operator: Operator = ""


class FieldReportBody(BaseModel):
    """Body of ``POST /api/v1/units/{unit_id}/incidents``: an incident the unit reports (channel patrol)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"category": "seguridad_vial", "priority": 2, "description": "choque en Av. Arequipa"},
                {"category": "otro", "lat": -12.1219, "lon": -77.0297, "ts": "2026-11-26T02:40:00Z"},
            ]
        },
    )

    category: IncidentCategory
    priority: int = Field(3, ge=1, le=5, description="1 (highest) .. 5")
    description: Text = ""
    lat: float | None = Field(None, ge=-90, le=90, description="where; with lon, else the unit's position")
    lon: float | None = Field(None, ge=-180, le=180)
    ts: datetime | None = Field(None, description="when the unit saw it (ISO-8601); default now")


class IncidentUpdate(BaseModel):
    """Body of ``PATCH /api/v1/incidents/{id}``: only the fields sent change."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"operator": "op-ana", "priority": 1},
                {"operator": "op-ana", "status": "closed", "resolution": "detenido, entregado a la PNP"},
            ]
        },
    )

    operator: Operator = ""
    description: Text | None = None
    priority: int | None = Field(None, ge=1, le=5)
    category: IncidentCategory | None = None
    address: Text | None = None
    status: IncidentStatus | None = Field(
        None, description="closed or cancelled (this releases its units); the rest follows the units"
    )
    resolution: Text | None = None

    def to_patch(self) -> IncidentPatch:
        """The domain patch this body asks for."""
        return IncidentPatch(
            description=self.description,
            priority=self.priority,
            category=self.category,
            address=self.address,
            status=self.status,
            resolution=self.resolution,
        )


class AssignBody(BaseModel):
    """Body of ``POST /api/v1/incidents/{id}/assign``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"unit_id": "car-07", "operator": "op-ana"}]}
    )

    unit_id: UnitId
    operator: Operator = ""


class ReleaseBody(AssignBody):
    """Body of ``POST /api/v1/incidents/{id}/release``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"unit_id": "car-07", "operator": "op-ana", "reason": "reasignado"}]},
    )

    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = Field(
        "", description="why the unit is freed (recorded on the assignment)"
    )


async def get_service(ctx: Context) -> IncidentService:
    """The running :class:`IncidentService`, or 503 when this process has none."""
    if ctx.incidents is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "incidents are not available in this process (the incident service was not started): "
            "check the server's log at start, or use the process that runs dispatch",
        )
    return ctx.incidents


Service = Annotated[IncidentService, Depends(get_service)]


def _origin(request: Request) -> str:
    return request.client.host if request.client is not None else ""


def _utc(ts: datetime) -> datetime:
    # A time without an offset is taken as UTC, the system's only time zone inside.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _http(exc: Exception) -> HTTPException:
    """The HTTP error for a domain error (404, 409 or 422)."""
    if isinstance(exc, IncidentNotFoundError | UnitNotFoundError):
        code = status.HTTP_404_NOT_FOUND
    elif isinstance(exc, IncidentConflictError):
        code = status.HTTP_409_CONFLICT
    else:
        code = status.HTTP_422_UNPROCESSABLE_CONTENT
    return HTTPException(code, str(exc))


DomainErrors = (IncidentNotFoundError, UnitNotFoundError, IncidentConflictError, IncidentInputError)


@router.post(
    "", status_code=status.HTTP_201_CREATED, summary="Report an incident", responses=ERRORS, **admits(REPORT)
)
async def create_incident(
    body: IncidentCreate, service: Service, request: Request, actor: Actor
) -> dict[str, Any]:
    """Record the incident; the answer adds ``recommended``: available units ranked by ETA to it."""
    try:
        incident, recommended = await service.create(
            lat=body.lat,
            lon=body.lon,
            category=body.category,
            channel=body.channel,
            priority=body.priority,
            description=body.description,
            address=body.address,
            reported_by=body.reported_by,
            operator=acting_as(actor, body.operator),
            origin=_origin(request),
        )
    except DomainErrors as exc:
        raise _http(exc) from exc
    return {**incident.to_json(), "recommended": [c.to_json() for c in recommended]}


@router.get("", summary="List incidents (newest first)", responses=ERRORS, **admits(READ))
async def list_incidents(
    service: Service,
    status_filter: Annotated[
        str,
        Query(
            alias="status",
            description="all, active (not closed or cancelled), or one status: open, assigned, en_route, "
            "on_scene, closed, cancelled",
        ),
    ] = "all",
    since: Annotated[
        datetime | None, Query(description="created at or after (ISO-8601; UTC if no offset)")
    ] = None,
    until: Annotated[datetime | None, Query(description="created before")] = None,
    category: IncidentCategory | None = None,
    channel: Channel | None = None,
    before: Annotated[
        int | None, Query(description="page: incidents with a smaller id (next_before)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """A page of incidents with their assignments; pass ``next_before`` as ``before`` for the next page."""
    try:
        page = await service.list(
            status=status_filter,
            since=None if since is None else _utc(since),
            until=None if until is None else _utc(until),
            category=category,
            channel=channel,
            before=before,
            limit=limit,
        )
    except DomainErrors as exc:
        raise _http(exc) from exc
    return page.to_json()


# Declared before /{incident_id}, which would otherwise take "stats" for an id.
@router.get("/stats", summary="Response times by category and channel", responses=ERRORS, **admits(READ))
async def incident_stats(
    service: Service,
    since: Annotated[
        datetime | None, Query(description="incidents created at or after (default: 30 days ago)")
    ] = None,
    until: Annotated[datetime | None, Query(description="incidents created before (default: now)")] = None,
    by: Annotated[list[str] | None, Query(description="breakdowns: category, channel, priority")] = None,
) -> dict[str, Any]:
    """Response time (report to first unit on scene) and time to assign: count, p50, p90, mean (seconds)."""
    end = _utc(until) if until is not None else datetime.now(UTC)
    start = _utc(since) if since is not None else end - DEFAULT_STATS_WINDOW
    if end - start > MAX_STATS_WINDOW:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"the window is longer than {MAX_STATS_WINDOW.days} days: ask for a shorter one",
        )
    try:
        stats = await service.stats(start, end, tuple(by) if by else ("category", "channel"))
    except DomainErrors as exc:
        raise _http(exc) from exc
    return stats.to_json()


@router.get("/{incident_id}", summary="Read one incident", responses=ERRORS, **admits(READ))
async def get_incident(incident_id: int, service: Service) -> dict[str, Any]:
    """The incident with its assignments, or 404."""
    try:
        return (await service.get(incident_id)).to_json()
    except DomainErrors as exc:
        raise _http(exc) from exc


@router.patch(
    "/{incident_id}", summary="Change, close or cancel an incident", responses=ERRORS, **admits(DISPATCH)
)
async def patch_incident(
    incident_id: int, body: IncidentUpdate, service: Service, request: Request, actor: Actor
) -> dict[str, Any]:
    """Change description, priority, category, address or resolution; ``status`` closed/cancelled ends it."""
    try:
        incident = await service.patch(
            incident_id, body.to_patch(), acting_as(actor, body.operator), _origin(request)
        )
    except DomainErrors as exc:
        raise _http(exc) from exc
    return incident.to_json()


@router.post(
    "/{incident_id}/assign",
    status_code=status.HTTP_201_CREATED,
    summary="Send a unit to an incident",
    responses=ERRORS,
    **admits(DISPATCH),
)
async def assign_unit(
    incident_id: int, body: AssignBody, service: Service, request: Request, actor: Actor
) -> dict[str, Any]:
    """Assign an available unit with a live position; 409 says why a unit cannot go (busy: where)."""
    try:
        incident, assignment = await service.assign(
            incident_id, body.unit_id, acting_as(actor, body.operator), _origin(request)
        )
    except DomainErrors as exc:
        raise _http(exc) from exc
    return {"assignment": assignment.to_json(), "incident": incident.to_json()}


@router.post(
    "/{incident_id}/release", summary="Free a unit from an incident", responses=ERRORS, **admits(DISPATCH)
)
async def release_unit(
    incident_id: int, body: ReleaseBody, service: Service, request: Request, actor: Actor
) -> dict[str, Any]:
    """The unit becomes available again; the incident reopens if it has no unit left and none arrived."""
    try:
        incident = await service.release(
            incident_id,
            body.unit_id,
            acting_as(actor, body.operator),
            _origin(request),
            body.reason or "released",
        )
    except DomainErrors as exc:
        raise _http(exc) from exc
    return incident.to_json()


@unit_router.post(
    "/{unit_id}/incidents", status_code=status.HTTP_201_CREATED, summary="A unit reports an incident",
    responses=ERRORS, **admits_unit(REPORT),
)  # fmt: skip
async def report_from_unit(
    unit_id: Annotated[str, Path(pattern=UNIT_ID_PATTERN)], body: FieldReportBody, service: Service,
    request: Request,
) -> dict[str, Any]:  # fmt: skip
    """Record an incident seen by a patrol (channel ``patrol``, reported by the unit), at the given
    point or else at the unit's current position; the answer adds ``recommended`` as for any report.

    Sent by a user (operator, supervisor, admin, integration) or by the unit itself with its
    device token."""
    try:
        incident, recommended = await service.report_from_unit(
            unit_id,
            category=body.category,
            priority=body.priority,
            description=body.description,
            lat=body.lat,
            lon=body.lon,
            reported_at=None if body.ts is None else _utc(body.ts),
            origin=_origin(request),
        )
    except DomainErrors as exc:
        raise _http(exc) from exc
    return {**incident.to_json(), "recommended": [c.to_json() for c in recommended]}
