"""/api/v1/units/{id}/track: GeoJSON, CSV and GPX of fixes stored by the real writer in PostgreSQL."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from tracker.batch import IngestBatch
from tracker.model import Ping, PingFlag, Source, Unit, UnitKind
from tracker.store.units import create_unit_sync
from tracker.store.writer import PositionWriter

pytestmark = pytest.mark.integration

GPX = "{http://www.topografix.com/GPX/1/1}"
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=2)

# A walk along Av. Larco, Miraflores: lat about -12.12, lon about -77.03 (lon < lat < 0 tells the order).
WALK = [
    (0, -12.12210, -77.02950, 79.0, 1.3),
    (10, -12.12198, -77.02940, 79.5, 1.2),
    (20, -12.12186, -77.02931, None, 1.4),
    (30, -12.11650, -77.03500, 80.0, 1.3),  # a spike, flagged OUTLIER by the filters
    (40, -12.12162, -77.02912, 80.5, 1.3),
]


def fix(second: int, lat: float, lon: float, alt: float | None, speed: float, flags=PingFlag.NONE) -> Ping:
    return Ping(
        unit_id="ser-014",
        ts=T0 + timedelta(seconds=second),
        lat=lat,
        lon=lon,
        alt=alt,
        speed=speed,
        heading=45.0,
        accuracy=6.0,
        battery=80.0,
        flags=flags,
        source=Source.OWNTRACKS,
        received_at=T0 + timedelta(seconds=second, milliseconds=300),
    )


@pytest.fixture
def stored(pg_url) -> list[Ping]:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_unit_sync(conn, Unit("ser-014", UnitKind.FOOT, callsign="SER-014", sector="S2"))
    pings = [fix(*row, flags=PingFlag.OUTLIER if row[0] == 30 else PingFlag.NONE) for row in WALK]
    # Outside the default 24 h window, and inside the last 7 days.
    old = fix(0, -12.13, -77.04, None, 0.0)
    old.ts = NOW - timedelta(hours=30)
    with PositionWriter(pg_url) as writer:
        result = writer.write(IngestBatch(pings=[old, *pings]))
    assert result.stored == 6
    return pings


async def test_geojson_is_a_lonlat_linestring_with_times_and_no_outliers(api, stored) -> None:
    resp = await api.client.get("/api/v1/units/ser-014/track")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/geo+json")
    feature = resp.json()
    assert feature["type"] == "Feature"
    assert feature["id"] == "ser-014"
    expected = [p for p in stored if not p.flags & PingFlag.OUTLIER]
    assert feature["geometry"]["type"] == "LineString"
    assert feature["geometry"]["coordinates"] == [[p.lon, p.lat] for p in expected]
    for lon, lat in feature["geometry"]["coordinates"]:
        assert -77.1 < lon < -77.0
        assert -12.2 < lat < -12.1
    props = feature["properties"]
    assert props["count"] == 4
    times = props["coordinateProperties"]["times"]
    assert [datetime.fromisoformat(t) for t in times] == [p.ts for p in expected]
    assert props["coordinateProperties"]["alt"] == [79.0, 79.5, None, 80.5]


async def test_include_outliers_brings_the_spike_back(api, stored) -> None:
    resp = await api.client.get("/api/v1/units/ser-014/track", params={"include_outliers": "true"})
    feature = resp.json()
    assert feature["properties"]["count"] == 5
    assert [-77.035, -12.1165] in feature["geometry"]["coordinates"]
    assert feature["properties"]["coordinateProperties"]["flags"][3] == ["outlier"]


async def test_window_bounds_select_fixes(api, stored) -> None:
    start = (T0 + timedelta(seconds=10)).isoformat()
    end = (T0 + timedelta(seconds=40)).isoformat()  # exclusive
    resp = await api.client.get("/api/v1/units/ser-014/track", params={"start": start, "end": end})
    times = resp.json()["properties"]["coordinateProperties"]["times"]
    assert [datetime.fromisoformat(t) for t in times] == [stored[1].ts, stored[2].ts]
    # The fix from 30 h ago is outside the default window, inside an explicit one.
    wide = await api.client.get(
        "/api/v1/units/ser-014/track", params={"start": (NOW - timedelta(hours=31)).isoformat()}
    )
    assert wide.json()["properties"]["count"] == 1
    one = wide.json()
    assert one["geometry"] == {"type": "Point", "coordinates": [-77.04, -12.13]}


async def test_csv_rows_match_the_stored_fixes(api, stored) -> None:
    resp = await api.client.get("/api/v1/units/ser-014/track", params={"format": "csv"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    expected = [p for p in stored if not p.flags & PingFlag.OUTLIER]
    assert len(rows) == len(expected)
    for row, p in zip(rows, expected, strict=True):
        assert row["unit_id"] == "ser-014"
        assert datetime.fromisoformat(row["ts"]) == p.ts
        assert float(row["lat"]) == p.lat
        assert float(row["lon"]) == p.lon
        assert (float(row["alt"]) if row["alt"] else None) == p.alt
        assert float(row["speed"]) == pytest.approx(p.speed)
        assert row["source"] == "owntracks"
        assert row["flags"] == ""


async def test_gpx_is_valid_gpx_1_1_with_lat_lon_and_time(api, stored) -> None:
    resp = await api.client.get("/api/v1/units/ser-014/track", params={"format": "gpx"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/gpx+xml")
    root = ET.fromstring(resp.content)
    assert root.tag == f"{GPX}gpx"
    assert root.attrib["version"] == "1.1"
    assert root.attrib["creator"] == "serenazgo"
    assert root.find(f"{GPX}trk/{GPX}name").text == "SER-014"
    points = root.findall(f"{GPX}trk/{GPX}trkseg/{GPX}trkpt")
    expected = [p for p in stored if not p.flags & PingFlag.OUTLIER]
    assert len(points) == len(expected)
    for pt, p in zip(points, expected, strict=True):
        assert float(pt.attrib["lat"]) == pytest.approx(p.lat, abs=1e-7)
        assert float(pt.attrib["lon"]) == pytest.approx(p.lon, abs=1e-7)
        assert datetime.fromisoformat(pt.find(f"{GPX}time").text) == p.ts
        # GPX 1.1 fixes the child order: ele before time; no ele when the altitude is unknown.
        children = [c.tag for c in pt]
        assert children == ([f"{GPX}ele", f"{GPX}time"] if p.alt is not None else [f"{GPX}time"])


async def test_empty_window_gives_empty_documents(api, stored) -> None:
    params = {"start": (NOW + timedelta(hours=1)).isoformat(), "end": (NOW + timedelta(hours=2)).isoformat()}
    geo = (await api.client.get("/api/v1/units/ser-014/track", params=params)).json()
    assert geo["geometry"] is None
    assert geo["properties"]["count"] == 0
    gpx = await api.client.get("/api/v1/units/ser-014/track", params={**params, "format": "gpx"})
    assert ET.fromstring(gpx.content).findall(f"{GPX}trk/{GPX}trkseg/{GPX}trkpt") == []
    rows = (await api.client.get("/api/v1/units/ser-014/track", params={**params, "format": "csv"})).text
    assert rows.splitlines() == ["unit_id,ts,lat,lon,alt,speed,heading,accuracy,battery,flags,source"]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"start": "2024-05-02T00:00:00Z", "end": "2024-05-01T00:00:00Z"}, "must be after start"),
        ({"start": "2024-05-01T00:00:00Z", "end": "2024-05-01T00:00:00Z"}, "must be after start"),
        ({"start": "2024-04-01T00:00:00Z", "end": "2024-05-01T00:00:00Z"}, "longer than 7 days"),
        ({"start": "yesterday"}, "datetime"),
        ({"format": "kml"}, "geojson"),
    ],
)
async def test_bad_windows_and_formats_are_422_with_the_reason(api, stored, params, needle) -> None:
    resp = await api.client.get("/api/v1/units/ser-014/track", params=params)
    assert resp.status_code == 422
    assert needle in resp.text


async def test_unknown_unit_is_404(api) -> None:
    resp = await api.client.get("/api/v1/units/ghost/track")
    assert resp.status_code == 404
    assert "ghost" in resp.json()["detail"]
