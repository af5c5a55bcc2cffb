"""SQL of incidents, assignments, their audit trail, arrival events and response-time statistics.

Every function takes an :class:`~psycopg.AsyncConnection` that the caller holds
inside a transaction when several statements must commit together (the
service in :mod:`tracker.incidents` decides the transaction boundaries and the
lock order: incident row first, then its assignments, then units). Values are
always bound parameters; the only SQL text chosen at run time comes from fixed
tables in this module (filter clauses, the grouping columns of statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

# A status set by dispatch is never older than the one it replaces (the writer's forward-only rule):
# when a device's clock ran ahead of ours, the new status is stamped just after the stored one.
STATUS_STEP = timedelta(milliseconds=1)

INCIDENT_COLUMNS = (
    "incident_id, lat, lon, category, channel, priority, description, address, status, reported_by,"
    " created_at, updated_at, first_assigned_at, first_arrival_at, closed_at, resolution"
)
ASSIGNMENT_COLUMNS = (
    "assignment_id, incident_id, unit_id, assigned_at, assigned_by, eta_s, distance_m, arrived_at,"
    " released_at, release_reason"
)

# Filters of list_incidents: name -> clause (fixed text; values are bound separately).
TERMINAL_STATUSES = ("closed", "cancelled")
_ACTIVE_CLAUSE = "status NOT IN ('closed', 'cancelled')"

# Dimensions statistics may be grouped by: name -> column (never the caller's text).
STATS_DIMENSIONS = {"category": "category", "channel": "channel", "priority": "priority"}


@dataclass(slots=True, frozen=True)
class UnitRow:
    """What assignment needs to know of a unit, read under a row lock."""

    unit_id: str
    kind: str
    callsign: str
    status: str
    status_ts: datetime | None
    active: bool
    fix_ts: datetime | None
    fix_lat: float | None
    fix_lon: float | None


@dataclass(slots=True, frozen=True)
class StatsRow:
    """Response-time figures of one group (``dimension``/``value``; both None for the overall row).

    ``figures``: count, assigned, arrived, closed, cancelled, then response p50, p90
    and mean and assign p50, p90 and mean in seconds (None without data), in the
    order of :class:`tracker.incidents.GroupStats`' fields.
    """

    dimension: str | None
    value: str | None
    figures: tuple[Any, ...]


# ----- incidents ----------------------------------------------------------------------------


async def insert_incident(
    conn: AsyncConnection[Any],
    *,
    lat: float,
    lon: float,
    category: str,
    channel: str,
    priority: int,
    description: str,
    address: str,
    reported_by: str,
    created_at: datetime,
) -> tuple[Any, ...]:
    """Insert an incident; return its row (``INCIDENT_COLUMNS``)."""
    cur = await conn.execute(
        "INSERT INTO incidents (lat, lon, category, channel, priority, description, address, reported_by,"
        " created_at, updated_at)"
        f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {INCIDENT_COLUMNS}",
        [lat, lon, category, channel, priority, description, address, reported_by, created_at, created_at],
    )
    row: tuple[Any, ...] | None = await cur.fetchone()
    assert row is not None
    return row


async def select_incident(
    conn: AsyncConnection[Any], incident_id: int, *, for_update: bool = False
) -> tuple[Any, ...] | None:
    """One incident's row, optionally locked for the rest of the transaction; None if unknown."""
    lock = " FOR UPDATE" if for_update else ""
    cur = await conn.execute(
        f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE incident_id = %s{lock}", [incident_id]
    )
    return await cur.fetchone()


