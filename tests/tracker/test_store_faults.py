"""The writer across a database crash: StorageError, then recovery, nothing acknowledged lost."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tracker.batch import IngestBatch
from tracker.errors import StorageError
from tracker.model import Ping
from tracker.store.embedded import EmbeddedPostgres
from tracker.store.migrations import migrate
from tracker.store.writer import PositionWriter

pytestmark = [pytest.mark.integration, pytest.mark.fault]

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def batch(start: int, n: int) -> IngestBatch:
    return IngestBatch(
        pings=[Ping(f"u{i % 10}", T0 + timedelta(seconds=i), -12.1, -77.0) for i in range(start, start + n)]
    )


def count(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM positions").fetchone()
    assert row is not None
    return int(row[0])


def test_writer_raises_when_server_killed_and_recovers_after_restart(
    pg_server_factory: Callable[..., EmbeddedPostgres],
) -> None:
    server = pg_server_factory()
    migrate(server.url, timescale=False)
    with PositionWriter(server.url, connect_timeout=2) as writer:
        assert writer.write(batch(0, 1000)).stored == 1000  # committed = acknowledged upstream

        server.kill()
        with pytest.raises(StorageError):
            writer.write(batch(1000, 1000))
        # Still down: reconnecting fails with StorageError too, never another exception type.
        with pytest.raises(StorageError):
            writer.write(batch(1000, 1000))
        assert not writer.connected

        server.start()  # crash recovery on the same port
        retried = writer.write(batch(1000, 1000))  # the caller retries the unacknowledged batch
        assert (retried.stored, retried.duplicates) == (1000, 0)
        # A redelivery of the first batch (the broker may resend after our crash) stores nothing.
        assert writer.write(batch(0, 1000)).stored == 0
    assert count(server.url) == 2000


def test_writer_recovers_when_its_connection_is_terminated(pg_url: str) -> None:
    with PositionWriter(pg_url) as writer:
        writer.write(batch(0, 10))
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'serenazgo-writer' AND datname = current_database()"
            )
        with pytest.raises(StorageError):
            writer.write(batch(10, 10))
        assert writer.write(batch(10, 10)).stored == 10
    assert count(pg_url) == 20
