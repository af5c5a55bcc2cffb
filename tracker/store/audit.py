"""The audit trail (``audit_log``, migration 4): who changed what, when and from where.

Domain services write their own detailed rows inside the transaction of the change
(an assignment, an evidence export); the API also writes one row per state-changing
request, refused ones included (:mod:`api.audit`), so that nothing done through the
API goes unrecorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from tracker.errors import StorageError
from tracker.store.pool import AsyncDb, connection


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One line of the audit trail."""

    audit_id: int
    at: datetime
    actor: str
    origin: str
    action: str
    subject: str
    detail: dict[str, Any]


async def insert_audit(
    conn: AsyncConnection[Any],
    *,
    at: datetime | None,
    actor: str,
    origin: str,
    action: str,
    subject: str,
    detail: dict[str, Any],
) -> None:
    """Record who did what to which subject, when (None: the database's now) and from where, inside
    the caller's transaction."""
    await conn.execute(
        "INSERT INTO audit_log (at, actor, origin, action, subject, detail)"
        " VALUES (coalesce(%s, now()), %s, %s, %s, %s, %s)",
        [at, actor, origin, action, subject, Jsonb(detail)],
    )


async def append_audit(
    db: AsyncDb, *, actor: str, origin: str, action: str, subject: str, detail: dict[str, Any]
) -> None:
    """Record one line on its own (the database clock gives the time)."""
    try:
        async with connection(db) as conn:
            await insert_audit(
                conn, at=None, actor=actor, origin=origin, action=action, subject=subject, detail=detail
            )
    except psycopg.Error as exc:
        raise StorageError(f"cannot write the audit trail: {exc}") from exc


async def select_audit(
    db: AsyncDb, *, since: datetime | None = None, actor: str | None = None, limit: int = 200
) -> list[AuditRow]:
    """The newest lines first, optionally from ``since`` and of one ``actor``."""
    try:
        async with connection(db) as conn:
            cur = await conn.execute(
                "SELECT audit_id, at, actor, origin, action, subject, detail FROM audit_log "
                "WHERE (%s::timestamptz IS NULL OR at >= %s) AND (%s::text IS NULL OR actor = %s) "
                "ORDER BY at DESC, audit_id DESC LIMIT %s",
                [since, since, actor, actor, limit],
            )
            rows = await cur.fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot read the audit trail: {exc}") from exc
    return [AuditRow(*r) for r in rows]
