"""Reading the coverage layers' files (drone docks, camera viewsheds): the I/O edge of geo.docks/viewsheds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geo.docks import Dock, DockDefaults, docks_from_geojson
from geo.viewsheds import Viewsheds, viewsheds_from_geojson
from tracker.config import CoverageSettings
from tracker.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent / "data"
# Illustrative demo data for Miraflores (see tracker/data/README.md): not the real network.
DEMO_DOCKS_FILE = DATA_DIR / "demo_miraflores_docks.geojson"
DEMO_CAMERAS_FILE = DATA_DIR / "demo_miraflores_cameras.geojson"


def _read(path: Path, setting: str, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} file {path} not found: fix {setting}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{what} file {path} is not readable GeoJSON ({exc}): fix {setting}") from exc


def load_docks(path: Path, settings: CoverageSettings | None = None) -> list[Dock]:
    """The docks of a GeoJSON FeatureCollection of Points, with the aircraft table of ``settings``.

    Raises :class:`ConfigError` naming the file, the feature and what to fix.
    """
    cs = settings or CoverageSettings()
    setting = "SERENAZGO_COVERAGE__DOCKS"
    collection = _read(path, setting, "docks")
    defaults = DockDefaults(profile=cs.default_profile, hold_s=cs.hold_s, profiles=cs.profiles())
    try:
        return docks_from_geojson(collection, defaults)
    except ValueError as exc:
        raise ConfigError(f"docks file {path}: {exc} (fix the file or {setting})") from exc


def load_viewsheds(path: Path) -> Viewsheds:
    """Camera viewsheds from a GeoJSON file; :class:`ConfigError` names the feature and what to fix."""
    setting = "SERENAZGO_COVERAGE__CAMERAS"
    obj = _read(path, setting, "camera viewsheds")
    try:
        return viewsheds_from_geojson(obj)
    except ValueError as exc:
        raise ConfigError(f"camera viewsheds file {path}: {exc} (fix the file or {setting})") from exc
