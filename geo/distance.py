"""Great-circle distance on the sphere: the scalar kernel the GPS filters call per fix.

Scalar and pure (floats in, float out) because the filters judge one fix at a
time; :data:`haversine_m_nb` is the same function compiled by numba, for the
kernels of the dispatch, coverage and placement engines.
"""

from __future__ import annotations

import math

import numba

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius: haversine within ~0.5 % of WGS84 geodesics


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two lat/lon points (degrees).

    >>> round(haversine_m(-12.0, -77.0, -12.0, -77.001))
    109
    """
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    s_dlat = math.sin((p2 - p1) * 0.5)
    s_dlon = math.sin(math.radians(lon2 - lon1) * 0.5)
    h = s_dlat * s_dlat + math.cos(p1) * math.cos(p2) * s_dlon * s_dlon
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


# The same formula for numba kernels (inlined into them); the filters keep the plain Python
# function, which is cheaper to call one fix at a time than a compiled dispatcher.
haversine_m_nb = numba.njit(cache=True, inline="always")(haversine_m)
