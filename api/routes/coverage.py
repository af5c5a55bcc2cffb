"""``/api/v1/coverage``: where no available unit can be within the target time, as ratios and GeoJSON."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from api.deps import Context
from geo.demand import DEFAULT_PRIOR
from geo.hexgrid import GridTooFineError
from tracker.coverage import LAYER_KINDS, CoverageService
from tracker.demand import DEFAULT_WINDOW_DAYS, incident_demand
from tracker.model import UnitKind

router = APIRouter(prefix="/api/v1/coverage", tags=["coverage"])

LAYERS = LAYER_KINDS
MAX_MINUTES = 120.0


def _service(ctx: Context) -> CoverageService:
    if ctx.coverage is None:
        raise HTTPException(503, "coverage is not running in this process (no service area loaded)")
    return ctx.coverage


@router.get("", summary="Coverage within a target time: ratios, gap regions, the model used")
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


@router.post("/recommendations", summary="Moves of idle units (or positions) that most raise coverage")
async def recommendations(ctx: Context, body: RecommendationRequest) -> dict[str, Any]:
    """Greedy + interchange maximal covering (see geo/placement.py); demand is area for now.

    ``move_up`` keeps every other available unit of the layer where it is and
    moves at most ``max_moves`` idle units of ``kind``; each move has its gain
    (share of the area) and travel time. ``placement`` chooses ``p`` positions
    for units of ``kind`` over an empty district (planning a shift).
    """
    service = _service(ctx)
    res = service.default_resolution() if body.resolution is None else body.resolution
    target = body.minutes * 60.0
    try:
        if body.mode == "placement":
            return await asyncio.to_thread(service.recommend_placement, target, body.kind, body.p, res)
        travel = math.inf if body.max_travel_minutes is None else body.max_travel_minutes * 60.0
        return await asyncio.to_thread(
            service.recommend_moves, target, LAYERS[body.layer], body.kind, body.max_moves, res,
            max_travel_s=travel,
        )  # fmt: skip
    except GridTooFineError as exc:
        raise HTTPException(422, str(exc)) from exc
