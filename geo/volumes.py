"""Volumes: geofences with an altitude band (a footprint between a floor and a ceiling).

Pure, like :mod:`geo.geofence`, whose index and hysteresis it reuses: the
footprints go in a :class:`~geo.geofence.GeofenceIndex` (horizontal zones with
its margin bands), and the altitude band gets the same four zones on the
vertical axis, with its own margin (barometric and GPS altitude are noisier
than a horizontal fix, and a zone's floor is often the ground).

**Combined zone.** A point is in a volume when it is in the footprint *and*
between floor and ceiling, so its depth inside is the smaller of its horizontal
and vertical depths: the combined :class:`~geo.geofence.Zone` is the minimum of
the two. Outside, the distance to the volume is at least the larger of the two
distances, so taking the minimum zone there is conservative (a point shallow
outside on both axes is called shallow, though it may be slightly further).
The :class:`~geo.geofence.Hysteresis` machine then turns fixes into one enter
and one exit, exactly as for geofences.

**Altitudes** are metres above the ground / take-off point. A floor of 0 means
the volume reaches the ground: it has no lower bound at all (an aircraft that
took off from a roof and flies below its take-off point is still inside). An
unknown altitude (NaN) is taken as inside the band, so the footprint alone
decides: the safe answer for restricted airspace.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geo.geofence import SMALL_POLYGON_FRACTION, Area, GeofenceIndex, Zone


def band_bounds(floor_m: float, ceiling_m: float) -> tuple[float, float]:
    """The altitude interval a band covers: a floor of 0 (or below) reaches down without limit.

    >>> band_bounds(0.0, 60.0), band_bounds(30.0, math.inf)
    ((-inf, 60.0), (30.0, inf))
    """
    return (-math.inf if floor_m <= 0.0 else floor_m), ceiling_m


def vertical_zones(
    alt: NDArray[np.float64],
    lo: NDArray[np.float64],
    hi: NDArray[np.float64],
    margin_in: NDArray[np.float64],
    margin_out: float,
) -> NDArray[np.int8]:
    """Zone of each altitude against its band ``[lo, hi]`` (arrays of one length); NaN altitude: DEEP_IN.

    ``margin_in``: how deep inside counts as deep (per band, so thin bands still
    have a deep core); ``margin_out``: the width of the shallow band outside.
    """
    with np.errstate(invalid="ignore"):
        depth = np.minimum(alt - lo, hi - alt)  # > 0 inside, < 0 outside (inf - inf cannot occur)
    zone = np.full(alt.shape, int(Zone.DEEP_OUT), dtype=np.int8)
    zone[depth >= -margin_out] = int(Zone.SHALLOW_OUT)
    zone[depth >= 0.0] = int(Zone.SHALLOW_IN)
    zone[depth >= margin_in] = int(Zone.DEEP_IN)
    zone[np.isnan(alt)] = int(Zone.DEEP_IN)
    return zone


class VolumeIndex:
    """Immutable index of volumes: combined zones of many (lat, lon, altitude) points.

    >>> from shapely.geometry import Polygon
    >>> sq = Polygon([(-77.03, -12.12), (-77.02, -12.12), (-77.02, -12.11), (-77.03, -12.11)])
    >>> idx = VolumeIndex([("H1", sq, 0.0, 60.0)], margin_m=10.0, vertical_margin_m=5.0)
    >>> [Zone(int(z)).name for z in idx.zones_many([-12.115] * 3, [-77.025] * 3, [20.0, 58.0, 90.0])[2]]
    ['DEEP_IN', 'SHALLOW_IN']
    """

    def __init__(
        self,
        volumes: Iterable[tuple[str, Area, float, float]],
        margin_m: float = 15.0,
        vertical_margin_m: float = 5.0,
    ) -> None:
        if vertical_margin_m < 0 or not math.isfinite(vertical_margin_m):
            raise ValueError(f"vertical_margin_m must be a finite number >= 0, got {vertical_margin_m}")
        items = list(volumes)
        self.footprints = GeofenceIndex(((vid, area) for vid, area, _, _ in items), margin_m)
        self.ids = self.footprints.ids
        self.vertical_margin_m = vertical_margin_m
        for vid, _, floor, ceiling in items:
            if not (math.isfinite(floor) and floor < ceiling):
                raise ValueError(f"volume {vid!r}: floor {floor} must be finite and below ceiling {ceiling}")
        bounds = [band_bounds(floor, ceiling) for _, _, floor, ceiling in items]
        self._lo = np.array([b[0] for b in bounds], dtype=np.float64)
        self._hi = np.array([b[1] for b in bounds], dtype=np.float64)
        # Like small polygons: a band thinner than twice the margin is "deep" from half its half-height.
        half = (self._hi - self._lo) / 2.0
        self._margin_in = np.minimum(vertical_margin_m, SMALL_POLYGON_FRACTION * half)

    def __len__(self) -> int:
        return len(self.ids)

    def zones_many(
        self, lat: ArrayLike, lon: ArrayLike, alt: ArrayLike
    ) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.int8]]:
        """(point index, volume index, combined zone) for every pair not DEEP_OUT, sorted by point."""
        a = np.asarray(alt, dtype=np.float64).ravel()
        pi, vi, hz = self.footprints.zones_many(lat, lon)
        if pi.size == 0:
            return pi, vi, hz
        vz = vertical_zones(a[pi], self._lo[vi], self._hi[vi], self._margin_in[vi], self.vertical_margin_m)
        zone = np.minimum(hz, vz)
        keep = zone > int(Zone.DEEP_OUT)
        return pi[keep], vi[keep], zone[keep]
