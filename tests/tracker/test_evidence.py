"""Evidence packages: the files match the rows, the signature and hashes verify, and any tampering is named.

Ground truth is independent of the code under test: the track files are parsed
back with lxml, csv and json; the signature is also checked by the OpenSSL
command line; the key fingerprint is recomputed from OpenSSL's DER output.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lxml import etree

from tracker.config import EvidenceSettings, Settings
from tracker.errors import ConfigError
from tracker.evidence import (
    INCIDENT_FILES,
    MANIFEST,
    SIGNATURE,
    TRACK_FILES,
    AttendedIncident,
    ExportFacts,
    build_package,
    canonical_json,
    fingerprint,
    public_key_pem,
    verify_package,
)
from tracker.evidence_key import load_signing_key
from tracker.model import Ping, PingFlag, Source, Unit, UnitKind

SERENAZGO = Path(sys.executable).with_name("serenazgo")
GPX = "{http://www.topografix.com/GPX/1/1}"
KML = "{http://www.opengis.net/kml/2.2}"
GX = "{http://www.google.com/kml/ext/2.2}"
T0 = datetime(2024, 5, 6, 14, 0, tzinfo=UTC)
UNIT = Unit("ser-014", UnitKind.FOOT, callsign="SER-014", sector="S2")

# A walk along Av. Larco, Miraflores (lat about -12.12, lon about -77.03: lon < lat < 0 tells the order).
ROWS = [
    (0.0, -12.1221, -77.0295, 79.0, 1.3, PingFlag.NONE),
    (10.25, -12.12198, -77.0294, 79.5, 1.2, PingFlag.NONE),
    (20.5, -12.1218634, -77.0293117, None, 1.4, PingFlag.NONE),
    (30.0, -12.1165, -77.035, 80.0, 9.3, PingFlag.OUTLIER),
    (40.0, -12.12162, -77.02912, 80.5, None, PingFlag.NONE),
]


def make_points() -> list[Ping]:
    return [
        Ping(
            unit_id=UNIT.unit_id,
            ts=T0 + timedelta(seconds=s),
            lat=lat,
            lon=lon,
            alt=alt,
            speed=speed,
            heading=45.0,
            accuracy=6.0,
            battery=80.0,
            flags=flags,
            source=Source.OWNTRACKS,
            received_at=T0 + timedelta(seconds=s + 1),
        )
        for s, lat, lon, alt, speed, flags in ROWS
    ]


INCIDENTS = [
    AttendedIncident(
        incident_id=41,
        assignment_id=7,
        lat=-12.1219,
        lon=-77.0297,
        category="seguridad_ciudadana",
        channel="whatsapp",
        priority=2,
        status="closed",
        address="Av. José Larco 400",
        description="robo al paso, sospechoso huye hacia el parque Kennedy",
        created_at=T0 - timedelta(minutes=3),
        closed_at=T0 + timedelta(minutes=20),
        assigned_at=T0 - timedelta(minutes=2),
        assigned_by="op-ana",
        arrived_at=T0 + timedelta(seconds=40),
        released_at=T0 + timedelta(minutes=20),
        release_reason="incident closed",
    )
]


def make_facts() -> ExportFacts:
    return ExportFacts(
        installation_id="miraflores-central-alerta",
        installation_name="Central Alerta Miraflores",
        unit=UNIT,
        start=T0 - timedelta(hours=1),
        end=T0 + timedelta(hours=1),
        query={"unit_id": UNIT.unit_id, "start": "2024-05-06T13:00:00Z", "end": "2024-05-06T15:00:00Z"},
        exported_by="fiscalia-req-2024-118 / op-ana",
        exported_at=datetime(2024, 5, 7, 9, 30, 15, tzinfo=UTC),
        software_version="0.1.0",
    )


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def package(key: Ed25519PrivateKey) -> bytes:
    return build_package(make_facts(), make_points(), INCIDENTS, key).data


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def repack(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return out.getvalue()


def flip(body: bytes, at: int | None = None) -> bytes:
    i = len(body) // 2 if at is None else at
    return body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]


# ----- the package and its manifest -----------------------------------------------------------


def test_package_holds_the_files_in_a_fixed_order_and_is_deterministic(key, package) -> None:
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        assert zf.namelist() == [*TRACK_FILES, *INCIDENT_FILES, MANIFEST, SIGNATURE]
    again = build_package(make_facts(), make_points(), INCIDENTS, key).data
    assert again == package  # Ed25519 is deterministic, and so is the ZIP


def test_manifest_is_canonical_and_lists_every_file_with_its_hash(key, package) -> None:
    files = members(package)
    manifest_bytes = files[MANIFEST]
    manifest = json.loads(manifest_bytes)
    # The stored bytes are the canonical form, re-derived here with the standard library.
    assert (
        manifest_bytes
        == json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert manifest_bytes == canonical_json(manifest)
    listed = {f["name"]: f for f in manifest["files"]}
    assert list(listed) == [*TRACK_FILES, *INCIDENT_FILES]
    for name, entry in listed.items():
        assert entry["size"] == len(files[name])
        assert entry["sha256"] == hashlib.sha256(files[name]).hexdigest()
    assert manifest["counts"] == {"track_points": len(ROWS), "incidents": 1}
    assert manifest["unit"]["unit_id"] == "ser-014"
    assert manifest["window"]["start"] == "2024-05-06T13:00:00Z"
    assert manifest["window"]["end"] == "2024-05-06T15:00:00Z"
    assert manifest["exported_by"] == "fiscalia-req-2024-118 / op-ana"
    assert manifest["exported_at"] == "2024-05-07T09:30:15Z"
    assert manifest["installation"] == {
        "id": "miraflores-central-alerta",
        "name": "Central Alerta Miraflores",
    }
    assert manifest["query"]["unit_id"] == "ser-014"
    assert manifest["software"] == {"name": "serenazgo", "version": "0.1.0"}
    sig = manifest["signature"]
    assert sig["algorithm"] == "Ed25519"
    assert sig["public_key_fingerprint_sha256"] == fingerprint(key.public_key())
    assert "PRIVATE" not in manifest_bytes.decode()


def test_canonical_json_refuses_floats() -> None:
    with pytest.raises(TypeError, match="no floats"):
        canonical_json({"a": [1, 2.5]})


def test_signature_verifies_with_openssl(tmp_path, key, package) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed: the independent check needs it")
    files = members(package)
    (tmp_path / "manifest.json").write_bytes(files[MANIFEST])
    (tmp_path / "manifest.sig").write_bytes(files[SIGNATURE])
    (tmp_path / "pub.pem").write_text(public_key_pem(key.public_key()))
    cmd = [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin"]

    def openssl_verify() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*cmd, "-in", "manifest.json", "-sigfile", "manifest.sig"],
            cwd=tmp_path,
            capture_output=True,
            check=False,
        )

    ok = openssl_verify()
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "manifest.json").write_bytes(flip(files[MANIFEST]))
    bad = openssl_verify()
    assert bad.returncode != 0


# ----- the formats match the rows -------------------------------------------------------------


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_gpx_parses_and_matches_the_rows(package) -> None:
    root = etree.fromstring(members(package)["track.gpx"])
    assert root.tag == f"{GPX}gpx" and root.get("version") == "1.1"
    pts = root.findall(f"{GPX}trk/{GPX}trkseg/{GPX}trkpt")
    points = make_points()
    assert len(pts) == len(points)
    for el, p in zip(pts, points, strict=True):
        assert float(el.get("lat")) == p.lat
        assert float(el.get("lon")) == p.lon
        assert iso(el.findtext(f"{GPX}time")) == p.ts
        ele = el.findtext(f"{GPX}ele")
        assert (None if ele is None else float(ele)) == p.alt


def test_kml_parses_and_matches_the_rows(package) -> None:
    root = etree.fromstring(members(package)["track.kml"])
    assert root.tag == f"{KML}kml"
    track = root.find(f"{KML}Document/{KML}Placemark/{GX}Track")
    assert track is not None
    whens = [iso(w.text) for w in track.findall(f"{KML}when")]
    coords = [tuple(float(v) for v in c.text.split()) for c in track.findall(f"{GX}coord")]
    points = make_points()
    assert whens == [p.ts for p in points]
    assert [(lon, lat) for lon, lat, _ in coords] == [(p.lon, p.lat) for p in points]
    assert [alt for *_, alt in coords] == [p.alt if p.alt is not None else 0.0 for p in points]
    assert track.findtext(f"{KML}altitudeMode") == "absolute"


def test_geojson_is_lon_lat_and_matches_the_rows(package) -> None:
    feature = json.loads(members(package)["track.geojson"])
    points = make_points()
    assert feature["type"] == "Feature"
    assert feature["geometry"]["type"] == "LineString"
    assert feature["geometry"]["coordinates"] == [[p.lon, p.lat] for p in points]
    for lon, lat in feature["geometry"]["coordinates"]:
        assert -77.1 < lon < -77.0 and -12.2 < lat < -12.1
    props = feature["properties"]
    assert [iso(t) for t in props["coordinateProperties"]["times"]] == [p.ts for p in points]
    assert props["coordinateProperties"]["flags"][3] == ["outlier"]
    incidents = json.loads(members(package)["incidents.geojson"])
    assert incidents["type"] == "FeatureCollection"
    [inc] = incidents["features"]
    assert inc["geometry"] == {"type": "Point", "coordinates": [-77.0297, -12.1219]}
    assert inc["properties"]["incident_id"] == 41
    assert inc["properties"]["address"] == "Av. José Larco 400"
    assert iso(inc["properties"]["arrived_at"]) == INCIDENTS[0].arrived_at


def test_csv_matches_the_rows(package) -> None:
    rows = list(csv.DictReader(io.StringIO(members(package)["track.csv"].decode())))
    points = make_points()
    assert len(rows) == len(points)
    for row, p in zip(rows, points, strict=True):
        assert (float(row["lat"]), float(row["lon"]), iso(row["ts"])) == (p.lat, p.lon, p.ts)
        assert (float(row["alt"]) if row["alt"] else None) == p.alt
        assert (float(row["speed"]) if row["speed"] else None) == p.speed
    assert rows[3]["flags"] == "outlier"
    [inc] = list(csv.DictReader(io.StringIO(members(package)["incidents.csv"].decode())))
    assert (inc["incident_id"], inc["assignment_id"], float(inc["lat"]), float(inc["lon"])) == (
        "41",
        "7",
        -12.1219,
        -77.0297,
    )
    assert inc["description"] == INCIDENTS[0].description


# ----- verification ---------------------------------------------------------------------------


def test_an_untouched_package_verifies(key, package) -> None:
    result = verify_package(package)
    assert result.valid, result.problems
    assert result.fingerprint == fingerprint(key.public_key())
    assert [f[0] for f in result.files] == [*TRACK_FILES, *INCIDENT_FILES]
    given = verify_package(package, key.public_key())
    assert given.valid and given.key_source == "given"


@pytest.mark.parametrize("name", [*TRACK_FILES, *INCIDENT_FILES])
def test_a_changed_byte_in_any_file_fails_naming_it(package, name) -> None:
    files = members(package)
    files[name] = flip(files[name])
    result = verify_package(repack(files))
    assert not result.valid
    assert result.signature_ok  # the manifest itself is intact
    assert result.problems == [f"{name}: SHA-256 {hashlib.sha256(files[name]).hexdigest()} differs from the "
                               f"manifest's {hashlib.sha256(flip(files[name])).hexdigest()}"]  # fmt: skip


@pytest.mark.parametrize("text", [b"op-ana", b"2024-05-06T13:00:00Z", b'"track.kml"'])
def test_a_changed_byte_in_the_manifest_fails_the_signature(package, text) -> None:
    # Inside a value, so the manifest is still JSON and only the signature can tell.
    files = members(package)
    files[MANIFEST] = flip(files[MANIFEST], files[MANIFEST].index(text) + 2)
    json.loads(files[MANIFEST])
    result = verify_package(repack(files))
    assert not result.valid
    assert not result.signature_ok
    assert result.problems[0].startswith("manifest.sig: the signature does not verify with the embedded key")


def test_a_manifest_broken_as_json_fails_with_both_reasons(package) -> None:
    files = members(package)
    files[MANIFEST] = flip(files[MANIFEST], 0)
    result = verify_package(repack(files))
    assert not result.valid
    assert result.problems[0].startswith("manifest.sig: cannot check the signature: no usable public key")
    assert result.problems[1].startswith("manifest.json: not a JSON object")
    # With the published key given, the signature check itself fails.
    assert (
        verify_package(repack(files), Ed25519PrivateKey.generate().public_key())
        .problems[0]
        .startswith("manifest.sig: the signature does not verify with the given key")
    )


def test_a_changed_byte_in_the_signature_fails(package) -> None:
    files = members(package)
    files[SIGNATURE] = flip(files[SIGNATURE], 5)
    result = verify_package(repack(files))
    assert not result.valid
    assert [p for p in result.problems if p.startswith("manifest.sig:")]
    assert all(not p.startswith("track") for p in result.problems)  # the files themselves still match


def test_a_changed_byte_in_the_raw_zip_fails(package) -> None:
    # A byte flipped in the stored (compressed) data: the ZIP's CRC or inflate catches it, and it is reported.
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        info = zf.getinfo("track.gpx")
    data_at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 10
    result = verify_package(flip(package, data_at))
    assert not result.valid
    assert any(p.startswith("track.gpx:") for p in result.problems), result.problems


def test_a_file_added_fails(package) -> None:
    files = members(package)
    files["notes.txt"] = b"added later"
    result = verify_package(repack(files))
    assert result.problems == ["notes.txt: in the package but not listed in the manifest"]


@pytest.mark.parametrize("name", ["track.kml", "incidents.csv"])
def test_a_file_removed_fails(package, name) -> None:
    files = members(package)
    del files[name]
    result = verify_package(repack(files))
    assert result.problems == [f"{name}: listed in the manifest but missing from the package"]


@pytest.mark.parametrize("name", [MANIFEST, SIGNATURE])
def test_a_missing_manifest_or_signature_fails(package, name) -> None:
    files = members(package)
    del files[name]
    assert verify_package(repack(files)).problems == [f"{name}: missing from the package"]


def test_a_different_key_fails(package) -> None:
    other = Ed25519PrivateKey.generate()
    result = verify_package(package, other.public_key())
    assert not result.valid
    assert result.fingerprint == fingerprint(other.public_key())
    assert result.embedded_fingerprint != result.fingerprint
    assert result.problems[0].startswith(
        f"manifest.sig: the signature does not verify with the given key {result.fingerprint}"
    )


def test_a_package_re_signed_by_another_key_verifies_only_against_that_key(key, package) -> None:
    # An attacker may rewrite the files and re-sign with a key of their own: the embedded key then
    # matches, but its fingerprint is not the municipality's, and the published key refuses it.
    forger = Ed25519PrivateKey.generate()
    forged = build_package(make_facts(), make_points()[:2], [], forger).data
    embedded = verify_package(forged)
    assert embedded.valid and embedded.fingerprint == fingerprint(forger.public_key())
    assert embedded.fingerprint != fingerprint(key.public_key())
    assert not verify_package(forged, key.public_key()).valid


def test_not_a_zip_is_reported() -> None:
    result = verify_package(b"PK\x03\x04 not really")
    assert not result.valid and result.problems[0].startswith("not a ZIP package")


# ----- the installation's key -----------------------------------------------------------------


def test_key_is_created_once_with_mode_0600_and_reused(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = load_signing_key(settings)
    assert first.created
    assert first.path == tmp_path / "evidence" / "ed25519.key"
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.path.parent.stat().st_mode) == 0o700
    assert first.public_path is not None
    assert first.public_path.read_text() == public_key_pem(first.key.public_key())
    assert repr(first) == f"SigningKey(path={first.path}, fingerprint={first.fingerprint}, created=True)"
    second = load_signing_key(settings)
    assert not second.created
    assert second.fingerprint == first.fingerprint
    assert [p.name for p in sorted(first.path.parent.iterdir())] == ["ed25519.key", "ed25519.pub"]


def test_fingerprint_is_sha256_of_the_raw_key_as_openssl_exports_it(tmp_path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed: the independent check needs it")
    key = load_signing_key(Settings(data_dir=tmp_path))
    assert key.public_path is not None
    der = subprocess.run(
        [openssl, "pkey", "-pubin", "-in", str(key.public_path), "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    assert key.fingerprint == hashlib.sha256(der[-32:]).hexdigest()


def test_key_file_setting_reads_an_openssl_key_and_refuses_bad_ones(tmp_path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed: it makes the key a municipality would bring")
    path = tmp_path / "municipal.pem"
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(path)], check=True)
    os.chmod(path, 0o600)
    key = load_signing_key(Settings(data_dir=tmp_path / "data", evidence=EvidenceSettings(key_file=path)))
    assert not key.created and key.path == path and key.public_path is None
    assert not (tmp_path / "data").exists()  # nothing generated beside
    with pytest.raises(ConfigError, match="does not exist"):
        load_signing_key(Settings(evidence=EvidenceSettings(key_file=tmp_path / "missing.pem")))
    rsa = tmp_path / "rsa.pem"
    rsa_args = ["-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024", "-out", str(rsa)]
    subprocess.run([openssl, "genpkey", *rsa_args], check=True, capture_output=True)
    with pytest.raises(ConfigError, match="Ed25519 only"):
        load_signing_key(Settings(evidence=EvidenceSettings(key_file=rsa)))


# ----- the command line -----------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    base.update(COLUMNS="200", NO_COLOR="1", **(env or {}))
    return subprocess.run(
        [str(SERENAZGO), *args], capture_output=True, text=True, env=base, timeout=120, check=False
    )


def test_cli_verify_valid_and_each_failure(tmp_path, key, package) -> None:
    good = tmp_path / "good.zip"
    good.write_bytes(package)
    ok = cli("evidence", "verify", str(good))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "VALID" in ok.stdout and "INVALID" not in ok.stdout
    assert fingerprint(key.public_key()) in ok.stdout
    pub = tmp_path / "pub.pem"
    pub.write_text(public_key_pem(key.public_key()))
    assert cli("evidence", "verify", str(good), "--public-key", str(pub)).returncode == 0

    files = members(package)
    files["track.gpx"] = flip(files["track.gpx"])
    bad = tmp_path / "bad.zip"
    bad.write_bytes(repack(files))
    out = cli("evidence", "verify", str(bad))
    assert out.returncode == 1
    assert "INVALID" in out.stdout
    assert "FAIL track.gpx: SHA-256" in out.stdout

    other = tmp_path / "other.pem"
    other.write_text(public_key_pem(Ed25519PrivateKey.generate().public_key()))
    wrong = cli("evidence", "verify", str(good), "--public-key", str(other))
    assert wrong.returncode == 1
    assert "manifest.sig: the signature does not verify with the given key" in wrong.stdout

    missing = cli("evidence", "verify", str(tmp_path / "nope.zip"))
    assert missing.returncode == 2


def test_cli_key_prints_the_fingerprint_and_reuses_the_key(tmp_path) -> None:
    env = {"SERENAZGO_DATA_DIR": str(tmp_path)}
    first, second = cli("evidence", "key", env=env), cli("evidence", "key", env=env)
    assert first.returncode == second.returncode == 0, first.stderr
    key = load_signing_key(Settings(data_dir=tmp_path))
    assert f"fingerprint:  {key.fingerprint}" in first.stdout
    assert f"fingerprint:  {key.fingerprint}" in second.stdout
    assert "generated a new signing key" in first.stderr and "generated" not in second.stderr
    assert "PRIVATE KEY" not in first.stdout + first.stderr
    assert stat.S_IMODE((tmp_path / "evidence" / "ed25519.key").stat().st_mode) == 0o600
