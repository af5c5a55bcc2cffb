"""geo.candidates: candidate cells of sectors and of any GeoJSON, against brute force over every grid cell."""

from __future__ import annotations

import h3.api.basic_int as h3
import numpy as np
import pytest
import shapely
from numpy.typing import NDArray
from shapely.geometry import LineString, MultiPoint, Point, Polygon, box, mapping

from geo.candidates import (
    candidate_rows,
    cells_touching,
    cells_with_centre_in,
    grid_rows,
    parse_geojson_geometry,
)
from geo.hexgrid import HexGrid, hexgrid
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE

MIRAFLORES = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")


@pytest.fixture(scope="module")
def grid() -> HexGrid:
    return hexgrid(MIRAFLORES, 10)


def brute_touching(grid: HexGrid, geometry: shapely.Geometry) -> NDArray[np.intp]:
    """Every grid cell whose hexagon intersects ``geometry``, testing all of them."""
    hexes = [Polygon(np.asarray(h3.cell_to_boundary(int(c)))[:, ::-1]) for c in grid.cells]
    return np.flatnonzero(shapely.intersects(geometry, np.array(hexes, dtype=object))).astype(np.intp)


def test_sector_holds_the_cells_whose_centre_h3_puts_inside(grid: HexGrid) -> None:
    sector = Polygon([(-77.035, -12.128), (-77.022, -12.125), (-77.025, -12.115), (-77.036, -12.117)])
    got = cells_with_centre_in(grid, sector)
    # H3's own polygon fill keeps a cell when its centre is inside: an independent rule for the same thing.
    want = grid_rows(grid, h3.h3shape_to_cells(h3.geo_to_h3shape(mapping(sector)), 10))
    assert got.shape[0] > 20
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("seed", range(8))
def test_random_streets_touch_exactly_the_cells_brute_force_finds(grid: HexGrid, seed: int) -> None:
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = MIRAFLORES.bounds
    pts = np.column_stack([rng.uniform(minx, maxx, 5), rng.uniform(miny, maxy, 5)])
    street = LineString(pts)  # a zig-zag of ~4 long segments across the district, cutting cell corners
    got = cells_touching(grid, street)
    assert got.tolist() == brute_touching(grid, street).tolist()
    # And, independent of shapely: every point every metre along the street lies in a chosen cell
    # (or outside the district's grid).
    chosen = set(grid.cells[got].tolist())
    in_grid = set(grid.cells.tolist())
    for d in np.arange(0.0, 1.0, 1.0 / 20000):
        p = street.interpolate(d, normalized=True)
        c = h3.latlng_to_cell(p.y, p.x, 10)
        assert c in chosen or c not in in_grid


def test_points_polygons_and_collections(grid: HexGrid) -> None:
    pts = MultiPoint([(-77.03, -12.12), (-77.025, -12.125)])
    got = cells_touching(grid, pts)
    want = grid_rows(grid, [h3.latlng_to_cell(p.y, p.x, 10) for p in pts.geoms])
    assert got.tolist() == want.tolist() == brute_touching(grid, pts).tolist()
    square = box(-77.031, -12.122, -77.027, -12.118)
    assert cells_touching(grid, square).tolist() == brute_touching(grid, square).tolist()
    sliver = box(-77.031, -12.1200, -77.027, -12.11999)  # 1 m tall: fills no cell, touches a row of them
    assert cells_touching(grid, sliver).tolist() == brute_touching(grid, sliver).tolist() != []
    both = candidate_rows(grid, [square], pts)
    assert both.tolist() == sorted(set(cells_with_centre_in(grid, square).tolist()) | set(got.tolist()))


def test_far_away_geometry_has_no_cell(grid: HexGrid) -> None:
    assert cells_touching(grid, Point(-77.14, -12.05)).shape[0] == 0  # Callao
    assert candidate_rows(grid).shape[0] == 0


def test_geojson_feature_collection_of_streets_and_points() -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"name": "Av. Larco"},
             "geometry": {"type": "LineString", "coordinates": [[-77.0300, -12.1200], [-77.0290, -12.1320]]}},
            {"type": "Feature", "properties": {},
             "geometry": {"type": "Point", "coordinates": [-77.03, -12.12]}},
        ],
    }  # fmt: skip
    geom = parse_geojson_geometry(fc)
    assert geom.geom_type == "GeometryCollection" and len(geom.geoms) == 2


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ([1, 2], "must be a GeoJSON object"),
        ({"type": "Circle", "coordinates": [0, 0]}, "not supported"),
        ({"type": "Point", "coordinates": [-77.03, -95.0]}, "out of range"),
        ({"type": "LineString", "coordinates": "abc"}, "malformed"),
        ({"type": "FeatureCollection", "features": []}, "holds no geometry"),
        ({"type": "Feature", "geometry": None}, "has no geometry"),
        ({"type": "Point", "coordinates": [float("nan"), 0.0]}, "finite"),
    ],
)
def test_bad_geojson_says_what_to_fix(obj: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_geojson_geometry(obj)


def test_too_many_coordinates_is_refused() -> None:
    line = {"type": "LineString", "coordinates": [[-77.03 + 1e-6 * i, -12.12] for i in range(50)]}
    with pytest.raises(ValueError, match="over the limit of 10"):
        parse_geojson_geometry(line, max_coordinates=10)
