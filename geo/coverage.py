"""Coverage and gaps: which cells of the area an available unit reaches within a target time T.

Model: a cell (of a :class:`~geo.hexgrid.HexGrid`) is *covered* when some unit
reaches its centre within T, where ETA = great-circle distance × pace[kind] and
pace = circuity / speed (s/m) is the ETA model's per kind (:class:`geo.eta.StraightLineEta`;
drones fly straight, circuity 1). Per cell the engine keeps the best ETA among
the units that reach it within T (``inf`` where none does) and which unit gives it
(ties go to the lowest unit index / slot, so the answer is unique).

Ratios are area-true: each cell weighs its area inside the boundary (clipped
share × cell area); a demand ratio weighs cells by a demand vector instead.

Speed: a unit only looks at the cells within its reach (T / pace) through a
latitude/longitude bucket grid of the cell centres, with the exact spherical
bound on the longitude span of a cap, then an exact haversine per cell centre.
:class:`CoverageState` keeps the per-cell best under unit moves, additions and
removals: a change recomputes only the cells within the unit's old and new reach
(from the units bucketed near each such cell), and equals a full recompute exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import h3.api.basic_int as h3
import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from geo.codes import ALL_KINDS_MASK, N_KINDS, kind_mask
from geo.distance import EARTH_RADIUS_M
from geo.eta import EtaModel, StraightLineEta
from geo.hexgrid import HexGrid

_MAX_BUCKETS = 4_000_000
_NO_UNIT = -1
_REACH_PER_BUCKET = 10.0  # buckets a tenth of the largest reach (measured: 3 → 10 saves ~25 % on Lima)


# ---------------------------------------------------------------------------------------------
# Kernels (numba). Every path computes an ETA with the same operations (_eta), so the incremental
# state and a full recompute compare the very same floating-point numbers.


@numba.njit(cache=True, inline="always")
def _eta(lat1: float, lon1: float, cos1: float, lat2: float, lon2: float, cos2: float, pace: float) -> float:
    """ETA (s) between two points given in radians (with their cosines), at ``pace`` s/m."""
    s_dlat = math.sin((lat2 - lat1) * 0.5)
    s_dlon = math.sin((lon2 - lon1) * 0.5)
    h = s_dlat * s_dlat + cos1 * cos2 * s_dlon * s_dlon
    if h > 1.0:
        h = 1.0
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(h)) * pace


@numba.njit(cache=True, inline="always")
def _clamp(v: int, hi: int) -> int:
    if v < 0:
        return 0
    if v > hi:
        return hi
    return v


@numba.njit(cache=True)
def _span(
    lat_deg: float, lon_deg: float, radius_m: float, gp: NDArray[np.float64], nrows: int, ncols: int
) -> tuple[int, int, int, int]:
    """Bucket rows and columns (inclusive) that hold every point within ``radius_m`` of the point."""
    delta = radius_m / EARTH_RADIUS_M  # angular radius of the cap
    dlat = math.degrees(delta) * (1.0 + 1e-9) + 1e-9
    c = math.cos(math.radians(lat_deg))
    s = math.sin(delta)
    # Exact widest longitude of a spherical cap: asin(sin δ / cos φ); the whole circle near a pole.
    dlon = 180.0 if s >= c else math.degrees(math.asin(s / c)) * (1.0 + 1e-9) + 1e-9
    r0 = _clamp(int(math.floor((lat_deg - dlat - gp[0]) / gp[2])), nrows - 1)  # noqa: RUF046
    r1 = _clamp(int(math.floor((lat_deg + dlat - gp[0]) / gp[2])), nrows - 1)  # noqa: RUF046
    c0 = _clamp(int(math.floor((lon_deg - dlon - gp[1]) / gp[3])), ncols - 1)  # noqa: RUF046
    c1 = _clamp(int(math.floor((lon_deg + dlon - gp[1]) / gp[3])), ncols - 1)  # noqa: RUF046
    return r0, r1, c0, c1


@numba.njit(cache=True)
def _bucket_of(lat_deg: float, lon_deg: float, gp: NDArray[np.float64], nrows: int, ncols: int) -> int:
    """Bucket of a point; points outside the grid go to the nearest edge bucket (still found by _span)."""
    r = _clamp(int(math.floor((lat_deg - gp[0]) / gp[2])), nrows - 1)  # noqa: RUF046
    c = _clamp(int(math.floor((lon_deg - gp[1]) / gp[3])), ncols - 1)  # noqa: RUF046
    return r * ncols + c


@numba.njit(cache=True)
def _offer(
    u: int, ulat: float, ulon: float, kind: int, pace: NDArray[np.float64], target: float,
    clat: NDArray[np.float64], clon: NDArray[np.float64], crad: NDArray[np.float64],
    cstart: NDArray[np.int64], corder: NDArray[np.int64], gp: NDArray[np.float64], nrows: int, ncols: int,
    best: NDArray[np.float64], arg: NDArray[np.int64],
) -> None:  # fmt: skip
    """Let unit ``u`` improve the best ETA of every cell within its reach (ties: lowest unit wins)."""
    p = pace[kind]
    r0, r1, c0, c1 = _span(ulat, ulon, target / p, gp, nrows, ncols)
    la = math.radians(ulat)
    lo = math.radians(ulon)
    co = math.cos(la)
    for r in range(r0, r1 + 1):
        for c in range(c0, c1 + 1):
            b = r * ncols + c
            for j in range(cstart[b], cstart[b + 1]):
                i = corder[j]
                e = _eta(la, lo, co, crad[3 * i], crad[3 * i + 1], crad[3 * i + 2], p)
                if e <= target and (e < best[i] or (e == best[i] and u < arg[i])):
                    best[i] = e
                    arg[i] = u


@numba.njit(cache=True)
def _full_kernel(
    ulat: NDArray[np.float64], ulon: NDArray[np.float64], ukind: NDArray[np.int8], active: NDArray[np.bool_],
    mask: int, pace: NDArray[np.float64], target: float,
    clat: NDArray[np.float64], clon: NDArray[np.float64], crad: NDArray[np.float64],
    cstart: NDArray[np.int64], corder: NDArray[np.int64], gp: NDArray[np.float64], nrows: int, ncols: int,
    best: NDArray[np.float64], arg: NDArray[np.int64],
) -> None:  # fmt: skip
    """Best ETA and unit of every cell from scratch, over the active units whose kind is in ``mask``."""
    best[:] = np.inf
    arg[:] = -1
    for u in range(ulat.shape[0]):
        k = ukind[u]
        if not active[u] or not (mask >> k) & 1:
            continue
        _offer(u, ulat[u], ulon[u], k, pace, target, clat, clon, crad, cstart, corder, gp, nrows, ncols,
               best, arg)  # fmt: skip


@numba.njit(cache=True)
def _recompute_cell(
    i: int, reach_max: float, ulat: NDArray[np.float64], ulon: NDArray[np.float64], ukind: NDArray[np.int8],
    uhead: NDArray[np.int32], unext: NDArray[np.int32], mask: int, pace: NDArray[np.float64], target: float,
    clat: NDArray[np.float64], clon: NDArray[np.float64], crad: NDArray[np.float64],
    gp: NDArray[np.float64], nrows: int, ncols: int, best: NDArray[np.float64], arg: NDArray[np.int64],
) -> None:  # fmt: skip
    """Best ETA and unit of cell ``i`` from the units bucketed within the largest reach of its centre."""
    r0, r1, c0, c1 = _span(clat[i], clon[i], reach_max, gp, nrows, ncols)
    be = np.inf
    ba = -1
    la = crad[3 * i]
    lo = crad[3 * i + 1]
    co = crad[3 * i + 2]
    for r in range(r0, r1 + 1):
        for c in range(c0, c1 + 1):
            u = uhead[r * ncols + c]
            while u >= 0:
                k = ukind[u]
                if (mask >> k) & 1:
                    ula = math.radians(ulat[u])
                    e = _eta(ula, math.radians(ulon[u]), math.cos(ula), la, lo, co, pace[k])
                    if e <= target and (e < be or (e == be and u < ba)):
                        be = e
                        ba = u
                u = unext[u]
    best[i] = be
    arg[i] = ba


@numba.njit(cache=True)
def _withdraw(
    u: int, reach_max: float, ulat: NDArray[np.float64], ulon: NDArray[np.float64], ukind: NDArray[np.int8],
    uhead: NDArray[np.int32], unext: NDArray[np.int32], mask: int, pace: NDArray[np.float64], target: float,
    clat: NDArray[np.float64], clon: NDArray[np.float64], crad: NDArray[np.float64],
    cstart: NDArray[np.int64], corder: NDArray[np.int64], gp: NDArray[np.float64], nrows: int, ncols: int,
    best: NDArray[np.float64], arg: NDArray[np.int64],
) -> None:  # fmt: skip
    """After unit ``u`` left the unit grid: recompute the cells within its reach that it was best for."""
    r0, r1, c0, c1 = _span(ulat[u], ulon[u], target / pace[ukind[u]], gp, nrows, ncols)
    for r in range(r0, r1 + 1):
        for c in range(c0, c1 + 1):
            b = r * ncols + c
            for j in range(cstart[b], cstart[b + 1]):
                i = corder[j]
                if arg[i] == u:
                    _recompute_cell(i, reach_max, ulat, ulon, ukind, uhead, unext, mask, pace, target,
                                    clat, clon, crad, gp, nrows, ncols, best, arg)  # fmt: skip


@numba.njit(cache=True)
def _link(
    u: int, b: int, uhead: NDArray[np.int32], unext: NDArray[np.int32], uprev: NDArray[np.int32]
) -> None:
    h = uhead[b]
    unext[u] = h
    uprev[u] = -1
    if h >= 0:
        uprev[h] = u
    uhead[b] = u


@numba.njit(cache=True)
def _unlink(
    u: int, b: int, uhead: NDArray[np.int32], unext: NDArray[np.int32], uprev: NDArray[np.int32]
) -> None:
    n = unext[u]
    p = uprev[u]
    if p >= 0:
        unext[p] = n
    else:
        uhead[b] = n
    if n >= 0:
        uprev[n] = p
    unext[u] = -1
    uprev[u] = -1


@numba.njit(cache=True)
def _cells_within(
    lat: float, lon: float, kind: int, pace: NDArray[np.float64], target: float,
    crad: NDArray[np.float64], cstart: NDArray[np.int64], corder: NDArray[np.int64],
    gp: NDArray[np.float64], nrows: int, ncols: int, out: NDArray[np.int64],
) -> int:  # fmt: skip
    """Write into ``out`` the cells a unit of ``kind`` at (lat, lon) reaches within T; return how many."""
    p = pace[kind]
    r0, r1, c0, c1 = _span(lat, lon, target / p, gp, nrows, ncols)
    la = math.radians(lat)
    lo = math.radians(lon)
    co = math.cos(la)
    n = 0
    for r in range(r0, r1 + 1):
        for c in range(c0, c1 + 1):
            b = r * ncols + c
            for j in range(cstart[b], cstart[b + 1]):
                i = corder[j]
                if _eta(la, lo, co, crad[3 * i], crad[3 * i + 1], crad[3 * i + 2], p) <= target:
                    out[n] = i
                    n += 1
    return n


@numba.njit(cache=True)
def _reach_csr(
    lat: NDArray[np.float64], lon: NDArray[np.float64], kind: int, pace: NDArray[np.float64], target: float,
    crad: NDArray[np.float64], cstart: NDArray[np.int64], corder: NDArray[np.int64],
    gp: NDArray[np.float64], nrows: int, ncols: int, ncells: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:  # fmt: skip
    """CSR (indptr, indices) of the cells each point reaches within T as a unit of ``kind``."""
    indptr = np.zeros(lat.shape[0] + 1, dtype=np.int64)
    buf = np.empty(ncells, dtype=np.int64)
    chunks = []
    for q in range(lat.shape[0]):
        n = _cells_within(lat[q], lon[q], kind, pace, target, crad, cstart, corder, gp, nrows, ncols, buf)
        chunks.append(np.sort(buf[:n]))
        indptr[q + 1] = indptr[q] + n
    indices = np.empty(indptr[-1], dtype=np.int64)
    for q in range(lat.shape[0]):
        indices[indptr[q] : indptr[q + 1]] = chunks[q]
    return indptr, indices


# ---------------------------------------------------------------------------------------------
# Python layer


def kind_pace(model: StraightLineEta | EtaModel | ArrayLike) -> NDArray[np.float64]:
    """Seconds per metre of great-circle distance per kind code, from an ETA model or a length-5 array.

    A :class:`StraightLineEta` gives its exact pace; another :class:`EtaModel`
    gives its lower bound per kind (coverage is then optimistic).

    >>> float(kind_pace(StraightLineEta.from_names())[4])  # drone: 1 / 15 m/s
    0.06666666666666667
    """
    if isinstance(model, StraightLineEta):
        pace = np.asarray(model.pace, dtype=np.float64)
    elif isinstance(model, EtaModel):
        pace = np.array([model.min_pace_s_per_m([k]) for k in range(N_KINDS)], dtype=np.float64)
    else:
        pace = np.asarray(model, dtype=np.float64)
    if pace.shape != (N_KINDS,) or not np.all(np.isfinite(pace)) or np.any(pace <= 0):
        raise ValueError(f"pace needs {N_KINDS} positive finite values (s/m per kind), got {pace.tolist()}")
    return np.ascontiguousarray(pace)


@dataclass(frozen=True, slots=True, eq=False)
class CellBuckets:
    """Cell centres of a grid in a lat/lon bucket grid (CSR), with their radians and cosines."""

    gp: NDArray[np.float64]  # lat0, lon0, bucket height (deg), bucket width (deg)
    nrows: int
    ncols: int
    start: NDArray[np.int64]  # cells of bucket b: order[start[b]:start[b + 1]]
    order: NDArray[np.int64]
    rad: NDArray[np.float64]  # per cell: lat (rad), lon (rad), cos(lat), flattened

    @classmethod
    def build(cls, grid: HexGrid, reach_m: float) -> CellBuckets:
        """Buckets about a third of the largest reach wide (at least two cell edges)."""
        edge = h3.average_hexagon_edge_length(grid.res, unit="m")
        size_m = max(reach_m / _REACH_PER_BUCKET if math.isfinite(reach_m) else 0.0, 2.0 * edge)
        if grid.size:
            lat_lo, lat_hi = float(grid.lat.min()), float(grid.lat.max())
            lon_lo, lon_hi = float(grid.lon.min()), float(grid.lon.max())
        else:
            lat_lo = lat_hi = lon_lo = lon_hi = 0.0
        coslat = max(0.01, math.cos(math.radians(max(abs(lat_lo), abs(lat_hi)))))
        glat = math.degrees(size_m / EARTH_RADIUS_M)
        glon = glat / coslat
        nrows = int((lat_hi - lat_lo) / glat) + 1
        ncols = int((lon_hi - lon_lo) / glon) + 1
        while nrows * ncols > _MAX_BUCKETS:  # a continent at a tiny reach: fewer, larger buckets
            glat, glon = glat * 2, glon * 2
            nrows, ncols = int((lat_hi - lat_lo) / glat) + 1, int((lon_hi - lon_lo) / glon) + 1
        gp = np.array([lat_lo, lon_lo, glat, glon], dtype=np.float64)
        rows = np.clip(np.floor((grid.lat - lat_lo) / glat).astype(np.int64), 0, nrows - 1)
        cols = np.clip(np.floor((grid.lon - lon_lo) / glon).astype(np.int64), 0, ncols - 1)
        bucket = rows * ncols + cols
        order = np.argsort(bucket, kind="stable").astype(np.int64)
        start = np.searchsorted(bucket[order], np.arange(nrows * ncols + 1)).astype(np.int64)
        la = np.radians(grid.lat)
        rad = np.ascontiguousarray(np.column_stack([la, np.radians(grid.lon), np.cos(la)]).ravel())
        return cls(gp, nrows, ncols, start, order, rad)


@dataclass(frozen=True, slots=True, eq=False)
class CoverageResult:
    """Coverage of a grid at target time T: per-cell best ETA and unit, ratios and gaps."""

    grid: HexGrid
    target_s: float
    best_eta_s: NDArray[np.float64]  # per cell; inf where no unit reaches it within T (the heat map)
    best_unit: NDArray[np.int64]  # index of the unit (slot, for CoverageState) giving it; -1 where none
    covered_area_ratio: float  # area-true: weighted by clipped share × cell area
    covered_demand_ratio: float  # weighted by the demand per cell (area when none was given)
    covered_area_m2: float

    @property
    def covered(self) -> NDArray[np.bool_]:
        """Per cell: reached within T."""
        return self.best_eta_s <= self.target_s

    @property
    def gap_index(self) -> NDArray[np.intp]:
        """Row numbers (into the grid's arrays) of the cells no unit reaches within T."""
        return np.flatnonzero(~self.covered)

    @property
    def gap_cells(self) -> NDArray[np.uint64]:
        """H3 ids of the gap cells."""
        return self.grid.cells[self.gap_index]

    def gap_regions(self) -> dict[str, Any]:
        """The gaps as merged polygons clipped to the boundary (GeoJSON MultiPolygon geometry)."""
        return self.grid.region_geojson(self.gap_index)


def _result(
    grid: HexGrid,
    target_s: float,
    best: NDArray[np.float64],
    arg: NDArray[np.int64],
    demand: ArrayLike | None,
) -> CoverageResult:
    weight = grid.clipped_area_m2
    covered = best <= target_s
    total = float(weight.sum())
    covered_m2 = float(weight[covered].sum())
    area_ratio = covered_m2 / total if total > 0 else 0.0
    if demand is None:
        demand_ratio = area_ratio
    else:
        d = np.asarray(demand, dtype=np.float64)
        if d.shape != best.shape or np.any(d < 0) or not np.all(np.isfinite(d)):
            raise ValueError(f"demand needs one finite non-negative weight per cell ({best.shape[0]})")
        dt = float(d.sum())
        demand_ratio = float(d[covered].sum()) / dt if dt > 0 else 0.0
    return CoverageResult(grid, target_s, best, arg, area_ratio, demand_ratio, covered_m2)


def result_from_eta(
    grid: HexGrid,
    target_s: float,
    best_eta_s: NDArray[np.float64],
    best_unit: NDArray[np.int64],
    demand: ArrayLike | None = None,
) -> CoverageResult:
    """A :class:`CoverageResult` from per-cell best ETAs the caller combined (units ∪ docks ∪ cameras)."""
    return _result(grid, _check_target(target_s), best_eta_s, best_unit, demand)


def _check_target(target_s: float) -> float:
    t = float(target_s)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"target time must be finite and >= 0 s, got {target_s}")
    return t


