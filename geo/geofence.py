"""Geofences: validated polygons, a spatial index that answers "which geofences hold this fix",
and the hysteresis state machine that turns noisy fixes into one enter and one exit.

Pure: GeoJSON objects (already parsed) and arrays in, geometries, arrays and
values out. The caller (``tracker.events``) owns storage, time and events.

**Zones.** Each geofence part (a Polygon; a MultiPolygon has several) is
measured in its own :class:`~geo.local_frame.LocalFrame` (metres), where two
bands are built once: the *inner* polygon, the points at least ``enter_margin``
inside the border (a negative buffer), and the *outer* polygon, the points at
most ``margin`` outside it (a positive buffer). A fix then falls in one of four
:class:`Zone` values by three prepared point-in-polygon tests, which is the same
as comparing its distance to the border with the margins, without computing a
distance per fix (O(vertices) each) on the ingest thread.

**Small polygons.** A polygon narrower than twice the margin has no point
``margin`` inside it. Each part's enter margin is therefore
``min(margin, 0.5 * r)``, with ``r`` the radius of the part's largest inscribed
circle, so a fix near the middle of a 10 m kiosk still counts as deep inside.

**Hysteresis** (:class:`Hysteresis`): a Schmitt trigger on the zones, plus a
dwell rule for fixes that stay in the ambiguous band.

- A unit *enters* on one fix deep inside (``DEEP_IN``) and *exits* on one fix deep
  outside (``DEEP_OUT``): a real crossing is reported at the first fix that is
  unambiguously on the other side.
- A unit that stays on the other side of the border, but within the margin, for
  ``dwell_fixes`` consecutive fixes also crosses (a sereno standing on the inner
  sidewalk of a sector's border street does enter it). This dwell rule is armed
  only once the unit has been deep on its current side since its last crossing:
  a unit parked on the border, whose noise straddles it, crosses once by dwell
  and then stays put until it really leaves (a deep fix), instead of flapping on
  every run of fixes that fall on one side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Literal, TypeAlias

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.geometry import MultiPolygon, Point, Polygon, shape
from shapely.geometry.base import BaseGeometry

from geo.local_frame import LocalFrame

Area: TypeAlias = Polygon | MultiPolygon

GEOFENCE_KINDS = ("sector", "restricted", "other")
# The same rule as unit ids and the geofences table's CHECK (safe in topics, URLs and files).
GEOFENCE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
DEFAULT_MAX_VERTICES = 10_000
# An enter margin never goes below this fraction of the part's inscribed radius (see the docstring).
SMALL_POLYGON_FRACTION = 0.5


class GeofenceError(ValueError):
    """A geofence (or its GeoJSON) is unusable: ``reason`` is a stable code, the message says what to fix."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


# ----- validation ----------------------------------------------------------------------------------


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_ring(ring: object, where: str) -> int:
    """Check one linear ring's structure and ranges; return its vertex count."""
    if not isinstance(ring, list | tuple):
        raise GeofenceError("bad_coordinates", f"{where} must be an array of [lon, lat] positions")
    if len(ring) < 4:
        raise GeofenceError(
            "bad_coordinates",
            f"{where} has {len(ring)} positions: a ring needs at least 4 (3 corners and the first repeated)",
        )
    for i, pos in enumerate(ring):
        if not isinstance(pos, list | tuple) or len(pos) not in (2, 3) or not all(_is_number(v) for v in pos):
            raise GeofenceError(
                "bad_coordinates",
                f"{where}, position {i}: expected [lon, lat] (two numbers), got {pos!r:.80}",
            )
        lon, lat = float(pos[0]), float(pos[1])
        if not (math.isfinite(lon) and math.isfinite(lat)):
            raise GeofenceError(
                "bad_coordinates", f"{where}, position {i}: coordinates must be finite numbers"
            )
        swapped = " (GeoJSON order is [lon, lat]: are they swapped?)" if abs(lon) <= 90 < abs(lat) else ""
        if not -180.0 <= lon <= 180.0:
            raise GeofenceError(
                "coordinates_out_of_range", f"{where}, position {i}: longitude {lon} is outside -180..180"
            )
        if not -90.0 <= lat <= 90.0:
            raise GeofenceError(
                "coordinates_out_of_range",
                f"{where}, position {i}: latitude {lat} is outside -90..90{swapped}",
            )
    if list(ring[0][:2]) != list(ring[-1][:2]):
        raise GeofenceError(
            "ring_not_closed", f"{where} is not closed: repeat its first position at the end (RFC 7946)"
        )
    return len(ring)


