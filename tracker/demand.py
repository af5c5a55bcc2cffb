"""Demand per cell of a coverage grid from the stored incidents of a recent window.

``incident_demand(db, grid)`` counts the incidents created in the last
``window_days`` per H3 cell of ``grid`` (at the grid's resolution) and adds the
area-proportional prior of :func:`geo.demand.demand_weights`; the result is the
``demand=`` argument of :func:`geo.coverage.coverage`, one weight per cell, in
the grid's order.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from geo.demand import DEFAULT_PRIOR, cell_counts, demand_weights, latlng_cells
from geo.hexgrid import HexGrid
from tracker.store import coverage as store
from tracker.store.pool import AsyncDb

DEFAULT_WINDOW_DAYS = 28.0  # four whole weeks: every weekday weighs the same


async def incident_demand(
    db: AsyncDb,
    grid: HexGrid,
    window_days: float = DEFAULT_WINDOW_DAYS,
    prior: float = DEFAULT_PRIOR,
    now: datetime | None = None,
) -> NDArray[np.float64]:
    """Expected demand per cell of ``grid``: incidents of the last ``window_days`` plus the prior."""
    if not (np.isfinite(window_days) and window_days > 0):
        raise ValueError(f"window_days must be > 0, got {window_days}")
    until = now or datetime.now(UTC)
    since = until - timedelta(days=window_days)
    min_lon, min_lat, max_lon, max_lat = grid.boundary.bounds
    lat, lon = await store.incident_points(db, since, until, (min_lon, min_lat, max_lon, max_lat))
    # One h3 call per incident (~1 µs each): a month of Miraflores (~21,000) is ~20 ms, still off the loop.
    counts = await asyncio.to_thread(_counts, grid, lat, lon)
    return demand_weights(counts, grid.clipped_area_m2, prior)


def _counts(grid: HexGrid, lat: NDArray[np.float64], lon: NDArray[np.float64]) -> NDArray[np.int64]:
    return cell_counts(grid.cells, latlng_cells(lat, lon, grid.res))
