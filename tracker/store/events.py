"""Unit events in the database (table ``events``, migration 4): insert a batch, read a page.

Pages are ordered by ``event_id`` (a bigserial, so the order of insertion):
a client pages with ``after_id`` = the last id it has, which never skips nor
repeats an event, unlike paging by time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from tracker.errors import StorageError
from tracker.store.pool import AsyncDb, connection

if TYPE_CHECKING:
    from tracker.events import Event

_COLUMNS = "event_id, ts, type, unit_id, geofence_id, incident_id, detail, recorded_at"
_INSERT = (
    "INSERT INTO events (ts, type, unit_id, geofence_id, incident_id, detail)"
    " VALUES (%s, %s, %s, %s, %s, %s) RETURNING event_id, recorded_at"
)


def _params(e: Event) -> list[Any]:
    return [e.ts, str(e.type), e.unit_id, e.geofence_id, e.incident_id, Jsonb(e.detail)]


async def insert_events(db: AsyncDb, events: Sequence[Event]) -> list[Event]:
    """Store ``events`` in one transaction; return them with their ``event_id`` and ``recorded_at``."""
    if not events:
        return []
    stored: list[Event] = []
    try:
        async with connection(db) as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(_INSERT, [_params(e) for e in events], returning=True)
            for event in events:
                row = await cur.fetchone()
                assert row is not None
                stored.append(replace(event, event_id=row[0], recorded_at=row[1]))
                cur.nextset()
    except psycopg.Error as exc:
        raise StorageError(f"cannot store {len(events)} event(s): {exc}") from exc
    return stored


async def list_events(
    db: AsyncDb,
    *,
    after_id: int | None = None,
    since: datetime | None = None,
    types: Sequence[str] | None = None,
    unit_id: str | None = None,
    geofence_id: str | None = None,
    limit: int = 100,
) -> list[Event]:
    """Events with ``event_id > after_id`` and/or ``ts >= since``, filtered, oldest id first (``limit``)."""
    from tracker.events import Event  # tracker.events stores through this module

    clauses: list[str] = []
    params: list[Any] = []
    if after_id is not None:
        clauses.append("event_id > %s")
        params.append(after_id)
    if since is not None:
        clauses.append("ts >= %s")
        params.append(since)
    if types:
        clauses.append("type = ANY(%s)")
        params.append(list(types))
    if unit_id is not None:
        clauses.append("unit_id = %s")
        params.append(unit_id)
    if geofence_id is not None:
        clauses.append("geofence_id = %s")
        params.append(geofence_id)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    params.append(limit)
    try:
        async with connection(db) as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM events{where} ORDER BY event_id LIMIT %s", params
            )
            rows = await cur.fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot read events: {exc}") from exc
    return [
        Event(
            type=etype,
            ts=ts,
            unit_id=uid,
            geofence_id=gid,
            incident_id=iid,
            detail=detail or {},
            event_id=eid,
            recorded_at=recorded,
        )
        for eid, ts, etype, uid, gid, iid, detail, recorded in rows
    ]
