"""Migrations on a real PostgreSQL: idempotent, concurrent-safe, checksummed; the printed DDL equals them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tracker.errors import StorageError
from tracker.model import Source, UnitKind, UnitStatus
from tracker.store.embedded import EmbeddedPostgres
from tracker.store.migrations import migrate, migration_status, storage_path
from tracker.store.schema import MIGRATIONS, SOURCE_CODES, schema_sql

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh database with nothing in it (not even the schema)."""
    name = f"e_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_server.url_for(name)
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def tables(url: str) -> dict[str, str]:
    """Ordinary and partitioned tables, views and functions of the public schema, with their kinds."""
    with psycopg.connect(url, autocommit=True) as conn:
        rels = conn.execute(
            "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'i', 'S')"
        ).fetchall()
        funcs = conn.execute(
            "SELECT p.proname, 'f' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'public'"
        ).fetchall()
    return dict(rels + funcs)


def test_migrate_applies_everything_once(empty_url: str) -> None:
    assert [s.applied_at for s in migration_status(empty_url)] == [None] * len(MIGRATIONS)
    applied = migrate(empty_url)
    assert [m.version for m in applied] == [m.version for m in MIGRATIONS]
    assert migrate(empty_url) == []
    status = migration_status(empty_url)
    assert [(s.version, s.name) for s in status] == [(m.version, m.name) for m in MIGRATIONS]
    assert all(s.applied_at is not None for s in status)
    with psycopg.connect(empty_url, autocommit=True) as conn:
        assert storage_path(conn) is False  # no TimescaleDB on this server: plain partitions


def test_two_processes_migrating_at_once_apply_each_migration_once(empty_url: str) -> None:
    results: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def run() -> None:
        start.wait()
        try:
            results.append(len(migrate(empty_url)))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(results) == [0, 0, len(MIGRATIONS)]
    with psycopg.connect(empty_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(MIGRATIONS),)


def test_an_edited_released_migration_is_refused(empty_url: str) -> None:
    migrate(empty_url)
    with psycopg.connect(empty_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")
    with pytest.raises(StorageError, match="migration 2"):
        migrate(empty_url)


def test_asking_for_timescale_on_a_plain_database_is_refused(pg_url: str) -> None:
    with pytest.raises(StorageError, match="plain"):
        migrate(pg_url, timescale=True)


def test_printed_plain_ddl_builds_the_same_schema_as_migrate(empty_url: str, pg_url: str) -> None:
    with psycopg.connect(empty_url, autocommit=True) as conn:
        conn.execute(schema_sql(timescale=False))
    assert tables(empty_url) == tables(pg_url)
    assert migrate(empty_url) == []  # the printed DDL records itself in schema_migrations
    with psycopg.connect(empty_url, autocommit=True) as a, psycopg.connect(pg_url, autocommit=True) as b:
        q = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
        assert a.execute(q).fetchall() == b.execute(q).fetchall()


def test_schema_constraints_match_the_domain_enums(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for kind in UnitKind:
            for status in UnitStatus:
                conn.execute(
                    "INSERT INTO units (unit_id, kind, status) VALUES (%s, %s, %s)",
                    [f"{kind}-{status}", str(kind), str(status)],
                )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO units (unit_id, kind) VALUES ('x1', 'submarine')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO units (unit_id, kind, status) VALUES ('x2', 'foot', 'asleep')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO units (unit_id, kind) VALUES ('bad id', 'foot')")
        sources: dict[str, int] = dict(conn.execute("SELECT name, code FROM ping_sources").fetchall())
    assert sources == {str(s): code for s, code in SOURCE_CODES.items()}
    assert set(SOURCE_CODES) == set(Source)


def test_timescale_ddl_differs_only_in_the_positions_parts() -> None:
    ts, plain = schema_sql(timescale=True), schema_sql(timescale=False)
    assert "create_hypertable" in ts and "create_hypertable" not in plain
    assert "PARTITION BY RANGE (ts)" in plain and "PARTITION BY RANGE" not in ts
    core = MIGRATIONS[0].sql(timescale=True)
    assert core == MIGRATIONS[0].sql(timescale=False)
    assert core in ts and core in plain
