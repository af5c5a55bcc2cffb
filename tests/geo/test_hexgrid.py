"""geo.hexgrid: H3 cells of a boundary with area-true clipped shares; areas checked with pyproj.Geod."""

from __future__ import annotations

import json

import h3.api.basic_int as h3
import numpy as np
import pytest
import shapely
from pyproj import Geod
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.polygon import orient

from geo.area import area_from_geojson
from geo.hexgrid import GridTooFineError, hexgrid
from tracker.config import DEFAULT_DISTRICTS_FILE

GEOD = Geod(ellps="WGS84")


def geodesic_m2(geom: Polygon | MultiPolygon) -> float:
    # Oriented: Geod adds a hole that runs the same way as its exterior.
    return abs(GEOD.geometry_area_perimeter(orient(geom) if isinstance(geom, Polygon) else geom)[0])


@pytest.fixture(scope="module")
def miraflores() -> Polygon | MultiPolygon:
    return area_from_geojson(json.loads(DEFAULT_DISTRICTS_FILE.read_text(encoding="utf-8")), "Miraflores")


def test_miraflores_cells_measure_the_district(miraflores: Polygon | MultiPolygon) -> None:
    g = hexgrid(miraflores, 10)
    assert g.res == 10
    assert len(set(g.cells.tolist())) == g.size > 500
    assert all(h3.get_resolution(int(c)) == 10 for c in g.cells[:20])
    # Clipped areas add up to the boundary's geodesic area: border cells count only their inside part.
    assert g.total_area_m2 == pytest.approx(geodesic_m2(miraflores), rel=5e-4)
    assert np.all((g.share > 0) & (g.share <= 1))
    assert 0 < np.count_nonzero(g.share < 1) < g.size  # a border ring, and an interior
    # H3 cells vary in size over the globe: near Lima they are ~17 % above the mean of resolution 10.
    assert g.cell_area_m2 == pytest.approx(h3.average_hexagon_area(10, unit="m^2") * 1.175, rel=0.01)
    lat, lon = h3.cell_to_latlng(int(g.cells[7]))
    ring = [(x, y) for y, x in h3.cell_to_boundary(int(g.cells[7]))]
    assert float(g.cell_area_m2[7]) == pytest.approx(geodesic_m2(Polygon(ring)), rel=1e-4)
    # Whole cells have their centre inside; the centres are the H3 centres.
    whole = g.share == 1
    assert shapely.contains_xy(miraflores, g.lon[whole], g.lat[whole]).all()
    lat, lon = h3.cell_to_latlng(int(g.cells[0]))
    assert (g.lat[0], g.lon[0]) == (lat, lon)


def test_border_cells_are_included_not_only_centres_inside(miraflores: Polygon | MultiPolygon) -> None:
    g = hexgrid(miraflores, 10)
    centred = set(h3.h3shape_to_cells_experimental(h3.geo_to_h3shape(miraflores), 10, contain="center"))
    assert centred <= set(g.cells.tolist())
    assert g.size > len(centred)  # overlap mode adds the cells whose centre lies just outside


def test_share_of_a_border_cell_is_its_clipped_fraction() -> None:
    # Half a hexagon: cut a cell along the meridian through its centre.
    c = h3.latlng_to_cell(-12.12, -77.03, 8)
    lat, lon = h3.cell_to_latlng(c)
    cut = box(lon, lat - 0.1, lon + 0.1, lat + 0.1)
    g = hexgrid(cut, 8)
    assert int(c) in g.cells.tolist()
    assert float(g.share[g.cells.tolist().index(int(c))]) == pytest.approx(0.5, abs=2e-3)


def test_holes_and_multipolygons() -> None:
    outer = box(-77.06, -12.14, -77.00, -12.09)
    hole = box(-77.04, -12.125, -77.02, -12.105)
    holed = Polygon(outer.exterior.coords, [hole.interiors or hole.exterior.coords])
    g = hexgrid(holed, 10)
    assert g.total_area_m2 == pytest.approx(geodesic_m2(holed), rel=5e-4)
    # No whole cell inside the hole; cells straddling its edge keep only their outside part.
    inside_hole = shapely.contains_xy(hole, g.lon, g.lat)
    assert np.all(g.share[inside_hole] < 0.5)
    multi = MultiPolygon([box(-77.06, -12.14, -77.05, -12.13), box(-77.00, -12.10, -76.99, -12.09)])
    gm = hexgrid(multi, 10)
    assert gm.total_area_m2 == pytest.approx(geodesic_m2(multi), rel=5e-4)
    assert np.all(shapely.distance(multi, shapely.points(gm.lon, gm.lat)) < 1e-3)


def test_too_fine_a_resolution_says_how_many_cells_it_would_need(miraflores: Polygon | MultiPolygon) -> None:
    with pytest.raises(GridTooFineError) as err:
        hexgrid(miraflores, 13, max_cells=100_000)
    assert isinstance(err.value, ValueError)
    assert err.value.needed > 100_000 and err.value.limit == 100_000
    text = str(err.value)
    assert f"{err.value.needed:,}" in text and "100,000" in text and "resolution 13" in text
    expected = geodesic_m2(miraflores) / h3.average_hexagon_area(13, unit="m^2")
    assert err.value.needed == pytest.approx(expected, rel=0.01)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="resolution"):
        hexgrid(box(0, 0, 1, 1), 16)
    with pytest.raises(ValueError, match="non-empty"):
        hexgrid(Polygon(), 9)