def _check_polygon_coords(coords: object, where: str) -> int:
    if not isinstance(coords, list | tuple) or not coords:
        raise GeofenceError(
            "bad_coordinates",
            f"{where} coordinates must be a non-empty array of rings (the outer ring first)",
        )
    return sum(_check_ring(ring, f"{where} ring {r}") for r, ring in enumerate(coords))


def parse_geometry(obj: object, max_vertices: int = DEFAULT_MAX_VERTICES) -> Area:
    """Turn a GeoJSON Polygon/MultiPolygon into a valid shapely geometry, or raise :class:`GeofenceError`.

    The error's message says what to fix: wrong type, malformed or unclosed
    rings, out-of-range (or swapped) coordinates, too many vertices, zero area,
    self-intersections (with where, from shapely's ``explain_validity``).

    >>> parse_geometry({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}).area
    0.5
    >>> parse_geometry({"type": "Point", "coordinates": [0, 0]})
    Traceback (most recent call last):
    ...
    geo.geofence.GeofenceError: geometry type 'Point' is not supported: use a Polygon or MultiPolygon
    """
    if not isinstance(obj, Mapping):
        raise GeofenceError("not_polygon", "geometry must be a GeoJSON object (Polygon or MultiPolygon)")
    gtype = obj.get("type")
    if gtype not in ("Polygon", "MultiPolygon"):
        raise GeofenceError(
            "not_polygon", f"geometry type {gtype!r} is not supported: use a Polygon or MultiPolygon"
        )
    coords = obj.get("coordinates")
    if gtype == "Polygon":
        vertices = _check_polygon_coords(coords, "polygon")
    else:
        if not isinstance(coords, list | tuple) or not coords:
            raise GeofenceError(
                "bad_coordinates", "MultiPolygon coordinates must be a non-empty array of polygons"
            )
        vertices = sum(_check_polygon_coords(p, f"polygon {k}") for k, p in enumerate(coords))
    if vertices > max_vertices:
        raise GeofenceError(
            "too_many_vertices",
            f"the geometry has {vertices} vertices, more than the limit of {max_vertices}: simplify it",
        )
    try:
        geom = shape(obj)
    except (ValueError, TypeError, shapely.errors.ShapelyError) as exc:
        raise GeofenceError("bad_coordinates", f"the coordinates do not form a polygon: {exc}") from exc
    if not isinstance(geom, Polygon | MultiPolygon):  # pragma: no cover - shape() follows "type"
        raise GeofenceError("not_polygon", "geometry is not a Polygon or MultiPolygon")
    # The hull, not the area: a symmetric bow tie has a (signed) area of 0 but is a self-intersection.
    if geom.is_empty or geom.convex_hull.area <= 0.0:
        raise GeofenceError(
            "empty", "the polygon encloses no area (all its corners are on one line or point)"
        )
    if not geom.is_valid:
        why = shapely.is_valid_reason(geom)
        where = ""
        m = re.search(r"\[([-\d.eE+]+) ([-\d.eE+]+)\]", why)
        if m:
            where = f" near lon {float(m.group(1)):.6f}, lat {float(m.group(2)):.6f}"
        if why.startswith(("Self-intersection", "Ring Self-intersection")):
            raise GeofenceError(
                "self_intersecting",
                f"the polygon's edges cross each other{where} ({why}): redraw it so no edge crosses another",
            )
        raise GeofenceError("invalid_geometry", f"the polygon is not valid{where}: {why}")
    return geom


