"""An area of operation as H3 cells: ids, centres, areas and the share of each cell inside the boundary.

Coverage is judged per cell (by its centre), and ratios are weighted by the
*clipped* area of each cell (cell ∩ boundary), so a border cell that is 30 %
inside counts for 30 % of its area: ratios are area-true, not cell-count ratios.

Cells come from H3 v4 (``h3shape_to_cells_experimental`` with ``contain="overlap"``:
every cell that touches the boundary, so the border is not shaved off); the
shares are computed with shapely in a :class:`~geo.local_frame.LocalFrame`
(metres), where a hexagon of a few hundred metres is measured to well under
0.1 %. Cells whose clipped share is zero (they only touch the boundary) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h3.api.basic_int as h3
import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import Geod
from shapely.geometry import MultiPolygon, Polygon, mapping, shape

from geo.area import Area
from geo.local_frame import WGS84_A, WGS84_E2, LocalFrame

DISTRICT_RES = 10  # ~0.015 km² hexagons (edge ~76 m): a district at block-face detail
METROPOLIS_RES = 9  # ~0.105 km² hexagons (edge ~200 m): Lima's 2,700 km² in ~21,600 cells
DEFAULT_MAX_CELLS = 2_000_000
_GEOD = Geod(ellps="WGS84")
_H3_RADIUS_M = 6371007.180918475  # H3's authalic sphere


def _ellipsoid_factor(lat: NDArray[np.float64]) -> NDArray[np.float64]:
    """WGS84 area element over H3's spherical one at ``lat``: M·N / R² (0.996 at Lima's -12°).

    H3 measures cells on a sphere taking lat/lon as spherical coordinates, which
    overstates areas near the equator by up to 0.4 %; this makes cell areas match
    pyproj.Geod's (the shares are measured in metres on the ellipsoid too).
    """
    s2 = np.sin(np.radians(lat)) ** 2
    w = 1.0 - WGS84_E2 * s2
    m = WGS84_A * (1.0 - WGS84_E2) / w**1.5
    n = WGS84_A / np.sqrt(w)
    out: NDArray[np.float64] = m * n / (_H3_RADIUS_M * _H3_RADIUS_M)
    return out


class GridTooFineError(ValueError):
    """The chosen H3 resolution would need more cells than allowed for this boundary."""

    def __init__(self, res: int, needed: int, limit: int) -> None:
        self.res = res
        self.needed = needed
        self.limit = limit
        super().__init__(
            f"H3 resolution {res} would need about {needed:,} cells for this boundary, over the limit of "
            f"{limit:,}: choose a coarser resolution (smaller number) or raise max_cells"
        )


@dataclass(frozen=True, slots=True, eq=False)
class HexGrid:
    """H3 cells covering a boundary, as columns (one row per cell, kept only if its share > 0)."""

    boundary: Area
    res: int
    cells: NDArray[np.uint64]  # H3 cell ids
    lat: NDArray[np.float64]  # cell centre, degrees
    lon: NDArray[np.float64]
    cell_area_m2: NDArray[np.float64]  # whole cell on WGS84 (h3.cell_area × ellipsoid factor)
    share: NDArray[np.float64]  # clipped area / cell area, in (0, 1]

    @property
    def size(self) -> int:
        """Number of cells."""
        return int(self.cells.shape[0])

    @property
    def clipped_area_m2(self) -> NDArray[np.float64]:
        """Area of each cell inside the boundary (m²): the weight of the cell in area-true ratios."""
        return self.cell_area_m2 * self.share

    @property
    def total_area_m2(self) -> float:
        """Area of the boundary as the grid measures it (sum of clipped cell areas, m²)."""
        return float(self.clipped_area_m2.sum())

    def region_geojson(self, index: NDArray[np.intp]) -> dict[str, Any]:
        """Merged polygons of the cells at ``index``, clipped to the boundary, as a GeoJSON geometry."""
        if index.shape[0] == 0:
            return {"type": "MultiPolygon", "coordinates": []}
        # cells_to_h3shape merges along shared edges exactly (no slivers between neighbours).
        merged = shape(h3.cells_to_geo([int(c) for c in self.cells[index]]))
        clipped = shapely.intersection(merged, self.boundary)
        polys = [p for p in shapely.get_parts(clipped) if isinstance(p, Polygon) and p.area > 0]
        return dict(mapping(MultiPolygon(polys)))


def estimated_cells(boundary: Area, res: int) -> int:
    """About how many H3 cells of resolution ``res`` cover ``boundary`` (geodesic area / mean cell area)."""
    area_m2 = abs(_GEOD.geometry_area_perimeter(boundary)[0])
    return int(area_m2 / h3.average_hexagon_area(res, unit="m^2")) + 1


def hexgrid(boundary: Area, res: int = DISTRICT_RES, max_cells: int = DEFAULT_MAX_CELLS) -> HexGrid:
    """Cover ``boundary`` (lon/lat Polygon or MultiPolygon, holes allowed) with H3 cells of ``res``.

    Raises :class:`GridTooFineError` (a ``ValueError``) before building anything
    when the resolution would need more than ``max_cells`` cells.

    >>> g = hexgrid(Polygon([(-77.04, -12.13), (-77.02, -12.13), (-77.02, -12.11), (-77.04, -12.11)]), 9)
    >>> g.size > 0, round(g.total_area_m2 / 1e6, 2)  # 0.02° × 0.02° at -12°: 2.178 km × 2.211 km
    (True, 4.82)
    """
    if not isinstance(boundary, Polygon | MultiPolygon) or boundary.is_empty:
        raise ValueError("the boundary must be a non-empty Polygon or MultiPolygon")
    if not 0 <= res <= 15:
        raise ValueError(f"H3 resolution must be 0..15, got {res}")
    # Border cells add about one ring along the perimeter; the area estimate is what matters.
    needed = estimated_cells(boundary, res)
    if needed > max_cells:
        raise GridTooFineError(res, needed, max_cells)
    h3shape = h3.geo_to_h3shape(mapping(boundary))
    ids = np.array(sorted(h3.h3shape_to_cells_experimental(h3shape, res, contain="overlap")), dtype=np.uint64)
    if ids.shape[0] > max_cells:
        raise GridTooFineError(res, int(ids.shape[0]), max_cells)
    frame = LocalFrame.centred_on(boundary)
    area_xy = frame.geometry_to_xy(boundary)
    shapely.prepare(area_xy)
    hexes: list[Polygon] = []
    centres = np.empty((ids.shape[0], 2), dtype=np.float64)
    for i, c in enumerate(ids.tolist()):
        ring = np.array(h3.cell_to_boundary(c), dtype=np.float64)  # (lat, lon) pairs
        x, y = frame.to_xy(ring[:, 1], ring[:, 0])
        hexes.append(Polygon(np.column_stack([x, y])))
        centres[i] = h3.cell_to_latlng(c)
    hex_arr = np.array(hexes, dtype=object)
    share = np.ones(ids.shape[0], dtype=np.float64)
    inside = shapely.contains(area_xy, hex_arr)
    border = np.flatnonzero(~inside)
    if border.shape[0]:
        cut = shapely.intersection(hex_arr[border], area_xy)
        share[border] = np.minimum(1.0, shapely.area(cut) / shapely.area(hex_arr[border]))
    keep = share > 0.0
    ids = ids[keep]
    sphere_area = np.array([h3.cell_area(int(c), unit="m^2") for c in ids.tolist()], dtype=np.float64)
    cell_area = sphere_area * _ellipsoid_factor(centres[keep, 0])
    return HexGrid(
        boundary=boundary,
        res=res,
        cells=ids,
        lat=np.ascontiguousarray(centres[keep, 0]),
        lon=np.ascontiguousarray(centres[keep, 1]),
        cell_area_m2=cell_area,
        share=share[keep],
    )


__all__ = ["DEFAULT_MAX_CELLS", "DISTRICT_RES", "METROPOLIS_RES", "GridTooFineError", "HexGrid", "hexgrid"]
