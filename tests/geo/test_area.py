"""geo.area against Lima's district file and hand-made shapes; areas checked with pyproj.Geod."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import shapely
from pyproj import Geod
from shapely.geometry import MultiPolygon, Polygon, box

from geo.area import area_from_geojson, feature_names, normalize_name, random_points
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE
from tracker.errors import ConfigError

GEOD = Geod(ellps="WGS84")


@pytest.fixture(scope="module")
def lima() -> dict:
    return json.loads(DEFAULT_DISTRICTS_FILE.read_text(encoding="utf-8"))


def geodesic_km2(geom: Polygon | MultiPolygon) -> float:
    return abs(GEOD.geometry_area_perimeter(geom)[0]) / 1e6


def test_miraflores_is_selected_whole_name_case_and_accent_insensitive(lima: dict) -> None:
    upper = area_from_geojson(lima, "MIRAFLORES")
    accented = area_from_geojson(lima, " miraflóres ")
    assert upper.equals(accented)
    # The data README: the coarse INEI polygon measures 11.7 km² (official 9.62 km²).
    assert geodesic_km2(upper) == pytest.approx(11.7, abs=0.15)
    # "San Juan De Miraflores" lies 5 km east and must not have been merged in.
    sjm = area_from_geojson(lima, "san juan de miraflores")
    assert not upper.intersects(sjm)
    assert isinstance(upper, Polygon)


def test_accented_district_names_match_plain_spelling(lima: dict) -> None:
    assert "Breña" in feature_names(lima)
    assert area_from_geojson(lima, "BRENA").equals(area_from_geojson(lima, "Breña"))
    assert normalize_name("Breña") == normalize_name("  BRENA ")


def test_several_districts_are_unioned(lima: dict) -> None:
    both = area_from_geojson(lima, ["Miraflores", "Barranco"])
    mira = area_from_geojson(lima, "Miraflores")
    barranco = area_from_geojson(lima, "Barranco")
    assert both.contains(mira.representative_point())
    assert both.contains(barranco.representative_point())
    assert geodesic_km2(both) == pytest.approx(geodesic_km2(mira) + geodesic_km2(barranco), rel=0.01)


def test_all_districts_union_covers_each_district(lima: dict) -> None:
    everything = area_from_geojson(lima)
    names = feature_names(lima)
    assert len(names) == 42
    total = sum(geodesic_km2(area_from_geojson(lima, n)) for n in names)
    # Lima province measures about 2,670 km²; the coarse polygons overlap a little.
    assert 2400 < geodesic_km2(everything) <= total * 1.0001
    for name in ("Ancon", "Pucusana", "Miraflores"):
        assert everything.contains(area_from_geojson(lima, name).representative_point())


def test_unknown_district_names_the_available_ones(lima: dict) -> None:
    with pytest.raises(ValueError, match="Atlantis") as err:
        area_from_geojson(lima, ["Miraflores", "Atlantis"])
    assert "Surquillo" in str(err.value)


def test_rejects_non_collections_and_collections_without_polygons() -> None:
    with pytest.raises(ValueError, match="FeatureCollection"):
        area_from_geojson({"type": "Feature"})
    points = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [0, 0]}}
        ],
    }
    with pytest.raises(ValueError, match="no Polygon"):
        area_from_geojson(points)


def test_load_area_turns_file_problems_into_config_errors(tmp_path) -> None:
    assert load_area(DEFAULT_DISTRICTS_FILE, "Miraflores").area > 0
    with pytest.raises(ConfigError, match="SERENAZGO_AREA"):
        load_area(tmp_path / "missing.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not readable"):
        load_area(bad)
    with pytest.raises(ConfigError, match="Atlantis"):
        load_area(DEFAULT_DISTRICTS_FILE, "Atlantis")


def test_random_points_lie_inside_and_are_spread_by_area(lima: dict) -> None:
    mira = area_from_geojson(lima, "Miraflores")
    pts = random_points(mira, 20_000, np.random.default_rng(7))
    assert pts.shape == (20_000, 2)
    assert shapely.contains_xy(mira, pts[:, 0], pts[:, 1]).all()
    # Split the polygon at its centroid's longitude: the share of points west must
    # match the share of area west (binomial, 5 sigma).
    cx = mira.centroid.x
    minx, miny, _maxx, maxy = mira.bounds
    west_share = mira.intersection(box(minx, miny, cx, maxy)).area / mira.area
    observed = float((pts[:, 0] < cx).mean())
    sigma = math.sqrt(west_share * (1 - west_share) / len(pts))
    assert abs(observed - west_share) < 5 * sigma


def test_random_points_fill_a_thin_concave_shape() -> None:
    # An L of 1 % fill ratio: rejection sampling must still finish and stay inside.
    ell = Polygon([(0, 0), (100, 0), (100, 1), (1, 1), (1, 100), (0, 100)])
    pts = random_points(ell, 500, np.random.default_rng(3))
    assert shapely.contains_xy(ell, pts[:, 0], pts[:, 1]).all()
    assert (pts[:, 0] > 50).any()
    assert (pts[:, 1] > 50).any()


def test_random_points_are_deterministic_by_seed(lima: dict) -> None:
    mira = area_from_geojson(lima, "Miraflores")
    a = random_points(mira, 50, np.random.default_rng(42))
    b = random_points(mira, 50, np.random.default_rng(42))
    c = random_points(mira, 50, np.random.default_rng(43))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert random_points(mira, 0, np.random.default_rng(1)).shape == (0, 2)
