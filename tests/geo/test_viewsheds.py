"""geo.viewsheds against Shapely's own intersection areas (cells built afresh from H3 in lon/lat) and
the seen area measured in UTM 18S with pyproj; bad GeoJSON gives a reason that names the feature."""

from __future__ import annotations

import json
import math

import h3.api.basic_int as h3
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from shapely.geometry import Point, Polygon, mapping

from geo.area import Area
from geo.hexgrid import HexGrid, hexgrid
from geo.viewsheds import SEEN_SHARE, Viewsheds, seen_eta, viewshed_cover, viewsheds_from_geojson
from tracker.coverage_files import DEMO_CAMERAS_FILE


def shapely_shares(grid: HexGrid, union: shapely.Geometry) -> np.ndarray:
    """Per cell: area(cell ∩ boundary ∩ union) / area(cell ∩ boundary), every cell, in lon/lat degrees.

    Ratios of areas in a small region do not depend on the (locally affine) projection.
    """
    out = np.empty(grid.size)
    seen = shapely.intersection(union, grid.boundary)
    for i, c in enumerate(grid.cells.tolist()):
        cell = Polygon([(lon, lat) for lat, lon in h3.cell_to_boundary(int(c))])
        inside = shapely.intersection(cell, grid.boundary).area
        out[i] = shapely.intersection(cell, seen).area / inside
    return out


def utm_area(g: shapely.Geometry) -> float:
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32718", always_xy=True).transform
    return float(shapely.transform(g, lambda xy: np.column_stack(to_utm(xy[:, 0], xy[:, 1]))).area)


def test_demo_cameras_shares_match_shapely_cell_by_cell(mgrid: HexGrid, miraflores: Area) -> None:
    views = viewsheds_from_geojson(json.loads(DEMO_CAMERAS_FILE.read_text(encoding="utf-8")))
    assert views.size == 6
    cover = viewshed_cover(mgrid, views)
    ref = shapely_shares(mgrid, views.union)
    np.testing.assert_allclose(cover.share, ref, atol=1e-9)
    assert np.array_equal(cover.seen, ref >= SEEN_SHARE)
    assert 0 < cover.seen.sum() < mgrid.size
    # The exact seen area equals the union's area inside the boundary (measured in UTM 18S).
    seen_m2 = utm_area(shapely.intersection(views.union, miraflores))
    assert cover.seen_area_m2 / mgrid.total_area_m2 == pytest.approx(seen_m2 / utm_area(miraflores), rel=2e-3)
    eta = seen_eta(cover)
    assert np.all(eta[cover.seen] == 0.0) and np.all(np.isinf(eta[~cover.seen]))


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-77.045, -77.015), st.floats(-12.135, -12.105), st.floats(30.0, 600.0)),
        min_size=1,
        max_size=6,
    )
)
def test_random_viewsheds_match_shapely(discs: list[tuple[float, float, float]]) -> None:
    grid = _grid()
    polys = [Point(lon, lat).buffer(r / 111_000.0, 8) for lon, lat, r in discs]
    fc = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {"id": f"c{i}"}, "geometry": mapping(p)}
                     for i, p in enumerate(polys)],
    }  # fmt: skip
    views = viewsheds_from_geojson(fc)
    cover = viewshed_cover(grid, views)
    ref = shapely_shares(grid, views.union)
    np.testing.assert_allclose(cover.share, ref, atol=1e-9)
    # Rounding at half a cell: the seen cells' area is the exact one give or take half of each cell cut.
    cut = (ref > 0) & (ref < 1)
    slack = float((grid.clipped_area_m2[cut] * 0.5).sum()) + 1e-6
    seen_by_cells = float(grid.clipped_area_m2[cover.seen].sum())
    assert abs(seen_by_cells - cover.seen_area_m2) <= slack


_G: list[HexGrid] = []


def _grid() -> HexGrid:
    if not _G:
        _G.append(hexgrid(shapely.box(-77.04, -12.13, -77.02, -12.11), 10))
    return _G[0]


def test_feature_polygon_and_multipolygon_inputs() -> None:
    a = Point(-77.03, -12.12).buffer(0.001)
    b = Point(-77.025, -12.115).buffer(0.001)
    multi = shapely.MultiPolygon([a, b])
    for obj in (
        mapping(multi),
        {"type": "Feature", "id": "m", "properties": None, "geometry": mapping(multi)},
    ):
        v = viewsheds_from_geojson(obj)
        assert v.size == 1 and v.union.area == pytest.approx(multi.area)
    v = viewsheds_from_geojson({"type": "Feature", "id": "m", "properties": {}, "geometry": mapping(a)})
    assert v.ids == ("m",)
    # Viewsheds outside the area see nothing of it.
    far = Viewsheds(("far",), (Point(-70.0, -12.0).buffer(0.01),), Point(-70.0, -12.0).buffer(0.01))
    cover = viewshed_cover(_grid(), far)
    assert not cover.seen.any() and cover.seen_area_m2 == 0.0


def poly(*ring: tuple[float, float]) -> dict[str, object]:
    return {"type": "Polygon", "coordinates": [[list(xy) for xy in ring]]}


def feat(geometry: object, fid: str | None = "c1") -> dict[str, object]:
    return {"type": "Feature", "properties": {} if fid is None else {"id": fid}, "geometry": geometry}


BOWTIE = poly((-77.03, -12.12), (-77.02, -12.11), (-77.02, -12.12), (-77.03, -12.11), (-77.03, -12.12))
SWAPPED = poly((-12.1, -277.0), (-12.0, -277.0), (-12.0, -276.9), (-12.1, -277.0))


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ("cameras", "expected a GeoJSON object, got str"),
        (
            {"type": "Point", "coordinates": [0, 0]},
            "expected a FeatureCollection, Feature, Polygon or MultiPolygon",
        ),
        ({"type": "FeatureCollection"}, "has no 'features' list"),
        ({"type": "FeatureCollection", "features": []}, "holds no viewshed features"),
        (
            {"type": "FeatureCollection", "features": [feat(None)]},
            "feature 0 (camera 'c1'): missing geometry",
        ),
        (
            feat({"type": "Point", "coordinates": [-77.0, -12.1]}),
            "camera 'c1'): a viewshed must be a Polygon or MultiPolygon, got Point",
        ),
        (feat(BOWTIE), "invalid polygon (Self-intersection"),
        (feat(SWAPPED, None), "GeoJSON needs [lon, lat] in degrees"),
        (feat(poly((0, 0), (1, 1), (2, 2), (0, 0))), "invalid polygon"),
        (feat({"type": "Polygon", "coordinates": []}), "is empty (no area)"),
        (feat({"type": "Polygon", "coordinates": "x"}), "unreadable Polygon"),
        ({"type": "FeatureCollection", "features": [{"type": "Feat"}]}, "feature 0 is not a GeoJSON Feature"),
    ],
)
def test_bad_viewshed_geojson_says_what_to_fix(obj: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        viewsheds_from_geojson(obj)
    assert message in str(err.value)


def test_seen_share_threshold_is_half() -> None:
    assert math.isclose(SEEN_SHARE, 0.5)
