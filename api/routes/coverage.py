"""``/api/v1/coverage``: where no available unit can be within the target time, as ratios and GeoJSON."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from api.access import ADVISE, READ, admits
from api.deps import Context
from geo.area import Area
from geo.candidates import candidate_rows, parse_geojson_geometry
from geo.demand import DEFAULT_PRIOR
from geo.geofence import parse_geometry
from geo.hexgrid import GridTooFineError, HexGrid
from tracker.coverage import LAYER_KINDS, CoverageService, ExactTooLargeError
from tracker.demand import DEFAULT_WINDOW_DAYS, incident_demand
from tracker.model import UnitKind
from tracker.store import geofences as geofence_store
from tracker.store.geofences import GeofenceNotFoundError, StoredGeofence

router = APIRouter(prefix="/api/v1/coverage", tags=["coverage"])

LAYERS = LAYER_KINDS
MAX_MINUTES = 120.0


def _service(ctx: Context) -> CoverageService:
    if ctx.coverage is None:
        raise HTTPException(503, "coverage is not running in this process (no service area loaded)")
    return ctx.coverage


@router.get("", summary="Coverage within a target time: ratios, gap regions, the model used", **admits(READ))
async def get_coverage(
    ctx: Context,
    minutes: Annotated[float, Query(description=f"target response time (0..{MAX_MINUTES:.0f} min)")] = 8.0,
    kinds: Annotated[str | None, Query(description="unit kinds, comma-separated (default: layer's)")] = None,
    resolution: Annotated[int | None, Query(description="H3 resolution (10 district, 9 city)")] = None,
    layer: Annotated[str, Query(description="ground | drones | combined")] = "ground",
    cells: Annotated[bool, Query(description="also every cell's best ETA (a heat map)")] = False,
    demand: Annotated[
        Literal["area", "incidents"], Query(description="weight of a cell: its area, or past incidents")
    ] = "area",
) -> dict[str, Any]:
    """Cells of the service area that an available, not lost unit reaches within ``minutes``.

    ``layer=drones`` counts the drone docks in service (reach within the target
    at cruise speed, after take-off, with the battery to hold and come back
    above its reserve) and the available drones in the air at their current
    position; ``combined`` adds the ground units and the camera viewsheds (a
    seen cell counts as reached at once). ``model.docks`` lists each dock's reach
    and what limits it; ``model.viewsheds`` says whether cameras were included.
    """
    service = _service(ctx)
    if not (math.isfinite(minutes) and 0 < minutes <= MAX_MINUTES):
        raise HTTPException(422, f"minutes must be in (0, {MAX_MINUTES:.0f}], got {minutes}")
    if layer not in LAYERS:
        raise HTTPException(422, f"unknown layer {layer!r}; known: {', '.join(LAYERS)}")
    chosen = LAYERS[layer]
    if kinds:
        names = [k.strip() for k in kinds.split(",") if k.strip()]
        known = [k.value for k in UnitKind]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise HTTPException(422, f"unknown kind {', '.join(unknown)}; known: {', '.join(known)}")
        chosen = tuple(UnitKind(n) for n in names)
    res = service.default_resolution() if resolution is None else resolution
    if not 0 <= res <= 15:
        raise HTTPException(422, f"resolution must be an H3 resolution 0..15, got {res}")
    try:
        # Building a grid the first time takes up to a second or two for a city: off the loop.
        grid = await asyncio.to_thread(service.grid, res)
    except GridTooFineError as exc:
        raise HTTPException(422, str(exc)) from exc
    weights = None
    if demand == "incidents":
        if ctx.pool is None:
            raise HTTPException(503, "incident demand needs the database, which is not open")
        weights = await incident_demand(ctx.pool, grid)
    answer = await asyncio.to_thread(
        service.compute, minutes * 60.0, chosen, res, None, weights, layer == "combined"
    )
    out = answer.to_json(service.model, cells=cells)
    if weights is not None:
        out["demand"] = (
            f"incidents of the last {DEFAULT_WINDOW_DAYS:g} days per cell + {DEFAULT_PRIOR:g} "
            "pseudo-incidents per average cell, by area"
        )
    return out


class RecommendationRequest(BaseModel):
    """What to recommend: moves of idle units (``move_up``) or positions from scratch (``placement``)."""

    mode: Literal["move_up", "placement"] = "move_up"
    minutes: float = Field(8.0, gt=0, le=MAX_MINUTES, description="target response time")
    layer: Literal["ground", "drones", "combined"] = "ground"
    kind: UnitKind = Field(UnitKind.PATROL_CAR, description="the kind of unit to move or place")
    max_moves: int = Field(3, ge=1, le=50, description="move_up: at most this many moves")
    max_travel_minutes: float | None = Field(None, gt=0, description="move_up: no longer journeys")
    p: int = Field(10, ge=1, le=200, description="placement: how many positions")
    resolution: int | None = Field(None, ge=0, le=15)
    method: Literal["greedy", "exact"] = Field(
        "greedy",
        description="greedy + interchange (fast; the answer states its gap to an upper bound when one is "
        "cheap), or exact: HiGHS MILP, refused above the configured size and stopped at the time limit",
    )
    sectors: list[str] | None = Field(
        None,
        max_length=200,
        description="candidate sites only in these sector geofences (ids): cells whose centre lies in one",
    )
    candidates_geojson: dict[str, Any] | None = Field(
        None,
        description="candidate sites only in the cells these GeoJSON geometries touch (Points, LineStrings "
        "such as street centre lines, Polygons; a geometry, Feature or FeatureCollection, lon/lat)",
    )


async def _sector_areas(ctx: Context, ids: list[str]) -> list[Area]:
    """The polygons of the sector geofences ``ids``; 422 naming unknown or non-sector ids."""
    lookup: Callable[[str], Awaitable[StoredGeofence]]
    if ctx.events is not None:
        lookup = ctx.events.get_geofence
    elif ctx.pool is not None:
        pool = ctx.pool

        async def lookup(gid: str) -> StoredGeofence:
            return await geofence_store.get_geofence(pool, gid)

    else:
        raise HTTPException(503, "sectors need the geofences, which live in the database, and it is not open")
    areas: list[Area] = []
    missing: list[str] = []
    for gid in dict.fromkeys(ids):
        try:
            stored = await lookup(gid)
        except GeofenceNotFoundError:
            missing.append(gid)
            continue
        if stored.kind != "sector":
            raise HTTPException(
                422, f"geofence {gid!r} is a {stored.kind} geofence, not a sector: give sector ids only"
            )
        areas.append(parse_geometry(stored.geometry))
    if missing:
        raise HTTPException(
            422,
            f"unknown sector {', '.join(repr(m) for m in missing)}: list the sectors with "
            "GET /api/v1/geofences?kind=sector",
        )
    return areas


async def _candidates(ctx: Context, body: RecommendationRequest, grid: HexGrid) -> NDArray[np.intp] | None:
    """Candidate rows of ``grid`` from the request's sectors and GeoJSON (None: every cell); 422 if empty."""
    if body.sectors is None and body.candidates_geojson is None:
        return None
    if body.sectors is not None and not body.sectors:
        raise HTTPException(422, "sectors is empty: give at least one sector id, or leave it out")
    areas = await _sector_areas(ctx, body.sectors) if body.sectors else []
    geometry = None
    if body.candidates_geojson is not None:
        try:
            geometry = parse_geojson_geometry(body.candidates_geojson)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
    rows = await asyncio.to_thread(candidate_rows, grid, areas, geometry)
    if rows.shape[0] == 0:
        raise HTTPException(
            422,
            f"no candidate site: the given sectors and geometries hold no cell of the service area at "
            f"resolution {grid.res} (sectors count a cell when its centre lies inside): draw them inside the "
            "area, or leave sectors and candidates_geojson out to use every cell",
        )
    return rows


