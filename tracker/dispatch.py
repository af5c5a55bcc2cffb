"""Nearest-unit dispatch: the LiveFleet mirrored into geo's LiveIndex, queried by ETA.

CONTRACT (other modules code against it):

- ``Candidate``: one ranked unit (below).
- ``Dispatcher(fleet, eta=EtaSettings(), thresholds=None)``: subscribes to the
  fleet's changes and keeps a :class:`geo.live_index.LiveIndex` in step;
  ``nearest(...)`` answers "which available units reach (lat, lon) first";
  ``close()`` unsubscribes.

Ranking (see :mod:`geo.nearest`): live units before stale ones, then by ETA
(:mod:`geo.eta`: great-circle distance × circuity / speed of the unit's kind),
then by distance; lost units (and units without a fix, or inactive) are never
candidates. The answer is exact: the same as ranking every unit.

Threads: fleet changes arrive on the ingest writer thread, queries on the
asyncio thread. One lock guards the index; the writer holds it for at most
:data:`_CHUNK` changes at a time, so a query never waits for a whole batch,
and never sees a half-updated unit.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Collection
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from geo.codes import KIND_CODE, KIND_NAMES, STATUS_CODE, STATUS_NAMES
from geo.live_index import DEFAULT_CELL_DEG, LiveIndex, suggest_cell_deg
from geo.nearest import MAX_K, NearestSearch, warm_up
from tracker.config import EtaSettings
from tracker.fleet import FleetChange, LiveFleet, UnitState
from tracker.freshness import DEFAULT_THRESHOLDS, FreshnessThresholds
from tracker.model import Freshness, UnitKind, UnitStatus

log = logging.getLogger(__name__)

_CHUNK = 512  # changes applied per lock hold (bounds how long a query can wait for the writer)
_MAX_CAPABILITIES = 63  # bits of the index's capability mask
_MAX_SECTORS = 32767  # int16 sector codes; 0 = no sector
_KINDS = [UnitKind(name) for name in KIND_NAMES]
_STATUSES = [UnitStatus(name) for name in STATUS_NAMES]
_KIND_BITS = {name: 1 << code for code, name in enumerate(KIND_NAMES)}
_STATUS_BITS = {name: 1 << code for code, name in enumerate(STATUS_NAMES)}
_ALL_KINDS = (1 << len(KIND_NAMES)) - 1
_DRONE_BIT = _KIND_BITS[UnitKind.DRONE.value]
_AVAILABLE_ONLY = (UnitStatus.AVAILABLE,)
_NUMBER = (int, float)
# Enum members read once: class attribute access on an enum costs more than a global.
_LIVE = Freshness.LIVE
_STALE = Freshness.STALE


class Candidate(NamedTuple):
    """One unit ranked for an incident: where it is, how far, how soon it can be there.

    A named tuple rather than a frozen dataclass: it is built five times per
    query on the hot path, and a tuple is made in a fraction of the time (the
    dataclass's per-field ``object.__setattr__`` cost more than the search).
    """

    unit_id: str
    kind: UnitKind
    callsign: str
    status: UnitStatus
    lat: float
    lon: float
    distance_m: float  # great-circle distance to the point
    eta_s: float  # from the ETA model (geo.eta)
    fix_age_s: float
    freshness: Freshness  # LIVE or STALE (lost units are never candidates)
    drone: dict[str, Any] | None = None  # a drone's timing and battery check (see DroneTiming)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form, as the API and the live feed send it."""
        return {
            "unit_id": self.unit_id,
            "kind": str(self.kind),
            "callsign": self.callsign,
            "status": str(self.status),
            "lat": self.lat,
            "lon": self.lon,
            "distance_m": round(self.distance_m, 1),
            "eta_s": round(self.eta_s, 1),
            "fix_age_s": round(self.fix_age_s, 1),
            "freshness": str(self.freshness),
            **({} if self.drone is None else {"drone": self.drone}),
        }


class DroneTiming(Protocol):
    """Re-times candidate drones as a drone-as-first-responder system does (:mod:`drones.first_response`).

    Given the point and the available drones ranked by the plain ETA model, it
    returns them with their real time to arrive (launch delay for a docked
    aircraft) and drops those whose battery cannot fly there, hold and come back
    with the reserve. A protocol: ``tracker`` never imports ``drones``.
    """

    def __call__(self, lat: float, lon: float, drones: list[Candidate]) -> list[Candidate]:
        """The drones that can answer, re-timed (any order)."""


class Dispatcher:
    """The fleet's positions in a LiveIndex, kept in step with the fleet; exact nearest units by ETA.

    Build it after the fleet is loaded: the grid's cell size (``cell_deg``, default: from the
    fleet's density, :func:`geo.live_index.suggest_cell_deg`) is chosen once, at start.
    """

    def __init__(
        self,
        fleet: LiveFleet,
        eta: EtaSettings | None = None,
        thresholds: dict[UnitKind, FreshnessThresholds] | None = None,
        *,
        cell_deg: float | None = None,
        drone_timing: DroneTiming | None = None,
    ) -> None:
        self._model = (eta or EtaSettings()).model()
        self.drone_timing = drone_timing
        self._thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
        stale = [self._thresholds[kind].stale_after_s for kind in _KINDS]
        lost = [self._thresholds[kind].lost_after_s for kind in _KINDS]
        self._lock = threading.Lock()
        snapshot = fleet.snapshot()
        if cell_deg is None:
            # Sized for the fleet at start (the answer is exact whatever the size; only speed varies).
            fixes = [s.fix for s in snapshot if s.fix is not None]
            cell_deg = suggest_cell_deg([f.lat for f in fixes], [f.lon for f in fixes]) if fixes else None
        self._index = LiveIndex(
            capacity=len(fleet) + len(fleet) // 8 + 64, cell_deg=cell_deg or DEFAULT_CELL_DEG
        )
        self._search = NearestSearch(self._index, self._model, stale, lost)
        self._callsigns: list[str] = []  # slot -> callsign
        self._sectors: dict[str, int] = {"": 0}
        self._capabilities: dict[str, int] = {}
        self._warned_capabilities = False
        # Subscribe first, then load: a batch applied meanwhile is delivered after our load
        # (it waits for our lock), and batches arrive in order, so the last word is the newest.
        self._unsubscribe = fleet.subscribe(self._on_changes)
        with self._lock:
            # Taken again after subscribing: nothing applied in between is missed.
            self._apply_states(fleet.snapshot())
        # Compile the kernels now (once per process), not on the first operator's question.
        warm_up()

    # -- fleet changes (writer thread) ---------------------------------------------------

    def _on_changes(self, changes: list[FleetChange]) -> None:
        """Apply a batch of fleet changes (called on the ingest writer thread)."""
        for start in range(0, len(changes), _CHUNK):
            chunk = [c.state for c in changes[start : start + _CHUNK]]
            with self._lock:
                self._apply_states(chunk)

    def _apply_states(self, states: list[UnitState]) -> None:
        """Upsert units with a fix, drop those without one or inactive; the caller holds the lock."""
        ids: list[str] = []
        callsigns: list[str] = []
        lat: list[float] = []
        lon: list[float] = []
        kind: list[int] = []
        status: list[int] = []
        fix_time: list[float] = []
        caps: list[int] = []
        sector: list[int] = []
        index = self._index
        for state in states:
            unit = state.unit
            fix = state.fix
            if fix is None or not unit.active:
                slot = index.slot_of(unit.unit_id)
                if slot is not None:
                    index.remove(unit.unit_id)
                    self._callsigns[slot] = ""
                continue
            ids.append(unit.unit_id)
            callsigns.append(unit.callsign)
            lat.append(fix.lat)
            lon.append(fix.lon)
            kind.append(KIND_CODE[unit.kind.value])
            status.append(STATUS_CODE[state.status.value])
            fix_time.append(fix.ts.timestamp())
            caps.append(self._capability_mask(unit.capabilities) if unit.capabilities else 0)
            sector.append(self._sector_code(unit.sector) if unit.sector else 0)
        if not ids:
            return
        slots = index.upsert_many(ids, lat, lon, kind, status, fix_time, caps, sector).tolist()
        table = self._callsigns
        if len(table) < index.top:
            table.extend([""] * (index.top - len(table)))
        for slot, callsign in zip(slots, callsigns, strict=True):
            table[slot] = callsign

    def _capability_mask(self, capabilities: Collection[str]) -> int:
        mask = 0
        for name in capabilities:
            bit = self._capabilities.get(name)
            if bit is None:
                if len(self._capabilities) >= _MAX_CAPABILITIES:
                    if not self._warned_capabilities:
                        log.error(
                            "more than %d distinct capabilities: %r is not indexed", _MAX_CAPABILITIES, name
                        )
                        self._warned_capabilities = True
                    continue
                bit = self._capabilities[name] = len(self._capabilities)
            mask |= 1 << bit
        return mask

    def _sector_code(self, sector: str) -> int:
        code = self._sectors.get(sector)
        if code is None:
            if len(self._sectors) > _MAX_SECTORS:
                log.error("more than %d sectors: %r is not indexed", _MAX_SECTORS, sector)
                return 0
            code = self._sectors[sector] = len(self._sectors)
        return code

    # -- queries (any thread) -------------------------------------------------------------

    def __len__(self) -> int:
        """Units in the index (those with a fix)."""
        return len(self._index)

    def nearest(
        self,
        lat: float,
        lon: float,
        k: int = 5,
        *,
        kinds: Collection[UnitKind] | None = None,
        capabilities: Collection[str] = (),
        sector: str | None = None,
        max_age_s: float | None = None,
        statuses: Collection[UnitStatus] = _AVAILABLE_ONLY,
        now: datetime | None = None,
    ) -> list[Candidate]:
        """The ``k`` units that reach (lat, lon) first, best first (live before stale; lost never).

        ``kinds`` None means every kind; ``capabilities`` must all be present; ``sector``
        None means any; ``max_age_s`` drops older fixes. Raises ValueError on a bad argument.
        """
        if not (isinstance(lat, _NUMBER) and isinstance(lon, _NUMBER)):
            raise ValueError(f"lat and lon must be numbers, got {lat!r}, {lon!r}")
        if not -90.0 <= lat <= 90.0:
            raise ValueError(f"lat must be in [-90, 90], got {lat}")
        if not -180.0 <= lon <= 180.0:
            raise ValueError(f"lon must be in [-180, 180], got {lon}")
        if type(k) is not int or not 1 <= k <= MAX_K:
            raise ValueError(f"k must be an integer in 1..{MAX_K}, got {k!r}")
        if max_age_s is not None and not max_age_s >= 0.0:
            raise ValueError(f"max_age_s must be >= 0, got {max_age_s}")
        kmask = _ALL_KINDS if kinds is None else _mask(kinds, _KIND_BITS, "kind")
        smask = 1 if statuses is _AVAILABLE_ONLY else _mask(statuses, _STATUS_BITS, "status")
        cap_mask = 0
        for name in capabilities:
            bit = self._capabilities.get(name)
            if bit is None:
                return []  # no unit has it
            cap_mask |= 1 << bit
        sec = -1
        if sector is not None:
            code = self._sectors.get(sector)
            if code is None:
                return []  # no unit is in it
            sec = code
        t_now = time.time() if now is None else now.timestamp()
        age = math.inf if max_age_s is None else float(max_age_s)
        timing = self.drone_timing
        if timing is not None and kmask & _DRONE_BIT:
            # Drones are few: take every available one, re-time it (launch delay, battery), and merge
            # with the k best of the other kinds. Exact while the squadron has at most MAX_K drones.
            others = kmask & ~_DRONE_BIT
            ground = self._query(lat, lon, k, t_now, others, smask, cap_mask, sec, age) if others else []
            squadron = self._query(lat, lon, MAX_K, t_now, _DRONE_BIT, smask, cap_mask, sec, age)
            drones = timing(lat, lon, squadron)
            merged = sorted([*ground, *drones], key=_rank)
            return merged[:k]
        return self._query(lat, lon, k, t_now, kmask, smask, cap_mask, sec, age)

    def _query(
        self,
        lat: float,
        lon: float,
        k: int,
        t_now: float,
        kmask: int,
        smask: int,
        cap_mask: int,
        sec: int,
        age: float,
    ) -> list[Candidate]:
        """One index search, its rows turned into candidates."""
        search = self._search
        with self._lock:
            n = search.query_rows(float(lat), float(lon), k, t_now, kmask, smask, cap_mask, sec, age)
            if n == 0:
                return []
            # Everything the candidates need is in the result rows (copied from the index's records);
            # only the id and callsign come from per-slot lists. Touching the fleet's state objects
            # would cost a cache miss per object per candidate.
            stale, eta, dist, slots, plat, plon, fix_t, kind, status = search.result_rows[:, :n].tolist()
            ids = self._index.unit_ids(slots)
            table = self._callsigns
            callsigns = [table[int(s)] for s in slots]
        kinds_, statuses_ = _KINDS, _STATUSES
        out = []
        for i in range(n):
            fresh = _STALE if stale[i] else _LIVE
            kd, st = kinds_[int(kind[i])], statuses_[int(status[i])]
            age_s = t_now - fix_t[i]
            out.append(
                Candidate(ids[i], kd, callsigns[i], st, plat[i], plon[i], dist[i], eta[i], age_s, fresh)
            )
        return out

    def model_info(self) -> dict[str, Any]:
        """The ETA model and freshness thresholds per kind, JSON-ready (for API responses)."""
        info = self._model.describe()
        for kind in _KINDS:
            t = self._thresholds[kind]
            info["kinds"][kind.value].update(stale_after_s=t.stale_after_s, lost_after_s=t.lost_after_s)
        info["ranking"] = "live before stale, then eta_s, then distance_m; lost units are never candidates"
        return info

    def close(self) -> None:
        """Stop following the fleet (idempotent)."""
        self._unsubscribe()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rank(c: Candidate) -> tuple[bool, float, float]:
    """The ranking of :mod:`geo.nearest`: live before stale, then ETA, then distance."""
    return (c.freshness is _STALE, c.eta_s, c.distance_m)


def _mask(values: Collection[Any], bits: dict[str, int], what: str) -> int:
    mask = 0
    for value in values:
        bit = bits.get(value)  # StrEnum members hash and compare as their values
        if bit is None:
            raise ValueError(f"unknown {what} {value!r}; known: {', '.join(bits)}")
        mask |= bit
    return mask
