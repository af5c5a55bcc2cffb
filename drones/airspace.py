"""Restricted airspace: zones with a floor and a ceiling, and checks of points, paths and sorties.

Pure: GeoJSON objects (already parsed) and coordinates in, zones, violations
and shapely geometries out; storage is :mod:`tracker.store.airspace`, events
come from :mod:`tracker.events` through :class:`geo.volumes.VolumeIndex`.

**Zones.** A GeoJSON Feature with a Polygon or MultiPolygon footprint (validated
by :func:`geo.geofence.parse_geometry`, whose messages say what to fix) and the
properties ``name``, ``kind`` (:data:`AIRSPACE_KINDS`), ``floor_m`` (default 0)
and ``ceiling_m`` (default null: unlimited). Altitudes are metres above the
ground / take-off point, the reference drones report (``alt_takeoff_m``). A
floor of 0 means the zone reaches the ground, with no lower bound at all (see
:func:`geo.volumes.band_bounds`). Footprint borders count as inside, and so do
the floor and the ceiling: touching a zone is entering it.

**Geometry of a leg.** Footprints are GeoJSON polygons, whose edges are straight
in lon/lat (RFC 7946); a leg between two positions is taken straight in lon/lat
too, so its horizontal intersection with a footprint is computed exactly (by
shapely) in the same plane the zone is defined in. Over a few kilometres this
line and the geodesic differ by centimetres. Distances along a leg are metres
in a local frame (:class:`geo.local_frame.LocalFrame`, an affine map of lon/lat,
so fractions along the leg are the same in both).

**Altitude along a leg** (``profile``):

- ``"envelope"`` (default, conservative): the aircraft may be at any altitude
  between the leg's end altitudes anywhere along it (a drone climbs at the dock,
  then cruises; a leg does not say where it climbs). A stretch over a footprint
  violates the zone when ``[min(z0, z1), max(z0, z1)]`` meets ``[floor, ceiling]``.
- ``"linear"``: the altitude changes linearly with distance along the leg (a
  straight line in 3-D); the violating stretch is the part over the footprint
  *and* within the band, exactly.

Both agree, and are exact, for a leg at constant altitude.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import numpy as np
import shapely
from shapely.geometry import LineString, Point, Polygon

from geo.geofence import (
    DEFAULT_MAX_VERTICES,
    Area,
    GeofenceError,
    _to_lonlat,
    feature_identity,
    parse_geometry,
)
from geo.local_frame import LocalFrame
from geo.volumes import band_bounds

AIRSPACE_KINDS = ("airport", "heliport", "hospital", "embassy", "military", "prison", "event", "other")
MAX_ALTITUDE_M = 10_000.0  # far above any drone's ceiling: a larger floor or ceiling is a typo
# Buffers are polygons whose vertices lie on the true offset curve; the chords between them cut inside
# it by up to d * (1 - cos(pi / (4 * quad_segs))). Offsetting by d / cos(...) instead makes the polygon
# contain the true buffer, so a route outside it keeps the full distance.
_QUAD_SEGS = 8
_CHORD_FACTOR = 1.0 / math.cos(math.pi / (4 * _QUAD_SEGS))
MIN_OFFSET_M = 0.01  # avoidance polygons are grown by at least this (see avoidance_polygons)

Profile: TypeAlias = Literal["envelope", "linear"]
Position: TypeAlias = Sequence[float]  # (lon, lat, alt_m)


@dataclass(frozen=True, slots=True)
class AirspaceZone:
    """One restricted zone: a footprint (lon/lat) between ``floor_m`` and ``ceiling_m`` above ground."""

    zone_id: str
    name: str
    kind: str
    footprint: Area
    floor_m: float = 0.0
    ceiling_m: float = math.inf  # inf: unlimited
    geometry: dict[str, Any] = field(default_factory=dict)  # the GeoJSON geometry as given
    properties: dict[str, Any] = field(default_factory=dict)  # other properties, kept for the console

    @property
    def bounds(self) -> tuple[float, float]:
        """The altitude interval the zone covers (a floor of 0 reaches down without limit)."""
        return band_bounds(self.floor_m, self.ceiling_m)

    def covers_altitude(self, alt_m: float) -> bool:
        """True when ``alt_m`` is between floor and ceiling (both included)."""
        lo, hi = self.bounds
        return lo <= alt_m <= hi

    def to_feature(self) -> dict[str, Any]:
        """The zone as a GeoJSON Feature (``ceiling_m`` null when unlimited)."""
        return {
            "type": "Feature",
            "id": self.zone_id,
            "geometry": self.geometry or shapely.geometry.mapping(self.footprint),
            "properties": {
                **self.properties,
                "id": self.zone_id,
                "name": self.name,
                "kind": self.kind,
                "floor_m": self.floor_m,
                "ceiling_m": None if math.isinf(self.ceiling_m) else self.ceiling_m,
            },
        }


# ----- validation ----------------------------------------------------------------------------------


def _altitude(props: Mapping[str, Any], key: str, default: float | None, zid: str) -> float | None:
    value = props.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise GeofenceError(
            "bad_altitude", f"zone {zid!r}: properties.{key} must be a number of metres above ground"
        )
    if not 0.0 <= value <= MAX_ALTITUDE_M:
        raise GeofenceError(
            "bad_altitude",
            f"zone {zid!r}: properties.{key} {value} must be between 0 and {MAX_ALTITUDE_M:g} m above ground",
        )
    return float(value)


def parse_zone(obj: object, max_vertices: int = DEFAULT_MAX_VERTICES) -> AirspaceZone:
    """Validate a GeoJSON Feature as a zone, or raise :class:`~geo.geofence.GeofenceError` saying what to fix.

    >>> z = parse_zone({"type": "Feature", "id": "H1", "properties": {"kind": "heliport", "ceiling_m": 90},
    ...     "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}})
    >>> z.zone_id, z.kind, z.floor_m, z.ceiling_m
    ('H1', 'heliport', 0.0, 90.0)
    """
    zid, props, name = feature_identity(obj, "zone")
    assert isinstance(obj, Mapping)  # feature_identity checked it
    kind = props.get("kind", "other")
    if kind not in AIRSPACE_KINDS:
        raise GeofenceError(
            "bad_kind",
            f"zone {zid!r}: properties.kind {kind!r:.40} must be one of {', '.join(AIRSPACE_KINDS)}",
        )
    floor = _altitude(props, "floor_m", 0.0, zid)
    ceiling = _altitude(props, "ceiling_m", None, zid)
    assert floor is not None
    if ceiling is not None and ceiling <= floor:
        raise GeofenceError(
            "bad_altitude",
            f"zone {zid!r}: ceiling_m {ceiling} must be above floor_m {floor} (null ceiling: unlimited)",
        )
    geometry = obj.get("geometry")
    if geometry is None:
        raise GeofenceError("not_polygon", f"zone {zid!r} has no geometry: give a Polygon or MultiPolygon")
    try:
        footprint = parse_geometry(geometry, max_vertices)
    except GeofenceError as exc:
        raise GeofenceError(exc.reason, f"zone {zid!r}: {exc}") from exc
    rest = {k: v for k, v in props.items() if k not in ("id", "name", "kind", "floor_m", "ceiling_m")}
    return AirspaceZone(
        zid,
        name,
        str(kind),
        footprint,
        floor,
        math.inf if ceiling is None else ceiling,
        dict(geometry),
        rest,
    )


def parse_zones(obj: object, max_vertices: int = DEFAULT_MAX_VERTICES) -> list[AirspaceZone]:
    """Validate a Feature or a FeatureCollection of zones; errors name the feature (index and id)."""
    if isinstance(obj, Mapping) and obj.get("type") == "Feature":
        return [parse_zone(obj, max_vertices)]
    if not isinstance(obj, Mapping) or obj.get("type") != "FeatureCollection":
        got = obj.get("type") if isinstance(obj, Mapping) else type(obj).__name__
        raise GeofenceError(
            "not_feature_collection", f"expected a GeoJSON Feature or FeatureCollection, got {got!r}"
        )
    features = obj.get("features")
    if not isinstance(features, list):
        raise GeofenceError("not_feature_collection", "the FeatureCollection has no features array")
    out: list[AirspaceZone] = []
    seen: set[str] = set()
    for i, feature in enumerate(features):
        try:
            zone = parse_zone(feature, max_vertices)
        except GeofenceError as exc:
            raise GeofenceError(exc.reason, f"feature {i}: {exc}") from exc
        if zone.zone_id in seen:
            raise GeofenceError("duplicate_id", f"feature {i}: zone id {zone.zone_id!r} is used twice")
        seen.add(zone.zone_id)
        out.append(zone)
    return out


def check_position(pos: object, where: str) -> tuple[float, float, float]:
    """``pos`` as (lon, lat, alt_m), or :class:`~geo.geofence.GeofenceError` saying what is wrong."""
    if (
        not isinstance(pos, list | tuple)
        or len(pos) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pos)
    ):
        raise GeofenceError(
            "bad_position", f"{where}: expected [lon, lat, altitude in m above ground], got {pos!r:.80}"
        )
    lon, lat, alt = (float(v) for v in pos)
    if not all(math.isfinite(v) for v in (lon, lat, alt)):
        raise GeofenceError("bad_position", f"{where}: coordinates and altitude must be finite numbers")
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        swapped = " (the order is [lon, lat, alt]: are they swapped?)" if abs(lon) <= 90 < abs(lat) else ""
        raise GeofenceError(
            "coordinates_out_of_range", f"{where}: lon {lon} or lat {lat} is out of range{swapped}"
        )
    if abs(alt) > MAX_ALTITUDE_M:
        raise GeofenceError("bad_altitude", f"{where}: altitude {alt} m is beyond ±{MAX_ALTITUDE_M:g} m")
    return lon, lat, alt


# ----- checks --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    """A stretch of a leg inside a zone (footprint and altitude band).

    ``leg``: the leg's index in the sortie (0 for a path); ``segment``: the
    straight piece of the leg, from its position ``segment`` to ``segment + 1``
    (for a path: the path's leg). ``entry``/``exit``: (lon, lat, alt_m) where the
    stretch starts and ends (the altitude of the linear profile, also reported
    for the envelope one); ``from_m``/``to_m``: metres along the segment.
    ``alt_range_m``: the altitudes the aircraft may have over the stretch.
    """

    zone_id: str
    name: str
    kind: str
    leg: int
    segment: int
    entry: tuple[float, float, float]
    exit: tuple[float, float, float]
    from_m: float
    to_m: float
    alt_range_m: tuple[float, float]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the API's shape)."""
        return {
            "zone_id": self.zone_id,
            "name": self.name,
            "kind": self.kind,
            "leg": self.leg,
            "segment": self.segment,
            "entry": list(self.entry),
            "exit": list(self.exit),
            "from_m": round(self.from_m, 2),
            "to_m": round(self.to_m, 2),
            "alt_range_m": list(self.alt_range_m),
        }


class Airspace:
    """Immutable set of zones with an STRtree over their footprints; answers the checks.

    >>> sq = {"type": "Polygon", "coordinates": [[[0, 0], [0.01, 0], [0.01, 0.01], [0, 0.01], [0, 0]]]}
    >>> a = Airspace([parse_zone({"type": "Feature", "id": "E1", "geometry": sq,
    ...     "properties": {"kind": "embassy", "ceiling_m": 60}})])
    >>> [z.zone_id for z in a.zones_at(0.005, 0.005, 50.0)], a.zones_at(0.005, 0.005, 70.0)
    (['E1'], [])
    """

    def __init__(self, zones: Iterable[AirspaceZone]) -> None:
        self.zones: tuple[AirspaceZone, ...] = tuple(zones)
        seen: set[str] = set()
        for z in self.zones:
            if z.zone_id in seen:
                raise ValueError(f"zone id {z.zone_id!r} appears twice")
            seen.add(z.zone_id)
        footprints = np.array([z.footprint for z in self.zones], dtype=object)
        shapely.prepare(footprints)
        self._footprints = footprints
        self._tree = shapely.STRtree(footprints)

    def __len__(self) -> int:
        return len(self.zones)

    def zones_at(self, lon: float, lat: float, alt_m: float) -> list[AirspaceZone]:
        """The zones holding the point: in the footprint (border included) and between floor and ceiling."""
        out = []
        for k in sorted(self._tree.query(Point(lon, lat)).tolist()):
            zone = self.zones[k]
            if zone.covers_altitude(alt_m) and shapely.intersects_xy(self._footprints[k], lon, lat):
                out.append(zone)
        return out

    def check_path(self, path: Sequence[Position], profile: Profile = "envelope") -> list[Violation]:
        """Violations of a 3-D polyline ``[(lon, lat, alt_m), …]``; each leg's index is in ``segment``."""
        return self._check_leg(path, 0, profile)

    def check_sortie(
        self, legs: Sequence[Sequence[Position]], profile: Profile = "envelope"
    ) -> list[Violation]:
        """Violations of a planned sortie: a list of legs, each a 3-D polyline of at least 2 positions."""
        out: list[Violation] = []
        for i, leg in enumerate(legs):
            out.extend(self._check_leg(leg, i, profile))
        return out

    def _check_leg(self, leg: Sequence[Position], index: int, profile: Profile) -> list[Violation]:
        if profile not in ("envelope", "linear"):
            raise ValueError(f"profile must be 'envelope' or 'linear', got {profile!r}")
        pts = [check_position(p, f"leg {index}, position {k}") for k, p in enumerate(leg)]
        if len(pts) < 2:
            raise GeofenceError("bad_path", f"leg {index} has {len(pts)} position(s): a leg needs at least 2")
        out: list[Violation] = []
        for s in range(len(pts) - 1):
            out.extend(self._check_segment(pts[s], pts[s + 1], index, s, profile))
        return out

    def _check_segment(
        self,
        p0: tuple[float, float, float],
        p1: tuple[float, float, float],
        leg: int,
        segment: int,
        profile: Profile,
    ) -> list[Violation]:
        (x0, y0, z0), (x1, y1, z1) = p0, p1
        vertical = x0 == x1 and y0 == y1
        line: LineString | Point = Point(x0, y0) if vertical else LineString([(x0, y0), (x1, y1)])
        frame = LocalFrame(x0, y0)
        ex, ny = frame.to_xy(x1, y1)
        length_m = math.hypot(float(ex), float(ny))
        out: list[Violation] = []
        for k in sorted(self._tree.query(line).tolist()):
            zone = self.zones[k]
            lo, hi = zone.bounds
            if max(z0, z1) < lo or min(z0, z1) > hi:
                continue  # the whole segment passes above or below the band
            if vertical:
                stretches = [(0.0, 1.0)] if shapely.intersects_xy(self._footprints[k], x0, y0) else []
            else:
                stretches = _stretches(line, self._footprints[k])
            for ta, tb in stretches:
                if profile == "linear" and z0 != z1:
                    # Where the straight 3-D segment is within [lo, hi]: an interval of the parameter t.
                    u0, u1 = sorted(((lo - z0) / (z1 - z0), (hi - z0) / (z1 - z0)))
                    ta, tb = max(ta, u0), min(tb, u1)
                    if ta > tb:
                        continue
                if vertical:
                    # A climb or descent on the spot: the part of its altitude range within the band.
                    za, zb = max(min(z0, z1), lo), min(max(z0, z1), hi)
                    rng = (za, zb)
                elif profile == "linear":
                    za, zb = z0 + ta * (z1 - z0), z0 + tb * (z1 - z0)
                    rng = (min(za, zb), max(za, zb))
                else:
                    za, zb = z0 + ta * (z1 - z0), z0 + tb * (z1 - z0)
                    rng = (min(z0, z1), max(z0, z1))
                out.append(
                    Violation(
                        zone.zone_id,
                        zone.name,
                        zone.kind,
                        leg,
                        segment,
                        (x0 + ta * (x1 - x0), y0 + ta * (y1 - y0), za),
                        (x0 + tb * (x1 - x0), y0 + tb * (y1 - y0), zb),
                        ta * length_m,
                        tb * length_m,
                        rng,
                    )
                )
        out.sort(key=lambda v: (v.from_m, v.zone_id))
        return out


def _stretches(line: LineString, footprint: Area) -> list[tuple[float, float]]:
    """The parameter intervals ``[ta, tb]`` (0 at the start, 1 at the end) of ``line`` over ``footprint``.

    Touching the border gives a zero-length interval (touching is entering).
    """
    if not shapely.intersects(footprint, line):
        return []
    inter = shapely.intersection(line, footprint)
    intervals: list[tuple[float, float]] = []
    for part in shapely.get_parts(inter):
        coords = shapely.get_coordinates(part)
        if coords.size == 0:
            continue
        t = shapely.line_locate_point(line, shapely.points(coords), normalized=True)
        intervals.append((float(np.min(t)), float(np.max(t))))
    if not intervals:
        # intersects() said yes but the overlay lost a grazing contact to rounding: the closest point.
        near = shapely.shortest_line(line, footprint)
        t0 = float(shapely.line_locate_point(line, shapely.get_point(near, 0), normalized=True))
        intervals.append((t0, t0))
    intervals.sort()
    merged = [intervals[0]]
    for a, b in intervals[1:]:
        if a <= merged[-1][1] + 1e-12:  # pieces that meet (split at a vertex) are one stretch
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


# ----- functions over a list of zones --------------------------------------------------------------


def _airspace(zones: Airspace | Iterable[AirspaceZone]) -> Airspace:
    return zones if isinstance(zones, Airspace) else Airspace(zones)


def zones_at(
    zones: Airspace | Iterable[AirspaceZone], lon: float, lat: float, alt_m: float
) -> list[AirspaceZone]:
    """The zones holding a point with altitude (see :meth:`Airspace.zones_at`)."""
    return _airspace(zones).zones_at(lon, lat, alt_m)


def check_path(
    zones: Airspace | Iterable[AirspaceZone], path: Sequence[Position], profile: Profile = "envelope"
) -> list[Violation]:
    """Violations of a 3-D polyline (see :meth:`Airspace.check_path`)."""
    return _airspace(zones).check_path(path, profile)


def check_sortie(
    zones: Airspace | Iterable[AirspaceZone],
    legs: Sequence[Sequence[Position]],
    profile: Profile = "envelope",
) -> list[Violation]:
    """Violations of a planned sortie, a list of legs (see :meth:`Airspace.check_sortie`)."""
    return _airspace(zones).check_sortie(legs, profile)


def avoidance_polygons(
    zones: Airspace | Iterable[AirspaceZone], altitude_m: float, buffer_m: float
) -> list[Polygon]:
    """Footprints (lon/lat) a route flown at ``altitude_m`` must not cross, grown by ``buffer_m`` metres.

    Only zones whose band holds ``altitude_m`` (floor and ceiling included)
    count. Each footprint part is buffered in its own local metric frame, by a
    polygon that contains the true ``buffer_m`` offset (so a route outside it
    keeps at least ``buffer_m`` from the zone); overlapping results are merged,
    so the list holds disjoint polygons (possibly with holes). A ``buffer_m`` of
    0 still grows them by 1 cm (:data:`MIN_OFFSET_M`), so that merging cannot
    leave a zone's vertex a rounding error outside its obstacle. Climbs and
    descents near the dock are the planner's to check with :func:`check_sortie`.
    """
    if buffer_m < 0 or not math.isfinite(buffer_m):
        raise ValueError(f"buffer_m must be a finite number >= 0, got {buffer_m}")
    # At least 1 cm: merging overlapping footprints re-nodes their edges, which can move a vertex by a
    # rounding error; a centimetre of offset keeps every zone strictly inside its obstacle.
    offset = max(buffer_m, MIN_OFFSET_M) * _CHORD_FACTOR
    parts: list[Polygon] = []
    for zone in _airspace(zones).zones:
        if not zone.covers_altitude(altitude_m):
            continue
        for part in shapely.get_parts(zone.footprint):
            frame = LocalFrame.centred_on(part)
            grown = _to_lonlat(frame.geometry_to_xy(part).buffer(offset, quad_segs=_QUAD_SEGS), frame)
            assert isinstance(grown, Polygon)
            parts.append(grown)
    if not parts:
        return []
    merged = shapely.unary_union(parts)
    return [p for p in shapely.get_parts(merged) if isinstance(p, Polygon) and not p.is_empty]


class LiveAirspace:
    """The zones one process holds in memory, swapped whole when they change (readers never lock).

    The API keeps one in its context (``ctx.airspace``), loaded at start and
    replaced after every change it makes, so a caller that cannot wait for the
    database (the sortie planner) reads the current zones at once.
    """

    def __init__(self, zones: Iterable[AirspaceZone] = ()) -> None:
        self.current = Airspace(zones)

    def replace(self, airspace: Airspace) -> None:
        """Swap in a new set of zones (one reference assignment: readers see the old or the new)."""
        self.current = airspace

    def avoidance_polygons(self, altitude_m: float, buffer_m: float = 0.0) -> list[Polygon]:
        """:func:`avoidance_polygons` over the current zones."""
        return avoidance_polygons(self.current, altitude_m, buffer_m)


__all__ = [
    "AIRSPACE_KINDS",
    "Airspace",
    "AirspaceZone",
    "LiveAirspace",
    "Violation",
    "avoidance_polygons",
    "check_path",
    "check_position",
    "check_sortie",
    "parse_zone",
    "parse_zones",
    "zones_at",
]
