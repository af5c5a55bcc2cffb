"""Sortie planning: tours from a dock over target points, within endurance, around restricted airspace.

Given a dock and its aircraft (:mod:`geo.docks`), target points (gap cells'
centres, the cell centres inside a polygon, or points), a cruise altitude, a
time to observe each target and the avoidance polygons at that altitude
(restricted airspace, lon/lat), :func:`plan_sorties` returns one or more
sorties, each an ordered list of waypoints from the dock back to it, and the
targets it could not plan with the reason.

Model (the same as the dock coverage of :mod:`geo.docks`):

- flight time of a sortie ``= 2 × takeoff_s + length / cruise_mps + loiter_s × targets``
  (``takeoff_s`` pays the lid, take-off and climb; the same again for descent and
  precision landing); it must not exceed the budget
  ``usable_s × charge × (1 − reserve)`` (:meth:`geo.docks.Dock.energy_s`);
- battery used is reported as a share of a full charge's usable flight
  (``flight_s / usable_s``), so a sortie at the budget with a full charge uses
  ``1 − reserve`` (75 % by default).

Routing: distances are measured in a local metric frame about the dock
(:class:`geo.local_frame.LocalFrame`; under 0.2 % error across a city). The
avoidance polygons are unioned and grown by ``clearance_m``; a leg whose
straight line stays out of them is flown straight, any other follows the
shortest path on the visibility graph over the grown polygons' convex corners
(shortest paths around polygons bend only there), so no leg crosses a zone. A
target inside a grown zone, or walled in by zones, is reported unreachable;
so is one beyond the dock's operating radius or too far for a round trip on
one battery.

Tours (route first, cluster second): giant tours over all reachable targets
by nearest neighbour (ten starts on small instances, one on large) improved
by 2-opt and Or-opt on the routed distance matrix; an exact split of each
into sorties by dynamic programming (Beasley 1983: the cheapest cut of a fixed
order into consecutive trips that each fit the battery), tried from every
point of the cycle (up to 400) and both ways round; then 2-opt and Or-opt inside each
sortie and relocations of single targets between sorties (cheapest insertion,
within budget) until the total flight time stops falling. Measured against
exact optima (Held–Karp, and an exact set partition for several sorties) in
the tests and ``benchmarks/bench_sorties.py``.

Pure: geometries and numbers in, plans and export documents (dicts, KML text) out.
"""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import h3
import numba
import numpy as np
import shapely
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from shapely.geometry import MultiPolygon, Polygon, mapping
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from geo.docks import DEFAULT_TAKEOFF_S, Dock
from geo.local_frame import LocalFrame

DEFAULT_LOITER_S = 20.0  # seconds over each target: a look with the zoom camera
DEFAULT_ALTITUDE_M = 100.0  # above take-off: clear of Miraflores' roofs, under the 120 m limit
DEFAULT_ALTITUDE_LIMIT_M = 120.0
DEFAULT_CLEARANCE_M = 10.0  # kept between a leg and a zone: GPS error and wind drift of a dock aircraft
DEFAULT_MAX_TARGETS = 3000  # the distance matrix is n² float64: 72 MB at this size
_SHRINK_M = 0.01  # legs may run along a grown zone's edge: test crossings against it shrunk by 1 cm
_MULTI_START_MAX = 60  # more nearest-neighbour starts below this many targets (cheap there)

