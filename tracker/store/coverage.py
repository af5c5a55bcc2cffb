"""SQL of coverage: incident locations for demand, and the ``coverage_samples`` history (migration 5).

Functions take an :data:`~tracker.store.pool.AsyncDb`. Values are bound
parameters; the only SQL text chosen at run time is the bucket width, from the
fixed table :data:`BUCKETS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from tracker.store.pool import AsyncDb, connection

# Bucket name -> date_trunc field (never the caller's text). Truncated in UTC so that an hour is the
# same hour whatever the session's TimeZone (Lima is a whole-hour offset, but not every centre is).
BUCKETS = {"minute": "minute", "hour": "hour"}


@dataclass(frozen=True, slots=True)
class SampleRow:
    """One coverage sample as stored in ``coverage_samples``."""

    ts: datetime
    layer: str
    target_s: float
    resolution: int
    covered_area_ratio: float
    covered_demand_ratio: float
    units: int


@dataclass(frozen=True, slots=True)
class BucketRow:
    """Samples of one layer and target time aggregated over one bucket (a minute or an hour, UTC)."""

    start: datetime
    samples: int
    area_min: float
    area_avg: float
    area_max: float
    demand_min: float
    demand_avg: float
    demand_max: float
    units_min: int
    units_max: int


async def incident_points(
    db: AsyncDb,
    since: datetime,
    until: datetime,
    bbox: tuple[float, float, float, float] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Latitudes and longitudes of incidents created in ``[since, until)`` (optionally inside a bbox).

    ``bbox`` is ``(min_lon, min_lat, max_lon, max_lat)``: a cheap pre-filter, the
    grid decides what is inside. Cancelled incidents count: a call that was made
    is demand even when no unit went.
    """
    sql = "SELECT lat, lon FROM incidents WHERE created_at >= %s AND created_at < %s"
    params: list[object] = [since, until]
    if bbox is not None:
        sql += " AND lon BETWEEN %s AND %s AND lat BETWEEN %s AND %s"
        params += [bbox[0], bbox[2], bbox[1], bbox[3]]
    async with connection(db) as conn:
        cur = await conn.execute(sql, params)
        rows = await cur.fetchall()
    if not rows:
        return np.empty(0, dtype=np.float64), np.empty(0, dtype=np.float64)
    arr = np.asarray(rows, dtype=np.float64)
    return np.ascontiguousarray(arr[:, 0]), np.ascontiguousarray(arr[:, 1])


async def insert_samples(db: AsyncDb, rows: Sequence[SampleRow]) -> int:
    """Insert samples, skipping any already stored for the same (layer, target, ts); returns how many new."""
    if not rows:
        return 0
    async with connection(db) as conn:
        cur = await conn.execute(
            "INSERT INTO coverage_samples (ts, layer, target_s, resolution, covered_area_ratio,"
            " covered_demand_ratio, units)"
            " SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::real[], %s::smallint[], %s::real[],"
            " %s::real[], %s::integer[])"
            " ON CONFLICT DO NOTHING",
            [
                [r.ts for r in rows],
                [r.layer for r in rows],
                [r.target_s for r in rows],
                [r.resolution for r in rows],
                [r.covered_area_ratio for r in rows],
                [r.covered_demand_ratio for r in rows],
                [r.units for r in rows],
            ],
        )
        return cur.rowcount


async def delete_samples_before(db: AsyncDb, cutoff: datetime) -> int:
    """Delete the samples older than ``cutoff`` (retention); returns how many went."""
    async with connection(db) as conn:
        cur = await conn.execute("DELETE FROM coverage_samples WHERE ts < %s", [cutoff])
        return cur.rowcount


async def samples(
    db: AsyncDb, since: datetime, until: datetime, layer: str | None = None, target_s: float | None = None
) -> list[SampleRow]:
    """Stored samples with ``since <= ts < until`` (optionally of one layer / target), oldest first."""
    sql = (
        "SELECT ts, layer, target_s, resolution, covered_area_ratio, covered_demand_ratio, units"
        " FROM coverage_samples WHERE ts >= %s AND ts < %s"
    )
    params: list[object] = [since, until]
    if layer is not None:
        sql += " AND layer = %s"
        params.append(layer)
    if target_s is not None:
        sql += " AND target_s = %s::real"
        params.append(target_s)
    sql += " ORDER BY ts, layer, target_s"
    async with connection(db) as conn:
        cur = await conn.execute(sql, params)
        return [SampleRow(*r) for r in await cur.fetchall()]


async def bucketed(
    db: AsyncDb, since: datetime, until: datetime, layer: str, target_s: float, bucket: str
) -> list[BucketRow]:
    """Samples of one layer and target in ``[since, until)`` aggregated per ``bucket`` (UTC), oldest first."""
    field = BUCKETS.get(bucket)
    if field is None:
        raise ValueError(f"unknown bucket {bucket!r}; known: {', '.join(BUCKETS)}")
    sql = (
        f"SELECT date_trunc('{field}', ts, 'UTC') AS b, count(*),"
        " min(covered_area_ratio), avg(covered_area_ratio), max(covered_area_ratio),"
        " min(covered_demand_ratio), avg(covered_demand_ratio), max(covered_demand_ratio),"
        " min(units), max(units)"
        " FROM coverage_samples WHERE ts >= %s AND ts < %s AND layer = %s AND target_s = %s::real"
        " GROUP BY b ORDER BY b"
    )
    async with connection(db) as conn:
        cur = await conn.execute(sql, [since, until, layer, target_s])
        return [
            BucketRow(
                b, int(n), float(a0), float(a1), float(a2), float(d0), float(d1), float(d2), int(u0), int(u1)
            )
            for b, n, a0, a1, a2, d0, d1, d2, u0, u1 in await cur.fetchall()
        ]
