"""A throwaway PostgreSQL for benchmarks: EmbeddedPostgres in a temp folder on a free port."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tracker.store.embedded import EmbeddedPostgres
from tracker.store.migrations import migrate


@contextmanager
def temp_postgres() -> Iterator[EmbeddedPostgres]:
    """Start a private server (product settings: fsync and synchronous_commit on); remove it after."""
    data_dir = Path(tempfile.mkdtemp(prefix="serenazgo-bench-pg-"))
    server = EmbeddedPostgres(data_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def fresh_database(server: EmbeddedPostgres, name: str, *, timescale: bool | None = None) -> str:
    """(Re)create database ``name``, migrate it, and return its URL."""
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = server.url_for(name)
    migrate(url, timescale=timescale)
    return url
