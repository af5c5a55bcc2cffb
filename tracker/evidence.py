"""Signed evidence exports: a unit's track and the incidents it attended, packaged so a court can verify it.

Pure: rows, a key and the export's facts in, bytes out (and the reverse for
verification); reading the database and the key file happens at the edges
(:mod:`tracker.store.evidence`, :mod:`tracker.evidence_key`).

A package is a ZIP holding, in this order: ``track.geojson`` (RFC 7946),
``track.gpx`` (GPX 1.1), ``track.kml`` (KML 2.2), ``track.csv``,
``incidents.geojson``, ``incidents.csv``, ``manifest.json`` and
``manifest.sig``.

``manifest.json`` lists each file's name, size and SHA-256, the installation,
the unit, the window, the exact query, who exported it and when (UTC), row
counts, the software version and the signing public key with its fingerprint.
Its bytes are the *canonical form* of the manifest: UTF-8 JSON with keys sorted
at every level, no whitespace between tokens (separators ``,`` and ``:``),
non-ASCII characters written as themselves, and only strings, integers, booleans,
null, arrays and objects (no floats, so no number formatting can differ).
In Python: ``json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()``.

``manifest.sig`` is the raw 64-byte Ed25519 signature (RFC 8032) over exactly
the bytes of ``manifest.json``. Besides ``serenazgo evidence verify``, anyone can
check it with OpenSSL 3::

    openssl pkeyutl -verify -pubin -inkey ed25519.pub -rawin -in manifest.json -sigfile manifest.sig
    sha256sum track.gpx   # and compare with the manifest

The key's fingerprint is the SHA-256 (hex) of the 32-byte raw public key; the
municipality publishes it so the key embedded in a package can be checked.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tracker.errors import SerenazgoError
from tracker.model import Ping, Unit
from tracker.track_formats import csv_text, iso_z, track_csv, track_geojson, track_gpx, track_kml

FORMAT = "serenazgo-evidence/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
TRACK_FILES = ("track.geojson", "track.gpx", "track.kml", "track.csv")
INCIDENT_FILES = ("incidents.geojson", "incidents.csv")
MEDIA_TYPES = {
    "track.geojson": "application/geo+json",
    "track.gpx": "application/gpx+xml",
    "track.kml": "application/vnd.google-earth.kml+xml",
    "track.csv": "text/csv",
    "incidents.geojson": "application/geo+json",
    "incidents.csv": "text/csv",
}
INCIDENT_CSV_COLUMNS = (
    "incident_id",
    "assignment_id",
    "lat",
    "lon",
    "category",
    "channel",
    "priority",
    "status",
    "address",
    "description",
    "created_at",
    "closed_at",
    "assigned_at",
    "assigned_by",
    "arrived_at",
    "released_at",
    "release_reason",
)
# What reading a damaged member raises: a CRC mismatch, a broken deflate stream, a truncated file.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError)
# A manifest larger than this is not one of ours (it lists eight files); refuse before parsing it.
MAX_MANIFEST_BYTES = 1 << 20


class EvidenceError(SerenazgoError, ValueError):
    """A package or key that cannot be read at all (not a ZIP, not a PEM Ed25519 key...)."""


@dataclass(frozen=True, slots=True)
class AttendedIncident:
    """An incident the unit was assigned to, with that assignment (one row per assignment)."""

    incident_id: int
    assignment_id: int
    lat: float
    lon: float
    category: str
    channel: str
    priority: int
    status: str
    address: str
    description: str
    created_at: datetime
    closed_at: datetime | None
    assigned_at: datetime
    assigned_by: str
    arrived_at: datetime | None
    released_at: datetime | None
    release_reason: str


@dataclass(frozen=True, slots=True)
class ExportFacts:
    """Who exports what, when: everything in the manifest that does not come from the rows."""

    installation_id: str
    installation_name: str
    unit: Unit
    start: datetime
    end: datetime
    query: dict[str, str | int | bool | None]  # the exact parameters that selected the rows
    exported_by: str
    exported_at: datetime
    software_version: str


@dataclass(frozen=True, slots=True)
class EvidencePackage:
    """A signed package: the ZIP's bytes, its manifest, a file name for it, and the manifest's SHA-256.

    ``manifest_sha256`` (hex) is of the signed ``manifest.json`` bytes: what the
    audit log and the ``X-Evidence-Manifest-SHA256`` header record of an export.
    """

    data: bytes
    manifest: dict[str, Any]
    filename: str
    manifest_sha256: str


@dataclass(slots=True)
class Verification:
    """What :func:`verify_package` found; ``valid`` only when ``problems`` is empty."""

    problems: list[str] = field(default_factory=list)
    fingerprint: str | None = None  # of the key the signature was checked with
    embedded_fingerprint: str | None = None  # of the key the manifest names
    key_source: str = "embedded"  # "embedded" or "given"
    signature_ok: bool = False
    manifest: dict[str, Any] | None = None
    files: list[tuple[str, int, str]] = field(default_factory=list)  # (name, size, sha256) that matched

    @property
    def valid(self) -> bool:
        """True when the signature and every file check out and nothing is missing or extra."""
        return not self.problems and self.signature_ok


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` as lower-case hex."""
    return hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    """The canonical bytes of a manifest (see the module docstring); refuses floats.

    >>> canonical_json({"b": [1, True, None], "a": "ñ"}).decode()
    '{"a":"ñ","b":[1,true,null]}'
    """
    _no_floats(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _no_floats(value: Any) -> None:
    # Float formatting differs between JSON libraries; the manifest must have one byte form.
    if isinstance(value, float):
        raise TypeError(f"a manifest holds no floats (got {value!r}): use a string or an integer")
    if isinstance(value, dict):
        for v in value.values():
            _no_floats(v)
    elif isinstance(value, list):
        for v in value:
            _no_floats(v)


def public_key_raw(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw public key: the figure a municipality publishes."""
    return sha256_hex(public_key_raw(key))


def public_key_pem(key: Ed25519PublicKey) -> str:
    """The public key as a PEM ``PUBLIC KEY`` block (SubjectPublicKeyInfo), as OpenSSL reads it."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; :class:`EvidenceError` saying why if it is not one."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise EvidenceError(f"not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise EvidenceError(f"the public key is {type(key).__name__}, not Ed25519")
    return key


def _opt(ts: datetime | None) -> str:
    return "" if ts is None else iso_z(ts)


def incidents_geojson(incidents: Sequence[AttendedIncident]) -> dict[str, Any]:
    """The attended incidents as a FeatureCollection of Points (lon/lat), one Feature per assignment."""
    features = []
    for i in incidents:
        features.append(
            {
                "type": "Feature",
                "id": f"{i.incident_id}/{i.assignment_id}",
                "geometry": {"type": "Point", "coordinates": [i.lon, i.lat]},
                "properties": {
                    "incident_id": i.incident_id,
                    "assignment_id": i.assignment_id,
                    "category": i.category,
                    "channel": i.channel,
                    "priority": i.priority,
                    "status": i.status,
                    "address": i.address,
                    "description": i.description,
                    "created_at": iso_z(i.created_at),
                    "closed_at": None if i.closed_at is None else iso_z(i.closed_at),
                    "assigned_at": iso_z(i.assigned_at),
                    "assigned_by": i.assigned_by,
                    "arrived_at": None if i.arrived_at is None else iso_z(i.arrived_at),
                    "released_at": None if i.released_at is None else iso_z(i.released_at),
                    "release_reason": i.release_reason,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def incidents_csv(incidents: Sequence[AttendedIncident]) -> str:
    """The attended incidents as CSV with a header row (one row per assignment; empty cell: no time)."""
    return csv_text(
        INCIDENT_CSV_COLUMNS,
        (
            (
                i.incident_id,
                i.assignment_id,
                repr(i.lat),
                repr(i.lon),
                i.category,
                i.channel,
                i.priority,
                i.status,
                i.address,
                i.description,
                iso_z(i.created_at),
                _opt(i.closed_at),
                iso_z(i.assigned_at),
                i.assigned_by,
                _opt(i.arrived_at),
                _opt(i.released_at),
                i.release_reason,
            )
            for i in incidents
        ),
    )


def export_files(
    facts: ExportFacts, points: Sequence[Ping], incidents: Sequence[AttendedIncident]
) -> dict[str, bytes]:
    """The data files of a package, by name, in package order."""
    unit = facts.unit
    return {
        "track.geojson": orjson.dumps(track_geojson(unit, points, facts.start, facts.end)),
        "track.gpx": track_gpx(unit, points, facts.exported_at),
        "track.kml": track_kml(unit, points, facts.exported_at),
        "track.csv": track_csv(unit, points).encode("utf-8"),
        "incidents.geojson": orjson.dumps(incidents_geojson(incidents)),
        "incidents.csv": incidents_csv(incidents).encode("utf-8"),
    }


def build_manifest(
    facts: ExportFacts, files: dict[str, bytes], points: int, incidents: int, key: Ed25519PublicKey
) -> dict[str, Any]:
    """The manifest of ``files`` (see the module docstring for what it holds)."""
    return {
        "format": FORMAT,
        "installation": {"id": facts.installation_id, "name": facts.installation_name},
        "unit": {
            "unit_id": facts.unit.unit_id,
            "kind": str(facts.unit.kind),
            "callsign": facts.unit.callsign,
        },
        "window": {"start": iso_z(facts.start), "end": iso_z(facts.end), "end_exclusive": True},
        "query": dict(facts.query),
        "exported_by": facts.exported_by,
        "exported_at": iso_z(facts.exported_at),
        "counts": {"track_points": points, "incidents": incidents},
        "files": [
            {"name": name, "size": len(data), "sha256": sha256_hex(data), "media_type": MEDIA_TYPES[name]}
            for name, data in files.items()
        ],
        "software": {"name": "serenazgo", "version": facts.software_version},
        "signature": {
            "algorithm": "Ed25519",
            "signed_file": MANIFEST,
            "signature_file": SIGNATURE,
            "canonical_form": "JSON, UTF-8, keys sorted, separators ',' ':', no floats",
            "public_key_pem": public_key_pem(key),
            "public_key_fingerprint_sha256": fingerprint(key),
        },
    }


def _zip_info(name: str, when: datetime) -> zipfile.ZipInfo:
    # Fixed metadata so the same export gives the same bytes: time from the export, no OS-specific bits.
    info = zipfile.ZipInfo(name, date_time=when.astimezone(UTC).timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, so the mode below is read
    info.external_attr = 0o644 << 16
    return info


def build_package(
    facts: ExportFacts,
    points: Sequence[Ping],
    incidents: Sequence[AttendedIncident],
    key: Ed25519PrivateKey,
) -> EvidencePackage:
    """Format, hash, sign and zip an export: the data files, ``manifest.json`` and ``manifest.sig``."""
    files = export_files(facts, points, incidents)
    manifest = build_manifest(facts, files, len(points), len(incidents), key.public_key())
    manifest_bytes = canonical_json(manifest)
    signature = key.sign(manifest_bytes)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in [*files.items(), (MANIFEST, manifest_bytes), (SIGNATURE, signature)]:
            zf.writestr(_zip_info(name, facts.exported_at), data)
    filename = f"evidence_{facts.unit.unit_id}_{facts.start:%Y%m%dT%H%M%SZ}_{facts.end:%Y%m%dT%H%M%SZ}.zip"
    return EvidencePackage(out.getvalue(), manifest, filename, sha256_hex(manifest_bytes))


def _read_member(zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """One member's bytes, refusing one larger than ``limit`` before inflating it."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise EvidenceError(f"{name}: {info.file_size} bytes, more than the {limit} expected")
    with zf.open(info) as fh:
        return fh.read(limit + 1)


def _embedded_key(manifest: dict[str, Any]) -> Ed25519PublicKey:
    sig = manifest.get("signature")
    pem = sig.get("public_key_pem") if isinstance(sig, dict) else None
    if not isinstance(pem, str):
        raise EvidenceError("manifest.json names no public key (signature.public_key_pem)")
    return load_public_key(pem.encode("ascii", "replace"))


def verify_package(data: bytes, public_key: Ed25519PublicKey | None = None) -> Verification:
    """Check a package: the signature (with ``public_key`` or the embedded one), every file, nothing extra.

    Never raises for a damaged package: each failure is a sentence in ``problems``.
    """
    result = Verification(key_source="embedded" if public_key is None else "given")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        result.problems.append(f"not a ZIP package ({exc})")
        return result
    with zf:
        names = zf.namelist()
        # Counted once: names.count() per name was quadratic in a crafted ZIP's entry count.
        times = Counter(names)
        for name in sorted(n for n, count in times.items() if count > 1):
            result.problems.append(f"{name}: appears {times[name]} times in the package")
        for needed in (MANIFEST, SIGNATURE):
            if needed not in names:
                result.problems.append(f"{needed}: missing from the package")
        if result.problems:
            return result
        try:
            manifest_bytes = _read_member(zf, MANIFEST, MAX_MANIFEST_BYTES)
            signature = _read_member(zf, SIGNATURE, 64)
        except (*_DAMAGED, EvidenceError) as exc:
            result.problems.append(f"cannot read the manifest or signature: {exc}")
            return result
        _check_signature(result, manifest_bytes, signature, public_key)
        try:
            manifest = json.loads(manifest_bytes)
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            result.problems.append(f"manifest.json: not a JSON object ({exc})")
            return result
        result.manifest = manifest
        if result.embedded_fingerprint is None:
            try:
                result.embedded_fingerprint = fingerprint(_embedded_key(manifest))
            except EvidenceError as exc:
                result.problems.append(str(exc))
        _check_files(result, zf, manifest, names)
    return result


def _check_signature(
    result: Verification, manifest_bytes: bytes, signature: bytes, given: Ed25519PublicKey | None
) -> None:
    key = given
    if key is None:
        try:
            parsed = json.loads(manifest_bytes)
            key = _embedded_key(parsed if isinstance(parsed, dict) else {})
        except (ValueError, EvidenceError) as exc:
            result.problems.append(
                f"manifest.sig: cannot check the signature: no usable public key in manifest.json ({exc}); "
                "pass the municipality's published key with --public-key"
            )
            return
        result.embedded_fingerprint = fingerprint(key)
    result.fingerprint = fingerprint(key)
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        result.problems.append(
            f"manifest.sig: the signature does not verify with the {result.key_source} key "
            f"{result.fingerprint}: manifest.json or manifest.sig was altered, or another key signed it"
        )
        return
    result.signature_ok = True


def _check_files(
    result: Verification, zf: zipfile.ZipFile, manifest: dict[str, Any], names: list[str]
) -> None:
    listed = manifest.get("files")
    if not isinstance(listed, list):
        result.problems.append("manifest.json: no 'files' list")
        return
    expected: dict[str, dict[str, Any]] = {}
    for entry in listed:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name in (MANIFEST, SIGNATURE) or name in expected:
            result.problems.append(f"manifest.json: bad or repeated file entry {entry!r}")
            continue
        expected[name] = entry
    for name, entry in expected.items():
        if name not in names:
            result.problems.append(f"{name}: listed in the manifest but missing from the package")
            continue
        size, digest = entry.get("size"), entry.get("sha256")
        if not isinstance(size, int) or not isinstance(digest, str):
            result.problems.append(f"manifest.json: the entry of {name} has no integer size or sha256")
            continue
        try:
            # Read at most one byte past the listed size: a longer member is already a mismatch.
            with zf.open(name) as fh:
                body = fh.read(size + 1)
        except _DAMAGED as exc:
            result.problems.append(f"{name}: damaged inside the ZIP ({exc})")
            continue
        actual_size = zf.getinfo(name).file_size
        if actual_size != size or len(body) != size:
            result.problems.append(f"{name}: {actual_size} bytes, the manifest says {size}")
            continue
        actual = sha256_hex(body)
        if actual != digest:
            result.problems.append(f"{name}: SHA-256 {actual} differs from the manifest's {digest}")
            continue
        result.files.append((name, size, digest))
    for name in names:
        if name not in expected and name not in (MANIFEST, SIGNATURE):
            result.problems.append(f"{name}: in the package but not listed in the manifest")
