"""Track formats: GeoJSON (RFC 7946), CSV, GPX 1.1 and KML 2.2, from domain values.

Plain functions of the domain model, shared by the track route and evidence
exports, so both write the same bytes and are testable without a server:
coordinates are always ``[lon, lat]`` in GeoJSON, ``lat``/``lon`` attributes
in GPX and ``lon,lat[,alt]`` tuples in KML; times are UTC ISO-8601 with a ``Z``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from tracker.model import Ping, PingFlag, Unit

GPX_NS = "http://www.topografix.com/GPX/1/1"
GPX_SCHEMA_LOCATION = "http://www.topografix.com/GPX/1/1 http://www.topografix.com/GPX/1/1/gpx.xsd"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
KML_NS = "http://www.opengis.net/kml/2.2"
GX_NS = "http://www.google.com/kml/ext/2.2"

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


# (bit, name) of each flag, in bit order: read once, as enum attribute access per fix and per format
# was a quarter of the time of formatting a long track.
_FLAG_BITS = tuple((f.value, f.name.lower()) for f in PingFlag if f.value and f.name)


def flag_names(flags: PingFlag | int) -> list[str]:
    """The names of the flags set in ``flags``, lower case, in bit order.

    >>> flag_names(PingFlag.TS_DEFAULTED | PingFlag.JITTER)
    ['ts_defaulted', 'jitter']
    """
    value = int(flags)
    return [name for bit, name in _FLAG_BITS if value & bit]


def num(value: float | None, digits: int) -> float | None:
    """Round for output; NaN and None become None (JSON has no NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


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
                "speed": [num(p.speed, 2) for p in points],
                "heading": [num(p.heading, 1) for p in points],
                "accuracy": [num(p.accuracy, 1) for p in points],
                "alt": [num(p.alt, 1) for p in points],
                "flags": [flag_names(p.flags) for p in points],
            },
        },
    }


def _cell(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else repr(value)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """``header`` then ``rows`` as CSV text (the ``csv`` module's quoting, ``\\n`` line ends)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def track_csv(unit: Unit, points: Sequence[Ping]) -> str:
    """A unit's track as CSV with a header row; empty cells for unknown values, flags joined by ``|``."""
    return csv_text(
        CSV_COLUMNS,
        (
            (
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
            )
            for p in points
        ),
    )


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


def track_kml(unit: Unit, points: Sequence[Ping], generated: datetime) -> bytes:
    """A unit's track as a KML 2.2 document (UTF-8 bytes): one Placemark with a ``gx:Track``.

    ``gx:Track`` keeps a time per position (a plain LineString would lose them);
    its ``when``/``gx:coord`` pairs are in the same order, ``gx:coord`` is
    ``lon lat alt`` separated by spaces (alt 0 when unknown, with
    ``altitudeMode`` clampToGround then, as KML has no "unknown").
    """
    ET.register_namespace("", KML_NS)
    ET.register_namespace("gx", GX_NS)
    kml = ET.Element(f"{{{KML_NS}}}kml")
    doc = ET.SubElement(kml, f"{{{KML_NS}}}Document")
    ET.SubElement(doc, f"{{{KML_NS}}}name").text = f"{unit.callsign or unit.unit_id} track"
    ET.SubElement(doc, f"{{{KML_NS}}}description").text = f"generated {iso_z(generated)}"
    mark = ET.SubElement(doc, f"{{{KML_NS}}}Placemark", {"id": unit.unit_id})
    ET.SubElement(mark, f"{{{KML_NS}}}name").text = unit.callsign or unit.unit_id
    gx_track = ET.SubElement(mark, f"{{{GX_NS}}}Track")
    has_alt = any(p.alt is not None and math.isfinite(p.alt) for p in points)
    ET.SubElement(gx_track, f"{{{KML_NS}}}altitudeMode").text = "absolute" if has_alt else "clampToGround"
    # The schema wants every <when> first, then every <gx:coord>.
    for p in points:
        ET.SubElement(gx_track, f"{{{KML_NS}}}when").text = iso_z(p.ts)
    for p in points:
        alt = p.alt if p.alt is not None and math.isfinite(p.alt) else 0.0
        ET.SubElement(gx_track, f"{{{GX_NS}}}coord").text = f"{p.lon:.7f} {p.lat:.7f} {alt:.1f}"
    body: bytes = ET.tostring(kml, encoding="utf-8", xml_declaration=True)
    return body
