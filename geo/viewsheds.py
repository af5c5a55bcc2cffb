"""Static camera viewsheds: which cells of a grid the cameras see, area-true.

A viewshed is the ground a fixed camera sees, given as a polygon (a Feature's
Polygon or MultiPolygon in lon/lat). Per cell the engine measures the *seen
share*: the part of the cell's area inside the boundary (the area it weighs in
coverage ratios) that lies inside the union of the viewsheds. A cell counts as
*seen* (ETA 0 in the combined coverage: "seen now") when its seen share is at
least :data:`SEEN_SHARE` = 0.5, so rounding cells to seen / not seen neither
favours nor penalises the cameras; the exact area is also given
(:attr:`ViewshedCover.seen_area_m2`).

Shares are measured with Shapely in the grid's :class:`~geo.local_frame.LocalFrame`
(an affine map of lon/lat, so area ratios are exact). Only cells whose centre
lies within two edge lengths of the union are cut (one vectorised ``dwithin``
over all centres); the rest are unseen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import h3.api.basic_int as h3
import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.errors import GEOSException
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from geo.hexgrid import HexGrid
from geo.local_frame import LocalFrame

SEEN_SHARE = 0.5


@dataclass(frozen=True, slots=True, eq=False)
class Viewsheds:
    """Camera viewsheds: one polygon per camera (lon/lat) and their union."""

    ids: tuple[str, ...]
    polygons: tuple[Polygon | MultiPolygon, ...]
    union: BaseGeometry

    @property
    def size(self) -> int:
        """Number of cameras."""
        return len(self.ids)


@dataclass(frozen=True, slots=True, eq=False)
class ViewshedCover:
    """What the cameras see of a grid."""

    share: NDArray[np.float64]  # per cell: seen area / cell area inside the boundary, in [0, 1]
    seen: NDArray[np.bool_]  # per cell: share >= SEEN_SHARE
    seen_area_m2: float  # Σ clipped cell area × share: the area the cameras see, exactly


def _polygonal(geom: BaseGeometry, where: str) -> Polygon | MultiPolygon:
    """Check a viewshed geometry: polygonal, non-empty, valid, in degrees."""
    if not isinstance(geom, Polygon | MultiPolygon):
        raise ValueError(f"{where}: a viewshed must be a Polygon or MultiPolygon, got {geom.geom_type}")
    if geom.is_empty:
        raise ValueError(f"{where}: the viewshed polygon is empty (no area)")
    minx, miny, maxx, maxy = geom.bounds
    if not (minx >= -180 and maxx <= 180 and miny >= -90 and maxy <= 90):
        raise ValueError(
            f"{where}: coordinates outside lon -180..180 / lat -90..90: GeoJSON needs [lon, lat] in degrees"
        )
    if not geom.is_valid:
        raise ValueError(
            f"{where}: invalid polygon ({shapely.is_valid_reason(geom)}): fix its rings so they do not cross "
            "themselves or each other (e.g. QGIS 'Fix geometries' or shapely.make_valid)"
        )
    if geom.area <= 0:
        raise ValueError(f"{where}: the viewshed polygon is empty (no area)")
    return geom


def _geometry(obj: Any, where: str) -> Polygon | MultiPolygon:
    if not isinstance(obj, Mapping) or "type" not in obj:
        raise ValueError(f"{where}: missing geometry (a viewshed needs a Polygon or MultiPolygon)")
    try:
        geom = shape(obj)
    except (GEOSException, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise ValueError(f"{where}: unreadable {obj.get('type')} geometry ({exc})") from exc
    return _polygonal(geom, where)


def viewsheds_from_geojson(obj: Any) -> Viewsheds:
    """Viewsheds from a GeoJSON FeatureCollection, Feature, Polygon or MultiPolygon (lon/lat).

    A feature's id is its ``properties.id``, else its ``id``, else its position.
    Raises ``ValueError`` naming the feature and what to fix.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a GeoJSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise ValueError("the FeatureCollection has no 'features' list")
    elif kind == "Feature":
        features = [obj]
    elif kind in ("Polygon", "MultiPolygon"):
        features = [{"type": "Feature", "properties": {"id": "viewshed"}, "geometry": obj}]
    else:
        raise ValueError(
            f"expected a FeatureCollection, Feature, Polygon or MultiPolygon of viewsheds, got {kind!r}"
        )
    if not features:
        raise ValueError("the GeoJSON holds no viewshed features")
    ids: list[str] = []
    polys: list[Polygon | MultiPolygon] = []
    for i, f in enumerate(features):
        if not isinstance(f, Mapping) or f.get("type") != "Feature":
            raise ValueError(f"feature {i} is not a GeoJSON Feature")
        props = f.get("properties") or {}
        fid = str(props.get("id", f.get("id", i))) if isinstance(props, Mapping) else str(i)
        polys.append(_geometry(f.get("geometry"), f"feature {i} (camera {fid!r})"))
        ids.append(fid)
    return Viewsheds(tuple(ids), tuple(polys), shapely.union_all(np.array(polys, dtype=object)))


def viewshed_cover(grid: HexGrid, viewsheds: Viewsheds) -> ViewshedCover:
    """The seen share of every cell of ``grid`` (see the module docstring), and which cells count as seen."""
    share = np.zeros(grid.size, dtype=np.float64)
    frame = LocalFrame.centred_on(grid.boundary)
    seen_xy = shapely.intersection(frame.geometry_to_xy(viewsheds.union), frame.geometry_to_xy(grid.boundary))
    if grid.size and not seen_xy.is_empty:
        shapely.prepare(seen_xy)
        x, y = frame.to_xy(grid.lon, grid.lat)
        # A cell whose centre is farther than its circumradius (= its edge) cannot touch the union;
        # two average edges leave room for the size spread of H3 cells within a resolution.
        margin = 2.0 * h3.average_hexagon_edge_length(grid.res, unit="m")
        near = np.flatnonzero(shapely.dwithin(shapely.points(x, y), seen_xy, margin))
        if near.shape[0]:
            hexes = np.empty(near.shape[0], dtype=object)
            for k, c in enumerate(grid.cells[near].tolist()):  # h3 gives boundaries one cell at a time
                ring = np.array(h3.cell_to_boundary(int(c)), dtype=np.float64)
                hx, hy = frame.to_xy(ring[:, 1], ring[:, 0])
                hexes[k] = Polygon(np.column_stack([hx, hy]))
            # The cell's area inside the boundary, as hexgrid measured it (same frame, same hexagon).
            inside = shapely.area(hexes) * grid.share[near]
            seen = shapely.area(shapely.intersection(hexes, seen_xy))
            with np.errstate(divide="ignore", invalid="ignore"):
                share[near] = np.where(inside > 0, np.minimum(1.0, seen / inside), 0.0)
    clipped = grid.clipped_area_m2
    return ViewshedCover(share, share >= SEEN_SHARE, float(np.sum(clipped * share)))


def seen_eta(cover: ViewshedCover) -> NDArray[np.float64]:
    """Per cell ETA of the cameras: 0 where seen ("seen now"), ``inf`` elsewhere."""
    return np.where(cover.seen, 0.0, math.inf)


__all__ = ["SEEN_SHARE", "ViewshedCover", "Viewsheds", "seen_eta", "viewshed_cover", "viewsheds_from_geojson"]
