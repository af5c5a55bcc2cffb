"""A deterministic movement model of a municipal security fleet (pure: no clock, no network).

Units patrol inside an area: serenos on foot and patrol cars within their
sector, motorcycles across the whole district, drones in straight lines from
and back to their dock. Ground units move on Manhattan-style legs (a street
grid), stop for a while at some waypoints, and report at their kind's interval
with GPS noise whose spread matches the accuracy they claim. A configured share
of fixes is bad in the ways real devices are bad (a spike far away, (0, 0), no
timestamp, an impossible battery level) so the ingest filters have work to do.
Incidents arrive at Central Alerta's rate; the nearest available vehicle (or a
sereno within a few blocks) is dispatched, drives there at urgent speed, stays
on scene, and returns to patrol; each status change is a :class:`SimStatus`.

Everything is driven by one seeded :class:`numpy.random.Generator`: the same
seed, area and mix give the same fleet and the same fixes. Movement happens in
a local metric frame (:class:`geo.local_frame.LocalFrame`); fixes come out in
lon/lat degrees.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from geo.area import Area, random_points
from geo.local_frame import LocalFrame
from tracker.model import Source, UnitKind, UnitStatus

# A 2-D Gaussian's 68 % radius (what Android and iOS report as accuracy) is this many per-axis sigmas.
ACCURACY_SIGMAS = math.sqrt(-2.0 * math.log(1.0 - 0.68))

GROUND_ALT_M = 79.0  # Miraflores sits on the cliff top, about 79 m above sea level


class BadFix(StrEnum):
    """The ways a simulated fix is deliberately wrong."""

    SPIKE = "spike"  # hundreds of metres off, with a confident accuracy
    NULL_ISLAND = "null_island"  # lat = lon = 0, a receiver with no fix
    NO_TIMESTAMP = "no_timestamp"  # the payload carries no time
    BAD_BATTERY = "bad_battery"  # battery outside 0-100 %


@dataclass(frozen=True, slots=True)
class KindProfile:
    """How one kind of unit moves and reports."""

    report_interval_s: float
    speed_mps: tuple[float, float]  # range a leg's speed is drawn from
    manhattan: bool  # street-grid legs (ground) or straight lines (air)
    whole_area: bool  # patrols the whole area rather than its sector
    dwell_probability: float  # chance of stopping on reaching a waypoint
    dwell_s: tuple[float, float]
    accuracy_median_m: float
    height_agl_m: tuple[float, float]
    battery_drain_pct_per_h: float | None  # None: runs on vehicle power, reports no battery


def _profile(
    interval: float,
    speed: tuple[float, float],
    *,
    air: bool = False,
    roams: bool = False,
    dwell_p: float,
    dwell: tuple[float, float],
    acc: float,
    drain: float | None,
    agl: tuple[float, float] = (0.0, 0.0),
) -> KindProfile:
    return KindProfile(interval, speed, not air, roams, dwell_p, dwell, acc, agl, drain)


PROFILES: dict[UnitKind, KindProfile] = {
    # Walking pace ~1.3 m/s; phones report every 10 s with a few metres of error.
    UnitKind.FOOT: _profile(10.0, (1.1, 1.5), dwell_p=0.5, dwell=(60.0, 900.0), acc=8.0, drain=7.0),
    UnitKind.BICYCLE: _profile(10.0, (3.0, 6.0), dwell_p=0.3, dwell=(60.0, 600.0), acc=8.0, drain=7.0),
    # Urban patrol speeds (18-50 km/h) on vehicle power; vehicle trackers report every 5 s.
    UnitKind.PATROL_CAR: _profile(5.0, (5.0, 14.0), dwell_p=0.35, dwell=(60.0, 900.0), acc=5.0, drain=None),
    UnitKind.MOTORCYCLE: _profile(
        5.0, (6.0, 16.0), roams=True, dwell_p=0.25, dwell=(60.0, 600.0), acc=5.0, drain=None
    ),
    # ~12 m/s cruise, 60-120 m above ground, about 35 minutes per battery, telemetry every 2 s.
    UnitKind.DRONE: _profile(
        2.0,
        (11.5, 12.5),
        air=True,
        roams=True,
        dwell_p=0.3,
        dwell=(20.0, 120.0),
        acc=2.0,
        drain=170.0,
        agl=(60.0, 120.0),
    ),
}

CALLSIGN_PREFIX: dict[UnitKind, tuple[str, int]] = {
    UnitKind.FOOT: ("SER", 3),
    UnitKind.BICYCLE: ("BICI", 2),
    UnitKind.PATROL_CAR: ("MOV", 2),
    UnitKind.MOTORCYCLE: ("MOTO", 2),
    UnitKind.DRONE: ("DRON", 2),
}

CAPABILITIES: dict[UnitKind, tuple[str, ...]] = {
    UnitKind.FOOT: ("first_aid",),
    UnitKind.BICYCLE: ("first_aid",),
    UnitKind.PATROL_CAR: ("first_aid", "transport", "radio"),
    UnitKind.MOTORCYCLE: ("rapid_response", "radio"),
    UnitKind.DRONE: ("thermal_camera", "loudspeaker"),
}

DRONE_RETURN_AT_PCT = 25.0  # head for the dock below this charge
# Made-up serials of the simulated DJI docks and their aircraft (real ones look like
# 6QCDL820020093 and 1581F5BKD225D00BP891); "SIM" keeps them apart from real hardware.
DJI_DOCK_SERIAL = "SIMDOCK{:05d}"
DJI_AIRCRAFT_SERIAL = "SIM1581F5{:05d}"
DRONE_SWAP_S = 360.0  # battery swap on the dock
FIXED_POST_SHARE = 0.1  # serenos standing guard at a fixed post (park, embassy, cliff stairs)
OWNTRACKS_SHARE = 0.8  # serenos whose phone runs OwnTracks; the rest use the native app
# Central Alerta logged ~690 incidents a day in 2024, about 29 an hour.
INCIDENTS_PER_HOUR = 30.0
FOOT_DISPATCH_RADIUS_M = 500.0  # a sereno on foot is sent only to what is around the corner
ACK_DELAY_S = (10.0, 45.0)  # from "dispatched" to "en route": the crew acknowledges and sets off
ON_SCENE_S = (300.0, 1500.0)
DISPATCHABLE = frozenset({UnitKind.FOOT, UnitKind.BICYCLE, UnitKind.PATROL_CAR, UnitKind.MOTORCYCLE})


@dataclass(frozen=True, slots=True)
class FleetMix:
    """How many units of each kind to simulate (Miraflores' order of magnitude by default)."""

    foot: int = 60
    cars: int = 25
    motorcycles: int = 15
    drones: int = 4

    def counts(self) -> list[tuple[UnitKind, int]]:
        """The mix as ``(kind, count)`` pairs, in the order units are created."""
        return [
            (UnitKind.FOOT, self.foot),
            (UnitKind.PATROL_CAR, self.cars),
            (UnitKind.MOTORCYCLE, self.motorcycles),
            (UnitKind.DRONE, self.drones),
        ]

    @property
    def total(self) -> int:
        """Number of units."""
        return self.foot + self.cars + self.motorcycles + self.drones


@dataclass(frozen=True, slots=True)
class SimUnit:
    """A simulated unit as it is registered: identity, kind, and how it reports."""

    unit_id: str
    kind: UnitKind
    callsign: str
    sector: str
    capabilities: frozenset[str]
    source: Source  # NATIVE, OWNTRACKS, or DJI for an aircraft in a DJI dock
    external_ids: dict[str, str] = field(default_factory=dict)
    dock_id: str | None = None  # serial of the DJI dock a DJI aircraft lives in

    @property
    def owntracks_topic(self) -> str | None:
        """``owntracks/{user}/{device}`` for an OwnTracks phone, else None."""
        return self.external_ids.get(Source.OWNTRACKS.value)


@dataclass(frozen=True, slots=True)
class SimFix:
    """One report as the device would send it, plus the truth behind it (for tests)."""

    unit: SimUnit
    ts: datetime | None  # None: the device sent no timestamp
    lat: float
    lon: float
    alt: float | None
    speed: float | None  # m/s
    heading: float | None  # degrees from north
    accuracy: float  # metres, the 68 % radius the device claims
    battery: float | None  # percent; out of 0-100 for a BAD_BATTERY fix
    bad: BadFix | None
    true_ts: datetime
    true_lat: float
    true_lon: float
    true_speed: float
    # Drones only: what a drone's telemetry says beside the position.
    airborne: bool | None = None
    returning: bool | None = None  # flying home to its dock on a low battery
    agl: float | None = None  # metres above the dock (take-off point)
    home_lat: float | None = None  # the dock
    home_lon: float | None = None


@dataclass(frozen=True, slots=True)
class SimStatus:
    """A dispatch status change of one unit, as the dispatch console would publish it."""

    unit: SimUnit
    status: UnitStatus
    ts: datetime
    incident_lat: float  # where the incident is
    incident_lon: float
    true_lat: float  # where the unit was when its status changed
    true_lon: float


@dataclass(frozen=True, slots=True)
class SimIncident:
    """An incident the simulation reports to an external dispatcher (``external_dispatch``)."""

    ts: datetime
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Sector:
    """A named part of the area (in the simulation's metric frame)."""

    name: str
    shape_xy: Polygon | MultiPolygon


def split_sectors(area_xy: Area, n: int) -> list[Sector]:
    """Cut ``area_xy`` into ``n`` west-to-east strips of equal area, named S1..Sn."""
    if n < 1:
        raise ValueError("need at least one sector")
    minx, miny, maxx, maxy = area_xy.bounds
    total = area_xy.area
    cuts = [minx]
    for k in range(1, n):
        lo, hi = cuts[-1], maxx
        target = total * k / n
        for _ in range(50):  # bisection on the cut's x: area west of it grows monotonically
            mid = (lo + hi) / 2
            if area_xy.intersection(box(minx, miny, mid, maxy)).area < target:
                lo = mid
            else:
                hi = mid
        cuts.append((lo + hi) / 2)
    cuts.append(maxx)
    sectors = []
    for k in range(n):
        piece = area_xy.intersection(box(cuts[k], miny, cuts[k + 1], maxy))
        if not isinstance(piece, Polygon | MultiPolygon):
            piece = MultiPolygon([g for g in shapely.get_parts(piece) if isinstance(g, Polygon)])
        sectors.append(Sector(f"S{k + 1}", piece))
    return sectors


class FleetSimulation:
    """The fleet's state and its clock; :meth:`advance_to` moves it and returns the fixes sent."""

    def __init__(
        self,
        area: Area,
        mix: FleetMix | None = None,
        *,
        seed: int = 0,
        start: datetime,
        bad_fix_rate: float = 0.01,
        sectors: int = 6,
        tick_s: float = 1.0,
        incidents_per_hour: float = INCIDENTS_PER_HOUR,
        external_dispatch: bool = False,
        dji_docks: int = 0,
        drone_docks: Sequence[tuple[float, float]] = (),
    ) -> None:
        """``dji_docks``: the first drones sit in that many DJI docks and speak the DJI Cloud API.

        ``drone_docks``: ``(lat, lon)`` of docks; drone *i* (in callsign order) takes off from and
        returns to the *i*-th (the others from a random point of the area).
        """
        if not 0.0 <= bad_fix_rate <= 1.0:
            raise ValueError(f"bad_fix_rate must be within 0..1, got {bad_fix_rate}")
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.mix = mix or FleetMix()
        self.start = start
        self.bad_fix_rate = bad_fix_rate
        self.tick_s = tick_s
        if incidents_per_hour < 0:
            raise ValueError(f"incidents_per_hour must be >= 0, got {incidents_per_hour}")
        self.incidents_per_hour = incidents_per_hour
        # External dispatch: incidents are reported (take_incidents) instead of dispatched here, and
        # units go where a real dispatcher sends them (dispatch_to) until it releases them.
        self.external_dispatch = external_dispatch
        self._new_incidents: list[SimIncident] = []
        self._cleared: list[str] = []
        self.rng = np.random.default_rng(seed)
        self.frame = LocalFrame.centred_on(area)
        self.area_xy: Area = self.frame.geometry_to_xy(area)  # type: ignore[assignment]
        shapely.prepare(self.area_xy)
        self.sectors = split_sectors(self.area_xy, sectors)
        self.t = 0.0
        if dji_docks < 0:
            raise ValueError(f"dji_docks must be >= 0, got {dji_docks}")
        self.dji_docks = dji_docks
        self._drone_docks = [tuple(map(float, self.frame.to_xy(lon, lat))) for lat, lon in drone_docks]
        self._build_units()

    # ----- construction -------------------------------------------------------------------

    def _build_units(self) -> None:
        rng = self.rng
        units: list[SimUnit] = []
        regions: list[Area] = []
        for kind, count in self.mix.counts():
            prefix, width = CALLSIGN_PREFIX[kind]
            caps = CAPABILITIES[kind]
            for i in range(1, count + 1):
                callsign = f"{prefix}-{i:0{width}d}"
                sector = self.sectors[(i - 1) % len(self.sectors)]
                source = Source.NATIVE
                external: dict[str, str] = {}
                dock: str | None = None
                if kind is UnitKind.FOOT and (i - 1) % 5 < round(OWNTRACKS_SHARE * 5):
                    source = Source.OWNTRACKS
                    user = callsign.lower().replace("-", "")
                    external = {Source.OWNTRACKS.value: f"owntracks/{user}/phone"}
                elif kind is UnitKind.DRONE and i <= self.dji_docks:
                    source = Source.DJI
                    external = {Source.DJI.value: DJI_AIRCRAFT_SERIAL.format(i)}
                    dock = DJI_DOCK_SERIAL.format(i)
                # Not every sereno carries a first-aid kit; vehicles and drones always carry theirs.
                keep = caps if kind is not UnitKind.FOOT or rng.random() < 0.5 else ()
                units.append(
                    SimUnit(
                        unit_id=callsign.lower(),
                        kind=kind,
                        callsign=callsign,
                        sector=sector.name,
                        capabilities=frozenset(keep),
                        source=source,
                        external_ids=external,
                        dock_id=dock,
                    )
                )
                regions.append(self.area_xy if PROFILES[kind].whole_area else sector.shape_xy)
        self.units = units
        self._regions = regions
        for region in regions:
            shapely.prepare(region)
        n = len(units)
        self._profiles = [PROFILES[u.kind] for u in units]
        self.pos = np.empty((n, 2))
        for i in range(n):
            self.pos[i] = random_points(regions[i], 1, rng)[0]
        drones = [i for i, u in enumerate(units) if u.kind is UnitKind.DRONE]
        for i, (x, y) in zip(drones, self._drone_docks, strict=False):
            self.pos[i] = (x, y)
        self.home = self.pos.copy()  # drones' docks; ground units' start points
        self.target = self.pos.copy()
        self.speed = np.zeros(n)
        self.heading = np.full(n, np.nan)
        self._legs: list[list[NDArray[np.float64]]] = [[] for _ in range(n)]
        self._returning = np.zeros(n, dtype=bool)
        self.height = np.array([rng.uniform(*p.height_agl_m) for p in self._profiles])
        self.is_drone = np.array([u.kind is UnitKind.DRONE for u in units], dtype=bool)
        self.airborne = self.is_drone.copy()
        self.drain = np.array([(p.battery_drain_pct_per_h or 0.0) / 3600.0 for p in self._profiles])
        self.has_battery = np.array([p.battery_drain_pct_per_h is not None for p in self._profiles])
        self.battery = np.where(self.has_battery, rng.uniform(60.0, 100.0, n), np.nan)
        # Some units start the shift standing still (briefing, a fixed post, a stop).
        self.dwell_until = np.where(rng.random(n) < 0.3, rng.uniform(0.0, 600.0, n), 0.0)
        self.fixed_post = np.array(
            [u.kind is UnitKind.FOOT and rng.random() < FIXED_POST_SHARE for u in units], dtype=bool
        )
        self.status = [UnitStatus.AVAILABLE] * n
        self.dispatchable = np.array([u.kind in DISPATCHABLE for u in units], dtype=bool) & ~self.fixed_post
        self._incident: list[NDArray[np.float64] | None] = [None] * n
        self._external = np.zeros(n, dtype=bool)  # on a job given by the external dispatcher
        self._index = {u.unit_id: i for i, u in enumerate(units)}
        self._scheduled: list[tuple[float, int, UnitStatus]] = []  # heap of (time, unit, status)
        self._status_events: list[SimStatus] = []
        self.interval = np.array([p.report_interval_s for p in self._profiles])
        # First reports spread over one interval so the fleet does not report in lock-step.
        self.next_report = rng.uniform(0.0, 1.0, n) * self.interval
        for i in range(n):
            if not self.fixed_post[i]:
                self._plan_leg(i)

    # ----- movement ---------------------------------------------------------------------------

    def _route(
        self, i: int, goal: NDArray[np.float64], manhattan: bool, region: Area | None = None
    ) -> list[NDArray[np.float64]] | None:
        """A path from unit ``i``'s position to ``goal`` inside ``region`` (default: its own), or None."""
        here = self.pos[i].copy()
        if region is None:
            region = self._regions[i]
        if not manhattan:
            return [goal] if region.covers(LineString([here, goal])) else None
        corners = [np.array([goal[0], here[1]]), np.array([here[0], goal[1]])]
        if self.rng.random() < 0.5:
            corners.reverse()
        for corner in corners:
            if region.covers(LineString([here, corner, goal])):
                return [corner, goal]
        return None

    def _plan_leg(self, i: int) -> None:
        """Choose the next waypoint and the path to it (inside the unit's region)."""
        profile = self._profiles[i]
        path: list[NDArray[np.float64]] | None = None
        if self._returning[i]:
            home = self.home[i].copy()
            # A drone flies home straight unless a concave edge of the area is in the way.
            path = self._route(i, home, False) or self._route(i, home, True) or [home]
        else:
            # Back from an incident outside its sector, a unit drives home through the whole area.
            inside = self._regions[i].covers(Point(float(self.pos[i, 0]), float(self.pos[i, 1])))
            via = None if inside else self.area_xy
            for _ in range(12):
                goal = random_points(self._regions[i], 1, self.rng)[0]
                path = self._route(i, goal, profile.manhattan, via)
                if path is not None:
                    break
        if path is None:
            # A concave corner boxed us in: wait a little and try again from the same place.
            self.dwell_until[i] = self.t + 30.0
            self.target[i] = self.pos[i]
            self._legs[i] = []
            return
        self.target[i] = path[0]
        self._legs[i] = path[1:]
        self.speed[i] = self.rng.uniform(*profile.speed_mps)

    def _arrive(self, i: int) -> None:
        """Reached a corner or a waypoint: continue, stop a while, swap a battery, or replan."""
        if self._legs[i]:
            self.target[i] = self._legs[i].pop(0)
            return
        profile = self._profiles[i]
        self.speed[i] = 0.0
        if self._returning[i]:
            # On the dock: land, swap the battery, take off again.
            self._returning[i] = False
            self.airborne[i] = False
            self.dwell_until[i] = self.t + DRONE_SWAP_S
            self.battery[i] = 100.0
            return
        if self._incident[i] is not None:
            on_scene = self.rng.uniform(*ON_SCENE_S)
            self._set_status(i, UnitStatus.ON_SCENE)
            self.dwell_until[i] = self.t + on_scene
            heapq.heappush(self._scheduled, (self.t + on_scene, i, UnitStatus.AVAILABLE))
            return
        if self.rng.random() < profile.dwell_probability:
            self.dwell_until[i] = self.t + self.rng.uniform(*profile.dwell_s)
            return
        self._plan_leg(i)

    def _step(self, dt: float) -> None:
        """Move every unit ``dt`` seconds along its path (vectorised over the fleet)."""
        now = self.t
        resting = (self.dwell_until > now) | self.fixed_post
        # A unit whose stop just ended and that has no leg in hand plans one now.
        idle = np.flatnonzero(~resting & (self.speed == 0.0))
        for i in idle:
            if self.is_drone[i]:
                self.airborne[i] = True
            self._plan_leg(int(i))
        resting = (self.dwell_until > now) | self.fixed_post
        delta = self.target - self.pos
        dist = np.hypot(delta[:, 0], delta[:, 1])
        reach = self.speed * dt
        moving = ~resting & (self.speed > 0.0)
        arrive = moving & (dist <= reach)
        going = moving & ~arrive
        with np.errstate(invalid="ignore", divide="ignore"):
            unit_vec = delta / dist[:, None]
        self.pos[going] += unit_vec[going] * reach[going, None]
        heading = np.degrees(np.arctan2(delta[:, 0], delta[:, 1])) % 360.0
        self.heading[moving & (dist > 0)] = heading[moving & (dist > 0)]
        self.pos[arrive] = self.target[arrive]
        # A drone drains its battery while flying; phones drain all the time.
        draining = self.has_battery & (self.airborne | ~self.is_drone)
        self.battery[draining] = np.maximum(self.battery[draining] - self.drain[draining] * dt, 0.0)
        self.t = now + dt
        for i in np.flatnonzero(arrive):
            self._arrive(int(i))
        self._dispatch_step(dt)
        low = self.is_drone & self.airborne & ~self._returning & (self.battery < DRONE_RETURN_AT_PCT)
        for i in np.flatnonzero(low):
            self._returning[i] = True
            self.dwell_until[i] = 0.0
            self._plan_leg(int(i))
        # Phones get charged at the base when nearly empty (a sereno swaps to a charged phone).
        flat = self.has_battery & ~self.is_drone & (self.battery < 10.0)
        self.battery[flat] = 100.0

    def _set_status(self, i: int, status: UnitStatus) -> None:
        """Change unit ``i``'s status now and record the event."""
        self.status[i] = status
        incident = self._incident[i] if self._incident[i] is not None else self.pos[i]
        assert incident is not None
        ilon, ilat = self.frame.to_lonlat(incident[0], incident[1])
        ulon, ulat = self.frame.to_lonlat(self.pos[i, 0], self.pos[i, 1])
        self._status_events.append(
            SimStatus(self.units[i], status, self.now(), float(ilat), float(ilon), float(ulat), float(ulon))
        )
        if status is UnitStatus.AVAILABLE:
            self._incident[i] = None

    def _dispatch(self) -> None:
        """An incident somewhere in the area: send the nearest available vehicle (or a sereno close by).

        With ``external_dispatch`` the incident is only reported (see :meth:`take_incidents`).
        """
        spot = random_points(self.area_xy, 1, self.rng)[0]
        if self.external_dispatch:
            lon, lat = self.frame.to_lonlat(spot[0], spot[1])
            self._new_incidents.append(SimIncident(self.now(), float(lat), float(lon)))
            return
        free = self.dispatchable & np.array([s is UnitStatus.AVAILABLE for s in self.status], dtype=bool)
        if not free.any():
            return  # everybody is busy: the incident waits in the queue (not modelled)
        dist = np.hypot(self.pos[:, 0] - spot[0], self.pos[:, 1] - spot[1])
        is_foot = np.array([u.kind is UnitKind.FOOT for u in self.units], dtype=bool)
        eligible = free & (~is_foot | (dist <= FOOT_DISPATCH_RADIUS_M))
        if not eligible.any():
            return
        i = int(np.flatnonzero(eligible)[np.argmin(dist[eligible])])
        self._set_status(i, UnitStatus.DISPATCHED)
        self._send(i, spot)

    def _send(self, i: int, spot: NDArray[np.float64]) -> None:
        """Route unit ``i`` to ``spot`` at urgent speed; it sets off (en route) after acknowledging."""
        profile = self._profiles[i]
        self._incident[i] = spot
        path = self._route(i, spot, profile.manhattan, self.area_xy) or [spot]
        self._legs[i] = path[1:]
        self.target[i] = path[0]
        self._returning[i] = False
        if self.is_drone[i]:
            self.airborne[i] = True
        # Urgent: the top third of the kind's speed range.
        lo, hi = profile.speed_mps
        self.speed[i] = self.rng.uniform(hi - (hi - lo) / 3, hi)
        ack = self.rng.uniform(*ACK_DELAY_S)
        self.dwell_until[i] = self.t + ack  # acknowledging: still standing, already routed
        heapq.heappush(self._scheduled, (self.t + ack, i, UnitStatus.EN_ROUTE))

    def dispatch_to(self, unit_id: str, lat: float, lon: float) -> bool:
        """An external dispatcher sent ``unit_id`` to (lat, lon); False for an unknown or busy unit.

        The dispatcher has already set the unit ``dispatched``; the unit reports
        ``en_route`` when it sets off and ``on_scene`` when it gets there, then
        stays until :meth:`release` (its time on scene over, it is listed by
        :meth:`take_cleared`).
        """
        i = self._index.get(unit_id)
        if i is None or self._incident[i] is not None:
            return False
        x, y = self.frame.to_xy(lon, lat)
        self.fixed_post[i] = False  # a sereno at a fixed post leaves it when sent
        self.status[i] = UnitStatus.DISPATCHED
        self._external[i] = True
        self._send(i, np.array([float(x), float(y)]))
        return True

    def release(self, unit_id: str) -> None:
        """The external dispatcher freed ``unit_id`` (incident closed, or unit released): back to patrol."""
        i = self._index.get(unit_id)
        if i is None or not self._external[i]:
            return
        self._external[i] = False
        self._incident[i] = None
        self.status[i] = UnitStatus.AVAILABLE
        # Drop its pending status changes (en route, available) of the job it no longer has.
        self._scheduled = [e for e in self._scheduled if e[1] != i]
        heapq.heapify(self._scheduled)
        self.dwell_until[i] = self.t
        self.speed[i] = 0.0  # plans a new patrol leg on the next step

    def take_incidents(self) -> list[SimIncident]:
        """Incidents reported since the last call (``external_dispatch`` only), in time order."""
        out, self._new_incidents = self._new_incidents, []
        return out

    def take_cleared(self) -> list[str]:
        """Externally dispatched units whose time on scene is over since the last call."""
        out, self._cleared = self._cleared, []
        return out

    def _dispatch_step(self, dt: float) -> None:
        """New incidents (Poisson) and the status changes that fall due."""
        if self.incidents_per_hour > 0:
            for _ in range(self.rng.poisson(self.incidents_per_hour * dt / 3600.0)):
                self._dispatch()
        while self._scheduled and self._scheduled[0][0] <= self.t:
            _, i, status = heapq.heappop(self._scheduled)
            if status is UnitStatus.AVAILABLE and self._external[i]:
                # Freed by the dispatcher, not by itself: wait on scene for release().
                self._cleared.append(self.units[i].unit_id)
                self.dwell_until[i] = math.inf
                continue
            self._set_status(i, status)

    def take_status_events(self) -> list[SimStatus]:
        """The status changes since the last call, in time order."""
        events, self._status_events = self._status_events, []
        return events

    def current_speed(self) -> NDArray[np.float64]:
        """True ground speed of every unit right now (m/s; 0 when stopped)."""
        resting = (self.dwell_until > self.t) | self.fixed_post
        return np.where(resting, 0.0, self.speed)

    # ----- reporting --------------------------------------------------------------------------

    def now(self) -> datetime:
        """The simulation clock as a UTC datetime."""
        return self.start + timedelta(seconds=self.t)

    def advance_to(self, until: datetime) -> list[SimFix]:
        """Run the fleet forward to ``until`` and return the fixes reported on the way, in time order."""
        horizon = (until - self.start).total_seconds()
        fixes: list[SimFix] = []
        while self.t < horizon - 1e-9:
            dt = min(self.tick_s, horizon - self.t)
            self._step(dt)
            due = np.flatnonzero(self.next_report <= self.t)
            if due.size:
                fixes.extend(self._report(due))
                # ±5 % jitter: real devices' timers drift.
                self.next_report[due] += self.interval[due] * self.rng.uniform(0.95, 1.05, due.size)
        return fixes

    def _report(self, idx: NDArray[np.intp]) -> list[SimFix]:
        """Build the fixes of units ``idx`` at the current time (noise drawn for all at once)."""
        rng = self.rng
        n = idx.size
        medians = np.array([self._profiles[i].accuracy_median_m for i in idx])
        accuracy = np.clip(medians * np.exp(rng.normal(0.0, 0.35, n)), 1.0, 50.0)
        noise = rng.normal(0.0, 1.0, (n, 2)) * (accuracy / ACCURACY_SIGMAS)[:, None]
        true_xy = self.pos[idx]
        seen_xy = true_xy + noise
        true_lon, true_lat = self.frame.to_lonlat(true_xy[:, 0], true_xy[:, 1])
        lon, lat = self.frame.to_lonlat(seen_xy[:, 0], seen_xy[:, 1])
        true_speed = self.current_speed()[idx]
        speed = np.maximum(true_speed + rng.normal(0.0, 0.3, n), 0.0)
        alt = GROUND_ALT_M + np.where(self.airborne[idx], self.height[idx], 1.5) + rng.normal(0.0, 3.0, n)
        is_bad = rng.random(n) < self.bad_fix_rate
        bad_kind = rng.integers(0, len(BadFix), n)
        spike_dist = rng.uniform(300.0, 1500.0, n)
        spike_bearing = rng.uniform(0.0, 2 * math.pi, n)
        bad_battery = np.where(rng.random(n) < 0.5, rng.uniform(101.0, 255.0, n), rng.uniform(-50.0, -1.0, n))
        ts = self.now()
        kinds = list(BadFix)
        home_lon, home_lat = self.frame.to_lonlat(self.home[idx, 0], self.home[idx, 1])
        fixes = []
        for j, i in enumerate(idx):
            unit = self.units[i]
            bad = kinds[bad_kind[j]] if is_bad[j] else None
            fix_lat, fix_lon = float(lat[j]), float(lon[j])
            battery = None if np.isnan(self.battery[i]) else round(float(self.battery[i]), 1)
            stamp: datetime | None = ts
            if bad is BadFix.SPIKE:
                sx = seen_xy[j, 0] + spike_dist[j] * math.sin(spike_bearing[j])
                sy = seen_xy[j, 1] + spike_dist[j] * math.cos(spike_bearing[j])
                slon, slat = self.frame.to_lonlat(sx, sy)
                fix_lon, fix_lat = float(slon), float(slat)
            elif bad is BadFix.NULL_ISLAND:
                fix_lat = fix_lon = 0.0
            elif bad is BadFix.NO_TIMESTAMP:
                stamp = None
            elif bad is BadFix.BAD_BATTERY:
                battery = round(float(bad_battery[j]), 1)
            moving = true_speed[j] > 0.0 and not np.isnan(self.heading[i])
            drone = bool(self.is_drone[i])
            fixes.append(
                SimFix(
                    unit=unit,
                    ts=stamp,
                    lat=fix_lat,
                    lon=fix_lon,
                    alt=round(float(alt[j]), 1),
                    speed=round(float(speed[j]), 2),
                    heading=round(float(self.heading[i]), 1) if moving else None,
                    accuracy=round(float(accuracy[j]), 1),
                    battery=battery,
                    bad=bad,
                    true_ts=ts,
                    true_lat=float(true_lat[j]),
                    true_lon=float(true_lon[j]),
                    true_speed=float(true_speed[j]),
                    airborne=bool(self.airborne[i]) if drone else None,
                    returning=bool(self._returning[i]) if drone else None,
                    agl=(round(float(self.height[i]), 1) if self.airborne[i] else 0.0) if drone else None,
                    home_lat=float(home_lat[j]) if drone else None,
                    home_lon=float(home_lon[j]) if drone else None,
                )
            )
        return fixes

    def home_of(self, unit_id: str) -> tuple[float, float]:
        """``(lat, lon)`` of a unit's home: a drone's dock, a ground unit's starting point."""
        i = self._index[unit_id]
        lon, lat = self.frame.to_lonlat(self.home[i, 0], self.home[i, 1])
        return float(lat), float(lon)

    def contains_lonlat(self, lon: float, lat: float) -> bool:
        """True when ``(lon, lat)`` lies inside (or on) the simulated area."""
        x, y = self.frame.to_xy(lon, lat)
        return bool(self.area_xy.covers(Point(float(x), float(y))))