@dataclass(frozen=True, slots=True)
class GeofenceFeature:
    """One validated geofence from a GeoJSON Feature."""

    geofence_id: str
    name: str
    kind: str
    area: Area
    geometry: dict[str, Any]  # the GeoJSON geometry as given (stored as is)
    properties: dict[str, Any]  # the other properties, kept for the operator console


def feature_identity(obj: object, noun: str = "geofence") -> tuple[str, Mapping[str, Any], str]:
    """Check a GeoJSON Feature's type, id and name: (id, properties, name), or :class:`GeofenceError`.

    The id is ``id`` or ``properties.id`` (the same rule as unit ids); the name
    defaults to the id. ``noun`` names the thing in messages ("invalid zone id").
    """
    if not isinstance(obj, Mapping) or obj.get("type") != "Feature":
        got = obj.get("type") if isinstance(obj, Mapping) else type(obj).__name__
        raise GeofenceError("not_feature", f"expected a GeoJSON Feature, got {got!r}")
    props = obj.get("properties") or {}
    if not isinstance(props, Mapping):
        raise GeofenceError("bad_properties", "properties must be a JSON object")
    gid = obj.get("id", props.get("id"))
    if gid is None:
        raise GeofenceError("missing_id", "the feature needs an id (Feature id or properties.id)")
    if "id" in obj and "id" in props and str(props["id"]) != str(obj["id"]):
        raise GeofenceError("bad_id", f"Feature id {obj['id']!r} and properties.id {props['id']!r} differ")
    gid = str(gid) if isinstance(gid, int) and not isinstance(gid, bool) else gid
    if not isinstance(gid, str) or GEOFENCE_ID_RE.fullmatch(gid) is None:
        raise GeofenceError(
            "bad_id",
            f"invalid {noun} id {gid!r:.80}: use 1-64 characters from A-Z a-z 0-9 _ . : -, "
            "starting with a letter or digit",
        )
    name = props.get("name", gid)
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise GeofenceError("bad_name", "properties.name must be a non-empty text of at most 200 characters")
    return gid, props, name.strip()


def parse_feature(obj: object, max_vertices: int = DEFAULT_MAX_VERTICES) -> GeofenceFeature:
    """Validate a GeoJSON Feature (``id`` or ``properties.id``, ``name``, ``kind``, polygon geometry).

    >>> f = parse_feature({"type": "Feature", "id": "S1", "properties": {"name": "Sector 1"},
    ...     "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}})
    >>> f.geofence_id, f.name, f.kind
    ('S1', 'Sector 1', 'sector')
    """
    gid, props, name = feature_identity(obj)
    assert isinstance(obj, Mapping)  # feature_identity checked it
    kind = props.get("kind", "sector")
    if kind not in GEOFENCE_KINDS:
        raise GeofenceError(
            "bad_kind", f"properties.kind {kind!r:.40} must be one of {', '.join(GEOFENCE_KINDS)}"
        )
    geometry = obj.get("geometry")
    if geometry is None:
        raise GeofenceError("not_polygon", "the feature has no geometry: give a Polygon or MultiPolygon")
    try:
        area = parse_geometry(geometry, max_vertices)
    except GeofenceError as exc:
        raise GeofenceError(exc.reason, f"geofence {gid!r}: {exc}") from exc
    rest = {k: v for k, v in props.items() if k not in ("id", "name", "kind")}
    return GeofenceFeature(gid, name.strip(), str(kind), area, dict(geometry), rest)


