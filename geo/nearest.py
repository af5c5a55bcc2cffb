"""k nearest units to a point by ETA, exact, on a :class:`geo.live_index.LiveIndex`.

Ranking. A unit qualifies when its status, kind, capabilities (all required
bits), sector and fix age (``<= max_age_s``) match and its fix is not *lost*
(``age >= lost_after_s[kind]``). Qualifying units are ranked by the key

    (stale, eta_s, distance_m, slot)

so every *live* unit (``age < stale_after_s[kind]``) comes before every *stale*
one; ties of ETA go to the shorter great-circle distance, then to the lower
slot (the order in which units entered the index: deterministic for a given
sequence of updates). Distances are haversine on the sphere of mean radius
(:data:`geo.distance.EARTH_RADIUS_M`), which is what the engine ranks by; it
stays within 0.6 % of the WGS84 geodesic (see tests/geo/test_nearest.py).

Search. Units are filed in (cell, kind) buckets (see :mod:`geo.live_index`).
The search scans, per kind, every cell that may hold a point within a radius
``D_kind`` (the latitude band ``|Δφ| ≤ D/R`` and, per row, the longitudes
``|Δλ| ≤ asin(sin(D/R) / cos φ)``, which is exact on the sphere, wraps at the
dateline, and becomes whole rows near the poles). It starts at one cell's
size, doubles while fewer than ``k`` live units are ranked, and once ``k`` live
units are ranked with a k-th ETA ``T`` it only needs ``D_kind ≥ T / pace_kind``
(a unit further away cannot arrive sooner: ETA ≥ pace × distance). Rings are
never rescanned. When the cells left to probe would cost more than reading
every unit, it falls back to a full scan, so the worst case is O(n) and the
answer is always the brute-force answer.

Pluggable ETA: with :class:`geo.eta.StraightLineEta` the whole search runs in
one numba call. Any other :class:`geo.eta.EtaModel` runs the same cell scans
from Python and asks the model for exact ETAs of the candidates, using its
per-kind lower bound of s/m for the stopping radius.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from geo.codes import N_KINDS, N_STATUSES, kind_mask, status_mask
from geo.distance import EARTH_RADIUS_M
from geo.eta import EtaModel, StraightLineEta
from geo.live_index import (
    T_HEAD,
    LiveIndex,
    bucket_key,
    grid_row,
    hash_find,
    row_ncols,
)

MAX_K = 1000
_R = EARTH_RADIUS_M
_M_PER_DEG = _R * math.pi / 180.0
_EPS_DEG = 1e-9  # widen every cell range by this much: rounding must never drop a cell
_REL = 1e-9  # and every stopping radius by this (relative) ...
_ABS_M = 1e-3  # ... plus this (metres)
_FULL_RATIO = 0.999  # beyond this sin(D/R)/cos φ, asin is ill-conditioned: take whole rows
# kind parameter rows of the packed (4, N_KINDS) array
K_PACE, K_LB, K_STALE, K_LOST = 0, 1, 2, 3
# counters of the work done by queries (NearestSearch.stats)
S_QUERIES, S_PASSES, S_PROBES, S_VISITS, S_FULL = 0, 1, 2, 3, 4
# Rows of a search's work array (one numba argument: each array argument costs ~0.3 µs per call):
# kind parameters, then the counters, then the top-k (tier, eta, distance, slot) rows.
W_KP, W_STATS, W_OUT = 0, 4, 5
# Result rows (from W_OUT): tier, ETA, distance, slot, then the unit's lat, lon, fix time, kind, status,
# copied while its record is still in cache (the caller would pay a cache miss per field).
R_TIER, R_ETA, R_DIST, R_SLOT, R_LAT, R_LON, R_TIME, R_KIND, R_STATUS = range(9)
N_ROWS = 9


# ---------------------------------------------------------------------------------------------
# Geometry of a search region (numba).


@numba.njit(cache=True, inline="always")
def _hav(phi1: float, cos1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi2 = math.radians(lat2)
    s_dlat = math.sin((phi2 - phi1) * 0.5)
    s_dlon = math.sin(math.radians(lon2 - lon1) * 0.5)
    h = s_dlat * s_dlat + cos1 * math.cos(phi2) * s_dlon * s_dlon
    if h > 1.0:
        h = 1.0
    return 2.0 * _R * math.asin(math.sqrt(h))


@numba.njit(cache=True)
def haversine_to(
    lat: NDArray[np.float64], lon: NDArray[np.float64], qlat: float, qlon: float
) -> NDArray[np.float64]:
    """Great-circle distance (m) from (qlat, qlon) to each point: the exact kernel the search ranks by."""
    phi1 = math.radians(qlat)
    cos1 = math.cos(phi1)
    out = np.empty(lat.shape[0], dtype=np.float64)
    for i in range(lat.shape[0]):
        out[i] = _hav(phi1, cos1, qlon, lat[i], lon[i])
    return out


@numba.njit(cache=True, inline="always")
def _rows_for(qlat: float, d_m: float, cell_deg: float, nrows: int) -> tuple[int, int]:
    """Rows that may hold a point within ``d_m`` of latitude ``qlat`` (empty when d_m < 0)."""
    if d_m < 0.0:
        return 0, -1
    dlat = d_m / _M_PER_DEG + _EPS_DEG
    lo = qlat - dlat
    hi = qlat + dlat
    r_lo = 0 if lo <= -90.0 else grid_row(lo, cell_deg, nrows)
    r_hi = nrows - 1 if hi >= 90.0 else grid_row(hi, cell_deg, nrows)
    return r_lo, r_hi


@numba.njit(cache=True, inline="always")
def _dlon_for(qlat: float, d_m: float) -> float:
    """Half-width (degrees) of the longitudes within ``d_m`` of a point at ``qlat``; ≥ 180 = all."""
    a = d_m / _R
    if a >= 0.5 * math.pi:
        return 360.0
    # cos φ shrunk by its rounding error: a wider range is safe, a narrower one is not.
    c = math.cos(math.radians(abs(qlat))) - 1e-15
    if c <= 0.0:
        return 360.0
    ratio = math.sin(a) / c
    if ratio >= _FULL_RATIO:
        return 360.0
    return math.degrees(math.asin(ratio)) * (1.0 + _REL) + _EPS_DEG


@numba.njit(cache=True, inline="always")
def _cols_for(qlon: float, dlon: float, ncols: int) -> tuple[int, int]:
    """Unwrapped column range [c_lo, c_hi] of a row of ``ncols`` columns; (0, ncols - 1) = whole row."""
    if dlon >= 180.0:
        return 0, ncols - 1
    c_lo = int(math.floor((qlon - dlon + 180.0) / 360.0 * ncols))  # noqa: RUF046 (numba: keep the int type explicit)
    c_hi = int(math.floor((qlon + dlon + 180.0) / 360.0 * ncols))  # noqa: RUF046 (numba: keep the int type explicit)
    if c_hi - c_lo + 1 >= ncols:
        return 0, ncols - 1
    return c_lo, c_hi


@numba.njit(cache=True, inline="always")
def _estimate_cells(qlat: float, d_m: float, cell_deg: float, nrows: int, maxcols: int) -> float:
    """Upper estimate of the cells in the region of radius ``d_m`` (to decide on a full scan)."""
    if d_m < 0.0:
        return 0.0
    r_lo, r_hi = _rows_for(qlat, d_m, cell_deg, nrows)
    dlon = _dlon_for(qlat, d_m)
    per_row = float(maxcols) if dlon >= 180.0 else min(float(maxcols), 2.0 * dlon / cell_deg + 2.0)
    return (r_hi - r_lo + 1) * per_row


# ---------------------------------------------------------------------------------------------
# Candidates (numba).


@numba.njit(cache=True, inline="always")
def _tier(
    r: Any,
    smask: int,
    cap_req: int,
    sec: int,
    max_age: float,
    now: float,
    kp: NDArray[np.float64],
) -> int:
    """0 = live, 1 = stale, -1 = filtered out (status, capabilities, sector, age, lost)."""
    st = r.status
    if st < 0 or not (smask >> st) & 1:
        return -1
    if cap_req != 0 and (r.caps & np.uint64(cap_req)) != np.uint64(cap_req):
        return -1
    if sec >= 0 and r.sector != sec:
        return -1
    age = now - r.t
    if age > max_age:
        return -1
    kd = r.kind
    if age >= kp[K_LOST, kd]:
        return -1
    return 1 if age >= kp[K_STALE, kd] else 0


@numba.njit(cache=True, inline="always")
def _before(t1: int, e1: float, d1: float, s1: int, t2: int, e2: float, d2: float, s2: int) -> bool:
    if t1 != t2:
        return t1 < t2
    if e1 != e2:
        return e1 < e2
    if d1 != d2:
        return d1 < d2
    return s1 < s2


@numba.njit(cache=True)
def _offer(out: NDArray[np.float64], cnt: int, k: int, t: int, e: float, d: float, s: int) -> int:
    """Insert a candidate into the sorted top-k rows of ``out`` (tier, eta, dist, slot); returns the count."""
    if cnt == k and not _before(
        t, e, d, s, int(out[0, k - 1]), out[1, k - 1], out[2, k - 1], int(out[3, k - 1])
    ):
        return cnt
    i = cnt if cnt < k else k - 1
    while i > 0 and _before(t, e, d, s, int(out[0, i - 1]), out[1, i - 1], out[2, i - 1], int(out[3, i - 1])):
        out[0, i] = out[0, i - 1]
        out[1, i] = out[1, i - 1]
        out[2, i] = out[2, i - 1]
        out[3, i] = out[3, i - 1]
        i -= 1
    out[0, i] = t
    out[1, i] = e
    out[2, i] = d
    out[3, i] = s
    return cnt + 1 if cnt < k else k


@numba.njit(cache=True)
def _scan_ring(
    rec: NDArray[np.void],
    table: NDArray[np.int64],
    cell_deg: float,
    nrows: int,
    maxcols: int,
    qlat: float,
    qlon: float,
    kd: int,
    d_new: float,
    d_old: float,
    smask: int,
    cap_req: int,
    sec: int,
    max_age: float,
    now: float,
    kp: NDArray[np.float64],
    mode: int,
    out: NDArray[np.float64],
    cnt: int,
    k: int,
    stats: NDArray[np.float64],
) -> int:
    """Visit kind ``kd``'s units in cells of region(d_new) not in region(d_old).

    mode 0 ranks them into the top-k rows of ``out`` (ETA from the pace row of ``kp``);
    mode 1 appends (tier, -, dist, slot) rows to ``out`` for the caller's model. Returns the count.
    """
    phi1 = math.radians(qlat)
    cos1 = math.cos(phi1)
    pace = kp[K_PACE, kd]
    r_lo, r_hi = _rows_for(qlat, d_new, cell_deg, nrows)
    o_lo, o_hi = _rows_for(qlat, d_old, cell_deg, nrows)
    dlon_new = _dlon_for(qlat, d_new)
    dlon_old = _dlon_for(qlat, d_old) if d_old >= 0.0 else -1.0
    for row in range(r_lo, r_hi + 1):
        ncols = row_ncols(row, cell_deg, maxcols)
        c_lo, c_hi = _cols_for(qlon, dlon_new, ncols)
        in_old_row = o_lo <= row <= o_hi
        p_lo, p_hi = (0, -1)
        if in_old_row:
            p_lo, p_hi = _cols_for(qlon, dlon_old, ncols)
        for cu in range(c_lo, c_hi + 1):
            col = cu % ncols
            if in_old_row and (col - p_lo) % ncols <= p_hi - p_lo:
                continue  # scanned in an earlier ring
            base = bucket_key(row, col, kd, 0, maxcols)
            for st in range(N_STATUSES):
                if not (smask >> st) & 1:
                    continue
                pos = hash_find(table, base + st)
                stats[S_PROBES] += 1
                if pos < 0:
                    continue
                s = table[pos, T_HEAD]
                while s >= 0:
                    stats[S_VISITS] += 1
                    r = rec[s]
                    t = _tier(r, smask, cap_req, sec, max_age, now, kp)
                    if t >= 0:
                        d = _hav(phi1, cos1, qlon, r.lat, r.lon)
                        if mode == 0:
                            cnt = _offer(out, cnt, k, t, d * pace, d, s)
                        else:
                            out[0, cnt] = t
                            out[2, cnt] = d
                            out[3, cnt] = s
                            cnt += 1
                    s = r.next
    return cnt


@numba.njit(cache=True)
def _scan_all(
    rec: NDArray[np.void],
    top: int,
    qlat: float,
    qlon: float,
    kmask: int,
    smask: int,
    cap_req: int,
    sec: int,
    max_age: float,
    now: float,
    kp: NDArray[np.float64],
    mode: int,
    out: NDArray[np.float64],
    k: int,
    stats: NDArray[np.float64],
) -> int:
    """Full scan of every slot (the exact fallback); same modes and rows as :func:`_scan_ring`."""
    phi1 = math.radians(qlat)
    cos1 = math.cos(phi1)
    cnt = 0
    stats[S_FULL] += 1
    stats[S_VISITS] += top
    for s in range(top):
        r = rec[s]
        kd = r.kind
        if r.status < 0 or not (kmask >> kd) & 1:
            continue
        t = _tier(r, smask, cap_req, sec, max_age, now, kp)
        if t < 0:
            continue
        d = _hav(phi1, cos1, qlon, r.lat, r.lon)
        if mode == 0:
            cnt = _offer(out, cnt, k, t, d * kp[K_PACE, kd], d, s)
        else:
            out[0, cnt] = t
            out[2, cnt] = d
            out[3, cnt] = s
            cnt += 1
    return cnt


@numba.njit(cache=True)
def _too_costly(
    probes: float, qlat: float, want: NDArray[np.float64], done: NDArray[np.float64],
    cell_deg: float, nrows: int, maxcols: int, n_alive: int, per_cell: int,
) -> bool:  # fmt: skip
    """True when probing the next rings would cost more than reading every unit."""
    est = probes
    for kd in range(N_KINDS):
        if want[kd] > done[kd]:
            est += _estimate_cells(qlat, want[kd], cell_deg, nrows, maxcols) * per_cell
    return est > n_alive + 64


@numba.njit(cache=True)
def _popcount(mask: int) -> int:
    n = 0
    while mask:
        n += mask & 1
        mask >>= 1
    return n


@numba.njit(cache=True)
def _first_radii(kmask: int, kp: NDArray[np.float64], cell_deg: float) -> NDArray[np.float64]:
    """First radius per kind: the same ETA horizon for every kind (one cell for the fastest)."""
    want = np.full(N_KINDS, -1.0)
    fastest = math.inf
    for kd in range(N_KINDS):
        if (kmask >> kd) & 1 and kp[K_LB, kd] > 0.0:
            fastest = min(fastest, kp[K_LB, kd])
    r0 = cell_deg * _M_PER_DEG
    for kd in range(N_KINDS):
        if (kmask >> kd) & 1:
            lb = kp[K_LB, kd]
            want[kd] = r0 * fastest / lb if lb > 0.0 and fastest < math.inf else r0
    return want


@numba.njit(cache=True)
def _nearest_kernel(
    rec: NDArray[np.void],
    table: NDArray[np.int64],
    work: NDArray[np.float64],
    top: int,
    n_alive: int,
    cell_deg: float,
    nrows: int,
    maxcols: int,
    qlat: float,
    qlon: float,
    k: int,
    kmask: int,
    smask: int,
    cap_req: int,
    sec: int,
    max_age: float,
    now: float,
) -> int:
    """The whole search for a constant-pace model; top-k rows land in ``work[W_OUT:]``; returns the count."""
    kp = work[W_KP:W_STATS]
    stats = work[W_STATS]
    out = work[W_OUT:]
    stats[S_QUERIES] += 1
    done = np.full(N_KINDS, -1.0)
    want = _first_radii(kmask, kp, cell_deg)
    per_cell = _popcount(smask)
    cnt = 0
    probes = 0.0
    while True:
        if _too_costly(probes, qlat, want, done, cell_deg, nrows, maxcols, n_alive, per_cell):
            cnt = _scan_all(
                rec, top, qlat, qlon, kmask, smask, cap_req, sec, max_age, now, kp, 0, out, k, stats
            )
            _describe(rec, out, cnt)
            return cnt
        more = False
        stats[S_PASSES] += 1
        for kd in range(N_KINDS):
            if want[kd] > done[kd]:
                probes += _estimate_cells(qlat, want[kd], cell_deg, nrows, maxcols) * per_cell
                cnt = _scan_ring(rec, table, cell_deg, nrows, maxcols, qlat, qlon, kd, want[kd], done[kd],
                                 smask, cap_req, sec, max_age, now, kp, 0, out, cnt, k, stats)  # fmt: skip
                done[kd] = want[kd]
        if cnt == k and out[0, k - 1] == 0.0:
            horizon = out[1, k - 1]
            for kd in range(N_KINDS):
                if done[kd] < 0.0:
                    continue
                lb = kp[K_LB, kd]
                need = horizon / lb * (1.0 + _REL) + _ABS_M if lb > 0.0 else math.inf
                if need > done[kd]:
                    want[kd] = min(need, 2.0 * done[kd])
                    more = True
        else:
            for kd in range(N_KINDS):
                if 0.0 <= done[kd] < math.pi * _R:
                    want[kd] = 2.0 * done[kd]
                    more = True
        if not more:
            _describe(rec, out, cnt)
            return cnt


@numba.njit(cache=True)
def _describe(rec: NDArray[np.void], out: NDArray[np.float64], cnt: int) -> None:
    """Copy each result's position, fix time, kind and status into its result rows."""
    for i in range(cnt):
        r = rec[int(out[R_SLOT, i])]
        out[R_LAT, i] = r.lat
        out[R_LON, i] = r.lon
        out[R_TIME, i] = r.t
        out[R_KIND, i] = r.kind
        out[R_STATUS, i] = r.status


