"""/api/v1/units/{id}/evidence and ``serenazgo evidence export``: signed packages of rows in PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from lxml import etree

from tests.api.conftest import Api
from tests.fixtures.auth import seed_headers
from tracker.batch import IngestBatch
from tracker.config import Settings
from tracker.evidence import verify_package
from tracker.evidence_key import load_signing_key
from tracker.model import Ping, PingFlag, Source, Unit, UnitKind
from tracker.store.units import create_unit_sync
from tracker.store.writer import PositionWriter

pytestmark = pytest.mark.integration

SERENAZGO = Path(sys.executable).with_name("serenazgo")
GPX = "{http://www.topografix.com/GPX/1/1}"
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=2)
START, END = T0 - timedelta(minutes=30), T0 + timedelta(minutes=30)

WALK = [
    (0, -12.12210, -77.02950, 79.0),
    (10, -12.12198, -77.02940, 79.5),
    (20, -12.12186, -77.02931, None),
    (30, -12.11650, -77.03500, 80.0),  # flagged OUTLIER: kept in evidence (all stored fixes), flagged
    (40, -12.12162, -77.02912, 80.5),
]


def fix(second: int, lat: float, lon: float, alt: float | None) -> Ping:
    return Ping(
        unit_id="ser-014",
        ts=T0 + timedelta(seconds=second, milliseconds=250 * (second % 3)),
        lat=lat,
        lon=lon,
        alt=alt,
        speed=1.3,
        heading=45.0,
        accuracy=6.0,
        battery=80.0,
        flags=PingFlag.OUTLIER if second == 30 else PingFlag.NONE,
        source=Source.OWNTRACKS,
        received_at=T0 + timedelta(seconds=second + 1),
    )


@pytest.fixture
def stored(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_unit_sync(conn, Unit("ser-014", UnitKind.FOOT, callsign="SER-014", sector="S2"))
        create_unit_sync(conn, Unit("ser-015", UnitKind.FOOT, callsign="SER-015", sector="S2"))
        outside = fix(0, -12.13, -77.04, None)
        outside.ts = END + timedelta(minutes=5)
        with PositionWriter(pg_url) as writer:
            assert writer.write(IngestBatch(pings=[*(fix(*row) for row in WALK), outside])).stored == 6
        # One incident attended in the window, one attended before it (released before START), and one
        # of another unit: only the first belongs in the package.
        for lat, lon, unit, assigned, released in [
            (-12.1219, -77.0297, "ser-014", T0 - timedelta(minutes=2), T0 + timedelta(minutes=20)),
            (-12.1190, -77.0310, "ser-014", START - timedelta(hours=1), START - timedelta(minutes=1)),
            (-12.1200, -77.0300, "ser-015", T0, None),
        ]:
            (iid,) = conn.execute(
                "INSERT INTO incidents (lat, lon, category, channel, created_at)"
                " VALUES (%s, %s, 'seguridad_ciudadana', 'whatsapp', %s) RETURNING incident_id",
                [lat, lon, assigned - timedelta(minutes=1)],
            ).fetchone()
            conn.execute(
                "INSERT INTO assignments (incident_id, unit_id, assigned_at, assigned_by, released_at)"
                " VALUES (%s, %s, %s, 'op-ana', %s)",
                [iid, unit, assigned, released],
            )


@pytest.fixture
def api(api: Api, tmp_path: Path) -> Api:
    """The app of tests/api/conftest.py, with its data folder (and so its signing key) under tmp_path."""
    api.ctx.settings = api.ctx.settings.model_copy(update={"data_dir": tmp_path / "data"})
    return api


def window(**extra: str) -> dict[str, str]:
    return {"start": START.isoformat(), "end": END.isoformat(), **extra}


def stored_rows(pg_url: str) -> list[tuple[datetime, float, float, float | None]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            "SELECT ts, lat, lon, alt FROM positions"
            " WHERE unit_id = 'ser-014' AND ts >= %s AND ts < %s ORDER BY ts",
            [START, END],
        ).fetchall()


async def test_export_verifies_matches_the_rows_and_is_audited(api, stored, pg_url, tmp_path) -> None:
    # The manifest names the logged-in user: a supervisor, op-ana.
    ana = seed_headers(api.ctx, "supervisor", "op-ana")
    resp = await api.client.get("/api/v1/units/ser-014/evidence", params=window(), headers=ana)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/zip"
    filename = f"evidence_ser-014_{START:%Y%m%dT%H%M%SZ}_{END:%Y%m%dT%H%M%SZ}.zip"
    assert resp.headers["content-disposition"] == f'attachment; filename="{filename}"'

    key = load_signing_key(api.ctx.settings)  # the key the API created, read back from the data folder
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    result = verify_package(resp.content, key.key.public_key())
    assert result.valid, result.problems
    manifest = result.manifest
    assert manifest is not None
    assert manifest["exported_by"] == "op-ana"
    assert manifest["counts"] == {"track_points": 5, "incidents": 1}
    assert manifest["query"]["include_outliers"] is True

    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        gpx = etree.fromstring(zf.read("track.gpx"))
        geojson = json.loads(zf.read("track.geojson"))
        incidents = json.loads(zf.read("incidents.geojson"))
    rows = stored_rows(pg_url)
    assert len(rows) == 5
    pts = gpx.findall(f"{GPX}trk/{GPX}trkseg/{GPX}trkpt")
    got = [
        (
            datetime.fromisoformat(p.findtext(f"{GPX}time").replace("Z", "+00:00")),
            float(p.get("lat")),
            float(p.get("lon")),
            None if p.findtext(f"{GPX}ele") is None else float(p.findtext(f"{GPX}ele")),
        )
        for p in pts
    ]
    assert got == rows
    assert geojson["geometry"]["coordinates"] == [[lon, lat] for _, lat, lon, _ in rows]
    [incident] = incidents["features"]
    assert incident["geometry"]["coordinates"] == [-77.0297, -12.1219]

    with psycopg.connect(pg_url) as conn:
        audit = conn.execute(
            "SELECT actor, origin, action, subject, detail FROM audit_log WHERE action = 'evidence_export'"
        ).fetchall()
    assert len(audit) == 1
    actor, origin, action, subject, detail = audit[0]
    assert (actor, action, subject) == ("op-ana", "evidence_export", "unit:ser-014")
    assert origin  # the client's address
    assert detail["filename"] == filename
    assert detail["manifest_sha256"] == resp.headers["x-evidence-manifest-sha256"]
    assert detail["key_fingerprint"] == key.fingerprint
    assert (detail["track_points"], detail["incidents"]) == (5, 1)

    # A second export reuses the same key; an integration (the video platform) names whom it exports for.
    platform = seed_headers(api.ctx, "integration", "video-platform")
    again = await api.client.get(
        "/api/v1/units/ser-014/evidence", params=window(operator="op-luis"), headers=platform
    )
    assert again.status_code == 200
    assert verify_package(again.content, key.key.public_key()).valid
    assert verify_package(again.content).manifest["exported_by"] == "video-platform (for op-luis)"
    assert sorted(p.name for p in key.path.parent.iterdir()) == ["ed25519.key", "ed25519.pub"]


async def test_outliers_can_be_left_out(api, stored) -> None:
    resp = await api.client.get(
        "/api/v1/units/ser-014/evidence", params=window(include_outliers="false", operator="op-ana")
    )
    assert resp.status_code == 200
    manifest = verify_package(resp.content).manifest
    assert manifest is not None and manifest["counts"]["track_points"] == 4


async def test_unknown_unit_bad_window_and_who_may_export(api, stored, pg_url) -> None:
    who = seed_headers(api.ctx, "supervisor", "op-ana")
    missing = await api.client.get("/api/v1/units/ser-999/evidence", params=window(), headers=who)
    assert missing.status_code == 404
    assert "ser-999" in missing.json()["detail"]
    backwards = await api.client.get(
        "/api/v1/units/ser-014/evidence",
        params={"start": END.isoformat(), "end": START.isoformat()},
        headers=who,
    )
    assert backwards.status_code == 422
    assert "must be after start" in backwards.json()["detail"]
    too_long = await api.client.get(
        "/api/v1/units/ser-014/evidence",
        params={"start": (END - timedelta(days=8)).isoformat(), "end": END.isoformat()},
        headers=who,
    )
    assert too_long.status_code == 422
    assert "longer than 7 days" in too_long.json()["detail"]
    anonymous = await api.client.get(
        "/api/v1/units/ser-014/evidence", params=window(), headers={"Authorization": ""}
    )
    assert anonymous.status_code == 401
    viewer = await api.client.get(
        "/api/v1/units/ser-014/evidence", params=window(), headers=seed_headers(api.ctx, "viewer")
    )
    assert viewer.status_code == 403
    assert "admin, integration, supervisor" in viewer.json()["detail"]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)  # refusals are not exports


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    base.update(COLUMNS="200", NO_COLOR="1", **env)
    return subprocess.run(
        [str(SERENAZGO), *args], capture_output=True, text=True, env=base, timeout=120, check=False
    )


def test_cli_export_then_verify(stored, pg_url, tmp_path) -> None:
    env = {"SERENAZGO_DATABASE_URL": pg_url, "SERENAZGO_DATA_DIR": str(tmp_path / "data")}
    out = tmp_path / "ser-014.zip"
    export = cli(
        "evidence", "export", "ser-014", "--start", START.isoformat(), "--end", END.isoformat(),
        "--out", str(out), "--by", "fiscalia-req-118", env=env,
    )  # fmt: skip
    assert export.returncode == 0, export.stdout + export.stderr
    assert "5 fixes, 1 incident assignments" in export.stdout
    key = load_signing_key(Settings(data_dir=tmp_path / "data"))
    assert key.public_path is not None
    verify = cli("evidence", "verify", str(out), "--public-key", str(key.public_path), env={})
    assert verify.returncode == 0, verify.stdout
    assert "VALID" in verify.stdout and key.fingerprint in verify.stdout
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(
            "SELECT actor, origin FROM audit_log WHERE action = 'evidence_export'"
        ).fetchall() == [("fiscalia-req-118", "cli")]
    unknown = cli(
        "evidence", "export", "ser-999", "--start", START.isoformat(), "--end", END.isoformat(),
        "--out", str(tmp_path / "x.zip"), "--by", "x", env=env,
    )  # fmt: skip
    assert unknown.returncode == 1
    assert "ser-999" in unknown.stderr
    assert not (tmp_path / "x.zip").exists()
