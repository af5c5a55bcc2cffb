"""Reads and audit of an evidence export: a unit, its track and the incidents it attended, in one snapshot."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import IsolationLevel

from tracker.config import Settings
from tracker.errors import SerenazgoError
from tracker.evidence import (
    AttendedIncident,
    EvidencePackage,
    ExportFacts,
    build_package,
    fingerprint,
    sha256_hex,
)
from tracker.evidence_key import SigningKey, installation_id, software_version
from tracker.store import queries
from tracker.store import units as unit_store
from tracker.store.audit import insert_audit
from tracker.store.pool import AsyncDb, connection
from tracker.track_formats import iso_z

# An assignment counts when it was open at some moment of [start, end): made before the end, and not
# released before the start. The incident's own times may fall outside the window (a long incident).
_ATTENDED_SQL = """
SELECT i.incident_id, a.assignment_id, i.lat, i.lon, i.category, i.channel, i.priority, i.status,
       i.address, i.description, i.created_at, i.closed_at,
       a.assigned_at, a.assigned_by, a.arrived_at, a.released_at, a.release_reason
FROM assignments a JOIN incidents i USING (incident_id)
WHERE a.unit_id = %s AND a.assigned_at < %s AND (a.released_at IS NULL OR a.released_at >= %s)
ORDER BY a.assigned_at, a.assignment_id
"""

# Stated in the manifest so a reader knows exactly which rows were chosen.
ATTENDED_RULE = (
    "assignments of the unit with assigned_at < end and (released_at is null or released_at >= start),"
    " joined to their incidents, by assigned_at"
)


async def attended_incidents(
    db: AsyncDb, unit_id: str, start: datetime, end: datetime
) -> list[AttendedIncident]:
    """The unit's assignments open at some moment of ``[start, end)``, with their incidents, oldest first."""
    async with connection(db) as conn:
        cur = await conn.execute(_ATTENDED_SQL, [unit_id, end, start])
        return [AttendedIncident(*row) for row in await cur.fetchall()]


class TooManyPointsError(SerenazgoError):
    """The window holds more fixes than one export carries; the message says to ask for a shorter one."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} fixes in this window: ask for a shorter one")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What an export asks for and who asks (the caller validated the window already)."""

    unit_id: str
    start: datetime
    end: datetime
    include_outliers: bool
    exported_by: str
    origin: str  # where from: the client's address, or ``cli``
    max_points: int


async def export_evidence(
    db: AsyncDb,
    request: ExportRequest,
    key: Ed25519PrivateKey,
    *,
    installation_id: str,
    installation_name: str,
    software_version: str,
    now: datetime,
) -> EvidencePackage:
    """Read the unit, its track and attended incidents in one snapshot, sign the package, audit the export.

    The reads run in one REPEATABLE READ transaction, so the track and the
    incidents describe the same instant; the ``evidence_export`` audit row
    commits in that transaction, so an export that was handed out is recorded.
    Raises :class:`UnitNotFoundError` and :class:`TooManyPointsError`.
    """
    r = request
    async with connection(db) as conn:
        conn_level = conn.isolation_level
        await conn.set_isolation_level(IsolationLevel.REPEATABLE_READ)
        try:
            async with conn.transaction():
                unit = await unit_store.get_unit(conn, r.unit_id)
                points = await queries.track(
                    conn,
                    r.unit_id,
                    r.start,
                    r.end,
                    exclude_outliers=not r.include_outliers,
                    limit=r.max_points + 1,
                )
                if len(points) > r.max_points:
                    raise TooManyPointsError(r.max_points)
                incidents = await attended_incidents(conn, r.unit_id, r.start, r.end)
                facts = ExportFacts(
                    installation_id=installation_id,
                    installation_name=installation_name,
                    unit=unit,
                    start=r.start,
                    end=r.end,
                    query={
                        "unit_id": r.unit_id,
                        "start": iso_z(r.start),
                        "end": iso_z(r.end),
                        "include_outliers": r.include_outliers,
                        "track": "positions with unit_id = :unit_id and start <= ts < end"
                        + ("" if r.include_outliers else " and not flagged outlier")
                        + ", by ts",
                        "incidents": ATTENDED_RULE,
                        "max_points": r.max_points,
                    },
                    exported_by=r.exported_by,
                    exported_at=now,
                    software_version=software_version,
                )
                # Formatting and hashing a long track is CPU work: keep it off the event loop.
                package = await asyncio.to_thread(build_package, facts, points, incidents, key)
                await insert_audit(
                    conn,
                    at=now,
                    actor=r.exported_by,
                    origin=r.origin,
                    action="evidence_export",
                    subject=f"unit:{r.unit_id}",
                    detail={
                        "filename": package.filename,
                        "start": iso_z(r.start),
                        "end": iso_z(r.end),
                        "include_outliers": r.include_outliers,
                        "track_points": len(points),
                        "incidents": len(incidents),
                        "manifest_sha256": package.manifest_sha256,
                        "package_sha256": sha256_hex(package.data),
                        "key_fingerprint": fingerprint(key.public_key()),
                    },
                )
        finally:
            await conn.set_isolation_level(conn_level)
    return package


async def export_signed(
    db: AsyncDb, request: ExportRequest, settings: Settings, key: SigningKey, now: datetime
) -> EvidencePackage:
    """:func:`export_evidence` signed with the installation's key and named as its settings say."""
    return await export_evidence(
        db,
        request,
        key.key,
        installation_id=installation_id(settings, key),
        installation_name=settings.evidence.installation_name,
        software_version=software_version(),
        now=now,
    )
