"""Drone telemetry through the writer, the read queries and the LiveFleet (real PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tracker.batch import IngestBatch
from tracker.fleet import LiveFleet
from tracker.model import DroneTelemetry, Source, Unit, UnitKind
from tracker.store.partitions import drop_old_partitions
from tracker.store.pool import open_pool
from tracker.store.queries import drone_telemetry, load_latest_telemetry_sync
from tracker.store.units import create_unit_sync
from tracker.store.writer import PositionWriter

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def report(unit_id: str, second: int, **kw: object) -> DroneTelemetry:
    fields: dict[str, object] = {
        "alt_takeoff_m": 50.0 + second,
        "battery_pct": 90.0 - second / 10,
        "flight_mode": "mission",
        "gps_fix": 3,
        "satellites": 14,
        "home_lat": -12.12,
        "home_lon": -77.03,
        "docked": False,
        "dock_id": "DOCK-1",
        "source": Source.DJI,
    }
    fields.update(kw)
    return DroneTelemetry(unit_id, T0 + timedelta(seconds=second), **fields)  # type: ignore[arg-type]


@pytest.fixture
def writer(pg_url: str) -> Iterator[PositionWriter]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for uid in ("d1", "d2"):
            create_unit_sync(conn, Unit(uid, UnitKind.DRONE))
    with PositionWriter(pg_url) as w:
        yield w


def test_telemetry_is_stored_once_and_read_back_whole(writer: PositionWriter, pg_url: str) -> None:
    reports = [report("d1", s) for s in range(10)] + [
        DroneTelemetry("d2", T0, source=Source.MAVLINK),  # everything optional left out
    ]
    writer.write(IngestBatch(telemetry=reports))
    writer.write(IngestBatch(telemetry=reports))  # a redelivered batch stores nothing twice
    with psycopg.connect(pg_url, autocommit=True) as conn:
        (n,) = conn.execute("SELECT count(*) FROM drone_telemetry").fetchone() or (0,)
        latest = load_latest_telemetry_sync(conn)
    assert n == 11
    assert latest == [reports[9], reports[10]]  # each drone's newest, float4 columns exact here

    async def read() -> list[DroneTelemetry]:
        pool = await open_pool(pg_url, min_size=1, max_size=1)
        try:
            return await drone_telemetry(pool, "d1", T0 + timedelta(seconds=2), T0 + timedelta(seconds=5))
        finally:
            await pool.close()

    assert asyncio.run(read()) == reports[2:5]


def test_retention_deletes_old_telemetry_with_the_position_partitions(
    writer: PositionWriter, pg_url: str
) -> None:
    old = DroneTelemetry("d1", datetime.now(UTC) - timedelta(days=40))
    new = DroneTelemetry("d1", datetime.now(UTC) - timedelta(days=2))
    writer.write(IngestBatch(telemetry=[old, new]))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        drop_old_partitions(conn, 30)
        left = [r[0] for r in conn.execute("SELECT ts FROM drone_telemetry").fetchall()]
    assert left == [new.ts]


def test_the_fleet_keeps_each_drones_newest_report_and_notifies() -> None:
    fleet = LiveFleet()
    fleet.load([Unit("d1", UnitKind.DRONE)], [], [report("d1", 0)])
    assert (state := fleet.get("d1")) is not None and state.drone == report("d1", 0)
    seen: list[str] = []
    fleet.subscribe(lambda changes: seen.extend(c.kind for c in changes))
    changes = fleet.apply(telemetry=[report("d1", 5), report("d1", 3), report("ghost", 1)])
    assert [(c.kind, c.unit_id) for c in changes] == [("telemetry", "d1")]
    assert (state := fleet.get("d1")) is not None and state.drone == report("d1", 5)
    assert fleet.apply(telemetry=[report("d1", 4)]) == []  # older than what is shown: no change
    assert seen == ["telemetry"]