# ---------------------------------------------------------------------------------------------
# Python API.


@dataclass(frozen=True, slots=True)
class Nearest:
    """Ranked answer, best first: ``rows`` is (4, n) float64 = stale (0/1), ETA s, distance m, slot."""

    rows: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.rows.shape[1])

    @property
    def slots(self) -> NDArray[np.int64]:
        """Index slots of the units (``LiveIndex.unit_ids(slots)`` gives their ids)."""
        slots: NDArray[np.int64] = self.rows[3].astype(np.int64)
        return slots

    @property
    def eta_s(self) -> NDArray[np.float64]:
        """ETA of each unit (s)."""
        eta: NDArray[np.float64] = self.rows[1]
        return eta

    @property
    def distance_m(self) -> NDArray[np.float64]:
        """Great-circle distance of each unit (m)."""
        dist: NDArray[np.float64] = self.rows[2]
        return dist

    @property
    def stale(self) -> NDArray[np.bool_]:
        """True where the unit's fix is stale (they rank after every live unit)."""
        stale: NDArray[np.bool_] = self.rows[0] > 0.5
        return stale


def _pack_kind_params(
    model: EtaModel, stale_after_s: ArrayLike | None, lost_after_s: ArrayLike | None
) -> NDArray[np.float64]:
    kp = np.empty((4, N_KINDS), dtype=np.float64)
    kp[K_PACE] = model.pace if isinstance(model, StraightLineEta) else np.nan
    kp[K_LB] = [model.min_pace_s_per_m([kd]) for kd in range(N_KINDS)]
    if np.any(~(kp[K_LB] >= 0.0)):
        raise ValueError(f"the ETA model's lower bounds of pace must be >= 0, got {kp[K_LB].tolist()}")
    kp[K_STALE] = np.inf if stale_after_s is None else np.asarray(stale_after_s, dtype=np.float64)
    kp[K_LOST] = np.inf if lost_after_s is None else np.asarray(lost_after_s, dtype=np.float64)
    return kp


