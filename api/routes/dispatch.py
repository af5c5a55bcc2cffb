"""``/api/v1/dispatch``: which available units reach a point first (exact, by ETA, from memory)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from api.access import READ, admits
from api.deps import Context
from geo.nearest import MAX_K
from tracker.dispatch import Dispatcher
from tracker.model import UnitKind, UnitStatus

router = APIRouter(prefix="/api/v1/dispatch", tags=["dispatch"])

API_MAX_K = min(100, MAX_K)


def _names(values: list[str] | None) -> list[str]:
    """Repeated (``kinds=a&kinds=b``) and comma-separated (``kinds=a,b``) forms, blanks dropped."""
    return [part.strip() for v in values or () for part in v.split(",") if part.strip()]


def _enum_values(values: list[str] | None, enum: Any, what: str) -> list[Any] | None:
    names = _names(values)
    if not names:
        return None
    known = [e.value for e in enum]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise HTTPException(422, f"unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")
    return [enum(n) for n in names]


def _dispatcher(ctx: Context) -> Dispatcher:
    if ctx.dispatcher is None:
        raise HTTPException(
            503, "nearest-unit dispatch is not running in this process (no Dispatcher started)"
        )
    return ctx.dispatcher


@router.get(
    "/nearest", summary="The k units that reach a point first (ETA), live before stale", **admits(READ)
)
async def nearest(
    ctx: Context,
    lat: Annotated[float, Query(description="latitude of the incident, degrees (WGS84)")],
    lon: Annotated[float, Query(description="longitude of the incident, degrees (WGS84)")],
    k: Annotated[int, Query(description=f"how many units (1..{API_MAX_K})")] = 5,
    kinds: Annotated[list[str] | None, Query(description="unit kinds (repeated or comma-separated)")] = None,
    capabilities: Annotated[list[str] | None, Query(description="required capabilities, all of them")] = None,
    sector: Annotated[str | None, Query(description="only units of this sector")] = None,
    max_age_s: Annotated[float | None, Query(description="drop fixes older than this (s)")] = None,
    statuses: Annotated[list[str] | None, Query(description="statuses (default: available)")] = None,
) -> dict[str, Any]:
    """Ranked units from the in-memory index: exact, no database round trip.

    Ranking: live units before stale ones, then ETA (great-circle distance ×
    circuity / speed of the unit's kind, see ``model``), then distance; lost
    units (no fix for longer than their kind's threshold) never appear.
    """
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise HTTPException(422, f"lat must be in [-90, 90], got {lat}")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise HTTPException(422, f"lon must be in [-180, 180], got {lon}")
    if not 1 <= k <= API_MAX_K:
        raise HTTPException(422, f"k must be in 1..{API_MAX_K}, got {k}")
    if max_age_s is not None and not (math.isfinite(max_age_s) and max_age_s >= 0):
        raise HTTPException(422, f"max_age_s must be a number >= 0, got {max_age_s}")
    kind_values = _enum_values(kinds, UnitKind, "kind")
    status_values = _enum_values(statuses, UnitStatus, "status") or [UnitStatus.AVAILABLE]
    caps = _names(capabilities)
    dispatcher = _dispatcher(ctx)
    now = datetime.now(UTC)
    try:
        units = dispatcher.nearest(
            lat, lon, k, kinds=kind_values, capabilities=caps, sector=sector or None, max_age_s=max_age_s,
            statuses=status_values, now=now,
        )  # fmt: skip
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    return {
        "query": {
            "lat": lat,
            "lon": lon,
            "k": k,
            "kinds": [str(v) for v in kind_values] if kind_values else None,
            "capabilities": caps,
            "sector": sector or None,
            "max_age_s": max_age_s,
            "statuses": [str(s) for s in status_values],
            "at": now.isoformat(),
        },
        "model": dispatcher.model_info(),
        "units": [c.to_json() for c in units],
    }
