"""Reading restricted airspace files (``SERENAZGO_DRONES__AIRSPACE``) and storing them: the I/O edge.

The file is a GeoJSON FeatureCollection of zones (see :func:`drones.airspace.parse_zone`).
At start, ``serenazgo up`` upserts its zones into ``airspace_zones``: the file is the truth for
its ids, and zones created through the API under other ids stay.
"""

from __future__ import annotations

from pathlib import Path

from drones.airspace import AirspaceZone, parse_zones
from geo.geofence import GeofenceError
from tracker.coverage_files import DATA_DIR, _read
from tracker.errors import ConfigError
from tracker.store import airspace as airspace_store
from tracker.store.airspace import StoredZone
from tracker.store.pool import AsyncDb

SETTING = "SERENAZGO_DRONES__AIRSPACE"
# Illustrative demo zones for Miraflores (see tracker/data/README.md): not official aeronautical data.
DEMO_AIRSPACE_FILE = DATA_DIR / "demo_miraflores_airspace.geojson"


def load_airspace_file(path: Path) -> list[AirspaceZone]:
    """The zones of a GeoJSON file; :class:`ConfigError` naming the file, the feature and what to fix."""
    obj = _read(path, SETTING, "airspace")
    try:
        return parse_zones(obj)
    except GeofenceError as exc:
        raise ConfigError(f"airspace file {path}: {exc} (fix the file or {SETTING})") from exc


def stored_zone(zone: AirspaceZone, created_by: str) -> StoredZone:
    """The row to store for a validated zone."""
    return StoredZone(
        zone.zone_id,
        zone.name,
        zone.kind,
        zone.floor_m,
        zone.ceiling_m,
        zone.geometry,
        zone.properties,
        created_by=created_by,
    )


async def store_airspace_file(db: AsyncDb, path: Path, zones: list[AirspaceZone]) -> int:
    """Upsert the zones read from ``path`` (created_by ``file:<path>``); return how many."""
    await airspace_store.insert_zones(db, [stored_zone(z, f"file:{path}") for z in zones], replace=True)
    return len(zones)
