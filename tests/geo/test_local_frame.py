"""geo.local_frame against pyproj.Geod (independent geodesic ground truth)."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Geod

from geo.local_frame import LocalFrame

GEOD = Geod(ellps="WGS84")


@pytest.mark.parametrize(("az", "dist"), [(0, 3000.0), (90, 3000.0), (45, 5000.0), (200, 1200.0)])
def test_offsets_match_geodesic_distance_and_azimuth_in_miraflores(az: float, dist: float) -> None:
    frame = LocalFrame(-77.03, -12.12)
    lon, lat, _ = GEOD.fwd(-77.03, -12.12, az, dist)
    x, y = frame.to_xy(lon, lat)
    assert float(np.hypot(x, y)) == pytest.approx(dist, abs=0.5)
    assert float(np.degrees(np.arctan2(x, y)) % 360) == pytest.approx(az % 360, abs=0.05)


def test_round_trip_is_exact_and_vectorised() -> None:
    frame = LocalFrame(-77.0, -12.0)
    lon = np.array([-77.1, -76.9, -77.0])
    lat = np.array([-12.2, -11.9, -12.0])
    back = frame.to_lonlat(*frame.to_xy(lon, lat))
    assert np.allclose(back[0], lon, atol=1e-12)
    assert np.allclose(back[1], lat, atol=1e-12)
