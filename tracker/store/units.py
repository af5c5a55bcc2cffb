"""The unit registry in the database: create, read and list units.

The bridge loads every unit at start into its in-memory registry (the sync
:func:`load_all_units_sync`, from its writer thread); the API uses the async
functions. An external id (protocol, id) belongs to one unit only: the schema
enforces it, and a clash is a :class:`~tracker.errors.DuplicateUnitError`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tracker.errors import DuplicateUnitError, StorageError, UnitNotFoundError
from tracker.model import Unit, UnitKind, UnitStatus, validate_unit_id
from tracker.store.pool import AsyncDb, connection

UNIT_COLUMNS = "unit_id, kind, callsign, sector, capabilities, external_ids, status, active"

INSERT_UNIT_SQL = f"""
INSERT INTO units ({UNIT_COLUMNS})
VALUES (%(unit_id)s, %(kind)s, %(callsign)s, %(sector)s, %(capabilities)s, %(external_ids)s,
        %(status)s, %(active)s)
"""

_SELECT_UNITS = f"SELECT {UNIT_COLUMNS} FROM units"


def unit_params(unit: Unit) -> dict[str, Any]:
    """Query parameters of ``unit`` for :data:`INSERT_UNIT_SQL` (validates the unit id)."""
    return {
        "unit_id": validate_unit_id(unit.unit_id),
        "kind": str(unit.kind),
        "callsign": unit.callsign,
        "sector": unit.sector,
        "capabilities": sorted(unit.capabilities),
        "external_ids": Jsonb({str(k): str(v) for k, v in unit.external_ids.items()}),
        "status": str(unit.status),
        "active": unit.active,
    }


def unit_from_row(row: tuple[Any, ...]) -> Unit:
    """Build a :class:`Unit` from a row of ``SELECT {UNIT_COLUMNS}``."""
    unit_id, kind, callsign, sector, capabilities, external_ids, status, active = row
    return Unit(
        unit_id=unit_id,
        kind=UnitKind(kind),
        callsign=callsign,
        sector=sector,
        capabilities=frozenset(capabilities or ()),
        external_ids=dict(external_ids or {}),
        status=UnitStatus(status),
        active=active,
    )


def _duplicate(unit: Unit, exc: psycopg.errors.UniqueViolation) -> DuplicateUnitError:
    constraint = exc.diag.constraint_name or ""
    if constraint.startswith("unit_external_ids"):
        return DuplicateUnitError(
            unit.unit_id,
            f"an external id of unit {unit.unit_id!r} ({exc.diag.message_detail or unit.external_ids}) "
            "already belongs to another unit",
        )
    return DuplicateUnitError(unit.unit_id)


async def create_unit(db: AsyncDb, unit: Unit) -> None:
    """Register ``unit``; raise DuplicateUnitError if its id or an external id is taken."""
    params = unit_params(unit)
    async with connection(db) as conn:
        try:
            async with conn.transaction():
                await conn.execute(INSERT_UNIT_SQL, params)
        except psycopg.errors.UniqueViolation as exc:
            raise _duplicate(unit, exc) from exc
        except psycopg.Error as exc:
            raise StorageError(f"cannot create unit {unit.unit_id!r}: {exc}") from exc


def create_unit_sync(conn: psycopg.Connection[Any], unit: Unit) -> None:
    """Synchronous :func:`create_unit` (scripts, the bridge's writer thread)."""
    params = unit_params(unit)
    try:
        with conn.transaction():
            conn.execute(INSERT_UNIT_SQL, params)
    except psycopg.errors.UniqueViolation as exc:
        raise _duplicate(unit, exc) from exc
    except psycopg.Error as exc:
        raise StorageError(f"cannot create unit {unit.unit_id!r}: {exc}") from exc


async def get_unit(db: AsyncDb, unit_id: str) -> Unit:
    """The unit ``unit_id``; raise UnitNotFoundError when it is not registered."""
    async with connection(db) as conn:
        cur = await conn.execute(f"{_SELECT_UNITS} WHERE unit_id = %s", [unit_id])
        row = await cur.fetchone()
    if row is None:
        raise UnitNotFoundError(unit_id)
    return unit_from_row(row)


async def list_units(db: AsyncDb, *, active_only: bool = False) -> list[Unit]:
    """Every registered unit (only active ones if asked), ordered by unit id."""
    where = " WHERE active" if active_only else ""
    async with connection(db) as conn:
        cur = await conn.execute(f"{_SELECT_UNITS}{where} ORDER BY unit_id")
        rows = await cur.fetchall()
    return [unit_from_row(r) for r in rows]


async def load_all_units(db: AsyncDb) -> list[Unit]:
    """Every unit, active or not, to fill the in-memory registry."""
    return await list_units(db)


def load_all_units_sync(conn: psycopg.Connection[Any] | str) -> list[Unit]:
    """Synchronous :func:`load_all_units`, from a connection or a conninfo string."""
    try:
        if isinstance(conn, str):
            with psycopg.connect(conn, autocommit=True) as own:
                rows = own.execute(f"{_SELECT_UNITS} ORDER BY unit_id").fetchall()
        else:
            rows = conn.execute(f"{_SELECT_UNITS} ORDER BY unit_id").fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot load units: {exc}") from exc
    return [unit_from_row(r) for r in rows]
