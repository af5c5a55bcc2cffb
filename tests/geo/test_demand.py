"""geo.demand: incident counts per H3 cell and the area-proportional prior, against h3's string API."""

from __future__ import annotations

from collections import Counter

import h3
import numpy as np
import pytest

from geo.demand import cell_counts, demand_weights, latlng_cells
from geo.hexgrid import hexgrid
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE

MIRAFLORES = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")


def test_counts_match_a_counter_of_h3_strings_and_ignore_points_off_the_grid() -> None:
    grid = hexgrid(MIRAFLORES, 10)
    rng = np.random.default_rng(3)
    minx, miny, maxx, maxy = MIRAFLORES.bounds
    # Some points fall in the bbox but outside the district's cells, some far away (Callao).
    lat = np.concatenate([rng.uniform(miny - 0.01, maxy + 0.01, 3000), [-12.05, -12.06]])
    lon = np.concatenate([rng.uniform(minx - 0.01, maxx + 0.01, 3000), [-77.14, -77.15]])
    counts = cell_counts(grid.cells, latlng_cells(lat, lon, grid.res))
    expected = Counter(h3.latlng_to_cell(float(a), float(o), 10) for a, o in zip(lat, lon, strict=True))
    want = np.array([expected.get(h3.int_to_str(int(c)), 0) for c in grid.cells])
    np.testing.assert_array_equal(counts, want)
    assert 0 < counts.sum() < lat.shape[0]


def test_counts_do_not_depend_on_the_grid_order() -> None:
    grid = hexgrid(MIRAFLORES, 10)
    hits = latlng_cells(np.full(5, -12.1211), np.full(5, -77.0297), 10)
    perm = np.random.default_rng(1).permutation(grid.size)
    np.testing.assert_array_equal(cell_counts(grid.cells[perm], hits), cell_counts(grid.cells, hits)[perm])
    assert cell_counts(grid.cells, hits).sum() == 5
    assert cell_counts(grid.cells, np.empty(0, dtype=np.uint64)).sum() == 0


def test_weights_are_count_plus_prior_scaled_by_clipped_area_over_its_mean() -> None:
    counts = np.array([0, 3, 0, 10])
    area = np.array([100.0, 100.0, 30.0, 70.0])  # mean 75
    w = demand_weights(counts, area, prior=1.5)
    np.testing.assert_allclose(w, [2.0, 5.0, 0.6, 10.0 + 1.4])
    np.testing.assert_array_equal(demand_weights(counts, area, prior=0.0), counts)
    # An empty cell still counts: coverage that leaves it blind loses something.
    assert (w > 0).all()


@pytest.mark.parametrize("prior", [-1.0, float("nan")])
def test_weights_refuse_a_bad_prior(prior: float) -> None:
    with pytest.raises(ValueError):
        demand_weights([1, 2], [1.0, 1.0], prior=prior)


def test_latlng_cells_refuses_non_finite_points() -> None:
    with pytest.raises(ValueError):
        latlng_cells([float("nan")], [-77.0], 10)
