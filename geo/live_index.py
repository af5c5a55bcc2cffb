"""LiveIndex: the latest position of every unit as columnar arrays, with an O(1)-per-move spatial grid.

Columns (one row per *slot*; a removed unit's slot goes on a free list and is reused):
``lat``, ``lon`` (float64 degrees, lon normalised to [-180, 180)), ``kind`` and
``status`` (int8 codes of :mod:`geo.codes`; status -1 marks a free slot),
``fix_time`` (float64 epoch seconds), ``h3`` (uint64 H3 cell at resolution
:data:`H3_RES`, computed per update), ``capabilities`` (uint64 bit mask) and
``sector`` (int16 code, 0 = none).

Spatial buckets: a latitude/longitude grid whose rows are ``cell_deg`` high and
whose columns are about ``cell_deg`` *equatorial* degrees wide at the row's
equatorward edge: a row has ``floor(360 cos φ / cell_deg)`` columns (at least
one), so cells keep roughly the same size up to the poles, where a row is a
handful of cells instead of 72,000 slivers. Each (cell, kind) bucket is a
doubly linked list threaded through two int32 columns (``next``, ``prev``); an
open-addressing hash (linear probing, backward-shift deletion, all numba) maps
the bucket key to the list head. A move is an unlink and a link: O(1).

Everything that touches the arrays is numba-compiled; the Python layer keeps
the unit id ↔ slot maps and computes H3 cells. Kernels are cached on disk
(``cache=True``, in ``__pycache__``): compiling them all takes 10-15 s on a small
box, which every ``serenazgo up`` and every test process would otherwise pay;
a cached start takes about a second.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numba
import numpy as np
from h3.api import basic_int as h3
from numpy.typing import ArrayLike, NDArray

from geo.codes import N_KINDS, N_STATUSES

H3_RES = 9  # ~0.1 km² hexagons: a block or two of Miraflores
DEFAULT_CELL_DEG = 0.005  # grid rows ~556 m high; see benchmarks/bench_nearest.py for the tuning
FREE = -1  # status of a free slot
_GROWTH = 1.5
_MAX_LOAD = 0.7  # of the hash table (linear probing stays short up to here)
_HASH_CHUNK = 1024

# What the search reads for every unit it visits sits in one 32-byte record, so a visit costs one
# cache miss instead of one per column (the bucket lists hop between random slots). The columns
# are views of the record array; H3 cells, capability masks and back links live apart.
RECORD = np.dtype(
    [
        ("lat", "f8"), ("lon", "f8"), ("t", "f8"), ("caps", "u8"),
        ("next", "i4"), ("kind", "i1"), ("status", "i1"), ("sector", "i2"),
    ],
    align=True,
)  # fmt: skip
# The hash table is one (size, 2) int64 array: key (-1 = empty) and head slot side by side.
T_KEY, T_HEAD = 0, 1
# meta: int64 array [number of keys in the hash]
M_KEYS = 0


# ---------------------------------------------------------------------------------------------
# Grid geometry (numba). The search in geo.nearest uses the same functions, so a unit is always
# looked for in the cell it was filed under (same inputs, same floating-point operations).


@numba.njit(cache=True, inline="always")
def grid_row(lat: float, cell_deg: float, nrows: int) -> int:
    """Row of latitude ``lat`` (clamped to the grid)."""
    r = int(math.floor((lat + 90.0) / cell_deg))  # noqa: RUF046 (numba: keep the int type explicit)
    if r < 0:
        return 0
    if r >= nrows:
        return nrows - 1
    return r


@numba.njit(cache=True, inline="always")
def row_ncols(row: int, cell_deg: float, maxcols: int) -> int:
    """Number of columns of ``row``: about ``cell_deg`` equatorial degrees each at its equatorward edge."""
    lo = row * cell_deg - 90.0
    hi = lo + cell_deg
    if lo >= 0.0:
        eq = lo
    elif hi <= 0.0:
        eq = -hi
    else:
        eq = 0.0
    n = int(math.floor(360.0 * math.cos(math.radians(eq)) / cell_deg))  # noqa: RUF046 (numba: keep the int type explicit)
    if n < 1:
        return 1
    if n > maxcols:
        return maxcols
    return n


@numba.njit(cache=True, inline="always")
def lon_col(lon: float, ncols: int) -> int:
    """Column of a normalised longitude (in [-180, 180)) in a row of ``ncols`` columns."""
    c = int(math.floor((lon + 180.0) / 360.0 * ncols))  # noqa: RUF046 (numba: keep the int type explicit)
    if c < 0:
        return 0
    if c >= ncols:
        return ncols - 1
    return c


@numba.njit(cache=True, inline="always")
def bucket_key(row: int, col: int, kind: int, status: int, maxcols: int) -> int:
    """Hash key of the (cell, kind, status) bucket."""
    return ((row * maxcols + col) * 8 + kind) * 8 + status


@numba.njit(cache=True)
def unit_key(
    lat: float, lon: float, kind: int, status: int, cell_deg: float, nrows: int, maxcols: int
) -> int:
    """Bucket key of a unit of ``kind`` and ``status`` at (lat, lon)."""
    row = grid_row(lat, cell_deg, nrows)
    return bucket_key(row, lon_col(lon, row_ncols(row, cell_deg, maxcols)), kind, status, maxcols)


@numba.njit(cache=True)
def _keys_kernel(
    lat: NDArray[np.float64], lon: NDArray[np.float64], kind: NDArray[np.int8], status: NDArray[np.int8],
    cell_deg: float, nrows: int, maxcols: int,
) -> NDArray[np.int64]:  # fmt: skip
    out = np.empty(lat.shape[0], dtype=np.int64)
    for j in range(lat.shape[0]):
        lo = lon[j] - 360.0 if lon[j] >= 180.0 else lon[j]
        out[j] = unit_key(lat[j], lo, kind[j], status[j], cell_deg, nrows, maxcols)
    return out


# ---------------------------------------------------------------------------------------------
# Open-addressing hash: bucket key -> head slot (linear probing, backward-shift deletion).


@numba.njit(cache=True, inline="always")
def _home(key: int, mask: int) -> Any:
    x = np.uint64(key)
    x = (x ^ (x >> np.uint64(31))) * np.uint64(0x7FB5D329728EA185)
    x = x ^ (x >> np.uint64(27))
    return np.int64(x & np.uint64(mask))


@numba.njit(cache=True)
def hash_find(table: NDArray[np.int64], key: int) -> Any:
    """Position of ``key`` in the table, or -1."""
    mask = table.shape[0] - 1
    i = _home(key, mask)
    while True:
        k = table[i, T_KEY]
        if k == key:
            return i
        if k == -1:
            return -1
        i = (i + 1) & mask


@numba.njit(cache=True)
def _hash_insert(table: NDArray[np.int64], key: int, head: int) -> Any:
    mask = table.shape[0] - 1
    i = _home(key, mask)
    while table[i, T_KEY] != -1:
        i = (i + 1) & mask
    table[i, T_KEY] = key
    table[i, T_HEAD] = head
    return i


@numba.njit(cache=True)
def _hash_delete(table: NDArray[np.int64], i: int) -> None:
    # Backward-shift deletion keeps probe chains unbroken without tombstones, so a fleet that
    # roams forever does not fill the table with dead keys.
    mask = table.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        if table[j, T_KEY] == -1:
            break
        h = _home(table[j, T_KEY], mask)
        stays = (i < h <= j) if i <= j else (i < h or h <= j)
        if not stays:
            table[i, T_KEY] = table[j, T_KEY]
            table[i, T_HEAD] = table[j, T_HEAD]
            i = j
    table[i, T_KEY] = -1
    table[i, T_HEAD] = -1


@numba.njit(cache=True)
def _rehash(old: NDArray[np.int64], new: NDArray[np.int64]) -> None:
    for i in range(old.shape[0]):
        if old[i, T_KEY] != -1:
            _hash_insert(new, old[i, T_KEY], old[i, T_HEAD])


# ---------------------------------------------------------------------------------------------
# Bucket lists: ``rec[s].next`` forward, ``prev[s]`` back; the hash holds each list's head.


@numba.njit(cache=True)
def _link(
    rec: NDArray[np.void],
    prev: NDArray[np.int32],
    table: NDArray[np.int64],
    meta: NDArray[np.int64],
    s: int,
    key: int,
) -> None:
    pos = hash_find(table, key)
    if pos < 0:
        _hash_insert(table, key, s)
        meta[M_KEYS] += 1
        rec[s].next = -1
    else:
        head = table[pos, T_HEAD]
        rec[s].next = head
        prev[head] = s
        table[pos, T_HEAD] = s
    prev[s] = -1


@numba.njit(cache=True)
def _unlink(
    rec: NDArray[np.void],
    prev: NDArray[np.int32],
    table: NDArray[np.int64],
    meta: NDArray[np.int64],
    s: int,
    key: int,
) -> None:
    p = prev[s]
    n = rec[s].next
    if p >= 0:
        rec[p].next = n
    else:
        pos = hash_find(table, key)
        if n >= 0:
            table[pos, T_HEAD] = n
        else:
            _hash_delete(table, pos)
            meta[M_KEYS] -= 1
    if n >= 0:
        prev[n] = p
    rec[s].next = -1
    prev[s] = -1


@numba.njit(cache=True)
def _upsert_slot(
    rec: NDArray[np.void],
    prev: NDArray[np.int32],
    h3col: NDArray[np.uint64],
    table: NDArray[np.int64],
    meta: NDArray[np.int64],
    cell_deg: float,
    nrows: int,
    maxcols: int,
    s: int,
    la: float,
    lo: float,
    fix_time: float,
    h3cell: Any,
    caps: Any,
    kind: Any,
    status: Any,
    sec: Any,
) -> None:
    """File one unit under its (cell, kind, status) bucket and write its columns."""
    if lo >= 180.0:
        lo -= 360.0
    new_key = unit_key(la, lo, kind, status, cell_deg, nrows, maxcols)
    r = rec[s]
    if r.status >= 0:
        old_key = unit_key(r.lat, r.lon, r.kind, r.status, cell_deg, nrows, maxcols)
        if old_key != new_key:
            _unlink(rec, prev, table, meta, s, old_key)
            _link(rec, prev, table, meta, s, new_key)
    else:
        _link(rec, prev, table, meta, s, new_key)
    r.lat = la
    r.lon = lo
    r.t = fix_time
    r.kind = kind
    r.status = status
    r.sector = sec
    r.caps = caps
    h3col[s] = h3cell


@numba.njit(cache=True)
def _upsert_kernel(
    rec: NDArray[np.void],
    prev: NDArray[np.int32],
    h3col: NDArray[np.uint64],
    table: NDArray[np.int64],
    meta: NDArray[np.int64],
    cell_deg: float,
    nrows: int,
    maxcols: int,
    slots: NDArray[np.int64],
    lat: NDArray[np.float64],
    lon: NDArray[np.float64],
    fix_time: NDArray[np.float64],
    h3cell: NDArray[np.uint64],
    caps: NDArray[np.uint64],
    kind: NDArray[np.int8],
    status: NDArray[np.int8],
    sec: NDArray[np.int16],
) -> None:
    for j in range(slots.shape[0]):
        _upsert_slot(rec, prev, h3col, table, meta, cell_deg, nrows, maxcols, slots[j], lat[j], lon[j],
                     fix_time[j], h3cell[j], caps[j], kind[j], status[j], sec[j])  # fmt: skip


@numba.njit(cache=True)
def _upsert_one(
    rec: NDArray[np.void],
    prev: NDArray[np.int32],
    h3col: NDArray[np.uint64],
    table: NDArray[np.int64],
    meta: NDArray[np.int64],
    cell_deg: float,
    nrows: int,
    maxcols: int,
    s: int,
    la: float,
    lo: float,
    fix_time: float,
    h3cell: int,
    caps: int,
    kind: int,
    status: int,
    sec: int,
) -> None:
    h3u, capsu = np.uint64(h3cell), np.uint64(caps)
    kd, st, sc = np.int8(kind), np.int8(status), np.int16(sec)
    _upsert_slot(
        rec, prev, h3col, table, meta, cell_deg, nrows, maxcols, s, la, lo, fix_time, h3u, capsu, kd, st, sc
    )


@numba.njit(cache=True)
def _remove_kernel(
    rec: NDArray[np.void],
    prev: NDArray[np.int32],
    table: NDArray[np.int64],
    meta: NDArray[np.int64],
    cell_deg: float,
    nrows: int,
    maxcols: int,
    s: int,
) -> None:
    r = rec[s]
    key = unit_key(r.lat, r.lon, r.kind, r.status, cell_deg, nrows, maxcols)
    _unlink(rec, prev, table, meta, s, key)
    r.status = FREE


@numba.njit(cache=True)
def _check_kernel(
    rec: NDArray[np.void],
    prev: NDArray[np.int32],
    table: NDArray[np.int64],
    top: int,
    cell_deg: float,
    nrows: int,
    maxcols: int,
) -> int:
    # Every occupied slot is reached exactly once from the head of its own bucket; returns the count.
    seen = np.zeros(top, dtype=np.int8)
    total = 0
    for i in range(table.shape[0]):
        key = table[i, T_KEY]
        if key == -1:
            continue
        s = table[i, T_HEAD]
        if s < 0 or prev[s] != -1:
            return -1
        before = -1
        while s >= 0:
            r = rec[s]
            if s >= top or seen[s] or r.status < 0 or prev[s] != before:
                return -1
            if unit_key(r.lat, r.lon, r.kind, r.status, cell_deg, nrows, maxcols) != key:
                return -1
            seen[s] = 1
            total += 1
            before = s
            s = r.next
    for s in range(top):
        if rec[s].status >= 0 and not seen[s]:
            return -1
    return total


# Cell sizes that divide 180° (rows must tile the globe exactly), finest to coarsest.
CELL_SIZES = (
    0.0025,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.0125,
    0.02,
    0.025,
    0.04,
    0.05,
    0.075,
    0.1,
    0.2,
    0.25,
    0.5,
    1.0,
)


def suggest_cell_deg(lat: ArrayLike, lon: ArrayLike) -> float:
    """A grid cell size for a fleet at these positions: about the distance to a unit's k-th neighbours.

    Measured (benchmarks/bench_nearest.py, Lima): 100,000 units in 2,400 km² do best near
    0.0075°, 10,000 near 0.02°, 2,000 near 0.05°, i.e. 0.048° / sqrt(units per km²); too
    fine probes empty cells, too coarse visits too many units. Empty fleets get the default.

    >>> suggest_cell_deg(np.linspace(-12.25, -11.75, 100_000), np.linspace(-77.2, -76.8, 100_000))
    0.0075
    """
    la = np.asarray(lat, dtype=np.float64)
    lo = np.asarray(lon, dtype=np.float64)
    if la.size < 16:
        return DEFAULT_CELL_DEG
    # The bulk of the fleet (a few stray units far away should not dilute the density).
    lat_lo, lat_hi = np.percentile(la, [2, 98])
    lon_lo, lon_hi = np.percentile(lo, [2, 98])
    km_per_deg = 111.195
    height = max((lat_hi - lat_lo) * km_per_deg, 1.0)
    width = max((lon_hi - lon_lo) * km_per_deg * math.cos(math.radians((lat_lo + lat_hi) / 2)), 1.0)
    density = 0.96 * la.size / (height * width)  # units per km² (96 % of them are inside those bounds)
    ideal = 0.048 / math.sqrt(density)
    return min(CELL_SIZES, key=lambda c: abs(math.log(c / ideal)))


def _pow2_at_least(n: int) -> int:
    return 1 << max(4, (max(n, 1) - 1).bit_length())


class LiveIndex:
    """Latest position and state of every unit, columnar, with O(1) updates and a spatial grid.

    Not thread-safe by itself: the owner (``tracker.dispatch.Dispatcher``) serialises
    writers and readers with a lock.
    """

    def __init__(self, capacity: int = 1024, cell_deg: float = DEFAULT_CELL_DEG) -> None:
        if not 0.0 < cell_deg <= 10.0 or abs(180.0 / cell_deg - round(180.0 / cell_deg)) > 1e-9:
            raise ValueError(f"cell_deg must divide 180 and be in (0, 10], got {cell_deg}")
        self.cell_deg = float(cell_deg)
        self.nrows = round(180.0 / cell_deg)
        self.maxcols = round(360.0 / cell_deg)
        capacity = max(16, int(capacity))
        self._alloc(capacity)
        self._table = np.full((1024, 2), -1, dtype=np.int64)  # grows with the buckets in use
        self._meta = np.zeros(1, dtype=np.int64)
        self._slot: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._free: list[int] = []
        self.top = 0  # slots [0, top) have been used; the rest never

    _rec: NDArray[np.void]
    _prev: NDArray[np.int32]
    _h3: NDArray[np.uint64]

    def _alloc(self, capacity: int) -> None:
        rec = np.zeros(capacity, dtype=RECORD)
        rec["status"] = FREE
        rec["next"] = -1
        prev = np.full(capacity, -1, dtype=np.int32)
        h3col = np.zeros(capacity, dtype=np.uint64)
        old = getattr(self, "_rec", None)
        if old is not None:
            n = old.shape[0]
            rec[:n] = old
            prev[:n] = self._prev
            h3col[:n] = self._h3
        self._rec, self._prev, self._h3 = rec, prev, h3col

    # -- size and columns ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, unit_id: object) -> bool:
        return unit_id in self._slot

    @property
    def capacity(self) -> int:
        """Slots allocated (the arrays grow by half when full)."""
        return int(self._rec.shape[0])

    @property
    def lat(self) -> NDArray[np.float64]:
        """Latitude per slot (degrees); read-only view."""
        return self._view(self._rec["lat"])

    @property
    def lon(self) -> NDArray[np.float64]:
        """Longitude per slot (degrees, in [-180, 180)); read-only view."""
        return self._view(self._rec["lon"])

    @property
    def fix_time(self) -> NDArray[np.float64]:
        """Fix time per slot (epoch seconds); read-only view."""
        return self._view(self._rec["t"])

    @property
    def h3_cell(self) -> NDArray[np.uint64]:
        """H3 cell (resolution :data:`H3_RES`) per slot; read-only view."""
        return self._view(self._h3)

    @property
    def capabilities(self) -> NDArray[np.uint64]:
        """Capability bit mask per slot; read-only view."""
        return self._view(self._rec["caps"])

    @property
    def kind(self) -> NDArray[np.int8]:
        """Kind code per slot; read-only view."""
        return self._view(self._rec["kind"])

    @property
    def status(self) -> NDArray[np.int8]:
        """Status code per slot, -1 for a free slot; read-only view."""
        return self._view(self._rec["status"])

    @property
    def sector(self) -> NDArray[np.int16]:
        """Sector code per slot (0 = none); read-only view."""
        return self._view(self._rec["sector"])

    def _view(self, column: NDArray[Any]) -> NDArray[Any]:
        view = column[: self.top]
        view.flags.writeable = False
        return view

    def slot_of(self, unit_id: str) -> int | None:
        """The slot of ``unit_id``, or None."""
        return self._slot.get(unit_id)

    def unit_id(self, slot: int) -> str:
        """The unit id in ``slot`` (KeyError for a free slot)."""
        uid = self._ids[slot] if 0 <= slot < self.top else None
        if uid is None:
            raise KeyError(f"slot {slot} is free")
        return uid

    def unit_ids(self, slots: Sequence[int] | NDArray[np.int64]) -> list[str]:
        """Unit ids of ``slots``, in order."""
        ids = self._ids
        return [ids[int(s)] or "" for s in slots]

    # -- updates --------------------------------------------------------------------------

    def upsert(
        self,
        unit_id: str,
        lat: float,
        lon: float,
        kind: int,
        status: int,
        fix_time: float,
        capabilities: int = 0,
        sector: int = 0,
    ) -> int:
        """Insert or update one unit; returns its slot (a scalar path: one numba call, no arrays)."""
        lat = float(lat)
        lon = float(lon)
        fix_time = float(fix_time)
        if not (abs(lat) <= 90.0 and abs(lon) <= 180.0 and math.isfinite(fix_time)):
            raise ValueError("lat must be in [-90, 90], lon in [-180, 180] and the fix time finite")
        if not (0 <= kind < N_KINDS and 0 <= status < N_STATUSES):
            raise ValueError(f"kind codes must be 0..{N_KINDS - 1} and status codes 0..{N_STATUSES - 1}")
        if not (0 <= capabilities < 1 << 63 and -(1 << 15) <= sector < 1 << 15):
            raise ValueError("capability masks must fit 63 bits and sector codes 16 bits")
        s = self._slot.get(unit_id)
        if s is None:
            s = self._new_slot(unit_id)
        if int(self._meta[M_KEYS]) + 1 > _MAX_LOAD * self._table.shape[0]:
            self._grow_hash(int(self._meta[M_KEYS]) + 1)
        _upsert_one(
            self._rec, self._prev, self._h3, self._table, self._meta, self.cell_deg, self.nrows, self.maxcols,
            s, lat, lon, fix_time, h3.latlng_to_cell(lat, lon, H3_RES), int(capabilities), int(kind),
            int(status), int(sector),
        )  # fmt: skip
        return s

    def upsert_many(
        self,
        unit_ids: Sequence[str],
        lat: ArrayLike,
        lon: ArrayLike,
        kind: ArrayLike,
        status: ArrayLike,
        fix_time: ArrayLike,
        capabilities: ArrayLike | None = None,
        sector: ArrayLike | None = None,
    ) -> NDArray[np.int64]:
        """Insert or update a batch of units (the last row wins for a repeated id); returns their slots.

        Raises ValueError (and changes nothing) when a coordinate, kind or status is out of range.
        """
        n = len(unit_ids)
        la = np.ascontiguousarray(lat, dtype=np.float64).reshape(-1)
        lo = np.ascontiguousarray(lon, dtype=np.float64).reshape(-1)
        ki = np.ascontiguousarray(kind, dtype=np.int8).reshape(-1)
        st = np.ascontiguousarray(status, dtype=np.int8).reshape(-1)
        ft = np.ascontiguousarray(fix_time, dtype=np.float64).reshape(-1)
        caps = (
            np.zeros(n, dtype=np.uint64)
            if capabilities is None
            else np.ascontiguousarray(capabilities, dtype=np.uint64).reshape(-1)
        )
        sec = np.zeros(n, dtype=np.int16) if sector is None else np.ascontiguousarray(sector, dtype=np.int16)
        sec = sec.reshape(-1)
        if any(a.shape[0] != n for a in (la, lo, ki, st, ft, caps, sec)):
            raise ValueError("every column of a batch needs one value per unit id")
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        if not (np.all(np.abs(la) <= 90.0) and np.all(np.abs(lo) <= 180.0)):  # also false for NaN
            raise ValueError("latitudes must be in [-90, 90] and longitudes in [-180, 180]")
        if np.any((ki < 0) | (ki >= N_KINDS)) or np.any((st < 0) | (st >= N_STATUSES)):
            raise ValueError(f"kind codes must be 0..{N_KINDS - 1} and status codes 0..{N_STATUSES - 1}")
        if not np.all(np.isfinite(ft)):
            raise ValueError("fix times must be finite epoch seconds")
        h3cells = np.fromiter(
            (h3.latlng_to_cell(a, b, H3_RES) for a, b in zip(la.tolist(), lo.tolist(), strict=True)),
            dtype=np.uint64,
            count=n,
        )
        slots = np.empty(n, dtype=np.int64)
        get = self._slot.get
        fresh: list[int] = []
        for j, uid in enumerate(unit_ids):
            s = get(uid)
            if s is None:
                fresh.append(j)
                s = -1
            slots[j] = s
        if fresh:
            # New units take their slots in bucket order, so that neighbours share cache lines
            # (a bucket list hops between slots; a cache miss per hop is what a visit costs).
            pick = np.asarray(fresh, dtype=np.int64)
            keys = _keys_kernel(
                la[pick], lo[pick], ki[pick], st[pick], self.cell_deg, self.nrows, self.maxcols
            )
            for j in pick[np.argsort(keys, kind="stable")].tolist():
                uid = unit_ids[j]
                s = get(uid)
                slots[j] = self._new_slot(uid) if s is None else s  # a repeated new id: one slot
        # Each update may add a bucket: before each chunk, make sure the hash stays at most 70 % full
        # even if every row of the chunk does. Chunks keep a bulk load from sizing the table for
        # one bucket per unit when units share buckets.
        for a in range(0, n, _HASH_CHUNK):
            b = min(n, a + _HASH_CHUNK)
            need = int(self._meta[M_KEYS]) + (b - a)
            if need > _MAX_LOAD * self._table.shape[0]:
                self._grow_hash(need)
            _upsert_kernel(
                self._rec, self._prev, self._h3, self._table, self._meta, self.cell_deg, self.nrows,
                self.maxcols, slots[a:b], la[a:b], lo[a:b], ft[a:b], h3cells[a:b], caps[a:b], ki[a:b],
                st[a:b], sec[a:b],
            )  # fmt: skip
        return slots

    def _new_slot(self, unit_id: str) -> int:
        if self._free:
            s = self._free.pop()
            self._ids[s] = unit_id
        else:
            s = self.top
            if s >= self.capacity:
                self._alloc(int(self.capacity * _GROWTH) + 1)
            self.top += 1
            self._ids.append(unit_id)
        self._slot[unit_id] = s
        return s

    def _grow_hash(self, keys: int) -> None:
        size = _pow2_at_least(2 * keys + 2)  # half full after growing
        table = np.full((size, 2), -1, dtype=np.int64)
        _rehash(self._table, table)
        self._table = table

    def remove(self, unit_id: str) -> bool:
        """Drop a unit (its slot is reused later); False when it was not there."""
        s = self._slot.pop(unit_id, None)
        if s is None:
            return False
        _remove_kernel(
            self._rec, self._prev, self._table, self._meta, self.cell_deg, self.nrows,
            self.maxcols, s,
        )  # fmt: skip
        self._ids[s] = None
        self._free.append(s)
        return True

    # -- introspection ------------------------------------------------------------------------

    @property
    def bucket_count(self) -> int:
        """Number of non-empty (cell, kind) buckets."""
        return int(self._meta[M_KEYS])

    def check(self) -> None:
        """Verify every invariant of the buckets, lists and id maps (for tests); AssertionError if broken."""
        total = _check_kernel(
            self._rec, self._prev, self._table, self.top, self.cell_deg, self.nrows, self.maxcols,
        )  # fmt: skip
        occupied = int(np.count_nonzero(self._rec["status"][: self.top] >= 0))
        if total != occupied or total != len(self._slot) or total != self.bucket_count_units():
            raise AssertionError(
                f"index invariants broken: lists {total}, occupied {occupied}, ids {len(self)}"
            )
        for uid, s in self._slot.items():
            if self._ids[s] != uid:
                raise AssertionError(f"id map broken at slot {s}: {self._ids[s]!r} != {uid!r}")
        if int(np.count_nonzero(self._table[:, T_KEY] != -1)) != self.bucket_count:
            raise AssertionError("hash key count out of step")

    def bucket_count_units(self) -> int:
        """Number of occupied slots (same as ``len(self)`` when the index is consistent)."""
        return int(np.count_nonzero(self._rec["status"][: self.top] >= 0))

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held: columns, buckets (hash), id maps; ``id_strings`` are shared with the caller's ids."""
        columns = self._rec.nbytes + self._prev.nbytes + self._h3.nbytes
        buckets = self._table.nbytes + self._meta.nbytes
        # dict + list + free list + the int objects of slots above the small-int cache.
        ints = sum(sys.getsizeof(s) for s in self._slot.values() if s > 256)
        id_maps = sys.getsizeof(self._slot) + sys.getsizeof(self._ids) + sys.getsizeof(self._free) + ints
        strings = sum(sys.getsizeof(u) for u in self._slot)
        return {
            "columns": columns,
            "buckets": buckets,
            "id_maps": id_maps,
            "total": columns + buckets + id_maps,
            "id_strings": strings,
        }
