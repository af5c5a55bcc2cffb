"""``/api/v1/coverage/history``: stored coverage per minute or hour over a period, and the worst hours.

The sampler (:class:`tracker.coverage_history.CoverageSampler`) is found at
``ctx.coverage_history``; without it (or without the database pool) the
route answers 503, because an empty list would read as "no coverage at all".
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from api.access import READ, admits
from api.deps import Context
from tracker.coverage import LAYER_KINDS
from tracker.coverage_history import CoverageSampler, history
from tracker.store.coverage import BUCKETS, BucketRow

router = APIRouter(prefix="/api/v1/coverage/history", tags=["coverage"])

DEFAULT_PERIOD = timedelta(hours=24)
MAX_PERIOD = timedelta(days=93)


def _bucket_json(b: BucketRow) -> dict[str, Any]:
    return {
        "start": b.start.isoformat(),
        "samples": b.samples,
        "covered_area_ratio": {
            "min": round(b.area_min, 5),
            "avg": round(b.area_avg, 5),
            "max": round(b.area_max, 5),
        },
        "covered_demand_ratio": {
            "min": round(b.demand_min, 5),
            "avg": round(b.demand_avg, 5),
            "max": round(b.demand_max, 5),
        },
        "units": {"min": b.units_min, "max": b.units_max},
    }


def _aware(t: datetime) -> datetime:
    # A time without an offset is read as UTC (the system's time inside).
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@router.get(
    "", summary="Coverage over a period: samples per minute or hour, and the worst hours", **admits(READ)
)
async def get_coverage_history(
    request: Request,
    ctx: Context,
    since: Annotated[
        datetime | None, Query(description="start (ISO-8601; default: 24 h before until)")
    ] = None,
    until: Annotated[datetime | None, Query(description="end, exclusive (ISO-8601; default: now)")] = None,
    layer: Annotated[str, Query(description="ground | drones | combined")] = "ground",
    minutes: Annotated[float, Query(description="target response time the samples were taken for")] = 8.0,
    bucket: Annotated[str, Query(description="minute | hour (hour: min/avg/max of the samples)")] = "minute",
) -> dict[str, Any]:
    """Stored coverage of ``layer`` within ``minutes`` in ``[since, until)``, with the worst hours."""
    sampler: CoverageSampler | None = ctx.coverage_history
    if sampler is None:
        raise HTTPException(503, "coverage history is not sampled in this process (no sampler configured)")
    if ctx.pool is None:
        raise HTTPException(503, "the database pool is not open")
    if layer not in LAYER_KINDS:
        raise HTTPException(422, f"unknown layer {layer!r}; known: {', '.join(LAYER_KINDS)}")
    if bucket not in BUCKETS:
        raise HTTPException(422, f"unknown bucket {bucket!r}; known: {', '.join(BUCKETS)}")
    if not (math.isfinite(minutes) and minutes > 0):
        raise HTTPException(422, f"minutes must be > 0, got {minutes}")
    end = _aware(until) if until is not None else datetime.now(UTC)
    start = _aware(since) if since is not None else end - DEFAULT_PERIOD
    if not start < end:
        raise HTTPException(422, "since must be before until")
    if end - start > MAX_PERIOD:
        raise HTTPException(422, f"the period is limited to {MAX_PERIOD.days} days")
    target_s = minutes * 60.0
    h = await history(ctx.pool, start, end, layer, target_s, bucket)
    return {
        "layer": layer,
        "target_s": target_s,
        "bucket": bucket,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "sampled": [{"layer": la, "minutes": m} for la, m in sampler.targets],
        "interval_s": sampler.interval_s,
        "points": [_bucket_json(b) for b in h.points],
        "worst_hours": [_bucket_json(b) for b in h.worst_hours],
    }
