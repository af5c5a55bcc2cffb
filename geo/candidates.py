"""Candidate sites of placement restricted to streets or sectors: geometries → rows of a :class:`HexGrid`.

Two rules, matching how planners draw:

- :func:`cells_with_centre_in`: a sector (Polygon/MultiPolygon) holds the cells
  whose *centre* lies in it, so neighbouring sectors share no cell.
- :func:`cells_touching`: any geometry (Points, LineStrings such as street
  centre lines, Polygons, or mixes) holds every cell it touches: for a line,
  every cell it passes through, even across a corner.

:func:`parse_geojson_geometry` turns a GeoJSON geometry, Feature or
FeatureCollection into one shapely geometry, with a message saying what to fix.

Touching is decided exactly, with shapely, against each cell's hexagon (lon/lat;
a hexagon's edges of 76-200 m are straight lines to well under a centimetre).
Which hexagons to test comes from H3: the polygon fill (``contain="overlap"``)
for areas, and for lines the cells of points every quarter of an edge along them
plus their neighbours (a step that short cannot skip a cell without passing
through a neighbour of the cells it lands in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import h3.api.basic_int as h3
import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import (
    GeometryCollection,
    LinearRing,
    LineString,
    MultiLineString,
    MultiPoint,
    MultiPolygon,
    Point,
    Polygon,
    mapping,
    shape,
)
from shapely.geometry.base import BaseGeometry

from geo.area import Area
from geo.hexgrid import HexGrid

GEOMETRY_TYPES = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
)
DEFAULT_MAX_COORDINATES = 200_000
_M_PER_DEG_LAT = 110_574.0  # the shortest latitude degree (at the equator): a step in degrees is never longer


def parse_geojson_geometry(obj: object, max_coordinates: int = DEFAULT_MAX_COORDINATES) -> BaseGeometry:
    """One shapely geometry from a GeoJSON geometry, Feature or FeatureCollection (lon/lat, RFC 7946).

    Raises ``ValueError`` saying what to fix: unknown type, malformed or
    out-of-range coordinates, no geometry at all, too many coordinates.
    Invalid polygons (e.g. self-intersecting) are repaired with ``make_valid``:
    for "which cells does it touch" the repaired shape covers the same ground.

    >>> street = {"type": "LineString", "coordinates": [[-77.03, -12.12], [-77.02, -12.12]]}
    >>> round(parse_geojson_geometry({"type": "Feature", "geometry": street}).length, 6)
    0.01
    """
    geoms = list(_geometries(obj, "candidates_geojson"))
    if not geoms:
        raise ValueError("candidates_geojson holds no geometry: give Points, LineStrings or Polygons")
    geom = geoms[0] if len(geoms) == 1 else GeometryCollection(geoms)
    coords = shapely.get_coordinates(geom)
    if coords.shape[0] > max_coordinates:
        raise ValueError(
            f"candidates_geojson has {coords.shape[0]:,} coordinates, over the limit of {max_coordinates:,}: "
            "simplify the lines or send fewer features"
        )
    if coords.shape[0] == 0 or geom.is_empty:
        raise ValueError("candidates_geojson's geometries are empty: give at least one coordinate")
    if not np.all(np.isfinite(coords)):
        raise ValueError("candidates_geojson has a coordinate that is not a finite number")
    if np.any(np.abs(coords[:, 0]) > 180.0) or np.any(np.abs(coords[:, 1]) > 90.0):
        k = int(np.flatnonzero((np.abs(coords[:, 0]) > 180.0) | (np.abs(coords[:, 1]) > 90.0))[0])
        raise ValueError(
            f"candidates_geojson coordinate [{coords[k, 0]:g}, {coords[k, 1]:g}] is out of range: "
            "GeoJSON is [longitude, latitude], longitude within ±180 and latitude within ±90"
        )
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return geom


def _geometries(obj: object, where: str) -> Iterable[BaseGeometry]:
    """The geometries of a GeoJSON object, one by one (Features and FeatureCollections unwrapped)."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where} must be a GeoJSON object (geometry, Feature or FeatureCollection)")
    kind = obj.get("type")
    if kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise ValueError(f"{where}: the FeatureCollection has no features array")
        for i, f in enumerate(features):
            yield from _geometries(f, f"{where} feature {i}")
        return
    if kind == "Feature":
        geometry = obj.get("geometry")
        if geometry is None:
            raise ValueError(f"{where}: the Feature has no geometry")
        yield from _geometries(geometry, where)
        return
    if kind not in GEOMETRY_TYPES:
        raise ValueError(
            f"{where}: GeoJSON type {kind!r:.40} is not supported; use one of {', '.join(GEOMETRY_TYPES)}, "
            "Feature or FeatureCollection"
        )
    try:
        geom = shape(obj)
    except Exception as exc:  # shapely raises several types on malformed coordinates
        raise ValueError(f"{where}: the {kind} coordinates are malformed ({exc})") from exc
    yield geom


