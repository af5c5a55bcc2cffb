"""Where to put units: maximal covering location (MCLP) and move-up of idle units.

Coverage structure: "site j covers cells S_j" as CSR arrays (``indptr`` of length
m + 1, ``indices`` the cell numbers), the same shape whichever builder made it
(:func:`coverage_csr` here, by great-circle reach; an H3 builder elsewhere).
Demand is a non-negative weight per cell; a cell counts once however many
chosen sites cover it.

- :func:`place_greedy`: greedy on marginal gains (kept current incrementally
  through the cell → sites transpose, so the whole run costs one pass over the
  covering pairs) followed by 1-swap interchange until no swap improves, from
  several starts; it stops, proven optimal, once every coverable cell is covered.
- :func:`place_exact`: the MILP with ``scipy.optimize.milp`` (HiGHS): binary
  x_j per site, y_i per cell, y_i ≤ Σ_{j∈N_i} x_j, Σ x_j = p. y is left
  continuous in [0, 1]: with x integral and w ≥ 0 an optimum has
  y_i = min(1, Σ x_j) ∈ {0, 1}, and HiGHS branches on far fewer variables.
- :func:`move_up` / :func:`move_up_exact`: idle units either stay (covering
  their current set) or move to a candidate site; at most ``max_moves`` moves;
  demand already covered by busy or fixed units counts as covered.

Measured (``python -m benchmarks.bench_placement``, Miraflores H3 res 10, 660
cells = sites, p = 20): greedy + interchange 2-5 ms and within 1.4 % of the
HiGHS optimum, which takes 1.5-21 s to prove.

Pure: arrays in, dataclasses out; the kernels are numba (``cache=True``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import Bounds, LinearConstraint, milp

from geo.distance import EARTH_RADIUS_M, haversine_m_nb

_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0
_MAX_BUCKETS = 4_000_000  # of the pruning grid; coarser buckets past this (a metropolis at a tiny reach)


# ---------------------------------------------------------------------------------------------
# Coverage structure


@numba.njit(cache=True)
def _coverage_kernel(
    site_lat: NDArray[np.float64], site_lon: NDArray[np.float64],
    cell_lat: NDArray[np.float64], cell_lon: NDArray[np.float64], reach_m: float,
    lat0: float, lon0: float, dlat: float, dlon: float, nrows: int, ncols: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:  # fmt: skip
    n = cell_lat.shape[0]
    m = site_lat.shape[0]
    nb = nrows * ncols
    # Counting sort of the cells by bucket: cells of bucket b are order[starts[b]:starts[b + 1]].
    bucket = np.empty(n, dtype=np.int64)
    starts = np.zeros(nb + 1, dtype=np.int64)
    for i in range(n):
        r = min(nrows - 1, max(0, int((cell_lat[i] - lat0) / dlat)))
        c = min(ncols - 1, max(0, int((cell_lon[i] - lon0) / dlon)))
        bucket[i] = r * ncols + c
        starts[bucket[i] + 1] += 1
    for b in range(nb):
        starts[b + 1] += starts[b]
    fill = starts[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for i in range(n):  # ascending i within a bucket, so each site's cells come out sorted per bucket
        order[fill[bucket[i]]] = i
        fill[bucket[i]] += 1
    indptr = np.zeros(m + 1, dtype=np.int64)
    cap = max(16, 4 * n)
    indices = np.empty(cap, dtype=np.int64)
    k = 0
    for j in range(m):
        # A bucket is at least the reach wide, so the 3 × 3 block around the site's bucket holds every cell
        # within reach (a site off the cells' box gets an off-grid bucket; the block is cut to the grid).
        rj = int(math.floor((site_lat[j] - lat0) / dlat))  # noqa: RUF046 (numba: keep the int type)
        cj = int(math.floor((site_lon[j] - lon0) / dlon))  # noqa: RUF046 (numba: keep the int type)
        for r in range(max(0, rj - 1), min(nrows, rj + 2)):
            for c in range(max(0, cj - 1), min(ncols, cj + 2)):
                b = r * ncols + c
                for t in range(starts[b], starts[b + 1]):
                    i = order[t]
                    if haversine_m_nb(site_lat[j], site_lon[j], cell_lat[i], cell_lon[i]) <= reach_m:
                        if k == indices.shape[0]:
                            bigger = np.empty(2 * k, dtype=np.int64)
                            bigger[:k] = indices
                            indices = bigger
                        indices[k] = i
                        k += 1
        indptr[j + 1] = k
        indices[indptr[j] : k].sort()
    return indptr, indices[:k].copy()


def coverage_csr(
    site_lat: ArrayLike, site_lon: ArrayLike, cell_lat: ArrayLike, cell_lon: ArrayLike, reach_m: float
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """CSR (indptr, indices) of "site j covers cell i" when their great-circle distance is ≤ ``reach_m``.

    Cells are bucketed on a lat/lon grid at least ``reach_m`` wide, so each site
    checks only the 3 × 3 buckets around it. Not for areas crossing the antimeridian.

    >>> indptr, indices = coverage_csr([-12.12], [-77.03], [-12.12, -12.13], [-77.03, -77.03], 500.0)
    >>> indptr.tolist(), indices.tolist()
    ([0, 1], [0])
    """
    slat, slon = _f64(site_lat), _f64(site_lon)
    clat, clon = _f64(cell_lat), _f64(cell_lon)
    if slat.shape != slon.shape or clat.shape != clon.shape:
        raise ValueError("latitude and longitude arrays differ in length")
    if not all(np.all(np.isfinite(a)) for a in (slat, slon, clat, clon)):
        raise ValueError("latitudes and longitudes must be finite")
    if not (math.isfinite(reach_m) and reach_m >= 0):
        raise ValueError(f"reach must be finite and >= 0 m, got {reach_m}")
    m = slat.shape[0]
    if clat.shape[0] == 0 or m == 0:
        return np.zeros(m + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lat0, lat1 = float(clat.min()), float(clat.max())
    lon0, lon1 = float(clon.min()), float(clon.max())
    dlat = max(reach_m / _M_PER_DEG, 1e-9) * 1.0001
    # A longitude degree is shortest at the highest |latitude| of the cells (plus the reach).
    far = min(89.0, max(abs(lat0), abs(lat1)) + dlat)
    dlon = dlat / math.cos(math.radians(far))
    while True:
        nrows = int((lat1 - lat0) / dlat) + 1
        ncols = int((lon1 - lon0) / dlon) + 1
        if nrows * ncols <= _MAX_BUCKETS:
            break
        dlat, dlon = dlat * 2.0, dlon * 2.0
    return _coverage_kernel(slat, slon, clat, clon, float(reach_m), lat0, lon0, dlat, dlon, nrows, ncols)  # type: ignore[no-any-return]


def csr_rows(
    indptr: ArrayLike, indices: ArrayLike, rows: ArrayLike
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The CSR of the chosen rows (e.g. the covered sets of units standing at these site numbers)."""
    ptr, idx = _i64(indptr), _i64(indices)
    r = _i64(rows)
    lengths = ptr[r + 1] - ptr[r]
    out_ptr = np.zeros(r.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_ptr[1:])
    out_idx = np.concatenate([idx[ptr[j] : ptr[j + 1]] for j in r]) if r.shape[0] else np.zeros(0, np.int64)
    return out_ptr, out_idx.astype(np.int64)


