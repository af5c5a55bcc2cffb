"""``/api/v1/live``: the latest position and state of every unit, as GeoJSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from api.access import READ, admits
from api.deps import Fleet
from api.formats import live_collection, live_feature
from tracker.model import Freshness, UnitKind

router = APIRouter(prefix="/api/v1/live", tags=["live"])


@router.get("", summary="Latest position of every unit (GeoJSON FeatureCollection)", **admits(READ))
async def live(
    fleet: Fleet, kind: UnitKind | None = None, freshness: Freshness | None = None
) -> dict[str, Any]:
    """One Feature per unit (``id`` = unit id), from the in-memory LiveFleet; no database round trip.

    Units never seen have a null geometry and freshness ``lost``.
    """
    now = datetime.now(UTC)
    features = []
    for state in fleet.snapshot():
        if kind is not None and state.unit.kind is not kind:
            continue
        fresh = fleet.freshness(state, now)
        if freshness is not None and fresh is not freshness:
            continue
        features.append(live_feature(state, fresh, now))
    return live_collection(features, now)