def grid_rows(grid: HexGrid, cells: Iterable[int]) -> NDArray[np.intp]:
    """Rows of ``grid`` holding the given H3 cell ids (cells not in the grid are left out), sorted."""
    ids = np.fromiter((int(c) for c in cells), dtype=np.uint64)
    if ids.shape[0] == 0 or grid.size == 0:
        return np.zeros(0, dtype=np.intp)
    order = np.argsort(grid.cells, kind="stable")
    sorted_cells = grid.cells[order]
    at = np.minimum(np.searchsorted(sorted_cells, ids), sorted_cells.shape[0] - 1)
    hit = sorted_cells[at] == ids
    return np.unique(order[at[hit]]).astype(np.intp)


def cells_with_centre_in(grid: HexGrid, area: Area) -> NDArray[np.intp]:
    """Rows of ``grid`` whose cell centre lies in ``area`` (a lon/lat Polygon or MultiPolygon), sorted."""
    inside = shapely.contains_xy(area, grid.lon, grid.lat)
    return np.flatnonzero(inside).astype(np.intp)


def _hexagon(cell: int) -> Polygon:
    ring = np.asarray(h3.cell_to_boundary(cell), dtype=np.float64)  # (lat, lon) pairs
    return Polygon(ring[:, ::-1])


def _line_seeds(line: BaseGeometry, res: int, step_deg: float) -> set[int]:
    """Cells of points at most ``step_deg`` apart along ``line``, with their neighbours (see module doc)."""
    dense = shapely.segmentize(line, step_deg)
    on_line = {h3.latlng_to_cell(float(y), float(x), res) for x, y in shapely.get_coordinates(dense)}
    out: set[int] = set()
    for c in on_line:
        out.update(h3.grid_disk(c, 1))
    return out


def cells_touching(grid: HexGrid, geometry: BaseGeometry) -> NDArray[np.intp]:
    """Rows of ``grid`` whose hexagon the lon/lat ``geometry`` touches (intersects, borders included), sorted.

    Points give the cell they fall in (both cells when exactly on a shared
    edge); lines every cell they pass through; polygons every cell they overlap.
    """
    if geometry.is_empty or grid.size == 0:
        return np.zeros(0, dtype=np.intp)
    res = grid.res
    step_deg = h3.average_hexagon_edge_length(res, unit="m") / 4.0 / _M_PER_DEG_LAT
    seeds: set[int] = set()
    parts = [p for p in shapely.get_parts(geometry) if not p.is_empty]
    while any(isinstance(p, GeometryCollection | MultiPoint | MultiLineString | MultiPolygon) for p in parts):
        parts = [q for p in parts for q in shapely.get_parts(p) if not q.is_empty]
    for part in parts:
        if isinstance(part, Point):
            seeds.update(h3.grid_disk(h3.latlng_to_cell(part.y, part.x, res), 1))
        elif isinstance(part, LineString | LinearRing):
            seeds.update(_line_seeds(part, res, step_deg))
        elif isinstance(part, Polygon):
            fill = h3.h3shape_to_cells_experimental(h3.geo_to_h3shape(mapping(part)), res, contain="overlap")
            seeds.update(fill)
            # A sliver thinner than a cell may fill nothing: its outline still names the cells it touches.
            seeds.update(_line_seeds(part.exterior, res, step_deg))
    rows = grid_rows(grid, seeds)
    if rows.shape[0] == 0:
        return rows
    hexes = np.array([_hexagon(int(c)) for c in grid.cells[rows]], dtype=object)
    shapely.prepare(geometry)
    hit = np.asarray(shapely.intersects(geometry, hexes), dtype=bool)
    out: NDArray[np.intp] = rows[hit]
    return out


def candidate_rows(
    grid: HexGrid, sectors: Iterable[Area] = (), geometry: BaseGeometry | None = None
) -> NDArray[np.intp]:
    """Union of the rows whose centre lies in one of ``sectors`` and the rows ``geometry`` touches, sorted."""
    parts: list[NDArray[np.intp]] = [cells_with_centre_in(grid, a) for a in sectors]
    if geometry is not None:
        parts.append(cells_touching(grid, geometry))
    if not parts:
        return np.zeros(0, dtype=np.intp)
    return np.unique(np.concatenate(parts)).astype(np.intp)


__all__ = [
    "DEFAULT_MAX_COORDINATES",
    "candidate_rows",
    "cells_touching",
    "cells_with_centre_in",
    "grid_rows",
    "parse_geojson_geometry",
]
