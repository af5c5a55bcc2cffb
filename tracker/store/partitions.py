"""Day partitions of ``positions`` on plain PostgreSQL, and retention on both paths.

On the plain path each UTC day is its own partition (``positions_pYYYYMMDD``):
the writer creates the days a batch touches, :func:`ensure_partitions` creates
days ahead of time, and :func:`drop_old_partitions` enforces retention by
dropping whole days (no DELETE, no bloat). On TimescaleDB chunks are created
by the extension and retention is a background job (:func:`set_retention_policy`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from tracker.store.schema import PARTITION_PREFIX


def utc_today() -> date:
    """Today's date in UTC (partitions are UTC days)."""
    return datetime.now(UTC).date()


def partition_name(day: date) -> str:
    """Name of the partition holding ``day``: ``positions_p20240131``."""
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def partition_days(conn: psycopg.Connection[Any]) -> set[date]:
    """The UTC days that have a partition of ``positions`` (empty on TimescaleDB)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = to_regclass('positions')"
    ).fetchall()
    days: set[date] = set()
    for (name,) in rows:
        if name.startswith(PARTITION_PREFIX):
            try:
                stamp = datetime.strptime(name[len(PARTITION_PREFIX) :], "%Y%m%d")
            except ValueError:
                continue  # a partition someone attached by hand under another name
            days.add(stamp.date())
    return days


def ensure_partitions(conn: psycopg.Connection[Any], days: int | Iterable[date]) -> list[date]:
    """Create missing day partitions; return the days created.

    ``days`` is either the days themselves or a count ``n``: today (UTC) and the
    ``n`` days after it, which is how a deployment creates partitions ahead of
    time. Each day is created in its own short transaction, so that the lock it
    takes on ``positions`` is not held while a batch is written.
    """
    if isinstance(days, int):
        today = utc_today()
        wanted = [today + timedelta(days=i) for i in range(days + 1)]
    else:
        wanted = sorted(set(days))
    created: list[date] = []
    for day in wanted:
        with conn.transaction():
            row = conn.execute("SELECT serenazgo_ensure_position_partition(%s)", [day]).fetchone()
        if row and row[0]:
            created.append(day)
    return created


def drop_old_partitions(conn: psycopg.Connection[Any], keep_days: int) -> list[str]:
    """Drop the day partitions entirely older than ``keep_days`` days; return their names.

    Drone telemetry older than the same horizon is deleted in the same transaction
    (one retention for a unit's whole history).
    """
    with conn.transaction():
        rows = conn.execute(
            "SELECT serenazgo_drop_position_partitions(make_interval(days => %s))", [keep_days]
        ).fetchall()
        conn.execute(PRUNE_DRONE_TELEMETRY_SQL, [keep_days])
    return [name for (name,) in rows]


PRUNE_DRONE_TELEMETRY_SQL = "DELETE FROM drone_telemetry WHERE ts < now() - make_interval(days => %s)"


RETAINED_HYPERTABLES = ("positions", "drone_telemetry")
REMOVE_RETENTION_SQL = "SELECT remove_retention_policy(%s, if_exists => true)"
ADD_RETENTION_SQL = "SELECT add_retention_policy(%s, drop_after => make_interval(days => %s))"


def set_retention_policy(conn: psycopg.Connection[Any], keep_days: int) -> None:
    """TimescaleDB: replace the retention jobs of the time series with ones keeping ``keep_days`` days."""
    with conn.transaction():
        for table in RETAINED_HYPERTABLES:
            conn.execute(REMOVE_RETENTION_SQL, [table])
            conn.execute(ADD_RETENTION_SQL, [table, keep_days])
