"""Plain-path day partitions: created by the writer for the days a batch touches, and retention."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import psycopg
import pytest

from tracker.batch import IngestBatch
from tracker.model import Ping
from tracker.store.partitions import (
    drop_old_partitions,
    ensure_partitions,
    partition_days,
    partition_name,
    utc_today,
)
from tracker.store.writer import PositionWriter, batch_days

pytestmark = pytest.mark.integration


def at(ts: datetime, unit_id: str = "p1") -> Ping:
    return Ping(unit_id, ts, -12.1, -77.0)


def where_stored(url: str) -> dict[datetime, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return dict(conn.execute("SELECT ts, tableoid::regclass::text FROM positions").fetchall())


def days_of(url: str) -> set[date]:
    with psycopg.connect(url, autocommit=True) as conn:
        return partition_days(conn)


def test_batch_across_midnight_lands_in_both_day_partitions(pg_url: str) -> None:
    midnight = datetime.combine(utc_today() - timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    before, after = midnight - timedelta(milliseconds=1), midnight
    with PositionWriter(pg_url) as writer:
        assert writer.write(IngestBatch(pings=[at(before), at(after)])).stored == 2
    stored = where_stored(pg_url)
    assert stored[before] == partition_name(before.date())
    assert stored[after] == partition_name(after.date())
    assert partition_name(before.date()) != partition_name(after.date())


def test_old_fix_gets_its_partition_and_a_non_utc_offset_is_honoured(pg_url: str) -> None:
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(days=6)
    # 23:30 in Lima (UTC-5) is 04:30 UTC the next day: the UTC day decides the partition.
    lima = datetime.combine(utc_today() - timedelta(days=2), datetime.min.time()).replace(
        hour=23, minute=30, tzinfo=timezone(timedelta(hours=-5))
    )
    with PositionWriter(pg_url) as writer:
        writer.write(IngestBatch(pings=[at(old, "old"), at(lima, "lima"), at(datetime.now(UTC), "now")]))
    stored = where_stored(pg_url)
    assert stored[old] == partition_name(old.date())
    assert stored[lima] == partition_name(lima.astimezone(UTC).date())
    assert old.date() in days_of(pg_url)


def test_spread_out_batch_creates_only_the_days_it_needs(pg_url: str) -> None:
    today = utc_today()
    far = datetime.combine(today - timedelta(days=40), datetime.min.time(), tzinfo=UTC)
    pings = [at(far, "a"), at(datetime.now(UTC), "b")]
    assert batch_days(pings) == {far.date(), today}
    with PositionWriter(pg_url, retention_days=None) as writer:
        writer.write(IngestBatch(pings=pings))
    days = days_of(pg_url)
    assert far.date() in days
    assert today - timedelta(days=20) not in days


def test_ensure_partitions_ahead_and_explicitly(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        created = ensure_partitions(conn, 3)
        assert created == [utc_today() + timedelta(days=i) for i in range(4)]
        assert ensure_partitions(conn, 3) == []  # idempotent
        some = date(2024, 2, 29)
        assert ensure_partitions(conn, [some, some]) == [some]
        assert some in partition_days(conn)


def test_retention_drops_whole_old_days_only(pg_url: str) -> None:
    today = utc_today()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ensure_partitions(conn, [today - timedelta(days=d) for d in (0, 1, 2, 3, 10)])
        dropped = drop_old_partitions(conn, keep_days=2)
        # Days 10 and 3 are entirely older than now - 2 days; day 2 still overlaps the window.
        assert sorted(dropped) == sorted(partition_name(today - timedelta(days=d)) for d in (3, 10))
        assert partition_days(conn) == {today - timedelta(days=d) for d in (0, 1, 2)}


def test_writer_enforces_retention_when_a_new_day_appears(pg_url: str) -> None:
    today = utc_today()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ensure_partitions(conn, [today - timedelta(days=30)])
    old_fix = datetime.now(UTC) - timedelta(days=6)
    with PositionWriter(pg_url, retention_days=5) as writer:
        # The fix is older than retention: it is still stored (its day is created after the sweep)
        # rather than failing the batch forever; the next sweep removes it.
        assert writer.write(IngestBatch(pings=[at(old_fix)])).stored == 1
    days = days_of(pg_url)
    assert today - timedelta(days=30) not in days
    assert old_fix.date() in days
