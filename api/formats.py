"""Output formats of the API: GeoJSON (RFC 7946), CSV and GPX 1.1, from domain values.

Plain functions of the domain model, so they are testable without a server:
coordinates are always ``[lon, lat]`` in GeoJSON and ``lat``/``lon`` attributes
in GPX; times are UTC ISO-8601 with a ``Z``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from tracker.fleet import UnitState
from tracker.model import Freshness, Ping, PingFlag, Unit

GPX_NS = "http://www.topografix.com/GPX/1/1"
GPX_SCHEMA_LOCATION = "http://www.topografix.com/GPX/1/1 http://www.topografix.com/GPX/1/1/gpx.xsd"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

CSV_COLUMNS = (
    "unit_id",
    "ts",
    "lat",
    "lon",
    "alt",
    "speed",
    "heading",
    "accuracy",
    "battery",
    "flags",
    "source",
)


def iso_z(ts: datetime) -> str:
    """``ts`` as UTC ISO-8601 with a ``Z`` and milliseconds when it has them.

    >>> iso_z(datetime(2024, 5, 6, 9, 30, 0, 250000, tzinfo=UTC))
    '2024-05-06T09:30:00.250Z'
    >>> iso_z(datetime(2024, 5, 6, 9, 30, tzinfo=UTC))
    '2024-05-06T09:30:00Z'
    """
    ts = ts.astimezone(UTC)
    if ts.microsecond:
        return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def flag_names(flags: PingFlag | int) -> list[str]:
    """The names of the flags set in ``flags``, lower case, in bit order.

    >>> flag_names(PingFlag.TS_DEFAULTED | PingFlag.JITTER)
    ['ts_defaulted', 'jitter']
    """
    value = int(flags)
    return [f.name.lower() for f in PingFlag if f.value and value & f.value and f.name]


def _num(value: float | None, digits: int) -> float | None:
    """Round for output; NaN and None become None (JSON has no NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


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
            speed=_num(fix.speed, 2),
            heading=_num(fix.heading, 1),
            battery=_num(fix.battery, 1),
            accuracy=_num(fix.accuracy, 1),
            alt=_num(fix.alt, 1),
            flags=flag_names(fix.flags),
            source=str(fix.source),
        )
    return {"type": "Feature", "id": unit.unit_id, "geometry": geometry, "properties": props}


def live_collection(features: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """A FeatureCollection of live features, stamped with the time it was taken."""
    return {"type": "FeatureCollection", "generated_at": iso_z(now), "features": features}


def track_geojson(unit: Unit, points: Sequence[Ping], start: datetime, end: datetime) -> dict[str, Any]:
    """A unit's track as one GeoJSON Feature: a LineString (a Point for one fix, null for none).

    Per-point values ride in ``properties.coordinateProperties`` (the convention
    of mapbox/togeojson), index-aligned with the coordinates.
    """
    coords = [[round(p.lon, 7), round(p.lat, 7)] for p in points]
    geometry: dict[str, Any] | None
    if len(coords) >= 2:
        geometry = {"type": "LineString", "coordinates": coords}
    elif coords:
        geometry = {"type": "Point", "coordinates": coords[0]}
    else:
        geometry = None
    return {
        "type": "Feature",
        "id": unit.unit_id,
        "geometry": geometry,
        "properties": {
            "unit_id": unit.unit_id,
            "kind": str(unit.kind),
            "callsign": unit.callsign,
            "start": iso_z(start),
            "end": iso_z(end),
            "count": len(points),
            "coordinateProperties": {
                "times": [iso_z(p.ts) for p in points],
                "speed": [_num(p.speed, 2) for p in points],
                "heading": [_num(p.heading, 1) for p in points],
                "accuracy": [_num(p.accuracy, 1) for p in points],
                "alt": [_num(p.alt, 1) for p in points],
                "flags": [flag_names(p.flags) for p in points],
            },
        },
    }


def _cell(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else repr(value)


def track_csv(unit: Unit, points: Sequence[Ping]) -> str:
    """A unit's track as CSV with a header row; empty cells for unknown values, flags joined by ``|``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in points:
        writer.writerow(
            [
                unit.unit_id,
                iso_z(p.ts),
                repr(p.lat),
                repr(p.lon),
                _cell(p.alt),
                _cell(p.speed),
                _cell(p.heading),
                _cell(p.accuracy),
                _cell(p.battery),
                "|".join(flag_names(p.flags)),
                str(p.source),
            ]
        )
    return out.getvalue()


def track_gpx(unit: Unit, points: Sequence[Ping], generated: datetime) -> bytes:
    """A unit's track as a GPX 1.1 document (UTF-8 bytes): one ``trk``, one ``trkseg``."""
    ET.register_namespace("", GPX_NS)
    ET.register_namespace("xsi", XSI_NS)
    gpx = ET.Element(
        f"{{{GPX_NS}}}gpx",
        {"version": "1.1", "creator": "serenazgo", f"{{{XSI_NS}}}schemaLocation": GPX_SCHEMA_LOCATION},
    )
    metadata = ET.SubElement(gpx, f"{{{GPX_NS}}}metadata")
    ET.SubElement(metadata, f"{{{GPX_NS}}}name").text = f"{unit.callsign or unit.unit_id} track"
    ET.SubElement(metadata, f"{{{GPX_NS}}}time").text = iso_z(generated)
    trk = ET.SubElement(gpx, f"{{{GPX_NS}}}trk")
    ET.SubElement(trk, f"{{{GPX_NS}}}name").text = unit.callsign or unit.unit_id
    ET.SubElement(trk, f"{{{GPX_NS}}}type").text = str(unit.kind)
    seg = ET.SubElement(trk, f"{{{GPX_NS}}}trkseg")
    for p in points:
        # Element order inside trkpt is fixed by the GPX 1.1 schema: ele, then time.
        pt = ET.SubElement(seg, f"{{{GPX_NS}}}trkpt", {"lat": f"{p.lat:.7f}", "lon": f"{p.lon:.7f}"})
        if p.alt is not None and math.isfinite(p.alt):
            ET.SubElement(pt, f"{{{GPX_NS}}}ele").text = f"{p.alt:.1f}"
        ET.SubElement(pt, f"{{{GPX_NS}}}time").text = iso_z(p.ts)
    body: bytes = ET.tostring(gpx, encoding="utf-8", xml_declaration=True)
    return body
