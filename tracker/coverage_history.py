"""Coverage over time: a sampler that stores coverage every minute, and the history read back.

The sampler is an asyncio task on the API's loop. Every ``interval_s`` it asks
the :class:`~tracker.coverage.CoverageService` for each configured (layer,
minutes) pair (the computation runs in a worker thread: a grid's first build
takes a second for a city) and inserts one row per pair in ``coverage_samples``.
Sample times are floored to the interval, so API replicas sampling the same
minute collide on the primary key and ``ON CONFLICT DO NOTHING`` keeps one row.

With a ``demand`` source (e.g. :func:`tracker.demand.incident_demand`), the
covered demand ratio is weighted by it (refreshed every ``demand_refresh_s``);
without one it equals the area ratio, as in the live endpoint.

Retention: samples older than ``retention_days`` are deleted by the sampler
itself, at most once every ``prune_every_s`` (an index range scan on ``ts``;
cheap once a day's worth has gone), so the table stays bounded without a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from geo.hexgrid import HexGrid
from tracker.coverage import LAYER_KINDS, CoverageService
from tracker.store import coverage as store
from tracker.store.coverage import BucketRow, SampleRow
from tracker.store.pool import AsyncDb

log = logging.getLogger(__name__)

DEFAULT_TARGETS: tuple[tuple[str, float], ...] = (("ground", 8.0), ("combined", 8.0))
DEFAULT_INTERVAL_S = 60.0
DEFAULT_DEMAND_REFRESH_S = 3600.0
DEFAULT_RETENTION_DAYS = 90.0
DEFAULT_PRUNE_EVERY_S = 3600.0
WORST_HOURS = 5

DemandSource = Callable[[HexGrid], Awaitable[NDArray[np.float64]]]


def floor_time(at: datetime, interval_s: float) -> datetime:
    """``at`` floored to a multiple of ``interval_s`` since the epoch (whole microseconds)."""
    step = max(1, round(interval_s * 1e6))
    us = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us - us % step)


class CoverageSampler:
    """Stores coverage of configured (layer, minutes) pairs every ``interval_s``; start() and stop()."""

    def __init__(
        self,
        db: AsyncDb,
        service: CoverageService,
        targets: Sequence[tuple[str, float]] = DEFAULT_TARGETS,
        interval_s: float = DEFAULT_INTERVAL_S,
        resolution: int | None = None,
        demand: DemandSource | None = None,
        demand_refresh_s: float = DEFAULT_DEMAND_REFRESH_S,
        retention_days: float | None = DEFAULT_RETENTION_DAYS,
        prune_every_s: float = DEFAULT_PRUNE_EVERY_S,
    ) -> None:
        for layer, minutes in targets:
            if layer not in LAYER_KINDS:
                raise ValueError(f"unknown layer {layer!r}; known: {', '.join(LAYER_KINDS)}")
            if not (np.isfinite(minutes) and minutes > 0):
                raise ValueError(f"minutes must be > 0, got {minutes}")
        if not (np.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if retention_days is not None and not (np.isfinite(retention_days) and retention_days > 0):
            raise ValueError(
                f"retention_days must be > 0 (or None to keep every sample), got {retention_days}"
            )
        self.db = db
        self.service = service
        self.targets = tuple((layer, float(m)) for layer, m in targets)
        self.interval_s = float(interval_s)
        self.resolution = resolution
        self.demand = demand
        self.demand_refresh_s = demand_refresh_s
        self.retention_days = retention_days
        self.prune_every_s = float(prune_every_s)
        self.samples_written = 0
        self.samples_pruned = 0
        self._pruned_at: datetime | None = None
        self.errors = 0
        self._weights: NDArray[np.float64] | None = None
        self._weights_at: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True while the sampling task is alive."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start sampling on the running loop (the first sample is taken at once)."""
        if self.running:
            return
        self._task = asyncio.create_task(self._run(), name="coverage-sampler")

    async def stop(self) -> None:
        """Stop sampling; a sample being written is abandoned (the next start writes the next one)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def sample_once(self, now: datetime | None = None) -> list[SampleRow]:
        """Compute every configured pair now, store them, and return the rows (stored or already there)."""
        at = now or datetime.now(UTC)
        ts = floor_time(at, self.interval_s)
        res = self.resolution if self.resolution is not None else self.service.default_resolution()
        weights = await self._demand_weights(res, at)
        rows: list[SampleRow] = []
        for layer, minutes in self.targets:
            target_s = minutes * 60.0
            answer = await asyncio.to_thread(
                self.service.compute, target_s, LAYER_KINDS[layer], res, at, cameras=layer == "combined"
            )
            r = answer.result
            demand_ratio = r.covered_demand_ratio
            if weights is not None and weights.shape == r.best_eta_s.shape:
                total = float(weights.sum())
                demand_ratio = float(weights[r.best_eta_s <= target_s].sum()) / total if total > 0 else 0.0
            rows.append(
                SampleRow(
                    ts, layer, target_s, res, _unit(r.covered_area_ratio), _unit(demand_ratio), answer.units
                )
            )
        self.samples_written += await store.insert_samples(self.db, rows)
        await self.prune(at)
        return rows

    async def prune(self, now: datetime | None = None, force: bool = False) -> int:
        """Delete samples older than the retention, unless done under ``prune_every_s`` ago (or ``force``)."""
        if self.retention_days is None:
            return 0
        at = now or datetime.now(UTC)
        recent = self._pruned_at is not None and (at - self._pruned_at).total_seconds() < self.prune_every_s
        if recent and not force:
            return 0
        deleted = await store.delete_samples_before(self.db, at - timedelta(days=self.retention_days))
        self._pruned_at = at
        self.samples_pruned += deleted
        return deleted

    async def _demand_weights(self, res: int, at: datetime) -> NDArray[np.float64] | None:
        if self.demand is None:
            return None
        fresh = (
            self._weights_at is not None and (at - self._weights_at).total_seconds() < self.demand_refresh_s
        )
        if not fresh:
            grid = await asyncio.to_thread(self.service.grid, res)
            self._weights = await self.demand(grid)
            self._weights_at = at
        return self._weights

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.sample_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A database hiccup loses one sample, not the sampler: the history shows the gap.
                self.errors += 1
                log.exception("coverage sample failed")
            await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - started)))


def _unit(x: float) -> float:
    # float rounding must never trip the table's CHECK (ratio BETWEEN 0 AND 1).
    return min(1.0, max(0.0, float(x)))


@dataclass(frozen=True, slots=True)
class History:
    """Coverage of one layer and target time over a period, per bucket, with its worst hours."""

    layer: str
    target_s: float
    bucket: str
    points: list[BucketRow]
    worst_hours: list[BucketRow]


async def history(
    db: AsyncDb,
    since: datetime,
    until: datetime,
    layer: str,
    target_s: float,
    bucket: str = "minute",
    worst: int = WORST_HOURS,
) -> History:
    """Samples in ``[since, until)`` per ``bucket`` (minute | hour: min/avg/max) and the worst hours.

    The worst hours are the ``worst`` hours with the lowest mean covered area
    ratio (ties: the earlier hour first).
    """
    if layer not in LAYER_KINDS:
        raise ValueError(f"unknown layer {layer!r}; known: {', '.join(LAYER_KINDS)}")
    if bucket not in store.BUCKETS:
        raise ValueError(f"unknown bucket {bucket!r}; known: {', '.join(store.BUCKETS)}")
    points = await store.bucketed(db, since, until, layer, target_s, bucket)
    hours = points if bucket == "hour" else await store.bucketed(db, since, until, layer, target_s, "hour")
    worst_hours = sorted(hours, key=lambda b: (b.area_avg, b.start))[: max(0, worst)]
    return History(layer, target_s, bucket, points, worst_hours)