def _reach_max(pace: NDArray[np.float64], mask: int, target_s: float) -> float:
    paces = [float(pace[k]) for k in range(N_KINDS) if (mask >> k) & 1]
    return target_s / min(paces) if paces else 0.0


def coverage(
    grid: HexGrid,
    lat: ArrayLike,
    lon: ArrayLike,
    kind: ArrayLike,
    target_s: float,
    pace: StraightLineEta | EtaModel | ArrayLike,
    kinds: Iterable[int] | None = None,
    demand: ArrayLike | None = None,
    buckets: CellBuckets | None = None,
) -> CoverageResult:
    """Coverage of ``grid`` within ``target_s`` by the given (available) units of the ``kinds`` codes.

    ``lat``, ``lon``, ``kind`` are the units' columns; ``best_unit`` indexes them.
    Pass ``buckets`` (``CellBuckets.build(grid, reach)``) to reuse the cell index
    across calls with the same grid.
    """
    t = _check_target(target_s)
    p = kind_pace(pace)
    mask = kind_mask(kinds)
    ulat = np.ascontiguousarray(lat, dtype=np.float64)
    ulon = np.ascontiguousarray(lon, dtype=np.float64)
    ukind = np.ascontiguousarray(kind, dtype=np.int8)
    if not (ulat.shape == ulon.shape == ukind.shape) or ulat.ndim != 1:
        raise ValueError("lat, lon and kind must be 1-D arrays of the same length")
    if ukind.shape[0] and (ukind.min() < 0 or ukind.max() >= N_KINDS):
        raise ValueError(f"kind codes must be 0..{N_KINDS - 1}")
    cb = buckets if buckets is not None else CellBuckets.build(grid, _reach_max(p, mask, t))
    best = np.empty(grid.size, dtype=np.float64)
    arg = np.empty(grid.size, dtype=np.int64)
    active = np.ones(ulat.shape[0], dtype=np.bool_)
    _full_kernel(ulat, ulon, ukind, active, mask, p, t, grid.lat, grid.lon, cb.rad, cb.start, cb.order,
                 cb.gp, cb.nrows, cb.ncols, best, arg)  # fmt: skip
    return _result(grid, t, best, arg, demand)