Role = Literal["dock", "target", "via"]
Reason = Literal[
    "inside_restricted_airspace", "no_route_around_restricted_airspace", "beyond_operating_radius",
    "too_far_for_one_battery",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Target:
    """A point to observe: an id (an H3 cell in hex, or the caller's), latitude and longitude."""

    id: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Waypoint:
    """A point of a sortie: the dock, a target (observed for ``loiter_s``), or a via around a zone."""

    lat: float
    lon: float
    role: Role
    target_id: str | None = None
    loiter_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Sortie:
    """One flight from the dock and back: its waypoints, length, time, battery and the targets seen."""

    waypoints: tuple[Waypoint, ...]
    distance_m: float
    flight_s: float
    battery_pct: float  # of a full charge's usable flight time
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unreachable:
    """A target no sortie can visit, and why."""

    target: Target
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class SortiePlan:
    """Sorties from one dock over the requested targets, with the ones left out and why."""

    dock: Dock
    altitude_m: float
    loiter_s: float
    takeoff_s: float
    reserve: float
    budget_s: float  # flight time a sortie may take: usable × charge × (1 − reserve)
    clearance_m: float
    sorties: tuple[Sortie, ...]
    unreachable: tuple[Unreachable, ...]

    @property
    def total_distance_m(self) -> float:
        """Length of all sorties (m)."""
        return float(sum(s.distance_m for s in self.sorties))

    @property
    def total_flight_s(self) -> float:
        """Flight time of all sorties (s)."""
        return float(sum(s.flight_s for s in self.sorties))

    def to_json(self) -> dict[str, Any]:
        """The plan as the API's JSON: dock, model, sorties with waypoints, unreachable targets, totals."""
        d, p = self.dock, self.dock.profile
        return {
            "dock": {"id": d.dock_id, "name": d.name, "lat": d.lat, "lon": d.lon, "profile": d.profile_key},
            "aircraft": {
                "name": p.name,
                "cruise_mps": p.cruise_mps,
                "max_flight_s": p.max_flight_s,
                "derating": p.derating,
                "usable_flight_s": round(p.usable_s, 1),
                "reserve": self.reserve,
                "battery_pct": d.battery_pct,
            },
            "altitude_m": self.altitude_m,
            "loiter_s": self.loiter_s,
            "takeoff_s": self.takeoff_s,
            "clearance_m": self.clearance_m,
            "budget_s": round(self.budget_s, 1),
            "model": (
                "flight_s = 2 * takeoff_s + distance_m / cruise_mps + loiter_s * targets <= budget_s = "
                "max_flight_s * derating * battery_pct / 100 * (1 - reserve); battery_pct_used = "
                "flight_s / (max_flight_s * derating); legs avoid the restricted zones grown by clearance_m"
            ),
            "sorties": [
                {
                    "sortie": i + 1,
                    "distance_m": round(s.distance_m, 1),
                    "flight_s": round(s.flight_s, 1),
                    "battery_pct": round(s.battery_pct, 1),
                    "targets": list(s.targets),
                    "waypoints": [_waypoint_json(w) for w in s.waypoints],
                }
                for i, s in enumerate(self.sorties)
            ],
            "unreachable": [
                {
                    "id": u.target.id,
                    "lat": u.target.lat,
                    "lon": u.target.lon,
                    "reason": u.reason,
                    "detail": u.detail,
                }
                for u in self.unreachable
            ],
            "totals": {
                "sorties": len(self.sorties),
                "targets_covered": sum(len(s.targets) for s in self.sorties),
                "targets_unreachable": len(self.unreachable),
                "distance_m": round(self.total_distance_m, 1),
                "flight_s": round(self.total_flight_s, 1),
            },
        }

    def to_geojson(self) -> dict[str, Any]:
        """GeoJSON FeatureCollection: the dock, a route per sortie, its waypoints, the unreachable targets."""
        d = self.dock
        features: list[dict[str, Any]] = [
            _feature({"type": "Point", "coordinates": [d.lon, d.lat]},
                     {"kind": "dock", "id": d.dock_id, "name": d.name})
        ]  # fmt: skip
        for i, s in enumerate(self.sorties):
            coords = [[w.lon, w.lat] for w in s.waypoints]
            props = {
                "kind": "sortie", "sortie": i + 1, "distance_m": round(s.distance_m, 1),
                "flight_s": round(s.flight_s, 1), "battery_pct": round(s.battery_pct, 1),
                "altitude_m": self.altitude_m, "targets": len(s.targets), "target_ids": list(s.targets),
            }  # fmt: skip
            features.append(_feature({"type": "LineString", "coordinates": coords}, props))
            for seq, w in enumerate(s.waypoints):
                features.append(
                    _feature({"type": "Point", "coordinates": [w.lon, w.lat]},
                             {"kind": "waypoint", "sortie": i + 1, "seq": seq, **_waypoint_json(w)})
                )  # fmt: skip
        for u in self.unreachable:
            props = {"kind": "unreachable", "target": u.target.id, "reason": u.reason, "detail": u.detail}
            features.append(_feature({"type": "Point", "coordinates": [u.target.lon, u.target.lat]}, props))
        return {"type": "FeatureCollection", "features": features}

    def to_qgc_plan(self, index: int) -> dict[str, Any]:
        """Sortie ``index`` (0-based) as a QGroundControl ``.plan`` (JSON) mission.

        Take-off at the dock, a waypoint per point of the route at ``altitude_m``
        above home (MAV_FRAME_GLOBAL_RELATIVE_ALT) holding ``loiter_s`` over each
        target, back over the dock along the planned legs, then land there. It
        ends with a LAND at the dock, not an RTL: RTL flies straight home and
        could cross a zone the planned return goes around.
        """
        s = self.sorties[index]
        d = self.dock
        alt = self.altitude_m
        items = [_qgc_item(1, _MAV_CMD_NAV_TAKEOFF, [0, 0, 0, None, d.lat, d.lon, alt], alt)]
        for w in s.waypoints[1:]:
            items.append(_qgc_item(len(items) + 1, _MAV_CMD_NAV_WAYPOINT,
                                   [w.loiter_s, 0, 0, None, w.lat, w.lon, alt], alt))  # fmt: skip
        items.append(_qgc_item(len(items) + 1, _MAV_CMD_NAV_LAND, [0, 0, 0, None, d.lat, d.lon, 0], 0.0))
        return {
            "fileType": "Plan",
            "version": 1,
            "groundStation": "QGroundControl",
            "mission": {
                "version": 2,
                "firmwareType": _MAV_AUTOPILOT_PX4,
                "vehicleType": _MAV_TYPE_QUADROTOR,
                "cruiseSpeed": d.profile.cruise_mps,
                "hoverSpeed": 5,
                "globalPlanAltitudeMode": 1,  # relative to home
                "plannedHomePosition": [d.lat, d.lon, 0],  # the dock's AMSL altitude is not known here
                "items": items,
            },
            "geoFence": {"circles": [], "polygons": [], "version": 2},
            "rallyPoints": {"points": [], "version": 2},
        }

    def to_kml(self, indices: Sequence[int] | None = None) -> str:
        """The sorties (all, or ``indices``) as KML 2.2: a Folder per sortie, its route and its waypoints.

        A route outline for DJI Pilot 2 / FlightHub 2 import: a LineString at
        ``altitude_m`` relative to the ground plus a Placemark per waypoint (the
        loiter time in its description and ExtendedData). It carries no WPML
        actions (hover, gimbal, speed): the pilot sets them after import.
        """
        chosen = range(len(self.sorties)) if indices is None else indices
        kml = ET.Element("kml", xmlns="http://www.opengis.net/kml/2.2")
        doc = ET.SubElement(kml, "Document")
        ET.SubElement(doc, "name").text = f"serenazgo sorties from {self.dock.name}"
        for i in chosen:
            s = self.sorties[i]
            folder = ET.SubElement(doc, "Folder")
            ET.SubElement(folder, "name").text = f"Sortie {i + 1}"
            ET.SubElement(folder, "description").text = (
                f"{s.distance_m:.0f} m, {s.flight_s:.0f} s, {s.battery_pct:.0f} % battery, "
                f"{len(s.targets)} targets, {self.altitude_m:g} m above take-off"
            )
            route = ET.SubElement(folder, "Placemark")
            ET.SubElement(route, "name").text = f"Sortie {i + 1} route"
            line = ET.SubElement(route, "LineString")
            ET.SubElement(line, "altitudeMode").text = "relativeToGround"
            ET.SubElement(line, "coordinates").text = " ".join(
                f"{w.lon:.7f},{w.lat:.7f},{self.altitude_m:g}" for w in s.waypoints
            )
            for seq, w in enumerate(s.waypoints):
                pm = ET.SubElement(folder, "Placemark")
                ET.SubElement(pm, "name").text = f"{i + 1}.{seq} {w.target_id or w.role}"
                ET.SubElement(pm, "description").text = f"{w.role}, hover {w.loiter_s:g} s"
                ext = ET.SubElement(pm, "ExtendedData")
                for key, value in (("role", w.role), ("loiter_s", f"{w.loiter_s:g}"), ("seq", str(seq))):
                    data = ET.SubElement(ext, "Data", name=key)
                    ET.SubElement(data, "value").text = value
                pt = ET.SubElement(pm, "Point")
                ET.SubElement(pt, "altitudeMode").text = "relativeToGround"
                ET.SubElement(pt, "coordinates").text = f"{w.lon:.7f},{w.lat:.7f},{self.altitude_m:g}"
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(kml, encoding="unicode")


# MAVLink enums used by the .plan export (common.xml).
_MAV_CMD_NAV_WAYPOINT = 16
_MAV_CMD_NAV_LAND = 21
_MAV_CMD_NAV_TAKEOFF = 22
_MAV_FRAME_GLOBAL_RELATIVE_ALT = 3
_MAV_AUTOPILOT_PX4 = 12
_MAV_TYPE_QUADROTOR = 2


def _qgc_item(seq: int, command: int, params: list[float | None], alt: float) -> dict[str, Any]:
    """A QGC SimpleItem; ``params``: MAV_CMD's 7 (lat, lon, altitude last); a null yaw keeps the heading."""
    return {
        "type": "SimpleItem",
        "autoContinue": True,
        "command": command,
        "doJumpId": seq,
        "frame": _MAV_FRAME_GLOBAL_RELATIVE_ALT,
        "params": params,
        "Altitude": alt,
        "AltitudeMode": 1,
        "AMSLAltAboveTerrain": None,
    }


def _waypoint_json(w: Waypoint) -> dict[str, Any]:
    return {"lat": w.lat, "lon": w.lon, "role": w.role, "target": w.target_id, "loiter_s": w.loiter_s}


def _feature(geometry: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": props}


# ---------------------------------------------------------------------------------------------
# Targets from cells and polygons


def targets_from_cells(cells: Sequence[int] | NDArray[np.uint64]) -> list[Target]:
    """Targets at the centres of H3 cells (ids as integers), each named by its hex id."""
    out = []
    for c in cells:
        hexid = format(int(c), "x")
        lat, lon = h3.cell_to_latlng(hexid)
        out.append(Target(hexid, lat, lon))
    return out


def targets_in_polygon(area: BaseGeometry, res: int) -> list[Target]:
    """Targets at the centres of the H3 cells at ``res`` whose centre lies in ``area`` (lon/lat polygons).

    A polygon smaller than a cell that holds no centre gets one target at its
    representative point, so a small area is never silently dropped.
    """
    if not 0 <= res <= 15:
        raise ValueError(f"resolution must be an H3 resolution 0..15, got {res}")
    polys = [g for g in shapely.get_parts(area) if isinstance(g, Polygon) and not g.is_empty]
    if not polys:
        raise ValueError("the target area holds no polygon: give a Polygon or MultiPolygon (lon/lat)")
    cells: set[str] = set()
    for p in polys:
        cells.update(h3.geo_to_cells(mapping(p), res))
    if not cells:
        rp = polys[0].representative_point()
        return [Target("area", float(rp.y), float(rp.x))]
    return [Target(c, *h3.cell_to_latlng(c)) for c in sorted(cells)]


# ---------------------------------------------------------------------------------------------
# Routing around zones


@numba.njit(cache=True)
def _min_plus(
    a: NDArray[np.float64], d: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """``m[p, b] = min_a a[p, a] + d[a, b]`` and the argmin: the best way from point p to corner b."""
    n, v = a.shape
    m = np.full((n, v), np.inf)
    arg = np.full((n, v), -1, dtype=np.int64)
    for p in range(n):
        for k in range(v):
            apk = a[p, k]
            if apk == np.inf:
                continue
            for b in range(v):
                c = apk + d[k, b]
                if c < m[p, b]:
                    m[p, b] = c
                    arg[p, b] = k
    return m, arg


@numba.njit(cache=True)
def _detours(
    m: NDArray[np.float64], a: NDArray[np.float64], pi: NDArray[np.int64], qi: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """For each blocked pair (p, q): ``min_b m[p, b] + a[q, b]`` and the last corner b."""
    out = np.full(pi.shape[0], np.inf)
    last = np.full(pi.shape[0], -1, dtype=np.int64)
    for k in range(pi.shape[0]):
        p, q = pi[k], qi[k]
        for b in range(m.shape[1]):
            c = m[p, b] + a[q, b]
            if c < out[k]:
                out[k] = c
                last[k] = b
    return out, last


@numba.njit(cache=True, inline="always")
def _crosses(
    px: float, py: float, qx: float, qy: float, ex: NDArray[np.float64], ey: NDArray[np.float64],
    fx: NDArray[np.float64], fy: NDArray[np.float64], bb: NDArray[np.float64], ptr: NDArray[np.int64],
) -> bool:  # fmt: skip
    """Whether segment p→q meets an edge (ex, ey)→(fx, fy) of the zones; touching counts (conservative)."""
    minx, maxx, miny, maxy = min(px, qx), max(px, qx), min(py, qy), max(py, qy)
    for k in range(bb.shape[0]):
        if maxx < bb[k, 0] or minx > bb[k, 2] or maxy < bb[k, 1] or miny > bb[k, 3]:
            continue
        for e in range(ptr[k], ptr[k + 1]):
            ax, ay, bx, by = ex[e], ey[e], fx[e], fy[e]
            if max(ax, bx) < minx or min(ax, bx) > maxx or max(ay, by) < miny or min(ay, by) > maxy:
                continue
            d1 = (qx - px) * (ay - py) - (qy - py) * (ax - px)
            d2 = (qx - px) * (by - py) - (qy - py) * (bx - px)
            if (d1 > 0 and d2 > 0) or (d1 < 0 and d2 < 0):
                continue
            d3 = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
            d4 = (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)
            if (d3 > 0 and d4 > 0) or (d3 < 0 and d4 < 0):
                continue
            return True
    return False


@numba.njit(cache=True)
def _blocked(
    a: NDArray[np.float64], b: NDArray[np.float64], ex: NDArray[np.float64], ey: NDArray[np.float64],
    fx: NDArray[np.float64], fy: NDArray[np.float64], bb: NDArray[np.float64], ptr: NDArray[np.int64],
    same: bool,
) -> NDArray[np.bool_]:  # fmt: skip
    """Per pair (row of ``a``, row of ``b``): the segment meets a zone (``same``: a is b, symmetric)."""
    na, nb = a.shape[0], b.shape[0]
    out = np.zeros((na, nb), dtype=np.bool_)
    for i in range(na):
        for j in range(i + 1 if same else 0, nb):
            hit = _crosses(a[i, 0], a[i, 1], b[j, 0], b[j, 1], ex, ey, fx, fy, bb, ptr)
            out[i, j] = hit
            if same:
                out[j, i] = hit
    return out


class _Router:
    """Shortest legs between points in the local frame, around the grown zones.

    A segment between two points outside the zones meets a zone only by
    crossing (or touching) one of its edges, so visibility is an edge test
    (numba, with a bounding-box reject per zone and per edge) against the grown
    zones shrunk by 1 cm: legs may run along a grown zone's edge and round its corners.
    """

    def __init__(self, frame: LocalFrame, avoid: Sequence[BaseGeometry], clearance_m: float) -> None:
        self.frame = frame
        polys = [frame.geometry_to_xy(g) for g in avoid if not g.is_empty]
        self.blocked: BaseGeometry | None = None
        self.corners = np.zeros((0, 2))
        self._first = np.zeros((0, 0), dtype=np.int64)
        self._last = np.zeros((0, 0), dtype=np.int32)
        self._pred = np.zeros((0, 0), dtype=np.int32)
        if not polys:
            return
        merged = shapely.union_all(polys)
        # Mitred corners keep the vertex count of the zones (round joins would add a dozen per corner).
        region = merged.buffer(clearance_m, join_style="mitre") if clearance_m > 0 else merged
        region = shapely.make_valid(region)
        parts = [g for g in shapely.get_parts(region) if isinstance(g, Polygon) and not g.is_empty]
        if not parts:
            return
        self.blocked = MultiPolygon(parts).buffer(-_SHRINK_M, join_style="mitre")
        shapely.prepare(self.blocked)
        self.corners = _convex_corners(parts)
        self._edges = _edges([g for g in shapely.get_parts(self.blocked) if isinstance(g, Polygon)])

    def inside(self, xy: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Per point: strictly inside a grown zone."""
        if self.blocked is None:
            return np.zeros(xy.shape[0], dtype=bool)
        out: NDArray[np.bool_] = shapely.contains_xy(self.blocked, xy[:, 0], xy[:, 1])
        return out

    def _hits(self, a: NDArray[np.float64], b: NDArray[np.float64], same: bool) -> NDArray[np.bool_]:
        out: NDArray[np.bool_] = _blocked(
            np.ascontiguousarray(a), np.ascontiguousarray(b), *self._edges, same
        )
        return out

    def matrix(self, xy: NDArray[np.float64]) -> NDArray[np.float64]:
        """Routed distances between all points (inf when walled in); :meth:`leg` gives a detour's corners."""
        n = xy.shape[0]
        diff = xy[:, None, :] - xy[None, :, :]
        dist: NDArray[np.float64] = np.sqrt((diff**2).sum(axis=2))
        self._last = np.full((n, n), -1, dtype=np.int32)
        if self.blocked is None:
            return dist
        bi, bj = np.nonzero(np.triu(self._hits(xy, xy, True), 1))
        if bi.shape[0] == 0:
            return dist
        c = self.corners
        v = c.shape[0]
        if v == 0:  # no corner to go round (cannot happen with real polygons): blocked pairs stay blocked
            dist[bi, bj] = dist[bj, bi] = np.inf
            return dist
        # Corner-to-corner graph, then every point's view of the corners.
        ci, cj = np.nonzero(np.triu(~self._hits(c, c, True), 1))
        w = np.hypot(c[ci, 0] - c[cj, 0], c[ci, 1] - c[cj, 1])
        graph = coo_matrix((w, (ci, cj)), shape=(v, v)).tocsr()
        cd, pred = dijkstra(graph, directed=False, return_predecessors=True)
        pvis = ~self._hits(xy, c, False)
        a = np.where(pvis, np.hypot(xy[:, None, 0] - c[None, :, 0], xy[:, None, 1] - c[None, :, 1]), np.inf)
        m, self._first = _min_plus(a, np.ascontiguousarray(cd))
        detour, last = _detours(m, a, bi.astype(np.int64), bj.astype(np.int64))
        dist[bi, bj] = detour
        dist[bj, bi] = detour
        self._last[bi, bj] = np.where(np.isfinite(detour), last, -1)
        self._pred = pred.astype(np.int32)
        return dist

    def leg(self, p: int, q: int) -> list[NDArray[np.float64]]:
        """The corners (local xy) the leg from point p to point q passes, in order of flight."""
        lo, hi = min(p, q), max(p, q)
        b = int(self._last[lo, hi]) if self._last.size else -1
        if b < 0:
            return []
        s = int(self._first[lo, b])
        chain = [b]
        while chain[-1] != s:  # walk the predecessors from b back to s
            chain.append(int(self._pred[s, chain[-1]]))
        chain.reverse()
        if p > q:
            chain.reverse()
        return [self.corners[k] for k in chain]


_Edges = tuple[
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.int64],
]


def _edges(parts: Sequence[Polygon]) -> _Edges:
    """The zones' ring edges as columns (start x, y, end x, y), bounding boxes per zone and offsets."""
    ex, ey, fx, fy, bb, ptr = [], [], [], [], [], [0]
    for poly in parts:
        for ring in (poly.exterior, *poly.interiors):
            pts = np.asarray(ring.coords)
            ex.append(pts[:-1, 0])
            ey.append(pts[:-1, 1])
            fx.append(pts[1:, 0])
            fy.append(pts[1:, 1])
            ptr.append(ptr[-1] + pts.shape[0] - 1)
        bb.append(poly.bounds)
    # one box per polygon: its rings' edges are contiguous, so the offsets go per polygon
    per_poly = [0]
    k = 0
    for poly in parts:
        k += 1 + len(poly.interiors)
        per_poly.append(ptr[k])
    return (
        np.concatenate(ex), np.concatenate(ey), np.concatenate(fx), np.concatenate(fy),
        np.asarray(bb, dtype=np.float64).reshape(-1, 4), np.asarray(per_poly, dtype=np.int64),
    )  # fmt: skip


def _convex_corners(parts: Sequence[Polygon]) -> NDArray[np.float64]:
    """The corners of the zones a shortest path can bend around: convex ones (reflex corners never help)."""
    out: list[NDArray[np.float64]] = []
    for poly in parts:
        oriented = orient(poly, 1.0)  # the zone lies on the left of every ring, holes included
        for ring in (oriented.exterior, *oriented.interiors):
            pts = np.asarray(ring.coords)[:-1]
            if pts.shape[0] < 3:
                continue
            prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
            e1, e2 = pts - prev, nxt - pts
            cross = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
            out.append(pts[cross > 1e-9])
    return np.concatenate(out) if out else np.zeros((0, 2))


# ---------------------------------------------------------------------------------------------
# Tours


@numba.njit(cache=True)
def _nearest_neighbour(dist: NDArray[np.float64], start: int) -> NDArray[np.int64]:
    """A tour over every node, from ``start`` always to the nearest unvisited node."""
    n = dist.shape[0]
    seen = np.zeros(n, dtype=np.bool_)
    tour = np.empty(n, dtype=np.int64)
    cur = start
    seen[cur] = True
    tour[0] = cur
    for k in range(1, n):
        best, arg = np.inf, -1
        for j in range(n):
            if not seen[j] and (arg < 0 or dist[cur, j] < best):
                best, arg = dist[cur, j], j
        tour[k] = arg
        seen[arg] = True
        cur = arg
    return tour


@numba.njit(cache=True)
def _two_opt(tour: NDArray[np.int64], dist: NDArray[np.float64]) -> bool:
    """2-opt on a closed tour (first improvement, in place, tour[0] stays); True when it improved."""
    n = tour.shape[0]
    improved_any = False
    improved = True
    while improved:
        improved = False
        for i in range(n - 2):
            a, b = tour[i], tour[i + 1]
            dab = dist[a, b]
            for j in range(i + 2, n):
                c = tour[j]
                d = tour[(j + 1) % n]
                if d == a:
                    continue
                delta = dist[a, c] + dist[b, d] - dab - dist[c, d]
                if delta < -1e-7:
                    tour[i + 1 : j + 1] = tour[i + 1 : j + 1][::-1].copy()
                    improved = True
                    improved_any = True
                    a, b = tour[i], tour[i + 1]
                    dab = dist[a, b]
    return improved_any


@numba.njit(cache=True)
def _or_opt(tour: NDArray[np.int64], dist: NDArray[np.float64]) -> bool:
    """Or-opt: move a run of 1-3 nodes (either way round) elsewhere in the closed tour; True if improved."""
    n = tour.shape[0]
    improved_any = False
    improved = True
    while improved:
        improved = False
        for seg in range(1, 4):
            if seg >= n - 1:
                break
            i = 1  # runs start after tour[0], which stays first
            while i + seg <= n:
                prev, first, last = tour[i - 1], tour[i], tour[i + seg - 1]
                nxt = tour[(i + seg) % n]
                gain = dist[prev, first] + dist[last, nxt] - dist[prev, nxt]
                best, best_j, best_rev = -1e-7, -1, False
                for j in range(n):  # insert between tour[j] and tour[j + 1], outside the run
                    if i - 1 <= j <= i + seg - 1:
                        continue
                    u, v = tour[j], tour[(j + 1) % n]
                    fwd = dist[u, first] + dist[last, v] - dist[u, v] - gain
                    rev = dist[u, last] + dist[first, v] - dist[u, v] - gain
                    if fwd < best:
                        best, best_j, best_rev = fwd, j, False
                    if rev < best:
                        best, best_j, best_rev = rev, j, True
                if best_j >= 0:
                    run = tour[i : i + seg].copy()
                    if best_rev:
                        run = run[::-1].copy()
                    rest = np.concatenate((tour[:i], tour[i + seg :]))
                    at = best_j + 1 if best_j < i else best_j + 1 - seg
                    tour[:] = np.concatenate((rest[:at], run, rest[at:]))
                    improved = True
                    improved_any = True
                else:
                    i += 1
    return improved_any


def improve_tour(tour: NDArray[np.int64], dist: NDArray[np.float64]) -> NDArray[np.int64]:
    """2-opt and Or-opt in turn until neither improves; ``tour[0]`` (the dock) stays first."""
    t = np.ascontiguousarray(tour, dtype=np.int64).copy()
    if t.shape[0] < 4:
        return t
    _two_opt(t, dist)
    while _or_opt(t, dist) and _two_opt(t, dist):
        pass
    return t


def tour_length(tour: Sequence[int] | NDArray[np.int64], dist: NDArray[np.float64]) -> float:
    """Length of the closed tour (back to its first node)."""
    t = np.asarray(tour, dtype=np.int64)
    if t.shape[0] < 2:
        return 0.0
    return float(dist[t, np.roll(t, -1)].sum())


def giant_tours(dist: NDArray[np.float64], starts: int | None = None) -> list[NDArray[np.int64]]:
    """Short closed tours over all nodes from node 0 (nearest neighbour + 2-opt + Or-opt), shortest first.

    ``starts`` nearest-neighbour starts (default: ten on small instances, one
    on large ones), each improved and rotated to begin at node 0; duplicates dropped.
    """
    n = dist.shape[0]
    if n <= 3:
        return [np.arange(n, dtype=np.int64)]
    k = (min(n, 10) if n <= _MULTI_START_MAX else 1) if starts is None else max(1, min(starts, n))
    rng = np.random.default_rng(0)
    firsts = [0, *rng.choice(np.arange(1, n), size=k - 1, replace=False).tolist()]
    tours: dict[tuple[int, ...], NDArray[np.int64]] = {}
    for s in firsts:
        t = _nearest_neighbour(dist, int(s))
        t = improve_tour(np.roll(t, -int(np.flatnonzero(t == 0)[0])), dist)
        back = np.concatenate((t[:1], t[1:][::-1]))  # the same cycle flown the other way
        if tuple(t) not in tours and tuple(back) not in tours:
            tours[tuple(t)] = t
    return sorted(tours.values(), key=lambda t: tour_length(t, dist))


def giant_tour(dist: NDArray[np.float64], starts: int | None = None) -> NDArray[np.int64]:
    """The shortest of :func:`giant_tours`: a closed tour over all nodes starting at node 0."""
    return giant_tours(dist, starts)[0]


@numba.njit(cache=True)
def _split_kernel(
    o: NDArray[np.int64], dist: NDArray[np.float64], v: float, budget: float, fixed: float, loiter: float
) -> tuple[float, NDArray[np.int64]]:
    """Beasley's split DP over the order ``o``: least total time and, per end position, the cut before it."""
    n = o.shape[0]
    best = np.full(n + 1, np.inf)
    cut = np.full(n + 1, -1, dtype=np.int64)
    best[0] = 0.0
    limit = budget * (1 + 1e-12)
    for i in range(n):
        if best[i] == np.inf:
            continue
        length = 0.0
        for j in range(i, n):
            length = dist[0, o[i]] if j == i else length - dist[o[j - 1], 0] + dist[o[j - 1], o[j]]
            length += dist[o[j], 0]
            t = fixed + length / v + loiter * (j - i + 1)
            if t > limit:
                break
            if best[i] + t < best[j + 1]:
                best[j + 1] = best[i] + t
                cut[j + 1] = i
    return float(best[n]), cut


def _trips(o: NDArray[np.int64], cut: NDArray[np.int64]) -> list[list[int]]:
    trips: list[list[int]] = []
    j = o.shape[0]
    while j > 0:
        i = int(cut[j])
        trips.append([int(x) for x in o[i:j]])
        j = i
    trips.reverse()
    return trips


def split_tour(
    order: Sequence[int] | NDArray[np.int64],
    dist: NDArray[np.float64],
    cruise_mps: float,
    budget_s: float,
    fixed_s: float,
    loiter_s: float,
) -> list[list[int]]:
    """Cut the giant tour ``order`` (targets, without the depot 0) into trips that each fit ``budget_s``.

    Beasley's split: the least total flight time over every cut of the fixed
    order into consecutive trips, each flown ``0 → order[i..j] → 0`` in
    ``fixed_s + length / cruise_mps + loiter_s × (j − i + 1)``. Dynamic
    programming over the cut points; a trip stops growing once it no longer
    fits (its time only grows with more targets, distances being a metric).
    Raises ``ValueError`` if some target alone does not fit.
    """
    o = np.asarray(order, dtype=np.int64)
    cost, cut = _split_kernel(o, dist, float(cruise_mps), float(budget_s), float(fixed_s), float(loiter_s))
    if not math.isfinite(cost):
        raise ValueError("a target does not fit one sortie on its own: filter unreachable targets first")
    return _trips(o, cut)


def best_split(
    tour: NDArray[np.int64],
    dist: NDArray[np.float64],
    cruise_mps: float,
    budget_s: float,
    fixed_s: float,
    loiter_s: float,
    max_rotations: int = 400,
) -> list[list[int]]:
    """The cheapest split of the closed giant ``tour`` (``tour[0]`` the depot) over where the cycle is cut.

    The targets' cycle may be entered anywhere and run either way: each of up to
    ``max_rotations`` starting points (all of them on small instances) in both
    directions is split exactly (:func:`split_tour`), and the cheapest kept.
    """
    cyc = np.asarray(tour[1:], dtype=np.int64)
    n = cyc.shape[0]
    stride = max(1, math.ceil(n / max_rotations))
    best_cost, best_trips = math.inf, None
    args = (float(cruise_mps), float(budget_s), float(fixed_s), float(loiter_s))
    for way in (cyc, cyc[::-1].copy()):
        for r in range(0, n, stride):
            o = np.roll(way, -r)
            cost, cut = _split_kernel(o, dist, *args)
            if cost < best_cost - 1e-9:
                best_cost, best_trips = cost, _trips(o, cut)
    if best_trips is None:
        raise ValueError("a target does not fit one sortie on its own: filter unreachable targets first")
    return best_trips


def trips_time(trips: Sequence[Sequence[int]], dist: NDArray[np.float64], v: float, fixed: float,
               loiter: float) -> float:  # fmt: skip
    """Total flight time of ``trips`` (each flown from node 0 in its order and back)."""
    return sum(fixed + tour_length([0, *t], dist) / v + loiter * len(t) for t in trips)


def relocate(
    trips: list[list[int]], dist: NDArray[np.float64], v: float, budget: float, fixed: float, loiter: float
) -> list[list[int]]:
    """Move single targets to another sortie (at its cheapest insertion) while the total time falls.

    A move must keep the receiving sortie within ``budget``; a sortie emptied
    by a move disappears and saves its ``fixed`` overhead. The split fixes the
    order of the giant tour; this undoes its worst cuts (a target stranded at
    the end of one sortie that another passes by).
    """
    routes = [[0, *t, 0] for t in trips]

    def time_of(r: list[int]) -> float:
        # An emptied sortie takes no new target: inserting there would skip the fixed overhead.
        return (
            fixed + float(dist[r[:-1], r[1:]].sum()) / v + loiter * (len(r) - 2) if len(r) > 2 else math.inf
        )

    def edges() -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
        frm = np.asarray([x for r in routes for x in r[:-1]], dtype=np.int64)
        to = np.asarray([x for r in routes for x in r[1:]], dtype=np.int64)
        owner = np.asarray([k for k, r in enumerate(routes) for _ in r[1:]], dtype=np.int64)
        return frm, to, owner, np.asarray([time_of(r) for r in routes])[owner]

    frm, to, owner, used = edges()
    moved = True
    while moved:
        moved = False
        for a, ra in enumerate(routes):
            pos = 1
            while pos < len(ra) - 1:
                u, p, q = ra[pos], ra[pos - 1], ra[pos + 1]
                save = time_of(ra) if len(ra) == 3 else (dist[p, u] + dist[u, q] - dist[p, q]) / v + loiter
                ins = (dist[frm, u] + dist[u, to] - dist[frm, to]) / v + loiter
                ok = (owner != a) & (used + ins <= budget) & (save - ins > 1e-9)
                if not ok.any():
                    pos += 1
                    continue
                e = int(np.flatnonzero(ok)[np.argmax((save - ins)[ok])])
                rb = routes[int(owner[e])]
                at = next(i for i in range(len(rb) - 1) if rb[i] == frm[e] and rb[i + 1] == to[e])
                rb.insert(at + 1, u)
                del ra[pos]  # the next target now sits at ``pos``
                frm, to, owner, used = edges()
                moved = True
    routes = [r for r in routes if len(r) > 2]
    return [r[1:-1] for r in routes]


# ---------------------------------------------------------------------------------------------
# The planner


def plan_sorties(
    dock: Dock,
    targets: Sequence[Target],
    avoid: Sequence[BaseGeometry] = (),
    altitude_m: float = DEFAULT_ALTITUDE_M,
    altitude_limit_m: float = DEFAULT_ALTITUDE_LIMIT_M,
    loiter_s: float = DEFAULT_LOITER_S,
    takeoff_s: float = DEFAULT_TAKEOFF_S,
    reserve: float | None = None,
    clearance_m: float = DEFAULT_CLEARANCE_M,
    max_targets: int = DEFAULT_MAX_TARGETS,
) -> SortiePlan:
    """Plan sorties from ``dock`` over ``targets``, around the ``avoid`` polygons (lon/lat) at ``altitude_m``.

    ``avoid`` are the footprints a flight at ``altitude_m`` must not cross (the
    caller picks the zones whose floor/ceiling span that altitude). ``reserve``
    overrides the aircraft profile's. Every target is either in a sortie or in
    ``unreachable`` with its reason. Raises ``ValueError`` saying what to fix
    (altitude over the limit, the dock inside a zone, too many targets…).
    """
    _check_inputs(altitude_m, altitude_limit_m, loiter_s, takeoff_s, reserve, clearance_m)
    if len(targets) > max_targets:
        raise ValueError(
            f"{len(targets):,} targets is over the limit of {max_targets:,}: plan a smaller area"
        )
    p = dock.profile
    res = p.reserve if reserve is None else float(reserve)
    budget = p.usable_s * dock.charge * (1.0 - res)
    frame = LocalFrame(dock.lon, dock.lat)
    router = _Router(frame, avoid, clearance_m)
    tx, ty = frame.to_xy([t.lon for t in targets], [t.lat for t in targets])
    xy = np.column_stack([np.concatenate(([0.0], tx)), np.concatenate(([0.0], ty))])
    if router.inside(xy[:1])[0]:
        raise ValueError(
            f"dock {dock.dock_id!r} lies inside restricted airspace at {altitude_m:g} m (zones grown by "
            f"{clearance_m:g} m): choose another dock or altitude"
        )
    inside = router.inside(xy)
    straight = np.hypot(xy[:, 0], xy[:, 1])
    fixed = 2.0 * float(takeoff_s)
    unreachable: list[Unreachable] = []
    keep = [0]
    for k, t in enumerate(targets, start=1):
        if inside[k]:
            why = f"within {clearance_m:g} m of a restricted zone at {altitude_m:g} m"
            unreachable.append(Unreachable(t, "inside_restricted_airspace", why))
        elif straight[k] > p.max_radius_m:
            why = f"{straight[k]:.0f} m from the dock, over its {p.max_radius_m:.0f} m operating radius"
            unreachable.append(Unreachable(t, "beyond_operating_radius", why))
        else:
            keep.append(k)
    kept = np.asarray(keep, dtype=np.int64)
    dist = router.matrix(xy[kept])
    ok = [0]
    for local in range(1, kept.shape[0]):
        t = targets[int(kept[local]) - 1]
        d0 = float(dist[0, local])
        need = fixed + 2.0 * d0 / p.cruise_mps + float(loiter_s)
        if not math.isfinite(d0):
            unreachable.append(Unreachable(t, "no_route_around_restricted_airspace",
                                           "walled in by restricted zones: no leg reaches it"))  # fmt: skip
        elif need > budget:
            unreachable.append(Unreachable(t, "too_far_for_one_battery",
                                           f"a round trip alone takes {need:.0f} s of flight, over the "
                                           f"{budget:.0f} s budget"))  # fmt: skip
        else:
            ok.append(local)
    sub = np.asarray(ok, dtype=np.int64)
    d = np.ascontiguousarray(dist[np.ix_(sub, sub)])
    sorties: list[Sortie] = []
    if sub.shape[0] > 1:
        args = (p.cruise_mps, budget, fixed, float(loiter_s))
        trips = min(
            (_improve_trips(best_split(t, d, *args), d, *args) for t in giant_tours(d)),
            key=lambda tr: trips_time(tr, d, p.cruise_mps, fixed, float(loiter_s)),
        )
        for order in trips:
            sorties.append(
                _sortie(order, d, sub, kept, router, frame, dock, targets, p.cruise_mps, fixed,
                        float(loiter_s), p.usable_s)
            )  # fmt: skip
    return SortiePlan(
        dock, float(altitude_m), float(loiter_s), float(takeoff_s), res, budget, float(clearance_m),
        tuple(sorties), tuple(unreachable),
    )  # fmt: skip


def _improve_trips(
    trips: list[list[int]], d: NDArray[np.float64], v: float, budget: float, fixed: float, loiter: float
) -> list[list[int]]:
    """2-opt/Or-opt inside each sortie, then relocations between sorties, until the total stops falling.

    Returns each trip as a closed order starting at the depot 0.
    """

    def inner(tr: list[list[int]]) -> list[list[int]]:
        out = []
        for trip in tr:
            nodes = np.asarray([0, *trip], dtype=np.int64)
            order = improve_tour(np.arange(nodes.shape[0], dtype=np.int64), d[np.ix_(nodes, nodes)])
            out.append([int(nodes[i]) for i in order[1:]])
        return out

    best = inner(trips)
    cost = trips_time(best, d, v, fixed, loiter)
    for _ in range(5):  # rarely more than two rounds change anything
        cand = inner(relocate(best, d, v, budget, fixed, loiter))
        c = trips_time(cand, d, v, fixed, loiter)
        if c >= cost - 1e-9:
            break
        best, cost = cand, c
    return [[0, *t] for t in best]


def _check_inputs(
    altitude_m: float, limit_m: float, loiter_s: float, takeoff_s: float, reserve: float | None,
    clearance_m: float,
) -> None:  # fmt: skip
    if not (math.isfinite(altitude_m) and 0 < altitude_m <= limit_m):
        raise ValueError(f"altitude_m must be above 0 and at most the {limit_m:g} m limit, got {altitude_m}")
    if not (math.isfinite(loiter_s) and loiter_s >= 0):
        raise ValueError(f"loiter_s must be >= 0 s, got {loiter_s}")
    if not (math.isfinite(takeoff_s) and takeoff_s >= 0):
        raise ValueError(f"takeoff_s must be >= 0 s, got {takeoff_s}")
    if reserve is not None and not 0 <= reserve < 1:
        raise ValueError(f"reserve must be in [0, 1), got {reserve}")
    if not (math.isfinite(clearance_m) and clearance_m >= 0):
        raise ValueError(f"clearance_m must be >= 0 m, got {clearance_m}")


def _sortie(
    order: list[int], d: NDArray[np.float64], sub: NDArray[np.int64], kept: NDArray[np.int64],
    router: _Router, frame: LocalFrame, dock: Dock, targets: Sequence[Target], v: float, fixed: float,
    loiter: float, usable_s: float,
) -> Sortie:  # fmt: skip
    """Expand a closed order over the reachable nodes (0 = dock) into waypoints, with its figures."""
    wps = [Waypoint(dock.lat, dock.lon, "dock")]
    seen: list[str] = []
    closed = [*order, order[0]]
    for a, b in itertools.pairwise(closed):
        pb = int(kept[sub[b]])  # the original index: 0 the dock, k the target k - 1
        # the router's rows are those of the matrix over ``kept`` (dock first)
        for c in router.leg(int(sub[a]), int(sub[b])):
            lon, lat = frame.to_lonlat(c[0], c[1])
            wps.append(Waypoint(float(lat), float(lon), "via"))
        if pb == 0:
            wps.append(Waypoint(dock.lat, dock.lon, "dock"))
        else:
            t = targets[pb - 1]
            wps.append(Waypoint(t.lat, t.lon, "target", t.id, loiter))
            seen.append(t.id)
    length = tour_length(order, d)
    flight = fixed + length / v + loiter * len(seen)
    return Sortie(tuple(wps), length, flight, 100.0 * flight / usable_s, tuple(seen))


def warm_up() -> None:
    """Compile (or load from the disk cache) the tour kernels on a tiny instance."""
    rng = np.random.default_rng(0)
    pts = rng.random((8, 2))
    dist = np.hypot(pts[:, None, 0] - pts[None, :, 0], pts[:, None, 1] - pts[None, :, 1])
    tour = giant_tour(dist, starts=2)
    best_split(tour, dist, 1.0, 10.0, 0.0, 0.0)
    _min_plus(dist, dist)
    _detours(dist, dist, np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.int64))
    router = _Router(LocalFrame(0.0, 0.0), [shapely.box(0.001, -0.001, 0.002, 0.001)], 1.0)
    router.matrix(np.array([[0.0, 0.0], [300.0, 0.0]]))


__all__ = [
    "DEFAULT_ALTITUDE_LIMIT_M",
    "DEFAULT_ALTITUDE_M",
    "DEFAULT_CLEARANCE_M",
    "DEFAULT_LOITER_S",
    "DEFAULT_MAX_TARGETS",
    "Sortie",
    "SortiePlan",
    "Target",
    "Unreachable",
    "Waypoint",
    "best_split",
    "giant_tour",
    "giant_tours",
    "improve_tour",
    "plan_sorties",
    "relocate",
    "split_tour",
    "targets_from_cells",
    "targets_in_polygon",
    "tour_length",
    "trips_time",
    "warm_up",
]
