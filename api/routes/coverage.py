"""``/api/v1/coverage``: where no available unit can be within the target time, as ratios and GeoJSON."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from api.deps import Context
from geo.hexgrid import GridTooFineError
from tracker.coverage import LAYER_KINDS, CoverageService
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
) -> dict[str, Any]:
    """Cells of the service area that an available, not lost unit reaches within ``minutes``.

    Drones (``layer=drones|combined``) count at their current position at
    cruise speed; reach from their docks with the battery reserve comes with
    the drone squadron's work.
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
        answer = await asyncio.to_thread(service.compute, minutes * 60.0, chosen, res)
    except GridTooFineError as exc:
        raise HTTPException(422, str(exc)) from exc
    return answer.to_json(service.model, cells=cells)