def reach_sets(
    grid: HexGrid,
    lat: ArrayLike,
    lon: ArrayLike,
    kind: int,
    target_s: float,
    pace: StraightLineEta | EtaModel | ArrayLike,
    buckets: CellBuckets | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Which grid cells a unit of ``kind`` placed at each point reaches within T, as CSR (indptr, indices).

    Row q's covered cells (row numbers into the grid, sorted) are
    ``indices[indptr[q]:indptr[q + 1]]``: the candidate × demand-cell coverage
    structure of maximal covering placement (scipy.sparse.csr_matrix((ones, indices, indptr))).
    """
    t = _check_target(target_s)
    p = kind_pace(pace)
    if not 0 <= int(kind) < N_KINDS:
        raise ValueError(f"kind code must be 0..{N_KINDS - 1}, got {kind}")
    qlat = np.ascontiguousarray(lat, dtype=np.float64)
    qlon = np.ascontiguousarray(lon, dtype=np.float64)
    if qlat.shape != qlon.shape or qlat.ndim != 1:
        raise ValueError("lat and lon must be 1-D arrays of the same length")
    cb = buckets if buckets is not None else CellBuckets.build(grid, t / float(p[int(kind)]))
    if qlat.shape[0] == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    indptr, indices = _reach_csr(qlat, qlon, int(kind), p, t, cb.rad, cb.start, cb.order, cb.gp, cb.nrows,
                                 cb.ncols, max(grid.size, 1))  # fmt: skip
    return indptr, indices


class CoverageState:
    """Coverage kept current under unit moves, additions and removals (units live in reusable slots).

    Each change touches only the cells within the unit's old and new reach; the
    per-cell best ETA and unit (slot) always equal :meth:`recompute`'s exactly.
    """

    def __init__(
        self,
        grid: HexGrid,
        target_s: float,
        pace: StraightLineEta | EtaModel | ArrayLike,
        kinds: Iterable[int] | None = None,
        capacity: int = 256,
    ) -> None:
        self.grid = grid
        self.target_s = _check_target(target_s)
        self.pace = kind_pace(pace)
        self.mask = kind_mask(kinds)
        self.reach_max = _reach_max(self.pace, self.mask, self.target_s)
        self.buckets = CellBuckets.build(grid, self.reach_max)
        cap = max(1, int(capacity))
        self.lat = np.zeros(cap, dtype=np.float64)
        self.lon = np.zeros(cap, dtype=np.float64)
        self.kind = np.zeros(cap, dtype=np.int8)
        self.active = np.zeros(cap, dtype=np.bool_)
        self._next = np.full(cap, -1, dtype=np.int32)
        self._prev = np.full(cap, -1, dtype=np.int32)
        self._bucket = np.full(cap, -1, dtype=np.int64)
        self._head = np.full(self.buckets.nrows * self.buckets.ncols, -1, dtype=np.int32)
        self._free: list[int] = list(range(cap - 1, -1, -1))
        self.best_eta_s = np.full(grid.size, np.inf, dtype=np.float64)
        self.best_unit = np.full(grid.size, _NO_UNIT, dtype=np.int64)

    def _grow(self) -> None:
        old = self.lat.shape[0]
        new = old * 2

        def ext(a: NDArray[Any], fill: Any) -> NDArray[Any]:
            out = np.full(new, fill, dtype=a.dtype)
            out[:old] = a
            return out

        self.lat, self.lon, self.kind = ext(self.lat, 0.0), ext(self.lon, 0.0), ext(self.kind, 0)
        self.active = ext(self.active, False)
        self._next, self._prev, self._bucket = ext(self._next, -1), ext(self._prev, -1), ext(self._bucket, -1)
        self._free.extend(range(new - 1, old - 1, -1))

    def add(self, lat: float, lon: float, kind: int) -> int:
        """Add an available unit and return its slot (``best_unit`` refers to slots)."""
        if not 0 <= int(kind) < N_KINDS:
            raise ValueError(f"kind code must be 0..{N_KINDS - 1}, got {kind}")
        if not self._free:
            self._grow()
        u = self._free.pop()
        self.kind[u] = int(kind)
        self._place(u, float(lat), float(lon))
        return u

    def _place(self, u: int, lat: float, lon: float) -> None:
        cb = self.buckets
        self.lat[u], self.lon[u] = lat, lon
        self.active[u] = True
        b = int(_bucket_of(lat, lon, cb.gp, cb.nrows, cb.ncols))
        self._bucket[u] = b
        _link(u, b, self._head, self._next, self._prev)
        if (self.mask >> int(self.kind[u])) & 1:
            _offer(u, lat, lon, int(self.kind[u]), self.pace, self.target_s, self.grid.lat, self.grid.lon,
                   cb.rad, cb.start, cb.order, cb.gp, cb.nrows, cb.ncols, self.best_eta_s,
                   self.best_unit)  # fmt: skip

    def _lift(self, u: int) -> None:
        if not (0 <= u < self.active.shape[0]) or not self.active[u]:
            raise KeyError(f"no unit in slot {u}")
        cb = self.buckets
        _unlink(u, int(self._bucket[u]), self._head, self._next, self._prev)
        self.active[u] = False
        self._bucket[u] = -1
        if (self.mask >> int(self.kind[u])) & 1:
            _withdraw(u, self.reach_max, self.lat, self.lon, self.kind, self._head, self._next, self.mask,
                      self.pace, self.target_s, self.grid.lat, self.grid.lon, cb.rad, cb.start, cb.order,
                      cb.gp, cb.nrows, cb.ncols, self.best_eta_s, self.best_unit)  # fmt: skip

    def remove(self, slot: int) -> None:
        """Remove the unit in ``slot`` (dispatched, out of service, gone)."""
        self._lift(slot)
        self._free.append(slot)

    def move(self, slot: int, lat: float, lon: float) -> None:
        """Move the unit in ``slot`` to (lat, lon)."""
        self._lift(slot)
        self._place(slot, float(lat), float(lon))

    def recompute(self) -> None:
        """Rebuild every cell's best from scratch (after a bulk load; the incremental path equals it)."""
        cb = self.buckets
        _full_kernel(self.lat, self.lon, self.kind, self.active, self.mask, self.pace, self.target_s,
                     self.grid.lat, self.grid.lon, cb.rad, cb.start, cb.order, cb.gp, cb.nrows, cb.ncols,
                     self.best_eta_s, self.best_unit)  # fmt: skip

    def add_many(self, lat: ArrayLike, lon: ArrayLike, kind: ArrayLike) -> NDArray[np.int64]:
        """Add many units at once (one full recompute) and return their slots."""
        la = np.asarray(lat, dtype=np.float64)
        lo = np.asarray(lon, dtype=np.float64)
        ki = np.asarray(kind, dtype=np.int64)
        if ki.shape[0] and (ki.min() < 0 or ki.max() >= N_KINDS):
            raise ValueError(f"kind codes must be 0..{N_KINDS - 1}")
        cb = self.buckets
        slots = np.empty(la.shape[0], dtype=np.int64)
        for q in range(la.shape[0]):
            if not self._free:
                self._grow()
            u = self._free.pop()
            slots[q] = u
            self.lat[u], self.lon[u], self.kind[u] = la[q], lo[q], ki[q]
            self.active[u] = True
            b = int(_bucket_of(float(la[q]), float(lo[q]), cb.gp, cb.nrows, cb.ncols))
            self._bucket[u] = b
            _link(u, b, self._head, self._next, self._prev)
        self.recompute()
        return slots

    def result(self, demand: ArrayLike | None = None) -> CoverageResult:
        """The current coverage (copies of the per-cell arrays)."""
        return _result(self.grid, self.target_s, self.best_eta_s.copy(), self.best_unit.copy(), demand)


def warm_up() -> None:
    """Compile (or load from the disk cache) every kernel on a tiny grid."""
    from shapely.geometry import box

    from geo.hexgrid import hexgrid

    grid = hexgrid(box(-77.031, -12.121, -77.029, -12.119), 10)
    st = CoverageState(grid, 60.0, StraightLineEta.from_names(), capacity=1)
    u = st.add(-12.12, -77.03, 0)
    st.add(-12.12, -77.03, 1)
    st.move(u, -12.1201, -77.0301)
    st.remove(u)
    st.add_many([-12.12], [-77.03], [4])
    coverage(grid, [-12.12], [-77.03], [0], 60.0, st.pace)
    reach_sets(grid, np.array([-12.12]), np.array([-77.03]), 0, 60.0, st.pace)


__all__ = [
    "ALL_KINDS_MASK",
    "CellBuckets",
    "CoverageResult",
    "CoverageState",
    "coverage",
    "kind_pace",
    "reach_sets",
    "result_from_eta",
    "warm_up",
]
