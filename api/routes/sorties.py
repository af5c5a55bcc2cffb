"""``POST /api/v1/drones/sorties/plan``: sorties from a dock over gap cells, a polygon or points.

The planner is :func:`drones.sorties.plan_sorties` (pure, CPU-bound: it runs in
a worker thread, off the event loop). Restricted airspace comes from
:func:`airspace_polygons`, the hook for the airspace module: it asks the
Context for an ``airspace`` attribute (``None`` until one is wired: no zone)
and from the request's own ``avoid`` polygons.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from shapely.geometry.base import BaseGeometry

from api.access import PLAN, admits
from api.deps import Context
from api.routes.coverage import MAX_MINUTES
from drones.sorties import (
    DEFAULT_ALTITUDE_M,
    DEFAULT_CLEARANCE_M,
    DEFAULT_LOITER_S,
    SortiePlan,
    Target,
    plan_sorties,
    targets_in_polygon,
)
from geo.docks import Dock
from geo.geofence import GeofenceError, parse_geometry
from geo.hexgrid import DISTRICT_RES, GridTooFineError, estimated_cells
from tracker.coverage import LAYER_KINDS, CoverageService

router = APIRouter(prefix="/api/v1/drones/sorties", tags=["drones"])

MAX_TARGETS = 2000  # a plan's distance matrix and tours stay within a second or two at this size
MAX_AVOID_FEATURES = 500


class PointIn(BaseModel):
    """A target point (lon/lat degrees) and an optional id."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    id: str | None = Field(None, max_length=64)