def parse_feature_collection(obj: object, max_vertices: int = DEFAULT_MAX_VERTICES) -> list[GeofenceFeature]:
    """Validate every feature of a FeatureCollection; errors name the feature (index and id)."""
    if not isinstance(obj, Mapping) or obj.get("type") != "FeatureCollection":
        got = obj.get("type") if isinstance(obj, Mapping) else type(obj).__name__
        raise GeofenceError("not_feature_collection", f"expected a GeoJSON FeatureCollection, got {got!r}")
    features = obj.get("features")
    if not isinstance(features, list):
        raise GeofenceError("not_feature_collection", "the FeatureCollection has no features array")
    out: list[GeofenceFeature] = []
    seen: set[str] = set()
    for i, feature in enumerate(features):
        try:
            parsed = parse_feature(feature, max_vertices)
        except GeofenceError as exc:
            raise GeofenceError(exc.reason, f"feature {i}: {exc}") from exc
        if parsed.geofence_id in seen:
            raise GeofenceError(
                "duplicate_id", f"feature {i}: geofence id {parsed.geofence_id!r} is used twice"
            )
        seen.add(parsed.geofence_id)
        out.append(parsed)
    return out


# ----- index ---------------------------------------------------------------------------------------


class Zone(IntEnum):
    """Where a fix is relative to one geofence's border and its margins (ordered outside → inside)."""

    DEEP_OUT = 0  # further than the margin outside (or far away)
    SHALLOW_OUT = 1  # outside, within the margin
    SHALLOW_IN = 2  # inside, within the enter margin of the border
    DEEP_IN = 3  # inside by at least the enter margin


def _to_lonlat(geom: BaseGeometry, frame: LocalFrame) -> BaseGeometry:
    def back(c: NDArray[np.float64]) -> NDArray[np.float64]:
        lon, lat = frame.to_lonlat(c[:, 0], c[:, 1])
        return np.column_stack([lon, lat])

    return shapely.transform(geom, back)


def inscribed_radius_m(part: Polygon) -> float:
    """Radius (m) of the largest circle inside ``part`` (lon/lat), measured in its local frame."""
    return _inscribed_radius_xy(LocalFrame.centred_on(part).geometry_to_xy(part))


def _inscribed_radius_xy(xy: BaseGeometry) -> float:
    # A tolerance of 0.1 % of the polygon's size: plenty for a margin, cheap for big districts.
    tolerance = max(0.01, math.sqrt(xy.area) / 1000.0)
    return float(shapely.maximum_inscribed_circle(xy, tolerance).length)


