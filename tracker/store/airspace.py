"""Restricted airspace zones in the database (table ``airspace_zones``, migration 7).

Geometries are stored as the GeoJSON they were given (validated beforehand by
:func:`drones.airspace.parse_zone`); a NULL ``ceiling_m`` is an unlimited
ceiling. The id is the primary key: inserting a taken id is a
:class:`DuplicateZoneError`, upserting replaces the zone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tracker.errors import SerenazgoError, StorageError
from tracker.store.pool import AsyncDb, connection

_COLUMNS = "zone_id, name, kind, floor_m, ceiling_m, geometry, properties, created_by, created_at"
_VALUES = "%s, %s, %s, %s, %s, %s, %s, %s, now()"


class DuplicateZoneError(SerenazgoError):
    """An airspace zone with that id already exists."""

    def __init__(self, zone_ids: Sequence[str]) -> None:
        self.zone_ids = list(zone_ids)
        super().__init__(
            f"airspace zone(s) {', '.join(repr(z) for z in zone_ids)} already exist: choose other ids, "
            "delete the old ones first, or send ?replace=true to overwrite them"
        )


class ZoneNotFoundError(SerenazgoError, LookupError):
    """No airspace zone with that id."""

    def __init__(self, zone_id: str) -> None:
        self.zone_id = zone_id
        super().__init__(f"airspace zone {zone_id!r} does not exist")


@dataclass(frozen=True, slots=True)
class StoredZone:
    """An ``airspace_zones`` row (``ceiling_m`` inf when unlimited)."""

    zone_id: str
    name: str
    kind: str
    floor_m: float
    ceiling_m: float
    geometry: dict[str, Any]
    properties: dict[str, Any] = field(default_factory=dict)
    created_by: str = ""
    created_at: datetime | None = None

    def to_feature(self) -> dict[str, Any]:
        """The zone as a GeoJSON Feature (``ceiling_m`` null when unlimited), the shape it was posted in."""
        return {
            "type": "Feature",
            "id": self.zone_id,
            "geometry": self.geometry,
            "properties": {
                **self.properties,
                "id": self.zone_id,
                "name": self.name,
                "kind": self.kind,
                "floor_m": self.floor_m,
                "ceiling_m": None if math.isinf(self.ceiling_m) else self.ceiling_m,
                "created_by": self.created_by,
                "created_at": self.created_at.isoformat() if self.created_at else None,
            },
        }


def _from_row(row: Sequence[Any]) -> StoredZone:
    zid, name, kind, floor, ceiling, geometry, properties, created_by, created_at = row
    return StoredZone(
        zid,
        name,
        kind,
        float(floor),
        math.inf if ceiling is None else float(ceiling),
        geometry,
        properties or {},
        created_by,
        created_at,
    )


def _params(z: StoredZone) -> list[Any]:
    ceiling = None if math.isinf(z.ceiling_m) else z.ceiling_m
    return [
        z.zone_id, z.name, z.kind, z.floor_m, ceiling, Jsonb(z.geometry), Jsonb(z.properties), z.created_by,
    ]  # fmt: skip


async def list_zones(db: AsyncDb) -> list[StoredZone]:
    """Every zone, in id order."""
    try:
        async with connection(db) as conn:
            cur = await conn.execute(f"SELECT {_COLUMNS} FROM airspace_zones ORDER BY zone_id")
            return [_from_row(r) for r in await cur.fetchall()]
    except psycopg.Error as exc:
        raise StorageError(f"cannot read airspace zones: {exc}") from exc


async def insert_zones(
    db: AsyncDb, zones: Sequence[StoredZone], *, replace: bool = False
) -> list[StoredZone]:
    """Store zones in one transaction and return them as stored.

    ``replace``: overwrite zones with the same ids; otherwise a taken id is a
    :class:`DuplicateZoneError` naming every taken id, and nothing is stored.
    """
    if not zones:
        return []
    conflict = (
        " ON CONFLICT (zone_id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,"
        " floor_m = EXCLUDED.floor_m, ceiling_m = EXCLUDED.ceiling_m, geometry = EXCLUDED.geometry,"
        " properties = EXCLUDED.properties, created_by = EXCLUDED.created_by"
        if replace
        else ""
    )
    sql = f"INSERT INTO airspace_zones ({_COLUMNS}) VALUES ({_VALUES}){conflict} RETURNING {_COLUMNS}"
    ids = [z.zone_id for z in zones]
    out: list[StoredZone] = []
    try:
        async with connection(db) as conn, conn.transaction():
            if not replace:
                cur = await conn.execute(
                    "SELECT zone_id FROM airspace_zones WHERE zone_id = ANY(%s) ORDER BY zone_id", [ids]
                )
                taken = [r[0] for r in await cur.fetchall()]
                if taken:
                    raise DuplicateZoneError(taken)
            for z in zones:
                cur = await conn.execute(sql, _params(z))
                row = await cur.fetchone()
                assert row is not None
                out.append(_from_row(row))
    except psycopg.errors.UniqueViolation as exc:  # a concurrent insert of the same id
        raise DuplicateZoneError(ids) from exc
    except psycopg.Error as exc:
        raise StorageError(f"cannot store airspace zones: {exc}") from exc
    return out


async def delete_zone(db: AsyncDb, zone_id: str) -> None:
    """Delete one zone; :class:`ZoneNotFoundError` if there is none with that id."""
    try:
        async with connection(db) as conn:
            cur = await conn.execute("DELETE FROM airspace_zones WHERE zone_id = %s", [zone_id])
            deleted = cur.rowcount
    except psycopg.Error as exc:
        raise StorageError(f"cannot delete airspace zone {zone_id!r}: {exc}") from exc
    if deleted == 0:
        raise ZoneNotFoundError(zone_id)
