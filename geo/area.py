"""Areas of operation: boundaries from GeoJSON objects and random points inside them.

Pure: the caller reads the file (``Settings.area_file()``) and hands over the
parsed FeatureCollection; this module only builds geometries and arrays.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon, shape

Area: TypeAlias = Polygon | MultiPolygon


def normalize_name(name: str) -> str:
    """Fold case, accents and runs of blanks so ``"Breña"`` matches ``" BRENA "``.

    >>> normalize_name("  San  Martín de Porres ")
    'san martin de porres'
    """
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def feature_names(collection: Mapping[str, Any], prop: str = "district") -> list[str]:
    """Return the values of property ``prop`` over the collection's features, in file order."""
    return [str((f.get("properties") or {}).get(prop, "")) for f in collection.get("features", [])]


def area_from_geojson(
    collection: Mapping[str, Any],
    select: str | Iterable[str] | None = None,
    prop: str = "district",
) -> Area:
    """Build the (Multi)Polygon of the features whose ``prop`` is in ``select`` (all when None).

    Names compare case- and accent-insensitively and must match whole
    (``"Miraflores"`` is not ``"San Juan De Miraflores"``). Several features
    are unioned. Raises ``ValueError`` naming the available values when nothing
    matches, or when the collection holds no polygons.

    >>> fc = {"type": "FeatureCollection", "features": [
    ...     {"type": "Feature", "properties": {"district": "Miraflores"},
    ...      "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}
    >>> area_from_geojson(fc, "MIRAFLORES").area
    0.5
    """
    if collection.get("type") != "FeatureCollection":
        raise ValueError(f"expected a GeoJSON FeatureCollection, got type {collection.get('type')!r}")
    wanted: dict[str, str] | None  # normalised -> as the caller spelt it, for the error message
    if select is None:
        wanted = None
    else:
        names = [select] if isinstance(select, str) else list(select)
        wanted = {normalize_name(s): s for s in names}
    found: set[str] = set()
    parts: list[Area] = []
    for feature in collection.get("features", []):
        geometry = feature.get("geometry")
        if not geometry:
            continue  # e.g. Santa Anita in the INEI file: listed, no geometry
        name = normalize_name(str((feature.get("properties") or {}).get(prop, "")))
        if wanted is not None and name not in wanted:
            continue
        geom = shape(geometry)
        if not isinstance(geom, Polygon | MultiPolygon):
            continue
        # A self-touching ring from simplification would break containment tests.
        parts.append(geom if geom.is_valid else shapely.make_valid(geom))
        found.add(name)
    if wanted is not None and wanted.keys() - found:
        available = ", ".join(sorted(set(feature_names(collection, prop))))
        missing = ", ".join(sorted(repr(wanted[k]) for k in wanted.keys() - found))
        raise ValueError(f"no polygon feature with {prop} = {missing}; available: {available}")
    if not parts:
        raise ValueError("the GeoJSON holds no Polygon or MultiPolygon features")
    merged: object = parts[0] if len(parts) == 1 else shapely.union_all(parts)
    if isinstance(merged, Polygon | MultiPolygon):
        return merged
    # union_all of polygons that make_valid turned into collections: keep the areal parts.
    polys = [g for g in shapely.get_parts(merged) if isinstance(g, Polygon | MultiPolygon)]
    return MultiPolygon([p for g in polys for p in shapely.get_parts(g)])


def random_points(area: Area, n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """Return ``n`` points drawn uniformly (in the plane of its coordinates) inside ``area``, shape (n, 2).

    Vectorised rejection sampling from the bounding box; the batch size adapts
    to the fill ratio so a thin area does not loop long. For a lon/lat area of a
    district or a city, uniform in degrees is uniform in area to within the
    change of cos(latitude) across it (under 0.5 % for all of Lima).

    >>> pts = random_points(Polygon([(0, 0), (2, 0), (0, 2)]), 100, np.random.default_rng(1))
    >>> pts.shape, bool(((pts[:, 0] + pts[:, 1]) < 2).all())
    ((100, 2), True)
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if area.is_empty or area.area <= 0:
        raise ValueError("cannot draw points inside an empty area")
    minx, miny, maxx, maxy = area.bounds
    fill = area.area / ((maxx - minx) * (maxy - miny))
    shapely.prepare(area)
    out = np.empty((n, 2), dtype=np.float64)
    have = 0
    while have < n:
        need = n - have
        batch = int(need / fill * 1.2) + 16
        x = rng.uniform(minx, maxx, batch)
        y = rng.uniform(miny, maxy, batch)
        inside = shapely.contains_xy(area, x, y)
        take = min(int(inside.sum()), need)
        out[have : have + take, 0] = x[inside][:take]
        out[have : have + take, 1] = y[inside][:take]
        have += take
    return out