class GeofenceIndex:
    """Immutable index of geofences: containment and zones for one fix or arrays of fixes.

    Built once per change of the geofence set (STRtree over each part's outer
    band, prepared geometries for the exact tests) and then only read, so it can
    be swapped in whole while another thread uses the previous one.

    >>> sq = Polygon([(-77.03, -12.12), (-77.02, -12.12), (-77.02, -12.11), (-77.03, -12.11)])
    >>> idx = GeofenceIndex([("S1", sq)], margin_m=15.0)
    >>> idx.containing(-12.115, -77.025), idx.containing(-12.0, -77.0)
    (['S1'], [])
    """

    def __init__(self, geofences: Iterable[tuple[str, Area]], margin_m: float = 15.0) -> None:
        if margin_m < 0 or not math.isfinite(margin_m):
            raise ValueError(f"margin_m must be a finite number >= 0, got {margin_m}")
        self.margin_m = margin_m
        ids: list[str] = []
        areas: list[Area] = []
        polys: list[BaseGeometry] = []
        inners: list[BaseGeometry] = []
        outers: list[BaseGeometry] = []
        owner: list[int] = []
        enter: list[float] = []
        for gid, area in geofences:
            if gid in ids:
                raise ValueError(f"geofence id {gid!r} appears twice")
            g = len(ids)
            ids.append(gid)
            areas.append(area)
            for part in shapely.get_parts(area):
                frame = LocalFrame.centred_on(part)
                xy = frame.geometry_to_xy(part)
                m_in = min(margin_m, SMALL_POLYGON_FRACTION * _inscribed_radius_xy(xy))
                inner = _to_lonlat(xy.buffer(-m_in), frame) if m_in > 0 else part
                outer = _to_lonlat(xy.buffer(margin_m), frame) if margin_m > 0 else part
                polys.append(part)
                inners.append(inner)
                outers.append(outer)
                owner.append(g)
                enter.append(m_in)
        self.ids: tuple[str, ...] = tuple(ids)
        self._pos = {gid: i for i, gid in enumerate(ids)}
        self._areas = tuple(areas)
        self._poly = np.array(polys, dtype=object)
        self._inner = np.array(inners, dtype=object)
        self._outer = np.array(outers, dtype=object)
        self._owner = np.array(owner, dtype=np.intp)
        self._enter = np.array(enter, dtype=np.float64)
        for arr in (self._poly, self._inner, self._outer):
            shapely.prepare(arr)
        self._tree = shapely.STRtree(self._outer)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, geofence_id: object) -> bool:
        return geofence_id in self._pos

    def area(self, geofence_id: str) -> Area:
        """The geometry of one geofence (lon/lat)."""
        return self._areas[self._pos[geofence_id]]

    def enter_margin_m(self, geofence_id: str) -> float:
        """The smallest enter margin (m) over the geofence's parts (less than the margin if it is small)."""
        sel = self._owner == self._pos[geofence_id]
        return float(self._enter[sel].min())

    def containing(self, lat: float, lon: float) -> list[str]:
        """Ids of the geofences that hold the point (its border counts as inside), in index order."""
        inside = {g for g, z in self.zones(lat, lon).items() if z >= Zone.SHALLOW_IN}
        return sorted(inside, key=self._pos.__getitem__)

    def containing_many(self, lat: ArrayLike, lon: ArrayLike) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """Vectorised :meth:`containing`: pairs (point index, geofence index into ``ids``), point-sorted."""
        pi, gi, zone = self.zones_many(lat, lon)
        keep = zone >= Zone.SHALLOW_IN
        return pi[keep], gi[keep]

    def zones(self, lat: float, lon: float) -> dict[str, Zone]:
        """The zone of the point for every geofence whose outer band holds it (the others: DEEP_OUT)."""
        out: dict[str, Zone] = {}
        # One point: scalar calls on the few candidates beat the array machinery's fixed cost.
        for k in self._tree.query(Point(lon, lat)).tolist():
            if not shapely.intersects_xy(self._outer[k], lon, lat):
                continue
            if not shapely.intersects_xy(self._poly[k], lon, lat):
                zone = Zone.SHALLOW_OUT
            elif shapely.intersects_xy(self._inner[k], lon, lat):
                zone = Zone.DEEP_IN
            else:
                zone = Zone.SHALLOW_IN
            gid = self.ids[self._owner[k]]
            if zone > out.get(gid, Zone.DEEP_OUT):
                out[gid] = zone
        return out

    def zones_many(
        self, lat: ArrayLike, lon: ArrayLike
    ) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.int8]]:
        """Zones of many points: arrays (point index, geofence index, zone) for every pair not DEEP_OUT.

        Sorted by point then geofence; a MultiPolygon geofence gets the zone of
        its part the point is deepest in.
        """
        la = np.asarray(lat, dtype=np.float64).ravel()
        lo = np.asarray(lon, dtype=np.float64).ravel()
        if la.shape != lo.shape:
            raise ValueError(f"lat and lon differ in shape: {la.shape} vs {lo.shape}")
        empty = (np.empty(0, np.intp), np.empty(0, np.intp), np.empty(0, np.int8))
        if len(self._poly) == 0 or la.size == 0:
            return empty
        # Bounding boxes from the tree, then the exact tests on prepared geometries, each on the
        # pairs the previous one kept (the tree's own predicate path costs ~3x more per point).
        pi, parts = self._tree.query(shapely.points(lo, la))
        x, y = lo[pi], la[pi]
        keep = shapely.intersects_xy(self._outer[parts], x, y)
        if not keep.any():
            return empty
        pi, parts, x, y = pi[keep], parts[keep], x[keep], y[keep]
        in_poly = shapely.intersects_xy(self._poly[parts], x, y)
        zone = 1 + in_poly.astype(np.int8)
        sel = np.flatnonzero(in_poly)
        zone[sel] += shapely.intersects_xy(self._inner[parts[sel]], x[sel], y[sel]).astype(np.int8)
        gi = self._owner[parts]
        # One row per (point, geofence), keeping the deepest zone (MultiPolygon parts).
        order = np.lexsort((-zone, gi, pi))
        pi, gi, zone = pi[order], gi[order], zone[order]
        first = np.ones(pi.size, dtype=bool)
        first[1:] = (pi[1:] != pi[:-1]) | (gi[1:] != gi[:-1])
        return pi[first].astype(np.intp), gi[first].astype(np.intp), zone[first]


