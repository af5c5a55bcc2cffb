"""Read queries for the API and tools: latest fixes, tracks, dead letters, counts.

Async functions take an :data:`~tracker.store.pool.AsyncDb` (a pool or one
connection). The same SQL runs on the TimescaleDB and the plain path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from tracker.errors import StorageError
from tracker.model import DroneTelemetry, Ping, PingFlag
from tracker.store.migrations import migrate, migration_status
from tracker.store.pool import AsyncDb, connection, open_pool
from tracker.store.schema import SOURCE_BY_CODE, schema_sql
from tracker.store.writer import TELEMETRY_COLUMNS

# positions keeps the receive time as a lag in ms (see schema.py); give it back as a time.
_POSITION_COLUMNS = (
    "unit_id, ts, lat, lon, alt, speed, heading, accuracy, battery, flags, source,"
    " ts + recv_lag_ms * interval '1 millisecond'"
)
_LATEST_COLUMNS = "unit_id, ts, lat, lon, alt, speed, heading, accuracy, battery, flags, source, received_at"
_OUTLIER = int(PingFlag.OUTLIER)


def ping_from_row(row: Sequence[Any]) -> Ping:
    """Build a :class:`Ping` from a row of the position or latest columns."""
    unit_id, ts, lat, lon, alt, speed, heading, accuracy, battery, flags, source, received_at = row
    return Ping(
        unit_id=unit_id,
        ts=ts,
        lat=lat,
        lon=lon,
        alt=alt,
        speed=speed,
        heading=heading,
        accuracy=accuracy,
        battery=battery,
        flags=PingFlag(flags),
        source=SOURCE_BY_CODE[source],
        received_at=received_at,
    )


def telemetry_from_row(row: Sequence[Any]) -> DroneTelemetry:
    """Build a :class:`DroneTelemetry` from a row of ``TELEMETRY_COLUMNS``."""
    values = list(row)  # the columns are in the dataclass's order, source last
    values[-1] = SOURCE_BY_CODE[values[-1]]
    return DroneTelemetry(*values)


# Each drone's newest row: one index probe per drone on (unit_id, ts) rather than a scan.
_LATEST_TELEMETRY_SQL = f"""
SELECT t.* FROM units u
CROSS JOIN LATERAL (
    SELECT {TELEMETRY_COLUMNS} FROM drone_telemetry d
    WHERE d.unit_id = u.unit_id ORDER BY d.ts DESC LIMIT 1
) t
ORDER BY t.unit_id
"""


def load_latest_telemetry_sync(conn: psycopg.Connection[Any]) -> list[DroneTelemetry]:
    """Every unit's newest drone telemetry (to seed a LiveFleet at start)."""
    try:
        rows = conn.execute(_LATEST_TELEMETRY_SQL).fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot load latest drone telemetry: {exc}") from exc
    return [telemetry_from_row(r) for r in rows]


async def drone_telemetry(
    db: AsyncDb, unit_id: str, start: datetime, end: datetime, limit: int = 100_000
) -> list[DroneTelemetry]:
    """A drone's telemetry with ``start <= ts < end``, oldest first, at most ``limit`` rows."""
    async with connection(db) as conn:
        cur = await conn.execute(
            f"SELECT {TELEMETRY_COLUMNS} FROM drone_telemetry"
            " WHERE unit_id = %s AND ts >= %s AND ts < %s ORDER BY ts LIMIT %s",
            [unit_id, start, end, limit],
        )
        return [telemetry_from_row(r) for r in await cur.fetchall()]


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter as stored: the payload is truncated, ``payload_size`` is the original size."""

    id: int
    received_at: datetime
    topic: str
    payload: bytes
    payload_size: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """Row counts of the main tables (exact: O(rows), for tests, tools and small deployments)."""

    units: int
    positions: int
    units_with_latest: int
    dead_letters: int


async def latest_positions(db: AsyncDb, unit_ids: Sequence[str] | None = None) -> list[Ping]:
    """The latest fix of every unit (or of ``unit_ids``), ordered by unit id."""
    async with connection(db) as conn:
        if unit_ids is None:
            cur = await conn.execute(f"SELECT {_LATEST_COLUMNS} FROM unit_latest ORDER BY unit_id")
        else:
            cur = await conn.execute(
                f"SELECT {_LATEST_COLUMNS} FROM unit_latest WHERE unit_id = ANY(%s) ORDER BY unit_id",
                [list(unit_ids)],
            )
        return [ping_from_row(r) for r in await cur.fetchall()]


async def latest_position(db: AsyncDb, unit_id: str) -> Ping | None:
    """The latest fix of one unit, or None if it never sent one."""
    found = await latest_positions(db, [unit_id])
    return found[0] if found else None


def load_latest_sync(conn: psycopg.Connection[Any]) -> list[Ping]:
    """Synchronous :func:`latest_positions` for every unit (to seed a LiveFleet at start)."""
    try:
        rows = conn.execute(f"SELECT {_LATEST_COLUMNS} FROM unit_latest ORDER BY unit_id").fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot load latest positions: {exc}") from exc
    return [ping_from_row(r) for r in rows]


async def track(
    db: AsyncDb,
    unit_id: str,
    start: datetime,
    end: datetime,
    *,
    exclude_outliers: bool = False,
    limit: int | None = None,
) -> list[Ping]:
    """The fixes of ``unit_id`` with ``start <= ts < end``, oldest first (optionally without OUTLIERs)."""
    where = f" AND flags & {_OUTLIER} = 0" if exclude_outliers else ""
    sql = (
        f"SELECT {_POSITION_COLUMNS} FROM positions"
        f" WHERE unit_id = %s AND ts >= %s AND ts < %s{where} ORDER BY ts"
    )
    params: list[Any] = [unit_id, start, end]
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    async with connection(db) as conn:
        cur = await conn.execute(sql, params)
        return [ping_from_row(r) for r in await cur.fetchall()]


async def dead_letters(
    db: AsyncDb, *, since: datetime | None = None, reason: str | None = None, limit: int = 100
) -> list[StoredDeadLetter]:
    """Dead letters, newest first, optionally since a time and/or for one reason."""
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append("received_at >= %s")
        params.append(since)
    if reason is not None:
        clauses.append("reason = %s")
        params.append(reason)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    params.append(limit)
    async with connection(db) as conn:
        cur = await conn.execute(
            "SELECT id, received_at, topic, payload, payload_size, reason, detail FROM dead_letters"
            f"{where} ORDER BY received_at DESC, id DESC LIMIT %s",
            params,
        )
        return [StoredDeadLetter(*row) for row in await cur.fetchall()]


async def counts(db: AsyncDb) -> StoreCounts:
    """Exact row counts of units, positions, unit_latest and dead_letters."""
    async with connection(db) as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM units), (SELECT count(*) FROM positions),"
            " (SELECT count(*) FROM unit_latest), (SELECT count(*) FROM dead_letters)"
        )
        row = await cur.fetchone()
    assert row is not None
    return StoreCounts(*row)


__all__ = [
    "StoreCounts",
    "StoredDeadLetter",
    "counts",
    "dead_letters",
    "latest_position",
    "latest_positions",
    "load_latest_sync",
    "migrate",
    "migration_status",
    "open_pool",
    "ping_from_row",
    "schema_sql",
    "track",
]