@router.post(
    "/recommendations",
    summary="Moves of idle units (or positions) that most raise coverage",
    **admits(ADVISE),
)
async def recommendations(ctx: Context, body: RecommendationRequest) -> dict[str, Any]:
    """Maximal covering (see geo/placement.py); demand is area for now.

    ``move_up`` keeps every other available unit of the layer where it is and
    moves at most ``max_moves`` idle units of ``kind``; each move has its gain
    (share of the area) and travel time. ``placement`` chooses ``p`` positions
    for units of ``kind`` over an empty district (planning a shift). Both take
    their sites only from ``sectors`` / ``candidates_geojson`` when given.
    ``objective`` states the covered demand, whether it is proven optimal and,
    when known, an upper bound and the gap to it.
    """
    service = _service(ctx)
    res = service.default_resolution() if body.resolution is None else body.resolution
    target = body.minutes * 60.0
    limits = ctx.settings.placement
    try:
        grid = await asyncio.to_thread(service.grid, res)
        rows = await _candidates(ctx, body, grid)
        # Solving is CPU work (seconds for an exact solve): off the event loop.
        if body.mode == "placement":
            return await asyncio.to_thread(
                service.recommend_placement, target, body.kind, body.p, res, None, rows, body.method, limits
            )
        travel = math.inf if body.max_travel_minutes is None else body.max_travel_minutes * 60.0
        return await asyncio.to_thread(
            service.recommend_moves, target, LAYERS[body.layer], body.kind, body.max_moves, res, None, travel,
            None, rows, body.method, limits,
        )  # fmt: skip
    except (GridTooFineError, ExactTooLargeError) as exc:
        raise HTTPException(422, str(exc)) from exc