class DockIn(BaseModel):
    """A dock given by position and aircraft profile (a key of the configured aircraft table)."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    profile: str | None = Field(None, description="aircraft profile key (default: the configured default)")
    name: str | None = Field(None, max_length=120)


class SortieRequest(BaseModel):
    """What to plan: from which dock, over which targets, at what altitude, exported how."""

    dock_id: str | None = Field(None, description="a configured dock (see GET /api/v1/coverage model.docks)")
    dock: DockIn | None = Field(None, description="or a dock by position and aircraft profile")
    targets: Literal["gaps"] | list[PointIn] | dict[str, Any] = Field(
        "gaps",
        description='"gaps" (the coverage gaps of `layer` within `minutes`), a GeoJSON Polygon/MultiPolygon '
        "(geometry or Feature: the centres of the H3 cells inside it), or a list of {lat, lon, id} points",
    )
    minutes: float = Field(8.0, gt=0, le=MAX_MINUTES, description="gaps: target response time")
    layer: Literal["ground", "drones", "combined"] = Field("combined", description="gaps: coverage layer")
    resolution: int | None = Field(None, ge=0, le=15, description="gaps and polygon: H3 resolution")
    altitude_m: float = Field(DEFAULT_ALTITUDE_M, gt=0, description="cruise altitude above take-off")
    loiter_s: float = Field(DEFAULT_LOITER_S, ge=0, le=3600, description="time over each target")
    battery_pct: float | None = Field(None, ge=0, le=100, description="charge at launch (default: full)")
    reserve: float | None = Field(None, ge=0, lt=1, description="share of the charge kept (default: profile)")
    clearance_m: float = Field(DEFAULT_CLEARANCE_M, ge=0, le=1000, description="kept from restricted zones")
    avoid: dict[str, Any] | None = Field(
        None,
        description="more zones to keep out of: GeoJSON Polygon/MultiPolygon, Feature or FeatureCollection",
    )
    format: Literal["json", "geojson", "qgc", "kml"] = "json"
    sortie: int | None = Field(None, ge=1, description="qgc/kml: only this sortie (1-based), as one file")


def airspace_polygons(ctx: Any, altitude_m: float) -> list[BaseGeometry]:
    """Restricted-zone footprints (lon/lat) a sortie at ``altitude_m`` must avoid, from the Context.

    The hook for the airspace module: ``ctx.airspace`` may be an object with
    ``avoidance_polygons(altitude_m)`` or a callable ``(altitude_m) -> polygons``.
    Absent or ``None`` (as today): no restricted zones.
    """
    source = getattr(ctx, "airspace", None)
    if source is None:
        return []
    method = getattr(source, "avoidance_polygons", None)
    zones = method(altitude_m) if callable(method) else source(altitude_m) if callable(source) else source
    return list(zones)


def _polygons(obj: Any, where: str) -> list[BaseGeometry]:
    """Polygons from a GeoJSON geometry, Feature or FeatureCollection; 422 naming what to fix."""
    if isinstance(obj, Mapping) and obj.get("type") == "FeatureCollection":
        feats = obj.get("features")
        if not isinstance(feats, list) or not feats:
            raise HTTPException(422, f"{where}: the FeatureCollection holds no features")
        if len(feats) > MAX_AVOID_FEATURES:
            raise HTTPException(
                422, f"{where}: {len(feats)} features is over the limit of {MAX_AVOID_FEATURES}"
            )
        return [g for i, f in enumerate(feats) for g in _polygons(f, f"{where} feature {i}")]
    if isinstance(obj, Mapping) and obj.get("type") == "Feature":
        obj = obj.get("geometry")
    try:
        return [parse_geometry(obj)]
    except GeofenceError as exc:
        raise HTTPException(422, f"{where}: {exc}") from exc


def _dock(ctx: Context, body: SortieRequest) -> Dock:
    if (body.dock_id is None) == (body.dock is None):
        raise HTTPException(
            422, "give either dock_id (a configured dock) or dock {lat, lon, profile}, not both"
        )
    cs = ctx.settings.coverage
    if body.dock is not None:
        profiles = cs.profiles()
        key = body.dock.profile or cs.default_profile
        if key not in profiles:
            raise HTTPException(
                422, f"unknown aircraft profile {key!r}; known: {', '.join(sorted(profiles))}"
            )
        d = Dock("request", body.dock.name or "dock", body.dock.lat, body.dock.lon, profiles[key], key)
    else:
        docks = ctx.coverage.docks if ctx.coverage is not None else ()
        found = [d for d in docks if d.dock_id == body.dock_id]
        if not found:
            known = ", ".join(d.dock_id for d in docks) or "none configured (SERENAZGO_COVERAGE__DOCKS)"
            raise HTTPException(422, f"unknown dock_id {body.dock_id!r}; known: {known}")
        d = found[0]
        if not d.in_service:
            raise HTTPException(409, f"dock {d.dock_id!r} is out of service: choose another dock")
    # A plan is for the next launch from a charged dock unless the caller says otherwise.
    return replace(d, battery_pct=body.battery_pct, hold_s=0.0)


def _service(ctx: Context, what: str) -> CoverageService:
    if ctx.coverage is None:
        raise HTTPException(
            503, f"{what} needs the coverage service, which is not running (no service area loaded): "
            "give targets as points or a polygon"
        )  # fmt: skip
    return ctx.coverage


async def _targets(ctx: Context, body: SortieRequest) -> list[Target]:
    t = body.targets
    if isinstance(t, list):
        if not t:
            raise HTTPException(422, "targets is an empty list: give at least one {lat, lon} point")
        if len(t) > MAX_TARGETS:
            raise HTTPException(422, f"{len(t):,} targets is over the limit of {MAX_TARGETS:,}: send fewer")
        out = [Target(p.id or f"p{i + 1}", p.lat, p.lon) for i, p in enumerate(t)]
        ids = [x.id for x in out]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise HTTPException(422, f"target id {dup!r} appears twice: give each point its own id")
        return out
    if isinstance(t, dict):
        area = _polygons(t, "targets")[0]
        res = body.resolution
        if res is None:
            res = ctx.coverage.default_resolution() if ctx.coverage is not None else DISTRICT_RES
        # Refuse a polygon far too big for one plan before listing its cells (Lima at 10 is millions).
        about = estimated_cells(area, res)
        if about > 2 * MAX_TARGETS:
            raise HTTPException(
                422, f"the targets polygon holds about {about:,} cells at resolution {res}, "
                f"over the limit of {MAX_TARGETS:,}: give a smaller polygon or a coarser resolution"
            )  # fmt: skip
        return await asyncio.to_thread(targets_in_polygon, area, res)
    service = _service(ctx, 'targets "gaps"')
    res = service.default_resolution() if body.resolution is None else body.resolution
    try:
        grid = await asyncio.to_thread(service.grid, res)
    except GridTooFineError as exc:
        raise HTTPException(422, str(exc)) from exc
    answer = await asyncio.to_thread(
        service.compute,
        body.minutes * 60.0,
        LAYER_KINDS[body.layer],
        res,
        None,
        None,
        body.layer == "combined",
    )
    gaps = answer.result.gap_index
    return [Target(format(int(grid.cells[i]), "x"), float(grid.lat[i]), float(grid.lon[i])) for i in gaps]


@router.post(
    "/plan",
    summary="Plan sorties from a dock over gaps, a polygon or points, around restricted zones",
    **admits(PLAN),
)
async def plan(ctx: Context, body: SortieRequest) -> Response:
    """Sorties (ordered waypoints from the dock and back) within endurance with reserve.

    Every target is in a sortie or in ``unreachable`` with its reason (inside
    restricted airspace, walled in by zones, beyond the dock's radius, too far
    for one battery). ``format``: ``json`` (the plan), ``geojson`` (routes and
    waypoints), ``qgc`` (QGroundControl ``.plan`` missions: one per sortie, or
    the file of ``sortie``) or ``kml`` (a route outline for DJI Pilot 2 /
    FlightHub 2 import; no WPML actions). Restricted zones: the configured
    airspace at ``altitude_m`` (when wired) plus the request's ``avoid``.
    """
    limit = ctx.settings.drones.altitude_limit_m
    if not (math.isfinite(body.altitude_m) and body.altitude_m <= limit):
        raise HTTPException(422, f"altitude_m {body.altitude_m:g} is over the {limit:g} m limit: fly lower")
    dock = _dock(ctx, body)
    targets = await _targets(ctx, body)
    if len(targets) > MAX_TARGETS:
        raise HTTPException(
            422, f"{len(targets):,} targets is over the limit of {MAX_TARGETS:,}: give a smaller polygon, a "
            "coarser resolution or a longer target time"
        )  # fmt: skip
    zones: Sequence[BaseGeometry] = [
        *airspace_polygons(ctx, body.altitude_m),
        *(_polygons(body.avoid, "avoid") if body.avoid is not None else []),
    ]
    try:
        result = await asyncio.to_thread(
            plan_sorties, dock, targets, zones, body.altitude_m, limit, body.loiter_s,
            ctx.settings.coverage.takeoff_s, body.reserve, body.clearance_m, MAX_TARGETS,
        )  # fmt: skip
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    return _export(result, body)


def _export(result: SortiePlan, body: SortieRequest) -> Response:
    n = len(result.sorties)
    chosen: list[int] | None = None
    if body.sortie is not None:
        if body.sortie > n:
            raise HTTPException(422, f"sortie {body.sortie} does not exist: the plan has {n} sortie(s)")
        chosen = [body.sortie - 1]
    if body.format == "json":
        return JSONResponse(result.to_json())
    if body.format == "geojson":
        return JSONResponse(result.to_geojson(), media_type="application/geo+json")
    if n == 0:
        raise HTTPException(422, "no sortie to export: every target is unreachable (see format json)")
    stem = f"sorties-{result.dock.dock_id}"
    if body.format == "kml":
        name = f"{stem}.kml" if chosen is None else f"{stem}-{chosen[0] + 1}.kml"
        return Response(
            result.to_kml(chosen), media_type="application/vnd.google-earth.kml+xml",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )  # fmt: skip
    if chosen is not None:
        return JSONResponse(
            result.to_qgc_plan(chosen[0]),
            headers={"Content-Disposition": f'attachment; filename="{stem}-{chosen[0] + 1}.plan"'},
        )
    plans = [
        {"sortie": i + 1, "filename": f"{stem}-{i + 1}.plan", "plan": result.to_qgc_plan(i)} for i in range(n)
    ]
    return JSONResponse({"plans": plans, "unreachable": result.to_json()["unreachable"]})


__all__ = ["airspace_polygons", "router"]
