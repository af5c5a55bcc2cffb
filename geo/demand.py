"""Demand per H3 cell from past incidents: counts per cell plus an area-proportional prior.

Expected demand of cell *i* is ``count_i + prior · a_i / ā`` where ``a_i`` is
the cell's area inside the boundary and ``ā`` the mean of those areas. The
prior is a Bayesian-style additive pseudo-count (a Gamma prior on a Poisson rate
whose mean is proportional to area): a whole cell with no incident in the window
still counts as ``prior`` incidents, a border cell 30 % inside as 0.3 of that.
Without it a cell that happened to be quiet for four weeks would weigh nothing,
and a coverage plan would happily leave it blind. Scaling by the *mean* clipped
area (not the total) keeps the meaning of ``prior`` the same at every H3
resolution and for every size of area: "pseudo-incidents per average cell".

Pure: arrays in, arrays out; the incidents come from :mod:`tracker.demand`.
"""

from __future__ import annotations

import h3.api.basic_int as h3
import numpy as np
from numpy.typing import ArrayLike, NDArray

DEFAULT_PRIOR = 0.5  # pseudo-incidents per average cell: well under a typical count, never zero


def latlng_cells(lat: ArrayLike, lon: ArrayLike, res: int) -> NDArray[np.uint64]:
    """The H3 cell (as uint64) of each point at resolution ``res``; non-finite points raise ValueError."""
    la = np.asarray(lat, dtype=np.float64)
    lo = np.asarray(lon, dtype=np.float64)
    if la.shape != lo.shape or la.ndim != 1:
        raise ValueError("lat and lon must be 1-D arrays of the same length")
    if not (np.all(np.isfinite(la)) and np.all(np.isfinite(lo))):
        raise ValueError("incident coordinates must be finite")
    return np.fromiter(
        (h3.latlng_to_cell(float(a), float(o), res) for a, o in zip(la, lo, strict=True)),
        dtype=np.uint64,
        count=la.shape[0],
    )


def cell_counts(grid_cells: ArrayLike, hits: ArrayLike) -> NDArray[np.int64]:
    """How many of ``hits`` (H3 ids) fall in each of ``grid_cells``; ids not in the grid are ignored."""
    cells = np.asarray(grid_cells, dtype=np.uint64)
    h = np.asarray(hits, dtype=np.uint64)
    counts = np.zeros(cells.shape[0], dtype=np.int64)
    if cells.shape[0] == 0 or h.shape[0] == 0:
        return counts
    # The grid need not be sorted: look hits up through a sorted view and scatter back.
    order = np.argsort(cells, kind="stable")
    sorted_cells = cells[order]
    pos = np.searchsorted(sorted_cells, h)
    pos_c = np.minimum(pos, sorted_cells.shape[0] - 1)
    found = sorted_cells[pos_c] == h
    np.add.at(counts, order[pos_c[found]], 1)
    return counts


def demand_weights(
    counts: ArrayLike, clipped_area_m2: ArrayLike, prior: float = DEFAULT_PRIOR
) -> NDArray[np.float64]:
    """Expected demand per cell: ``count + prior · area / mean(area)`` (see the module's docstring)."""
    c = np.asarray(counts, dtype=np.float64)
    a = np.asarray(clipped_area_m2, dtype=np.float64)
    if c.shape != a.shape or c.ndim != 1:
        raise ValueError("counts and areas must be 1-D arrays of the same length")
    if not np.isfinite(prior) or prior < 0:
        raise ValueError(f"prior must be finite and >= 0, got {prior}")
    if np.any(c < 0) or np.any(a < 0) or not (np.all(np.isfinite(c)) and np.all(np.isfinite(a))):
        raise ValueError("counts and areas must be finite and >= 0")
    mean = float(a.mean()) if a.shape[0] else 0.0
    if prior == 0 or mean <= 0:
        return c.copy()
    out: NDArray[np.float64] = c + prior * (a / mean)
    return out