# ----- hysteresis ----------------------------------------------------------------------------------


class Crossing(StrEnum):
    """A decided change of membership."""

    ENTER = "enter"
    EXIT = "exit"


@dataclass(frozen=True, slots=True)
class Membership:
    """One unit's membership of one geofence, as the hysteresis machine keeps it.

    ``settled``: the unit has been deep on its current side since its last
    crossing (arms the dwell rule); ``streak``: consecutive fixes on the other
    side of the border but within the margin.
    """

    inside: bool = False
    settled: bool = True
    streak: int = 0


OUTSIDE = Membership()  # the state of every (unit, geofence) pair not tracked: far outside


@dataclass(frozen=True, slots=True)
class Step:
    """The result of one fix: the new membership and the crossing it decided, if any."""

    membership: Membership
    crossing: Crossing | None = None
    rule: Literal["margin", "dwell", ""] = ""


class Hysteresis:
    """The pure enter/exit state machine over :class:`Zone` values (see the module docstring).

    >>> h = Hysteresis(dwell_fixes=3)
    >>> m = OUTSIDE
    >>> [(s := h.step(m, z), m := s.membership)[0].crossing for z in (Zone.SHALLOW_IN, Zone.DEEP_IN)]
    [None, <Crossing.ENTER: 'enter'>]
    """

    def __init__(self, dwell_fixes: int = 3) -> None:
        if dwell_fixes < 1:
            raise ValueError(f"dwell_fixes must be >= 1, got {dwell_fixes}")
        self.dwell_fixes = dwell_fixes

    @staticmethod
    def initial(zone: Zone) -> Membership:
        """Membership from a first fix, without an event: inside when the fix is inside (border included)."""
        inside = zone >= Zone.SHALLOW_IN
        return Membership(inside=inside, settled=zone in (Zone.DEEP_IN, Zone.DEEP_OUT))

    def step(self, m: Membership, zone: Zone) -> Step:
        """Apply one fix's zone to ``m``."""
        if m.inside:
            if zone == Zone.DEEP_OUT:
                return Step(Membership(False, True, 0), Crossing.EXIT, "margin")
            if zone == Zone.SHALLOW_OUT:
                streak = m.streak + 1
                if m.settled and streak >= self.dwell_fixes:
                    return Step(Membership(False, False, 0), Crossing.EXIT, "dwell")
                return Step(Membership(True, m.settled, streak))
            return Step(Membership(True, m.settled or zone == Zone.DEEP_IN, 0))
        if zone == Zone.DEEP_IN:
            return Step(Membership(True, True, 0), Crossing.ENTER, "margin")
        if zone == Zone.SHALLOW_IN:
            streak = m.streak + 1
            if m.settled and streak >= self.dwell_fixes:
                return Step(Membership(True, False, 0), Crossing.ENTER, "dwell")
            return Step(Membership(False, m.settled, streak))
        return Step(Membership(False, m.settled or zone == Zone.DEEP_OUT, 0))
