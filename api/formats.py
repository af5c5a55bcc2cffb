"""Output formats of the API: the live feed's GeoJSON (track formats are in :mod:`tracker.track_formats`).

Plain functions of the domain model, so they are testable without a server:
coordinates are always ``[lon, lat]`` in GeoJSON; times are UTC ISO-8601 with a ``Z``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tracker.fleet import UnitState
from tracker.model import Freshness
from tracker.track_formats import flag_names, iso_z, num

__all__ = ["live_collection", "live_feature"]


def live_feature(state: UnitState, freshness: Freshness, now: datetime) -> dict[str, Any]:
    """One unit's latest state as a GeoJSON Feature (null geometry until its first fix)."""
    unit = state.unit
    fix = state.fix
    props: dict[str, Any] = {
        "unit_id": unit.unit_id,
        "kind": str(unit.kind),
        "callsign": unit.callsign,
        "sector": unit.sector,
        "status": str(state.status),
        "freshness": str(freshness),
        "connected": state.connected,
        "fix_time": None,
        "age_s": None,
        "speed": None,
        "heading": None,
        "battery": None,
        "accuracy": None,
        "alt": None,
        "flags": [],
        "source": None,
    }
    geometry: dict[str, Any] | None = None
    if fix is not None:
        geometry = {"type": "Point", "coordinates": [round(fix.lon, 7), round(fix.lat, 7)]}
        props.update(
            fix_time=iso_z(fix.ts),
            age_s=round(max((now - fix.ts).total_seconds(), 0.0), 1),
            speed=num(fix.speed, 2),
            heading=num(fix.heading, 1),
            battery=num(fix.battery, 1),
            accuracy=num(fix.accuracy, 1),
            alt=num(fix.alt, 1),
            flags=flag_names(fix.flags),
            source=str(fix.source),
        )
    return {"type": "Feature", "id": unit.unit_id, "geometry": geometry, "properties": props}


def live_collection(features: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """A FeatureCollection of live features, stamped with the time it was taken."""
    return {"type": "FeatureCollection", "generated_at": iso_z(now), "features": features}
