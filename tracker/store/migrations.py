"""Applying the schema: versioned migrations, one transaction each, under an advisory lock.

Two processes migrating at once (two bridges starting together) queue on a
session advisory lock; the second then finds everything applied and does
nothing. The storage path (TimescaleDB or plain) is chosen once, when
``positions`` is first created, and read back from the database afterwards.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import psycopg

from tracker.errors import StorageError
from tracker.store.schema import MIGRATIONS, SCHEMA_MIGRATIONS_DDL, Migration, record_sql, schema_sql

# pg_advisory_lock key: the bytes of "serenazgo" folded into a bigint, fixed forever.
MIGRATION_LOCK_KEY = 0x7365_7265_6E61_7A67


class MigrationStatus(NamedTuple):
    """One known or applied migration and when it was applied (None: pending); unpacks as a tuple."""

    version: int
    name: str
    applied_at: datetime | None


def timescale_available(conn: psycopg.Connection[Any]) -> bool:
    """True when the server can create the timescaledb extension (installed and preloaded)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
        " current_setting('shared_preload_libraries')"
    ).fetchone()
    assert row is not None
    available, preload = row
    return bool(available) and "timescaledb" in str(preload)


def storage_path(conn: psycopg.Connection[Any]) -> bool | None:
    """True for TimescaleDB, False for plain partitions, None when ``positions`` does not exist yet."""
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass('positions')").fetchone()
    if row is None:
        return None
    return bool(row[0] != "p")  # a hypertable is an ordinary table ('r'); plain is partitioned ('p')


def apply_migrations(conn: psycopg.Connection[Any], timescale: bool | None = None) -> list[Migration]:
    """Apply pending migrations on an autocommit connection; return those applied.

    ``timescale`` None picks TimescaleDB when the server offers it. Raises
    :class:`StorageError` when an applied migration's SQL has changed since, or
    when the requested path contradicts the one the database already uses.
    """
    if not conn.autocommit:
        raise StorageError("apply_migrations needs an autocommit connection (one transaction per migration)")
    conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
    try:
        conn.execute(SCHEMA_MIGRATIONS_DDL)
        applied: dict[int, str] = {
            int(v): str(c) for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")
        }
        existing = storage_path(conn)
        if existing is not None and timescale is not None and existing != timescale:
            raise StorageError(
                f"the database already uses the {'TimescaleDB' if existing else 'plain'} path; "
                f"cannot migrate it as {'TimescaleDB' if timescale else 'plain'}"
            )
        use_timescale = existing if existing is not None else timescale
        if use_timescale is None:
            use_timescale = timescale_available(conn)
        done: list[Migration] = []
        for m in MIGRATIONS:
            if m.version in applied:
                if applied[m.version] != m.checksum(use_timescale):
                    raise StorageError(
                        f"migration {m.version} ({m.name}) differs from the one applied to this database: "
                        "released migrations must not be edited; add a new migration instead"
                    )
                continue
            with conn.transaction():
                conn.execute(m.sql(use_timescale))
                conn.execute(record_sql(m, use_timescale))
            done.append(m)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])


def migrate(conninfo: str, timescale: bool | None = None) -> list[Migration]:
    """Bring the database at ``conninfo`` to the latest schema; return the migrations applied."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            return apply_migrations(conn, timescale)
    except psycopg.Error as exc:
        raise StorageError(f"migration failed: {exc}") from exc


def migration_status(conninfo: str) -> list[MigrationStatus]:
    """Every known migration with its applied time (None: pending), plus any unknown applied ones."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            rows: dict[int, tuple[str, datetime]] = {}
            if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() != (None,):
                rows = {
                    version: (name, applied_at)
                    for version, name, applied_at in conn.execute(
                        "SELECT version, name, applied_at FROM schema_migrations"
                    )
                }
    except psycopg.Error as exc:
        raise StorageError(f"cannot read migration status: {exc}") from exc
    status = [MigrationStatus(m.version, m.name, rows.get(m.version, (m.name, None))[1]) for m in MIGRATIONS]
    known = {m.version for m in MIGRATIONS}
    # Applied by newer code than this: show them rather than hide them.
    status += [MigrationStatus(v, name, at) for v, (name, at) in sorted(rows.items()) if v not in known]
    return sorted(status, key=lambda s: s.version)


__all__ = [
    "MIGRATION_LOCK_KEY",
    "MigrationStatus",
    "apply_migrations",
    "migrate",
    "migration_status",
    "schema_sql",
    "storage_path",
    "timescale_available",
]
