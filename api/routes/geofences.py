"""``/api/v1/geofences``: sectors and restricted zones as GeoJSON (RFC 7946, lon/lat)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Response, status

from api.access import PLAN, READ, admits
from api.routes.events import Events
from api.schemas import Problem
from geo.geofence import GeofenceError
from tracker.store.geofences import DuplicateGeofenceError, GeofenceNotFoundError

router = APIRouter(prefix="/api/v1/geofences", tags=["geofences"])

_EXAMPLE = {
    "type": "Feature",
    "id": "S2-larco",
    "properties": {"name": "Sector 2 - Larco", "kind": "sector"},
    "geometry": {
        "type": "Polygon",
        "coordinates": [
            [
                [-77.032, -12.125],
                [-77.026, -12.125],
                [-77.026, -12.119],
                [-77.032, -12.119],
                [-77.032, -12.125],
            ]
        ],
    },
}


@router.get(
    "",
    summary="Every geofence (GeoJSON FeatureCollection)",
    responses={503: {"model": Problem}},
    **admits(READ),
)
async def list_geofences(
    engine: Events, kind: Literal["sector", "restricted", "other"] | None = None
) -> dict[str, Any]:
    """One Feature per geofence (``id`` = geofence id), in id order, optionally of one kind."""
    stored = await engine.list_geofences()
    return {
        "type": "FeatureCollection",
        "features": [g.to_feature() for g in stored if kind is None or g.kind == kind],
    }


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a geofence from a GeoJSON Feature",
    responses={
        409: {"model": Problem, "description": "a geofence with this id exists"},
        422: {"model": Problem, "description": "the GeoJSON is not a usable polygon (the detail says why)"},
        503: {"model": Problem},
    },
    **admits(PLAN),
)
async def create_geofence(
    engine: Events,
    feature: Annotated[
        Any, Body(description="a GeoJSON Feature; properties: id, name, kind", examples=[_EXAMPLE])
    ],
) -> dict[str, Any]:
    """Validate (type, coordinates and ranges, closed rings, self-intersections), store, index at once.

    Units already inside become members without an enter event; crossings after
    this are reported.
    """
    try:
        stored = await engine.create_geofence(feature, created_by="api")
    except GeofenceError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except DuplicateGeofenceError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return stored.to_feature()


@router.get(
    "/{geofence_id}",
    summary="One geofence (GeoJSON Feature)",
    responses={404: {"model": Problem}},
    **admits(READ),
)
async def get_geofence(geofence_id: str, engine: Events) -> dict[str, Any]:
    """The geofence ``geofence_id``, or 404."""
    try:
        return (await engine.get_geofence(geofence_id)).to_feature()
    except GeofenceNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.delete(
    "/{geofence_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a geofence",
    responses={404: {"model": Problem}},
    **admits(PLAN),
)
async def delete_geofence(geofence_id: str, engine: Events) -> Response:
    """Delete it and drop it from the index (its members get no exit event)."""
    try:
        await engine.delete_geofence(geofence_id)
    except GeofenceNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)