class NearestSearch:
    """Nearest-unit queries on one index with one ETA model and per-kind freshness thresholds.

    ``stale_after_s`` / ``lost_after_s`` are seconds per kind code (None: never stale / lost).
    Not thread-safe (it reuses one work array): the owner serialises queries and index updates.
    """

    def __init__(
        self,
        index: LiveIndex,
        model: EtaModel | None = None,
        stale_after_s: ArrayLike | None = None,
        lost_after_s: ArrayLike | None = None,
    ) -> None:
        self.index = index
        self.model: EtaModel = model if model is not None else StraightLineEta.from_names()
        self._kp = _pack_kind_params(self.model, stale_after_s, lost_after_s)
        self._fast = isinstance(self.model, StraightLineEta)
        self._work = self._new_work(16)

    def _new_work(self, k: int) -> NDArray[np.float64]:
        work = np.zeros((W_OUT + N_ROWS, max(k, N_KINDS)), dtype=np.float64)
        work[W_KP:W_STATS, :N_KINDS] = self._kp
        if getattr(self, "_work", None) is not None:
            work[W_STATS, :5] = self._work[W_STATS, :5]
        return work

    @property
    def stats(self) -> dict[str, int]:
        """Work done so far: queries, passes, hash probes, units visited, full scans."""
        row = self._work[W_STATS]
        names = ("queries", "passes", "probes", "visits", "full_scans")
        return {name: int(row[i]) for i, name in enumerate(names)}

    def query(
        self,
        lat: float,
        lon: float,
        k: int = 5,
        *,
        now: float,
        kinds: int = (1 << N_KINDS) - 1,
        statuses: int = 1,
        capabilities: int = 0,
        sector: int = -1,
        max_age_s: float = math.inf,
    ) -> Nearest:
        """The ``k`` best units for (lat, lon) at epoch ``now``; kinds, statuses, capabilities are bit masks.

        ``sector`` -1 means any sector; ``max_age_s`` drops older fixes.
        """
        n = self.query_rows(lat, lon, k, now, kinds, statuses, capabilities, sector, max_age_s)
        return Nearest(self._work[W_OUT : W_OUT + 4, :n].copy())

    def query_rows(
        self, lat: float, lon: float, k: int, now: float, kinds: int, statuses: int, capabilities: int,
        sector: int, max_age_s: float,
    ) -> int:  # fmt: skip
        """:meth:`query` without a result object: rows stay in :attr:`result_rows` until the next query."""
        lat = float(lat)
        lon = float(lon)
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ValueError(
                f"({lat}, {lon}) is not a position: lat must be in [-90, 90], lon in [-180, 180]"
            )
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be in 1..{MAX_K}, got {k}")
        if not 0 <= capabilities < 1 << 63:
            raise ValueError("capability masks have 63 bits")
        if lon >= 180.0:
            lon -= 360.0
        idx = self.index
        if len(idx) == 0 or kinds == 0 or statuses == 0:
            return 0
        if k > self._work.shape[1]:
            self._work = self._new_work(k)
        if self._fast:
            n: int = _nearest_kernel(
                idx._rec, idx._table, self._work, idx.top, len(idx), idx.cell_deg, idx.nrows, idx.maxcols,
                lat, lon, k, kinds, statuses, capabilities, sector, float(max_age_s), float(now),
            )  # fmt: skip
            return n
        rows = self._query_model(
            lat, lon, k, kinds, statuses, capabilities, sector, float(max_age_s), float(now)
        )
        n = rows.shape[1]
        self._work[W_OUT : W_OUT + 4, :n] = rows
        _describe(self.index._rec, self._work[W_OUT:], n)
        return int(n)

    @property
    def result_rows(self) -> NDArray[np.float64]:
        """Result rows of the last :meth:`query_rows` (see ``R_*``: stale, ETA, distance, slot, lat, ...)."""
        return self._work[W_OUT:]

    def _query_model(
        self, lat: float, lon: float, k: int, kmask: int, smask: int, cap: int, sec: int, age: float,
        now: float,
    ) -> NDArray[np.float64]:  # fmt: skip
        """The same search with a model whose ETAs only Python knows: rings in numba, ETAs by the model."""
        idx = self.index
        kp = self._kp
        stats = self._work[W_STATS]
        stats[S_QUERIES] += 1
        buf = np.empty((4, max(idx.top, 1)), dtype=np.float64)
        best = np.empty((4, 0), dtype=np.float64)  # rows: tier, eta, dist, slot
        done = np.full(N_KINDS, -1.0)
        want = _first_radii(kmask, kp, idx.cell_deg)
        per_cell = bin(smask).count("1")
        probes = 0.0
        while True:
            if _too_costly(probes, lat, want, done, idx.cell_deg, idx.nrows, idx.maxcols, len(idx), per_cell):
                n = _scan_all(
                    idx._rec, idx.top, lat, lon, kmask, smask, cap, sec, age, now, kp, 1, buf, k, stats
                )
                return _top(self._with_eta(buf[:, :n], lat, lon), k)
            found = []
            stats[S_PASSES] += 1
            for kd in range(N_KINDS):
                if want[kd] > done[kd]:
                    probes += _estimate_cells(lat, want[kd], idx.cell_deg, idx.nrows, idx.maxcols) * per_cell
                    n = _scan_ring(idx._rec, idx._table, idx.cell_deg, idx.nrows, idx.maxcols, lat, lon,
                                   kd, want[kd], done[kd], smask, cap, sec, age, now, kp, 1, buf, 0, k,
                                   stats)  # fmt: skip
                    found.append(buf[:, :n].copy())
                    done[kd] = want[kd]
            best = _top(np.concatenate([best, *(self._with_eta(f, lat, lon) for f in found)], axis=1), k)
            more = False
            if best.shape[1] == k and best[0, k - 1] == 0.0:
                horizon = best[1, k - 1]
                for kd in range(N_KINDS):
                    if done[kd] < 0.0:
                        continue
                    lb = kp[K_LB, kd]
                    need = horizon / lb * (1.0 + _REL) + _ABS_M if lb > 0.0 else math.inf
                    if need > done[kd]:
                        want[kd] = min(need, 2.0 * done[kd])
                        more = True
            else:
                for kd in range(N_KINDS):
                    if 0.0 <= done[kd] < math.pi * _R:
                        want[kd] = 2.0 * done[kd]
                        more = True
            if not more:
                return best

    def _with_eta(self, rows: NDArray[np.float64], lat: float, lon: float) -> NDArray[np.float64]:
        if rows.shape[1]:
            slots = rows[3].astype(np.int64)
            rec = self.index._rec
            kinds = rec["kind"][slots]
            eta = np.asarray(
                self.model.eta_s(rows[2], kinds, rec["lat"][slots], rec["lon"][slots], lat, lon),
                dtype=np.float64,
            )
            # The stopping rule is only exact if the model keeps its own promise.
            if eta.shape != (rows.shape[1],) or np.any(eta < rows[2] * self._kp[K_LB, kinds] * (1 - 1e-12)):
                raise ValueError(
                    "the ETA model returned ETAs below its own lower bound of pace (or a bad shape)"
                )
            rows[1] = eta
        return rows