async def select_incidents(
    conn: AsyncConnection[Any],
    *,
    statuses: Sequence[str] | None = None,
    active_only: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    category: str | None = None,
    channel: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[tuple[Any, ...]]:
    """Incidents newest first (by id, which follows creation), filtered; keyset paging by ``before_id``."""
    clauses: list[str] = []
    params: list[Any] = []
    if active_only:
        clauses.append(_ACTIVE_CLAUSE)
    if statuses is not None:
        clauses.append("status = ANY(%s)")
        params.append(list(statuses))
    if since is not None:
        clauses.append("created_at >= %s")
        params.append(since)
    if until is not None:
        clauses.append("created_at < %s")
        params.append(until)
    if category is not None:
        clauses.append("category = %s")
        params.append(category)
    if channel is not None:
        clauses.append("channel = %s")
        params.append(channel)
    if before_id is not None:
        clauses.append("incident_id < %s")
        params.append(before_id)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    params.append(limit)
    cur = await conn.execute(
        f"SELECT {INCIDENT_COLUMNS} FROM incidents{where} ORDER BY incident_id DESC LIMIT %s", params
    )
    return await cur.fetchall()


async def update_incident(
    conn: AsyncConnection[Any], incident_id: int, changes: dict[str, Any], now: datetime
) -> tuple[Any, ...]:
    """Set the given columns (from :data:`UPDATABLE_COLUMNS` only) and ``updated_at``; return the row."""
    unknown = set(changes) - UPDATABLE_COLUMNS
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    names = sorted(changes)
    sets = ", ".join([*(f"{name} = %s" for name in names), "updated_at = %s"])
    cur = await conn.execute(
        f"UPDATE incidents SET {sets} WHERE incident_id = %s RETURNING {INCIDENT_COLUMNS}",
        [*(changes[n] for n in names), now, incident_id],
    )
    row: tuple[Any, ...] | None = await cur.fetchone()
    assert row is not None
    return row


UPDATABLE_COLUMNS = frozenset(
    {"description", "priority", "category", "address", "status", "resolution", "closed_at",
     "first_assigned_at", "first_arrival_at"}
)  # fmt: skip


# ----- assignments --------------------------------------------------------------------------


async def select_assignments(
    conn: AsyncConnection[Any], incident_ids: Sequence[int]
) -> list[tuple[Any, ...]]:
    """Every assignment of the given incidents, in assignment order."""
    if not incident_ids:
        return []
    cur = await conn.execute(
        f"SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE incident_id = ANY(%s) ORDER BY assignment_id",
        [list(incident_ids)],
    )
    return await cur.fetchall()


async def select_open_assignment_of_unit(conn: AsyncConnection[Any], unit_id: str) -> tuple[Any, ...] | None:
    """The unit's open (not released) assignment, or None."""
    cur = await conn.execute(
        f"SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE unit_id = %s AND released_at IS NULL", [unit_id]
    )
    return await cur.fetchone()


async def select_open_assignments(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    """Every open assignment with its incident's place: rows of (assignment columns..., lat, lon)."""
    cols = ", ".join(f"a.{c.strip()}" for c in ASSIGNMENT_COLUMNS.split(","))
    cur = await conn.execute(
        f"SELECT {cols}, i.lat, i.lon FROM assignments a JOIN incidents i USING (incident_id)"
        " WHERE a.released_at IS NULL ORDER BY a.assignment_id"
    )
    return await cur.fetchall()


async def insert_assignment(
    conn: AsyncConnection[Any],
    *,
    incident_id: int,
    unit_id: str,
    assigned_at: datetime,
    assigned_by: str,
    eta_s: float | None,
    distance_m: float | None,
) -> tuple[Any, ...]:
    """Insert an open assignment; unique_violation when the unit already has one."""
    cur = await conn.execute(
        "INSERT INTO assignments (incident_id, unit_id, assigned_at, assigned_by, eta_s, distance_m)"
        f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {ASSIGNMENT_COLUMNS}",
        [incident_id, unit_id, assigned_at, assigned_by, eta_s, distance_m],
    )
    row: tuple[Any, ...] | None = await cur.fetchone()
    assert row is not None
    return row


async def release_assignments(
    conn: AsyncConnection[Any],
    incident_id: int,
    released_at: datetime,
    reason: str,
    unit_id: str | None = None,
) -> list[tuple[Any, ...]]:
    """Release the incident's open assignments (or only ``unit_id``'s); return the released rows."""
    unit_clause = " AND unit_id = %s" if unit_id is not None else ""
    params: list[Any] = [released_at, reason, incident_id]
    if unit_id is not None:
        params.append(unit_id)
    cur = await conn.execute(
        "UPDATE assignments SET released_at = %s, release_reason = %s"
        f" WHERE incident_id = %s AND released_at IS NULL{unit_clause} RETURNING {ASSIGNMENT_COLUMNS}",
        params,
    )
    return await cur.fetchall()


async def mark_arrived(
    conn: AsyncConnection[Any], assignment_id: int, arrived_at: datetime
) -> tuple[Any, ...] | None:
    """Record the arrival of an open assignment not arrived yet; None when it was (or is released)."""
    cur = await conn.execute(
        f"UPDATE assignments SET arrived_at = %s WHERE assignment_id = %s AND arrived_at IS NULL"
        f" AND released_at IS NULL RETURNING {ASSIGNMENT_COLUMNS}",
        [arrived_at, assignment_id],
    )
    return await cur.fetchone()


async def count_open_assignments(conn: AsyncConnection[Any], incident_id: int) -> int:
    """How many units are still assigned to the incident."""
    cur = await conn.execute(
        "SELECT count(*) FROM assignments WHERE incident_id = %s AND released_at IS NULL", [incident_id]
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


# ----- units ------------------------------------------------------------------------------


async def select_unit_for_update(conn: AsyncConnection[Any], unit_id: str) -> UnitRow | None:
    """The unit's status and latest fix, its ``units`` row locked until the transaction ends."""
    cur = await conn.execute(
        "SELECT u.unit_id, u.kind, u.callsign, u.status, u.status_ts, u.active, l.ts, l.lat, l.lon"
        " FROM units u LEFT JOIN unit_latest l ON l.unit_id = u.unit_id"
        " WHERE u.unit_id = %s FOR UPDATE OF u",
        [unit_id],
    )
    row = await cur.fetchone()
    return None if row is None else UnitRow(*row)


async def set_unit_status(
    conn: AsyncConnection[Any], unit_id: str, status: str, ts: datetime
) -> datetime | None:
    """Set a unit's status, stamped ``ts`` or just after the stored stamp if that is newer.

    Returns the stamp written (None for an unknown unit), so the LiveFleet gets the same one.
    """
    cur = await conn.execute(
        "UPDATE units SET status = %s, updated_at = now(),"
        " status_ts = CASE WHEN status_ts IS NULL OR status_ts < %s THEN %s ELSE status_ts + %s END"
        " WHERE unit_id = %s RETURNING status_ts",
        [status, ts, ts, STATUS_STEP, unit_id],
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


# ----- events ----------------------------------------------------------------------


async def insert_event(
    conn: AsyncConnection[Any],
    *,
    ts: datetime,
    type_: str,
    unit_id: str | None,
    incident_id: int | None,
    detail: dict[str, Any],
) -> tuple[int, datetime]:
    """Record a unit event (here: ``unit_arrived``); return its (event_id, recorded_at)."""
    cur = await conn.execute(
        "INSERT INTO events (ts, type, unit_id, incident_id, detail) VALUES (%s, %s, %s, %s, %s)"
        " RETURNING event_id, recorded_at",
        [ts, type_, unit_id, incident_id, Jsonb(detail)],
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), row[1]


# ----- statistics ---------------------------------------------------------------------------

_RESPONSE = "extract(epoch FROM first_arrival_at - created_at)"
_ASSIGN = "extract(epoch FROM first_assigned_at - created_at)"


def stats_sql(by: Sequence[str]) -> str:
    """The statistics query: one overall row, then one row per value of each dimension in ``by``.

    GROUPING SETS computes every breakdown in one scan; ``grouping()`` tells the
    rows apart (a real NULL never occurs: the dimensions are NOT NULL columns).
    """
    columns = [STATS_DIMENSIONS[name] for name in by]  # KeyError for anything not whitelisted
    sets = ", ".join(["()", *(f"({c})" for c in columns)])
    if columns:
        dim_case = (
            "CASE "
            + " ".join(f"WHEN grouping({c}) = 0 THEN '{name}'" for name, c in zip(by, columns, strict=True))
            + " END"
        )
        value_case = "CASE " + " ".join(f"WHEN grouping({c}) = 0 THEN {c}::text" for c in columns) + " END"
    else:
        dim_case = value_case = "NULL::text"
    return f"""
SELECT {dim_case} AS dimension, {value_case} AS value,
       count(*) AS n,
       count(first_assigned_at) AS assigned,
       count(first_arrival_at) AS arrived,
       count(*) FILTER (WHERE status = 'closed') AS closed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY {_RESPONSE}) AS response_p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY {_RESPONSE}) AS response_p90,
       avg({_RESPONSE}) AS response_mean,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY {_ASSIGN}) AS assign_p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY {_ASSIGN}) AS assign_p90,
       avg({_ASSIGN}) AS assign_mean
FROM incidents
WHERE created_at >= %s AND created_at < %s
GROUP BY GROUPING SETS ({sets})
ORDER BY 1 NULLS FIRST, 2
"""


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


async def response_stats(
    conn: AsyncConnection[Any], since: datetime, until: datetime, by: Sequence[str]
) -> list[StatsRow]:
    """Response-time statistics of incidents created in ``[since, until)``; see :func:`stats_sql`."""
    cur = await conn.execute(stats_sql(by), [since, until])
    out: list[StatsRow] = []
    for row in await cur.fetchall():
        dim, value, n, assigned, arrived, closed, cancelled, *figures = row
        counts = (int(n), int(assigned), int(arrived), int(closed), int(cancelled))
        out.append(StatsRow(dim, value, (*counts, *(_f(x) for x in figures))))
    return out
