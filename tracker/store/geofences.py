"""Geofences in the database (table ``geofences``, migration 4): list, read, create, upsert, delete.

Geometries are stored as the GeoJSON they were given (validated beforehand by
:func:`geo.geofence.parse_feature`); the id is the primary key, so a second
geofence with the same id is a :class:`DuplicateGeofenceError`. Deleting is a
real DELETE: events keep the geofence's id and name in their own rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tracker.errors import SerenazgoError, StorageError
from tracker.store.pool import AsyncDb, connection

_COLUMNS = "geofence_id, name, kind, geometry, properties, active, created_by, created_at"


class DuplicateGeofenceError(SerenazgoError):
    """A geofence with that id already exists."""

    def __init__(self, geofence_id: str) -> None:
        self.geofence_id = geofence_id
        super().__init__(
            f"geofence {geofence_id!r} already exists: choose another id, or delete the old one first"
        )


class GeofenceNotFoundError(SerenazgoError, LookupError):
    """No geofence with that id."""

    def __init__(self, geofence_id: str) -> None:
        self.geofence_id = geofence_id
        super().__init__(f"geofence {geofence_id!r} does not exist")


@dataclass(frozen=True, slots=True)
class StoredGeofence:
    """A geofence row: the GeoJSON geometry as stored, and who created it when."""

    geofence_id: str
    name: str
    kind: str
    geometry: dict[str, Any]
    properties: dict[str, Any] = field(default_factory=dict)
    active: bool = True
    created_by: str = ""
    created_at: datetime | None = None

    def to_feature(self) -> dict[str, Any]:
        """This geofence as a GeoJSON Feature (``id`` and ``properties.id`` both hold the id)."""
        return {
            "type": "Feature",
            "id": self.geofence_id,
            "geometry": self.geometry,
            "properties": {
                **self.properties,
                "id": self.geofence_id,
                "name": self.name,
                "kind": self.kind,
                "active": self.active,
                "created_by": self.created_by,
                "created_at": self.created_at.isoformat() if self.created_at else None,
            },
        }


def _from_row(row: Sequence[Any]) -> StoredGeofence:
    gid, name, kind, geometry, properties, active, created_by, created_at = row
    return StoredGeofence(gid, name, kind, geometry, properties or {}, active, created_by, created_at)


def _params(g: StoredGeofence) -> list[Any]:
    return [g.geofence_id, g.name, g.kind, Jsonb(g.geometry), Jsonb(g.properties), g.active, g.created_by]


async def list_geofences(db: AsyncDb, *, active_only: bool = False) -> list[StoredGeofence]:
    """Every geofence (or only the active ones), in id order."""
    where = " WHERE active" if active_only else ""
    try:
        async with connection(db) as conn:
            cur = await conn.execute(f"SELECT {_COLUMNS} FROM geofences{where} ORDER BY geofence_id")
            return [_from_row(r) for r in await cur.fetchall()]
    except psycopg.Error as exc:
        raise StorageError(f"cannot read geofences: {exc}") from exc


async def get_geofence(db: AsyncDb, geofence_id: str) -> StoredGeofence:
    """One geofence, or :class:`GeofenceNotFoundError`."""
    try:
        async with connection(db) as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM geofences WHERE geofence_id = %s", [geofence_id]
            )
            row = await cur.fetchone()
    except psycopg.Error as exc:
        raise StorageError(f"cannot read geofence {geofence_id!r}: {exc}") from exc
    if row is None:
        raise GeofenceNotFoundError(geofence_id)
    return _from_row(row)


async def insert_geofence(db: AsyncDb, geofence: StoredGeofence) -> StoredGeofence:
    """Store a new geofence and return it as stored; :class:`DuplicateGeofenceError` if the id is taken."""
    try:
        async with connection(db) as conn:
            cur = await conn.execute(
                f"INSERT INTO geofences ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, now())"
                f" RETURNING {_COLUMNS}",
                _params(geofence),
            )
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise DuplicateGeofenceError(geofence.geofence_id) from exc
    except psycopg.Error as exc:
        raise StorageError(f"cannot store geofence {geofence.geofence_id!r}: {exc}") from exc
    assert row is not None
    return _from_row(row)


async def upsert_geofences(db: AsyncDb, geofences: Sequence[StoredGeofence]) -> None:
    """Insert or replace geofences by id, in one transaction (the geofences file is the truth for its ids)."""
    if not geofences:
        return
    sql = (
        f"INSERT INTO geofences ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, now())"
        " ON CONFLICT (geofence_id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,"
        " geometry = EXCLUDED.geometry, properties = EXCLUDED.properties, active = EXCLUDED.active,"
        " created_by = EXCLUDED.created_by"
    )
    try:
        async with connection(db) as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(sql, [_params(g) for g in geofences])
    except psycopg.Error as exc:
        raise StorageError(f"cannot store geofences: {exc}") from exc


async def delete_geofence(db: AsyncDb, geofence_id: str) -> None:
    """Delete one geofence; :class:`GeofenceNotFoundError` if there is none with that id."""
    try:
        async with connection(db) as conn:
            cur = await conn.execute("DELETE FROM geofences WHERE geofence_id = %s", [geofence_id])
            deleted = cur.rowcount
    except psycopg.Error as exc:
        raise StorageError(f"cannot delete geofence {geofence_id!r}: {exc}") from exc
    if deleted == 0:
        raise GeofenceNotFoundError(geofence_id)