def _top(rows: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    order = np.lexsort((rows[3], rows[2], rows[1], rows[0]))[:k]
    return rows[:, order]


def cell_size_m(index: LiveIndex) -> float:
    """Height of a grid row in metres (the search's first radius)."""
    return index.cell_deg * _M_PER_DEG


def nearest(
    index: LiveIndex,
    lat: float,
    lon: float,
    k: int = 5,
    *,
    now: float,
    model: EtaModel | None = None,
    kinds: Iterable[int] | None = None,
    statuses: Iterable[int] | None = (0,),
    capabilities: int = 0,
    sector: int | None = None,
    max_age_s: float | None = None,
    stale_after_s: ArrayLike | None = None,
    lost_after_s: ArrayLike | None = None,
) -> Nearest:
    """One-off nearest-unit query (codes, not masks); for many queries build a :class:`NearestSearch`."""
    search = NearestSearch(index, model, stale_after_s, lost_after_s)
    return search.query(
        lat, lon, k, now=now, kinds=kind_mask(kinds), statuses=status_mask(statuses),
        capabilities=capabilities, sector=-1 if sector is None else sector,
        max_age_s=math.inf if max_age_s is None else max_age_s,
    )  # fmt: skip


def warm_up() -> None:
    """Compile the kernels (a few seconds once per process) so the first real query is fast."""
    index = LiveIndex(capacity=16)
    index.upsert("warm-up", 0.0, 0.0, 0, 0, 0.0)
    index.upsert_many(["warm-up", "warm-up-2"], [0.0, 1.0], [0.0, 1.0], [0, 1], [0, 0], [0.0, 0.0])
    index.remove("warm-up-2")
    NearestSearch(index).query(0.0, 0.0, 1, now=1.0)
