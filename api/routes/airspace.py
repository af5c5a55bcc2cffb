"""``/api/v1/airspace``: restricted airspace zones (GeoJSON with floor and ceiling) and checks against them.

Zones are stored in ``airspace_zones``; when the event engine runs in this
process it re-indexes them after every change, so drones crossing a new zone
raise ``airspace_entered`` / ``airspace_exited`` at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query, Response, status

from api.access import PLAN, READ, admits
from api.context import ApiContext
from api.deps import Context, Pool
from api.schemas import Problem
from drones.airspace import Airspace, LiveAirspace, check_position, parse_zone, parse_zones
from drones.airspace_file import stored_zone
from geo.geofence import GeofenceError
from tracker.store import airspace as airspace_store
from tracker.store.airspace import DuplicateZoneError, ZoneNotFoundError
from tracker.store.pool import AsyncDb

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/airspace", tags=["airspace"])

MAX_CHECK_POSITIONS = 10_000  # one request's positions (a sortie has tens to hundreds)

_EXAMPLE = {
    "type": "Feature",
    "id": "heli-clinica",
    "properties": {"name": "Clinic helipad", "kind": "heliport", "floor_m": 0, "ceiling_m": 150},
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
_CHECK_EXAMPLE = {
    "path": [[-77.035, -12.122, 80], [-77.020, -12.122, 80]],
    "profile": "envelope",
}


async def _reindex(ctx: ApiContext, pool: AsyncDb) -> None:
    await refresh_airspace(ctx, pool)
    if ctx.events is not None and ctx.events.running:
        await ctx.events.reload_airspace()


async def refresh_airspace(ctx: ApiContext, pool: AsyncDb) -> Airspace:
    """Read the zones and swap them into ``ctx.airspace`` (created when absent); return them."""
    air = await load_airspace(pool)
    if ctx.airspace is None:
        ctx.airspace = LiveAirspace()
    ctx.airspace.replace(air)
    return air


async def load_airspace(pool: AsyncDb) -> Airspace:
    """The stored zones as an :class:`Airspace` (a row no longer valid is logged and left out)."""
    stored = await airspace_store.list_zones(pool)

    def build() -> Airspace:
        zones = []
        for z in stored:
            try:
                zones.append(parse_zone(z.to_feature()))
            except GeofenceError as exc:
                log.error("airspace zone %r in the database is unusable and is ignored: %s", z.zone_id, exc)
        return Airspace(zones)

    return await asyncio.to_thread(build)


@router.get("", summary="Every restricted airspace zone (GeoJSON FeatureCollection)", **admits(READ))
async def list_zones(pool: Pool, kind: str | None = None) -> dict[str, Any]:
    """One Feature per zone (``floor_m``/``ceiling_m`` in m above ground, null ceiling: unlimited)."""
    stored = await airspace_store.list_zones(pool)
    return {
        "type": "FeatureCollection",
        "features": [z.to_feature() for z in stored if kind is None or z.kind == kind],
    }


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create zones from a GeoJSON Feature or FeatureCollection",
    responses={
        409: {"model": Problem, "description": "a zone with one of these ids exists (send ?replace=true)"},
        422: {"model": Problem, "description": "the GeoJSON is not a usable zone (the detail says why)"},
        503: {"model": Problem},
    },
    **admits(PLAN),
)
async def create_zones(
    pool: Pool,
    ctx: Context,
    body: Annotated[
        Any,
        Body(
            description="a GeoJSON Feature or FeatureCollection; properties: id, name, kind "
            "(airport, heliport, hospital, embassy, military, prison, event, other), floor_m (default 0), "
            "ceiling_m (default null: unlimited), both in metres above ground / take-off",
            examples=[_EXAMPLE],
        ),
    ],
    replace: Annotated[bool, Query(description="overwrite zones whose ids exist")] = False,
) -> dict[str, Any]:
    """Validate every zone (nothing is stored if one is bad), store them, re-index the event engine.

    Returns the stored zones as a FeatureCollection.
    """
    try:
        zones = await asyncio.to_thread(parse_zones, body)
    except GeofenceError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    try:
        stored = await airspace_store.insert_zones(
            pool, [stored_zone(z, "api") for z in zones], replace=replace
        )
    except DuplicateZoneError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    await _reindex(ctx, pool)
    return {"type": "FeatureCollection", "features": [z.to_feature() for z in stored]}


@router.delete(
    "/{zone_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a zone",
    responses={404: {"model": Problem}},
    **admits(PLAN),
)
async def delete_zone(zone_id: str, pool: Pool, ctx: Context) -> Response:
    """Delete it and drop it from the event engine's index (drones inside get no exit event)."""
    try:
        await airspace_store.delete_zone(pool, zone_id)
    except ZoneNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    await _reindex(ctx, pool)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _check(air: Airspace, body: object) -> dict[str, Any]:
    """Run the check a request asks for; GeofenceError saying what to fix for a malformed one."""
    if not isinstance(body, Mapping):
        raise GeofenceError("bad_check", "send a JSON object with one of: point, path, legs")
    given = [k for k in ("point", "path", "legs") if k in body]
    if len(given) != 1:
        raise GeofenceError(
            "bad_check",
            "give exactly one of point ([lon, lat, alt]), path ([[lon, lat, alt], ...]) or legs "
            f"([[[lon, lat, alt], ...], ...]); got {', '.join(given) or 'none'}",
        )
    profile: Literal["envelope", "linear"]
    raw_profile = body.get("profile", "envelope")
    if raw_profile not in ("envelope", "linear"):
        raise GeofenceError(
            "bad_profile",
            f"profile {raw_profile!r:.40} must be 'envelope' (the default: any altitude between a leg's "
            "ends) or 'linear' (altitude linear along the leg)",
        )
    profile = raw_profile
    what = given[0]
    value = body[what]
    if what == "point":
        lon, lat, alt = check_position(value, "point")
        inside = air.zones_at(lon, lat, alt)
        return {
            "check": "point",
            "zones_checked": len(air),
            "violations": [
                {**z.to_feature()["properties"], "zone_id": z.zone_id, "position": [lon, lat, alt]}
                for z in inside
            ],
        }
    legs = [value] if what == "path" else value
    if not isinstance(legs, list) or not all(isinstance(leg, list) for leg in legs):
        raise GeofenceError("bad_path", f"{what} must be an array of positions [lon, lat, alt]")
    if what == "legs" and not legs:
        raise GeofenceError("bad_path", "legs is empty: give at least one leg of 2 or more positions")
    if sum(len(leg) for leg in legs) > MAX_CHECK_POSITIONS:
        raise GeofenceError(
            "too_many_positions", f"more than {MAX_CHECK_POSITIONS} positions: split the check"
        )
    violations = air.check_sortie(legs, profile)
    return {
        "check": what,
        "profile": profile,
        "zones_checked": len(air),
        "violations": [v.to_json() for v in violations],
    }


@router.post(
    "/check",
    summary="Check a point, a path or a planned sortie (positions with altitude) against the zones",
    responses={422: {"model": Problem, "description": "the request is malformed (the detail says how)"}},
    **admits(READ),
)
async def check(
    pool: Pool,
    ctx: Context,
    body: Annotated[
        Any,
        Body(
            description="one of point [lon, lat, alt], path [[lon, lat, alt], ...] or legs (a sortie: a list "
            "of paths); altitudes in m above ground / take-off; profile 'envelope' (default: any altitude "
            "between a leg's ends anywhere on it, conservative) or 'linear' (exact for a straight 3-D leg)",
            examples=[_CHECK_EXAMPLE],
        ),
    ],
) -> dict[str, Any]:
    """Violations: for a point, the zones holding it; for a path or legs, each stretch inside a zone.

    A path's violations carry ``leg`` 0 and the index of the straight piece in
    ``segment``; a sortie's carry the leg's index too. Each gives where the
    stretch starts and ends (``entry``/``exit``, [lon, lat, alt]) and metres
    along the segment.
    """
    air = await refresh_airspace(ctx, pool)  # the database is the truth (another process may change it)
    try:
        return await asyncio.to_thread(_check, air, body)
    except GeofenceError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