@numba.njit(cache=True)
def _travel_kernel(
    flat: NDArray[np.float64], flon: NDArray[np.float64], tlat: NDArray[np.float64], tlon: NDArray[np.float64]
) -> NDArray[np.float64]:
    out = np.empty((flat.shape[0], tlat.shape[0]), dtype=np.float64)
    for u in range(flat.shape[0]):
        for j in range(tlat.shape[0]):
            out[u, j] = haversine_m_nb(flat[u], flon[u], tlat[j], tlon[j])
    return out


def travel_times_s(
    from_lat: ArrayLike, from_lon: ArrayLike, to_lat: ArrayLike, to_lon: ArrayLike, pace_s_per_m: float
) -> NDArray[np.float64]:
    """(units × sites) travel seconds: great-circle distance × pace (``StraightLineEta.pace[kind]``)."""
    return _travel_kernel(_f64(from_lat), _f64(from_lon), _f64(to_lat), _f64(to_lon)) * float(pace_s_per_m)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# Kernels shared by the heuristics


@numba.njit(cache=True)
def _transpose(
    indptr: NDArray[np.int64], indices: NDArray[np.int64], n: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    m = indptr.shape[0] - 1
    tptr = np.zeros(n + 1, dtype=np.int64)
    for t in range(indices.shape[0]):
        tptr[indices[t] + 1] += 1
    for i in range(n):
        tptr[i + 1] += tptr[i]
    fill = tptr[:-1].copy()
    tidx = np.empty(indices.shape[0], dtype=np.int64)
    for j in range(m):
        for t in range(indptr[j], indptr[j + 1]):
            i = indices[t]
            tidx[fill[i]] = j
            fill[i] += 1
    return tptr, tidx


@numba.njit(cache=True)
def _greedy_kernel(
    indptr: NDArray[np.int64], indices: NDArray[np.int64], w: NDArray[np.float64], p: int,
    tptr: NDArray[np.int64], tidx: NDArray[np.int64], first: int,
) -> NDArray[np.int64]:  # fmt: skip
    m = indptr.shape[0] - 1
    gain = np.zeros(m, dtype=np.float64)
    for j in range(m):
        for t in range(indptr[j], indptr[j + 1]):
            gain[j] += w[indices[t]]
    chosen = np.zeros(m, dtype=np.bool_)
    covered = np.zeros(w.shape[0], dtype=np.bool_)
    sel = np.empty(p, dtype=np.int64)
    for s in range(p):
        best = first if s == 0 and first >= 0 else -1  # a forced first site starts another greedy run
        if best < 0:
            for j in range(m):
                if not chosen[j] and (best < 0 or gain[j] > gain[best]):
                    best = j
        sel[s] = best
        chosen[best] = True
        for t in range(indptr[best], indptr[best + 1]):
            i = indices[t]
            if not covered[i]:
                covered[i] = True
                # The cell stops counting for every site that covers it: their gains drop by its weight.
                for q in range(tptr[i], tptr[i + 1]):
                    gain[tidx[q]] -= w[i]
    return sel


@numba.njit(cache=True, inline="always")
def _add_row(
    count: NDArray[np.int64], indptr: NDArray[np.int64], indices: NDArray[np.int64], row: int, d: int
) -> None:
    for t in range(indptr[row], indptr[row + 1]):
        count[indices[t]] += d


@numba.njit(cache=True, inline="always")
def _row_gain(
    count: NDArray[np.int64],
    w: NDArray[np.float64],
    indptr: NDArray[np.int64],
    indices: NDArray[np.int64],
    row: int,
) -> float:
    g = 0.0
    for t in range(indptr[row], indptr[row + 1]):
        if count[indices[t]] == 0:
            g += w[indices[t]]
    return g


@numba.njit(cache=True)
def _interchange_kernel(
    indptr: NDArray[np.int64], indices: NDArray[np.int64], w: NDArray[np.float64], sel: NDArray[np.int64],
    max_passes: int, tol: float, tptr: NDArray[np.int64], tidx: NDArray[np.int64],
) -> tuple[NDArray[np.int64], int, int]:  # fmt: skip
    # gain[k]: demand of the uncovered cells site k covers, kept current across swaps. Taking j out
    # uncovers only the cells j alone covers; their weights, spread over the sites that cover them
    # (extra), give every k's gain without j: a trial costs O(m + j's neighbourhood), not O(pairs).
    m = indptr.shape[0] - 1
    n = w.shape[0]
    sel = sel.copy()
    count = np.zeros(n, dtype=np.int64)
    chosen = np.zeros(m, dtype=np.bool_)
    for j in sel:
        chosen[j] = True
        _add_row(count, indptr, indices, j, 1)
    gain = np.zeros(m, dtype=np.float64)
    for i in range(n):
        if count[i] == 0:
            for q in range(tptr[i], tptr[i + 1]):
                gain[tidx[q]] += w[i]
    extra = np.zeros(m, dtype=np.float64)
    touched = np.empty(m, dtype=np.int64)
    mark = np.zeros(m, dtype=np.bool_)
    swaps = 0
    passes = 0
    while passes < max_passes:
        passes += 1
        improved = False
        for a in range(sel.shape[0]):
            j = sel[a]
            loss = 0.0  # what j alone covers
            nt = 0
            for t in range(indptr[j], indptr[j + 1]):
                i = indices[t]
                if count[i] == 1:
                    loss += w[i]
                    for q in range(tptr[i], tptr[i + 1]):
                        k = tidx[q]
                        if not mark[k]:
                            mark[k] = True
                            touched[nt] = k
                            nt += 1
                        extra[k] += w[i]
            best = -1
            best_gain = loss + tol  # a swap must beat keeping j by more than rounding noise
            for k in range(m):
                if not chosen[k]:
                    g = gain[k] + extra[k]
                    if g > best_gain:
                        best, best_gain = k, g
            for r in range(nt):
                extra[touched[r]] = 0.0
                mark[touched[r]] = False
            if best < 0:
                continue
            for t in range(indptr[j], indptr[j + 1]):
                i = indices[t]
                count[i] -= 1
                if count[i] == 0:
                    for q in range(tptr[i], tptr[i + 1]):
                        gain[tidx[q]] += w[i]
            for t in range(indptr[best], indptr[best + 1]):
                i = indices[t]
                if count[i] == 0:
                    for q in range(tptr[i], tptr[i + 1]):
                        gain[tidx[q]] -= w[i]
                count[i] += 1
            sel[a] = best
            chosen[j] = False
            chosen[best] = True
            swaps += 1
            improved = True
        if not improved:
            break
    return sel, swaps, passes


# ---------------------------------------------------------------------------------------------
# MCLP


@dataclass(frozen=True)
class Placement:
    """p chosen sites and the demand they cover."""

    sites: list[int]
    covered_demand: float
    total_demand: float
    method: str
    optimal: bool | None = None  # True: proven (solver, or every coverable cell covered); None: unknown
    upper_bound: float | None = None  # the solver's bound on the best covered demand
    swaps: int = 0
    passes: int = 0

    @property
    def coverage(self) -> float:
        """Covered share of the total demand (1.0 when there is no demand)."""
        return self.covered_demand / self.total_demand if self.total_demand > 0 else 1.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (with the covered share)."""
        return {**asdict(self), "coverage": self.coverage}


def covered_demand(
    weights: ArrayLike,
    indptr: ArrayLike,
    indices: ArrayLike,
    sites: ArrayLike,
    base_covered: ArrayLike | None = None,
) -> float:
    """Demand of the cells covered by at least one of ``sites`` (or already by ``base_covered``)."""
    w = _f64(weights)
    ptr, idx = _i64(indptr), _i64(indices)
    mask = np.zeros(w.shape[0], dtype=bool) if base_covered is None else np.asarray(base_covered) > 0
    mask = mask.copy()
    for j in _i64(sites):
        mask[idx[ptr[j] : ptr[j + 1]]] = True
    return float(w[mask].sum())


def place_greedy(
    weights: ArrayLike,
    indptr: ArrayLike,
    indices: ArrayLike,
    p: int,
    max_passes: int = 50,
    interchange: bool = True,
    starts: int = 8,
    time_budget_s: float | None = None,
) -> Placement:
    """Greedy MCLP on marginal gains, then 1-swap interchange until no swap improves (≤ ``max_passes``).

    ``starts`` runs: plain greedy, then greedy forced to open with each of the
    next best single sites; each run is improved by interchange and the best
    kept (1-swap local optima alone were up to ~5 % short on random instances).
    ``time_budget_s``: no further start begins once this much time has passed
    (the first run always completes), so a caller waiting on it bounds its wait.
    """
    t0 = time.perf_counter()
    w, ptr, idx = _check(weights, indptr, indices)
    m = ptr.shape[0] - 1
    total = float(w.sum())
    if p >= m:
        sites = list(range(m))
        return Placement(sites, covered_demand(w, ptr, idx, sites), total, "all_sites", optimal=True)
    if p <= 0:
        return Placement([], 0.0, total, "greedy", optimal=True)
    tptr, tidx = _transpose(ptr, idx, w.shape[0])
    alone = np.bincount(np.repeat(np.arange(m), np.diff(ptr)), weights=w[idx], minlength=m)
    firsts = [-1, *np.argsort(-alone, kind="stable")[1 : max(1, int(starts))].tolist()]
    # The demand of the cells some site covers bounds every answer: a run reaching it is optimal; stop there.
    coverable = float(w[np.diff(tptr) > 0].sum()) * (1.0 - 1e-12)
    best_sel = np.zeros(0, dtype=np.int64)
    best_value = -1.0
    swaps = passes = 0
    for k, first in enumerate(firsts):
        if k and time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            break
        sel = _greedy_kernel(ptr, idx, w, int(p), tptr, tidx, int(first))
        value = covered_demand(w, ptr, idx, sel)
        if interchange and value < coverable:
            sel, s_swaps, s_passes = _interchange_kernel(
                ptr, idx, w, sel, int(max_passes), _tol(total), tptr, tidx
            )
            swaps, passes = swaps + int(s_swaps), passes + int(s_passes)
            value = covered_demand(w, ptr, idx, sel)
        if value > best_value:
            best_sel, best_value = sel, value
        if value >= coverable:
            break
    sites = sorted(int(j) for j in best_sel)
    method = "greedy+interchange" if interchange else "greedy"
    value = covered_demand(w, ptr, idx, sites)
    proven = True if value >= coverable else None
    return Placement(sites, value, total, method, proven, value if proven else None, swaps, passes)


def place_exact(
    weights: ArrayLike,
    indptr: ArrayLike,
    indices: ArrayLike,
    p: int,
    time_limit_s: float | None = None,
    shortcut: bool = True,
) -> Placement:
    """Optimal MCLP by HiGHS MILP; ``optimal`` says whether it was proven (False: time limit hit).

    Cells with no demand or no covering site are left out of the model (they
    cannot change the objective). With no solution by the time limit, the
    greedy + interchange answer is returned with ``optimal=False``. With
    ``shortcut``, a greedy answer that already covers every coverable cell is
    returned as proven optimal without HiGHS (the coverable demand bounds any
    answer; HiGHS took 23 s to prove this for p = 20 at an 8-minute reach).
    """
    w, ptr, idx = _check(weights, indptr, indices)
    m = ptr.shape[0] - 1
    total = float(w.sum())
    if p >= m or p <= 0:
        return place_greedy(w, ptr, idx, p)
    a = sp.csr_matrix((np.ones(idx.shape[0]), idx, ptr), shape=(m, w.shape[0])).T.tocsr()  # cells × sites
    keep = np.flatnonzero((w > 0) & (np.diff(a.indptr) > 0))
    if keep.shape[0] == 0:
        return replace_method(place_greedy(w, ptr, idx, p), "milp", True, 0.0)
    quick: Placement | None = None
    if shortcut:
        quick = place_greedy(w, ptr, idx, p)
        coverable = float(w[keep].sum())
        if quick.covered_demand >= coverable * (1.0 - 1e-12):
            return replace_method(quick, "greedy+interchange (every coverable cell covered)", True, coverable)
    c, constraints, integrality = _mclp_model(w, a[keep], keep, m, p)
    options: dict[str, Any] = {"mip_rel_gap": 0.0}  # HiGHS stops at 1e-4 by default: not "the optimum"
    if time_limit_s is not None:
        options["time_limit"] = float(time_limit_s)
    res = milp(c, constraints=constraints, integrality=integrality, bounds=Bounds(0.0, 1.0), options=options)
    bound = -float(res.mip_dual_bound) if getattr(res, "mip_dual_bound", None) is not None else None
    if res.x is None:
        return replace_method(
            place_greedy(w, ptr, idx, p), "milp(no solution; greedy+interchange)", False, bound
        )
    x = np.asarray(res.x[:m])
    sites = sorted(int(j) for j in np.argsort(-x, kind="stable")[:p])
    proven = bool(res.status == 0)
    value = covered_demand(w, ptr, idx, sites)
    if not proven:
        # A time-limited incumbent can trail the heuristic: hand back the better of the two.
        quick = quick or place_greedy(w, ptr, idx, p)
        if quick.covered_demand > value:
            return replace_method(quick, "milp(time limit; greedy+interchange)", False, bound)
    return Placement(sites, value, total, "milp", optimal=proven, upper_bound=value if proven else bound)


def _mclp_model(
    w: NDArray[np.float64], a: sp.csr_matrix, keep: NDArray[np.intp], m: int, p: int
) -> tuple[NDArray[np.float64], list[LinearConstraint], NDArray[np.float64]]:
    """The MCLP for milp: cost, constraints, integrality (``a``: kept cells × sites, 0/1)."""
    nk = keep.shape[0]
    # Variables: x (m sites, binary) then y (nk cells, [0, 1]); milp minimises, so the demand is negated.
    c = np.concatenate([np.zeros(m), -w[keep]])
    cover = sp.hstack([-a, sp.identity(nk, format="csr")], format="csr")  # y_i - Σ x_j ≤ 0
    count = sp.csr_matrix(np.concatenate([np.ones(m), np.zeros(nk)])[None, :])
    constraints = [LinearConstraint(cover, -np.inf, 0.0), LinearConstraint(count, p, p)]
    integrality = np.concatenate([np.ones(m), np.zeros(nk)])
    return c, constraints, integrality


@dataclass(frozen=True)
class Bound:
    """An upper bound on the best covered demand, and how it was obtained."""

    value: float
    source: str  # "lp_relaxation" | "marginal_gains" | "coverable_demand"


def placement_upper_bound(
    weights: ArrayLike,
    indptr: ArrayLike,
    indices: ArrayLike,
    p: int,
    sites: ArrayLike,
    lp_max_nonzeros: int = 0,
    lp_time_limit_s: float = 5.0,
) -> Bound:
    """A cheap upper bound on the optimal covered demand of choosing ``p`` sites, given an answer ``sites``.

    Always: covered demand is submodular, so for any set S the optimum is at
    most f(S) plus the ``p`` largest marginal gains over S (Nemhauser & Wolsey);
    and never more than the demand some site covers. When the coverage matrix
    has at most ``lp_max_nonzeros`` nonzeros, also the LP relaxation (HiGHS),
    usually far tighter. The smallest bound is returned, with its name.
    """
    w, ptr, idx = _check(weights, indptr, indices)
    m = ptr.shape[0] - 1
    sel = _i64(sites)
    covered = np.zeros(w.shape[0], dtype=bool)
    for j in sel.tolist():
        covered[idx[ptr[j] : ptr[j + 1]]] = True
    value = float(w[covered].sum())
    reachable = np.zeros(w.shape[0], dtype=bool)
    reachable[idx] = True
    best = Bound(float(w[reachable].sum()), "coverable_demand")
    if m == 0 or p <= 0:
        return Bound(value, "coverable_demand")
    gains = np.bincount(np.repeat(np.arange(m), np.diff(ptr)), weights=w[idx] * ~covered[idx], minlength=m)
    top = np.sort(gains)[::-1][: min(p, m)]
    marginal = value + float(top.sum())
    if marginal < best.value:
        best = Bound(marginal, "marginal_gains")
    if 0 < idx.shape[0] <= lp_max_nonzeros and p < m:
        a = sp.csr_matrix((np.ones(idx.shape[0]), idx, ptr), shape=(m, w.shape[0])).T.tocsr()
        keep = np.flatnonzero((w > 0) & (np.diff(a.indptr) > 0))
        if keep.shape[0]:
            c, constraints, _ = _mclp_model(w, a[keep], keep, m, p)
            res = milp(c, constraints=constraints, bounds=Bounds(0.0, 1.0),
                       options={"time_limit": float(lp_time_limit_s)})  # fmt: skip
            # Only a solved LP bounds the optimum; a time-limited one may be anywhere.
            if res.status == 0 and res.fun is not None:
                lp = -float(res.fun) * (1.0 + 1e-9)
                if lp < best.value:
                    best = Bound(lp, "lp_relaxation")
    return Bound(max(best.value, value), best.source)


def exact_nonzeros(indptr: ArrayLike) -> int:
    """Nonzeros of the exact placement model's coverage matrix (covering pairs): its size guard."""
    ptr = _i64(indptr)
    return int(ptr[-1] - ptr[0]) if ptr.shape[0] else 0


def move_up_nonzeros(
    site_indptr: ArrayLike, unit_indptr: ArrayLike, travel_s: ArrayLike, max_travel_s: float = math.inf
) -> int:
    """Nonzeros of :func:`move_up_exact`'s coverage matrix: units' rows plus a site row per reachable pair."""
    sptr, uptr = _i64(site_indptr), _i64(unit_indptr)
    nu, m = uptr.shape[0] - 1, sptr.shape[0] - 1
    if nu == 0 or m == 0:
        return int(uptr[-1])
    travel = np.asarray(travel_s, dtype=np.float64).reshape(nu, m)
    per_unit = (travel <= max_travel_s).astype(np.int64) @ np.diff(sptr)
    return int(uptr[-1] + per_unit.sum())


def replace_method(pl: Placement, method: str, optimal: bool, bound: float | None) -> Placement:
    """``pl`` relabelled (a fallback or trivial answer reported under the exact method's name)."""
    return Placement(
        pl.sites, pl.covered_demand, pl.total_demand, method, optimal, bound, pl.swaps, pl.passes
    )


# ---------------------------------------------------------------------------------------------
# Move-up


@numba.njit(cache=True)
def _best_target(
    u: int, count: NDArray[np.int64], w: NDArray[np.float64], sptr: NDArray[np.int64],
    sidx: NDArray[np.int64], travel: NDArray[np.float64], max_travel: float, exclude: int,
) -> tuple[int, float, float]:  # fmt: skip
    """Best site for unit u (its own coverage already removed from count): (site, gain, travel)."""
    best, best_gain, best_t = -1, -1.0, np.inf
    for j in range(sptr.shape[0] - 1):
        if j == exclude or not travel[u, j] <= max_travel:
            continue
        g = _row_gain(count, w, sptr, sidx, j)
        if g > best_gain or (g == best_gain and travel[u, j] < best_t):
            best, best_gain, best_t = j, g, travel[u, j]
    return best, best_gain, best_t


@numba.njit(cache=True)
def _covered(count: NDArray[np.int64], w: NDArray[np.float64]) -> float:
    s = 0.0
    for i in range(w.shape[0]):
        if count[i] > 0:
            s += w[i]
    return s


@numba.njit(cache=True)
def _move_up_kernel(
    w: NDArray[np.float64], sptr: NDArray[np.int64], sidx: NDArray[np.int64], uptr: NDArray[np.int64],
    uidx: NDArray[np.int64], base: NDArray[np.int64], travel: NDArray[np.float64], max_travel: float,
    max_moves: int, max_passes: int, tol: float, first_unit: int,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:  # fmt: skip
    nu = uptr.shape[0] - 1
    pos = np.full(nu, -1, dtype=np.int64)  # -1: stays where it is; else the site it moves to
    first_delta = np.full(nu, -np.inf)  # each unit's best single move at the start (to pick other starts)
    count = base.copy()
    for u in range(nu):
        _add_row(count, uptr, uidx, u, 1)
    moves = 0
    # Greedy: the single move of an unmoved unit that gains the most, while moves are left and one gains.
    while moves < max_moves:
        bu, bj, bd, bt = -1, -1, tol, np.inf
        for u in range(nu):
            if pos[u] >= 0 or (moves == 0 and first_unit >= 0 and u != first_unit):
                continue
            _add_row(count, uptr, uidx, u, -1)
            loss = _row_gain(count, w, uptr, uidx, u)
            j, g, t = _best_target(u, count, w, sptr, sidx, travel, max_travel, -1)
            _add_row(count, uptr, uidx, u, 1)
            if moves == 0 and j >= 0:
                first_delta[u] = g - loss
            if j >= 0 and (g - loss > bd or (g - loss == bd and t < bt)):
                bu, bj, bd, bt = u, j, g - loss, t
        if bu < 0:
            break
        _add_row(count, uptr, uidx, bu, -1)
        _add_row(count, sptr, sidx, bj, 1)
        pos[bu] = bj
        moves += 1
    # Interchange: relocate a moved unit (another site, or home), or trade a moved unit for an unmoved one.
    for _ in range(max_passes):
        improved = False
        for u in range(nu):
            if pos[u] < 0:
                continue
            _add_row(count, sptr, sidx, pos[u], -1)
            here = _row_gain(count, w, sptr, sidx, pos[u])
            home = _row_gain(count, w, uptr, uidx, u)
            j, g, _t = _best_target(u, count, w, sptr, sidx, travel, max_travel, pos[u])
            if home + tol >= here and home + tol >= g:
                pos[u] = -1  # going home loses nothing: one move fewer
                moves -= 1
                _add_row(count, uptr, uidx, u, 1)
                improved = improved or home > here + tol
            elif j >= 0 and g > here + tol:
                pos[u] = j
                _add_row(count, sptr, sidx, j, 1)
                improved = True
            else:
                _add_row(count, sptr, sidx, pos[u], 1)
        before = _covered(count, w)
        for v in range(nu):
            if pos[v] < 0:
                continue
            for u in range(nu):
                if pos[u] >= 0 or pos[v] < 0:
                    continue
                # v home, u to its best site: kept if the covered demand grows.
                old = pos[v]
                _add_row(count, sptr, sidx, old, -1)
                _add_row(count, uptr, uidx, v, 1)
                _add_row(count, uptr, uidx, u, -1)
                j, _g, _t = _best_target(u, count, w, sptr, sidx, travel, max_travel, -1)
                if j >= 0:
                    _add_row(count, sptr, sidx, j, 1)
                    after = _covered(count, w)
                    if after > before + tol:
                        pos[v], pos[u] = -1, j
                        before = after
                        improved = True
                        continue
                    _add_row(count, sptr, sidx, j, -1)
                _add_row(count, uptr, uidx, u, 1)
                _add_row(count, uptr, uidx, v, -1)
                _add_row(count, sptr, sidx, old, 1)
        if moves < max_moves:
            for u in range(nu):
                if pos[u] >= 0 or moves >= max_moves:
                    continue
                _add_row(count, uptr, uidx, u, -1)
                loss = _row_gain(count, w, uptr, uidx, u)
                j, g, _t = _best_target(u, count, w, sptr, sidx, travel, max_travel, -1)
                if j >= 0 and g > loss + tol:
                    pos[u] = j
                    moves += 1
                    _add_row(count, sptr, sidx, j, 1)
                    improved = True
                else:
                    _add_row(count, uptr, uidx, u, 1)
        if not improved:
            break
    return pos, first_delta


@dataclass(frozen=True)
class Move:
    """One idle unit sent from where it stands to a candidate site."""

    unit: int  # row of the unit in the caller's arrays
    to_site: int
    gain: float  # demand lost if this move alone were undone (the others kept)
    travel_s: float
    from_site: int | None = None  # when the unit stands at a candidate site


@dataclass(frozen=True)
class MoveUpPlan:
    """Suggested moves and the covered demand before and after them."""

    moves: list[Move]
    covered_before: float
    covered_after: float
    total_demand: float
    method: str
    optimal: bool | None = None
    upper_bound: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gain(self) -> float:
        """Covered demand added by all the moves together."""
        return self.covered_after - self.covered_before

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (with the total gain)."""
        return {**asdict(self), "gain": self.gain}


def move_up(
    weights: ArrayLike, site_indptr: ArrayLike, site_indices: ArrayLike, unit_indptr: ArrayLike,
    unit_indices: ArrayLike, travel_s: ArrayLike, max_moves: int, base_covered: ArrayLike | None = None,
    max_travel_s: float = math.inf, unit_site: ArrayLike | None = None, max_passes: int = 50,
    starts: int = 8, time_budget_s: float | None = None,
) -> MoveUpPlan:  # fmt: skip
    """Greedy + interchange move-up: at most ``max_moves`` idle units moved to raise covered demand.

    ``unit_indptr/unit_indices``: what each idle unit covers where it stands
    (CSR, one row per unit); ``travel_s``: (units × sites) seconds;
    ``base_covered``: per cell, covered by busy/fixed units (bool mask or count).
    Moves over ``max_travel_s`` are not considered. ``unit_site`` (optional)
    names the site each unit stands at, reported as ``Move.from_site``.
    ``starts`` runs: plain greedy, then greedy forced to open with each of the
    units with the next best single moves; the best plan is kept.
    ``time_budget_s``: no further start begins once this much time has passed.
    """
    t0 = time.perf_counter()
    w, sptr, sidx, uptr, uidx, base, travel = _check_move_up(
        weights, site_indptr, site_indices, unit_indptr, unit_indices, travel_s, base_covered
    )
    tol = _tol(float(w.sum()))
    limits = (float(max_travel_s), max(0, int(max_moves)), int(max_passes), tol)
    pos, first_delta = _move_up_kernel(w, sptr, sidx, uptr, uidx, base, travel, *limits, -1)
    # Further starts force the first move onto the units with the next best single moves.
    others = [int(u) for u in np.argsort(-first_delta, kind="stable")[1 : max(1, int(starts))]
              if first_delta[u] > tol]  # fmt: skip
    best = _covered_by(w, sptr, sidx, uptr, uidx, base, pos)
    for u in others:
        if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            break
        trial, _ = _move_up_kernel(w, sptr, sidx, uptr, uidx, base, travel, *limits, u)
        value = _covered_by(w, sptr, sidx, uptr, uidx, base, trial)
        if value > best + tol:
            pos, best = trial, value
    return _plan(w, sptr, sidx, uptr, uidx, base, travel, pos, "greedy+interchange", None, None, unit_site)


def move_up_exact(
    weights: ArrayLike, site_indptr: ArrayLike, site_indices: ArrayLike, unit_indptr: ArrayLike,
    unit_indices: ArrayLike, travel_s: ArrayLike, max_moves: int, base_covered: ArrayLike | None = None,
    max_travel_s: float = math.inf, unit_site: ArrayLike | None = None, time_limit_s: float | None = None,
) -> MoveUpPlan:  # fmt: skip
    """Optimal move-up by HiGHS MILP (small instances: one variable per unit × reachable site).

    Each unit stays (s_u) or moves to one site (z_uj): s_u + Σ_j z_uj = 1,
    Σ z ≤ ``max_moves``; cell i not already covered counts when y_i ≤ Σ of the
    variables whose set holds i. Moves that add nothing are dropped afterwards.
    """
    w, sptr, sidx, uptr, uidx, base, travel = _check_move_up(
        weights, site_indptr, site_indices, unit_indptr, unit_indices, travel_s, base_covered
    )
    nu, m, n = uptr.shape[0] - 1, sptr.shape[0] - 1, w.shape[0]
    pairs_u, pairs_j = np.nonzero(travel <= max_travel_s) if nu and m else (np.zeros(0, np.int64),) * 2
    npairs = pairs_u.shape[0]
    if max_moves <= 0 or npairs == 0:
        pos = np.full(nu, -1, dtype=np.int64)
        return _plan(w, sptr, sidx, uptr, uidx, base, travel, pos, "milp", True, None, unit_site)
    # Variables: s (nu) | z (npairs) | y (n). Only uncovered cells with demand matter.
    rows: list[NDArray[np.int64]] = []
    cols: list[NDArray[np.int64]] = []
    for u in range(nu):
        cells = uidx[uptr[u] : uptr[u + 1]]
        rows.append(cells)
        cols.append(np.full(cells.shape[0], u, dtype=np.int64))
    for q in range(npairs):
        j = pairs_j[q]
        cells = sidx[sptr[j] : sptr[j + 1]]
        rows.append(cells)
        cols.append(np.full(cells.shape[0], nu + q, dtype=np.int64))
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    nv = nu + npairs
    a = sp.csr_matrix((np.ones(r.shape[0]), (r, c)), shape=(n, nv))
    a.sum_duplicates()
    a.data[:] = 1.0
    keep = np.flatnonzero((w > 0) & (base == 0) & (np.diff(a.indptr) > 0))
    nk = keep.shape[0]
    cover = sp.hstack([-a[keep], sp.identity(nk, format="csr")], format="csr")
    one = sp.csr_matrix(
        (np.ones(nv), (np.concatenate([np.arange(nu), pairs_u]), np.arange(nv))), shape=(nu, nv + nk)
    )
    budget = sp.csr_matrix(np.concatenate([np.zeros(nu), np.ones(npairs), np.zeros(nk)])[None, :])
    constraints = [
        LinearConstraint(cover, -np.inf, 0.0),
        LinearConstraint(one, 1.0, 1.0),
        LinearConstraint(budget, 0.0, float(max_moves)),
    ]
    cost = np.concatenate([np.zeros(nv), -w[keep]])
    integrality = np.concatenate([np.ones(nv), np.zeros(nk)])
    options: dict[str, Any] = {"mip_rel_gap": 0.0}
    if time_limit_s is not None:
        options["time_limit"] = float(time_limit_s)
    res = milp(
        cost, constraints=constraints, integrality=integrality, bounds=Bounds(0.0, 1.0), options=options
    )
    already = float(w[base > 0].sum())
    bound = already - float(res.mip_dual_bound) if getattr(res, "mip_dual_bound", None) is not None else None
    if res.x is None:
        plan = move_up(w, sptr, sidx, uptr, uidx, travel, max_moves, base, max_travel_s, unit_site)
        return MoveUpPlan(plan.moves, plan.covered_before, plan.covered_after, plan.total_demand,
                          "milp(no solution; greedy+interchange)", False, bound)  # fmt: skip
    pos = np.full(nu, -1, dtype=np.int64)
    z = np.asarray(res.x[nu:nv])
    for q in np.flatnonzero(z > 0.5).tolist():
        pos[pairs_u[q]] = pairs_j[q]
    proven = bool(res.status == 0)
    plan = _plan(
        w, sptr, sidx, uptr, uidx, base, travel, pos, "milp", proven, None if proven else bound, unit_site
    )
    if not proven:
        # A time-limited incumbent can trail the heuristic: hand back the better of the two.
        quick = move_up(w, sptr, sidx, uptr, uidx, travel, max_moves, base, max_travel_s, unit_site)
        if quick.covered_after > plan.covered_after:
            return MoveUpPlan(quick.moves, quick.covered_before, quick.covered_after, quick.total_demand,
                              "milp(time limit; greedy+interchange)", False, bound)  # fmt: skip
    return plan


def _covered_by(
    w: NDArray[np.float64], sptr: NDArray[np.int64], sidx: NDArray[np.int64], uptr: NDArray[np.int64],
    uidx: NDArray[np.int64], base: NDArray[np.int64], pos: NDArray[np.int64],
) -> float:  # fmt: skip
    """Covered demand with each unit at its site in ``pos`` (or where it stands, -1)."""
    mask = base > 0
    for u in range(pos.shape[0]):
        mask[sidx[sptr[pos[u]] : sptr[pos[u] + 1]] if pos[u] >= 0 else uidx[uptr[u] : uptr[u + 1]]] = True
    return float(w[mask].sum())


def _plan(
    w: NDArray[np.float64], sptr: NDArray[np.int64], sidx: NDArray[np.int64], uptr: NDArray[np.int64],
    uidx: NDArray[np.int64], base: NDArray[np.int64], travel: NDArray[np.float64], pos: NDArray[np.int64],
    method: str, optimal: bool | None, bound: float | None, unit_site: ArrayLike | None,
) -> MoveUpPlan:  # fmt: skip
    nu = uptr.shape[0] - 1
    count = base.copy()
    for u in range(nu):
        if pos[u] >= 0:
            count[sidx[sptr[pos[u]] : sptr[pos[u] + 1]]] += 1
        else:
            count[uidx[uptr[u] : uptr[u + 1]]] += 1
    before_count = base.copy()
    for u in range(nu):
        before_count[uidx[uptr[u] : uptr[u + 1]]] += 1
    before = float(w[before_count > 0].sum())
    def unmoved(u: int) -> NDArray[np.int64]:
        """The cover counts with unit ``u`` back where it stands instead of at its new site."""
        trial = count.copy()
        trial[sidx[sptr[pos[u]] : sptr[pos[u] + 1]]] -= 1
        trial[uidx[uptr[u] : uptr[u + 1]]] += 1
        return trial

    # A move that adds nothing (ties in the solver) is dropped: a car driven for nothing is a cost.
    for u in np.flatnonzero(pos >= 0).tolist():
        trial = unmoved(u)
        if float(w[trial > 0].sum()) >= float(w[count > 0].sum()):
            count, pos[u] = trial, -1
    after = float(w[count > 0].sum())
    sites = None if unit_site is None else _i64(unit_site)
    moves = []
    for u in np.flatnonzero(pos >= 0).tolist():
        gain = after - float(w[unmoved(u) > 0].sum())
        frm = None if sites is None else int(sites[u])
        moves.append(Move(int(u), int(pos[u]), gain, float(travel[u, pos[u]]), frm))
    return MoveUpPlan(moves, before, after, float(w.sum()), method, optimal, after if optimal else bound)


# ---------------------------------------------------------------------------------------------
# Input checks


def _f64(a: ArrayLike) -> NDArray[np.float64]:
    return np.ascontiguousarray(a, dtype=np.float64).reshape(-1)


def _i64(a: ArrayLike) -> NDArray[np.int64]:
    return np.ascontiguousarray(a, dtype=np.int64).reshape(-1)


def _tol(total: float) -> float:
    """Smallest gain worth a swap: above the rounding noise of sums of the weights."""
    return 1e-9 * max(total, 1e-300)


def _check(
    weights: ArrayLike, indptr: ArrayLike, indices: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
    w, ptr, idx = _f64(weights), _i64(indptr), _i64(indices)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("demand weights must be finite and >= 0")
    if ptr.shape[0] < 1 or ptr[0] != 0 or np.any(np.diff(ptr) < 0) or ptr[-1] != idx.shape[0]:
        raise ValueError("indptr must start at 0, never decrease and end at len(indices)")
    if idx.shape[0] and (idx.min() < 0 or idx.max() >= w.shape[0]):
        raise ValueError(f"cell indices must lie in [0, {w.shape[0]})")
    return w, ptr, idx


def _check_move_up(
    weights: ArrayLike, site_indptr: ArrayLike, site_indices: ArrayLike, unit_indptr: ArrayLike,
    unit_indices: ArrayLike, travel_s: ArrayLike, base_covered: ArrayLike | None,
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64],
           NDArray[np.int64], NDArray[np.float64]]:  # fmt: skip
    w, sptr, sidx = _check(weights, site_indptr, site_indices)
    _, uptr, uidx = _check(w, unit_indptr, unit_indices)
    nu, m = uptr.shape[0] - 1, sptr.shape[0] - 1
    travel = np.ascontiguousarray(travel_s, dtype=np.float64).reshape(nu, m)
    if base_covered is None:
        base = np.zeros(w.shape[0], dtype=np.int64)
    else:
        base = (np.asarray(base_covered).reshape(-1) > 0).astype(np.int64)
        if base.shape != w.shape:
            raise ValueError("base_covered needs one value per cell")
    return w, sptr, sidx, uptr, uidx, base, travel


__all__ = [
    "Bound",
    "Move",
    "MoveUpPlan",
    "Placement",
    "coverage_csr",
    "covered_demand",
    "csr_rows",
    "exact_nonzeros",
    "move_up",
    "move_up_exact",
    "move_up_nonzeros",
    "place_exact",
    "place_greedy",
    "placement_upper_bound",
    "travel_times_s",
]
