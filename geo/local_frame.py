"""A local metric frame: lon/lat degrees to east/north metres about an origin, and back.

Equirectangular about the origin with the WGS84 radii of curvature at its
latitude. Across a district (a few km) the error is well under a metre; across
Lima (50 km) it stays under 0.2 % of distances. Use it to move things in
metres; use geodesic maths (pyproj.Geod) to measure across a country.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.geometry.base import BaseGeometry

WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3


@dataclass(frozen=True, slots=True)
class LocalFrame:
    """East/north metres about ``(lon0, lat0)``."""

    lon0: float
    lat0: float

    @property
    def metres_per_degree(self) -> tuple[float, float]:
        """Metres per degree of longitude and of latitude at the origin.

        >>> mx, my = LocalFrame(0.0, 0.0).metres_per_degree
        >>> round(mx), round(my)
        (111319, 110574)
        """
        phi = math.radians(self.lat0)
        s2 = math.sin(phi) ** 2
        n = WGS84_A / math.sqrt(1 - WGS84_E2 * s2)  # prime vertical radius
        m = WGS84_A * (1 - WGS84_E2) / (1 - WGS84_E2 * s2) ** 1.5  # meridian radius
        return math.radians(1) * n * math.cos(phi), math.radians(1) * m

    def to_xy(self, lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Degrees to metres east and north of the origin (vectorised)."""
        mx, my = self.metres_per_degree
        x = (np.asarray(lon, dtype=np.float64) - self.lon0) * mx
        y = (np.asarray(lat, dtype=np.float64) - self.lat0) * my
        return x, y

    def to_lonlat(self, x: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Metres east and north of the origin to degrees (vectorised).

        >>> f = LocalFrame(-77.03, -12.12)
        >>> lon, lat = f.to_lonlat(*f.to_xy(-77.01, -12.13))
        >>> round(float(lon), 9), round(float(lat), 9)
        (-77.01, -12.13)
        """
        mx, my = self.metres_per_degree
        lon = self.lon0 + np.asarray(x, dtype=np.float64) / mx
        lat = self.lat0 + np.asarray(y, dtype=np.float64) / my
        return lon, lat

    def geometry_to_xy(self, geom: BaseGeometry) -> BaseGeometry:
        """Return ``geom`` (lon/lat) with its coordinates in this frame's metres."""
        mx, my = self.metres_per_degree
        origin = np.array([self.lon0, self.lat0])
        scale = np.array([mx, my])
        return shapely.transform(geom, lambda c: (c - origin) * scale)

    @classmethod
    def centred_on(cls, geom: BaseGeometry) -> LocalFrame:
        """A frame whose origin is the centre of ``geom``'s bounding box."""
        minx, miny, maxx, maxy = geom.bounds
        return cls((minx + maxx) / 2, (miny + maxy) / 2)
