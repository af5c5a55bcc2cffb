"""Reading a boundary GeoJSON file: the I/O edge in front of the pure :mod:`geo.area`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from geo.area import Area, area_from_geojson
from tracker.errors import ConfigError


def load_area(path: Path, select: str | Iterable[str] | None = None, prop: str = "district") -> Area:
    """Read ``path`` and return the union of the features whose ``prop`` is in ``select`` (all if None).

    Raises :class:`ConfigError` saying which setting to fix when the file is
    missing, is not GeoJSON, or has no such feature.
    """
    try:
        collection = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"area file {path} not found: set SERENAZGO_AREA to a boundary GeoJSON") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"area file {path} is not readable GeoJSON ({exc}): fix SERENAZGO_AREA") from exc
    if not isinstance(collection, dict):
        raise ConfigError(f"area file {path} is not a GeoJSON FeatureCollection: fix SERENAZGO_AREA")
    try:
        return area_from_geojson(collection, select, prop)
    except ValueError as exc:
        raise ConfigError(f"area file {path}: {exc}") from exc
