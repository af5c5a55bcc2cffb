"""Async reads and the unit registry table, against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tracker.batch import DeadLetter, IngestBatch
from tracker.errors import DuplicateUnitError, UnitNotFoundError
from tracker.model import Ping, PingFlag, Source, Unit, UnitKind, UnitStatus
from tracker.store.queries import (
    counts,
    dead_letters,
    latest_position,
    latest_positions,
    load_latest_sync,
    open_pool,
    track,
)
from tracker.store.units import create_unit, get_unit, list_units, load_all_units, load_all_units_sync
from tracker.store.writer import PositionWriter

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture
async def conn(pg_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as c:
        yield c


def at(unit_id: str, second: int, flags: PingFlag = PingFlag.NONE, lat: float = -12.1) -> Ping:
    ts = T0 + timedelta(seconds=second)
    return Ping(unit_id, ts, lat, -77.0, speed=2.0, flags=flags, source=Source.OSMAND, received_at=ts)


async def test_units_create_get_list_and_duplicates(conn: psycopg.AsyncConnection[Any], pg_url: str) -> None:
    car = Unit(
        "car-01",
        UnitKind.PATROL_CAR,
        callsign="Halcón 1",
        sector="S3",
        capabilities=frozenset({"first_aid", "radio"}),
        external_ids={"osmand": "48241179"},
        status=UnitStatus.DISPATCHED,
    )
    drone = Unit("dji.1581F", UnitKind.DRONE, external_ids={"dji": "1581F"}, active=False)
    await create_unit(conn, car)
    await create_unit(conn, drone)
    assert await get_unit(conn, "car-01") == car
    assert await list_units(conn) == [car, drone]
    assert await list_units(conn, active_only=True) == [car]
    assert await load_all_units(conn) == load_all_units_sync(pg_url) == [car, drone]

    with pytest.raises(DuplicateUnitError, match="already exists"):
        await create_unit(conn, Unit("car-01", UnitKind.FOOT))
    with pytest.raises(DuplicateUnitError, match="another unit"):
        await create_unit(conn, Unit("car-02", UnitKind.PATROL_CAR, external_ids={"osmand": "48241179"}))
    with pytest.raises(UnitNotFoundError):
        await get_unit(conn, "car-02")
    # The same external id under another protocol is a different device.
    await create_unit(conn, Unit("car-03", UnitKind.PATROL_CAR, external_ids={"traccar": "48241179"}))


async def test_external_id_index_follows_updates(conn: psycopg.AsyncConnection[Any]) -> None:
    await create_unit(conn, Unit("foot-1", UnitKind.FOOT, external_ids={"owntracks": "owntracks/ana/p"}))
    await conn.execute(
        "UPDATE units SET external_ids = '{\"owntracks\": \"owntracks/ana/new\"}' WHERE unit_id = 'foot-1'"
    )
    cur = await conn.execute("SELECT protocol, external_id, unit_id FROM unit_external_ids")
    assert await cur.fetchall() == [("owntracks", "owntracks/ana/new", "foot-1")]
    # The old external id is free again.
    await create_unit(conn, Unit("foot-2", UnitKind.FOOT, external_ids={"owntracks": "owntracks/ana/p"}))


async def test_latest_track_dead_letters_and_counts(pg_url: str) -> None:
    pings = [at("a", s) for s in (30, 10, 20, 40)] + [at("a", 25, PingFlag.OUTLIER, lat=-13.0), at("b", 5)]
    now = datetime.now(UTC).replace(microsecond=0)
    letters = [
        DeadLetter("t/1", b"{", "invalid_json", "", now),
        DeadLetter("t/2", b"x", "unknown_unit", "", now),
    ]
    with PositionWriter(pg_url) as writer:
        writer.write(IngestBatch(pings=pings, dead_letters=letters))

    pool = await open_pool(pg_url, max_size=2)
    try:
        got = await track(pool, "a", T0 + timedelta(seconds=10), T0 + timedelta(seconds=40))
        # [start, end): 40 excluded, 10 included; ordered by time whatever the insert order.
        assert [p.ts for p in got] == [T0 + timedelta(seconds=s) for s in (10, 20, 25, 30)]
        assert got[2].flags == PingFlag.OUTLIER
        assert all(p.source is Source.OSMAND and p.received_at == p.ts for p in got)
        clean = await track(pool, "a", T0, T0 + timedelta(hours=1), exclude_outliers=True)
        assert [p.ts for p in clean] == [T0 + timedelta(seconds=s) for s in (10, 20, 30, 40)]
        assert len(await track(pool, "a", T0, T0 + timedelta(hours=1), limit=2)) == 2

        latest = await latest_positions(pool)
        assert [(p.unit_id, p.ts) for p in latest] == [
            ("a", T0 + timedelta(seconds=40)),
            ("b", T0 + timedelta(seconds=5)),
        ]
        one = await latest_position(pool, "b")
        assert one is not None and one.lat == -12.1
        assert await latest_position(pool, "nobody") is None

        letters_back = await dead_letters(pool, reason="invalid_json")
        assert [(d.topic, d.payload, d.payload_size) for d in letters_back] == [("t/1", b"{", 1)]
        assert len(await dead_letters(pool, since=now - timedelta(seconds=1))) == 2
        assert await dead_letters(pool, since=now + timedelta(seconds=1)) == []

        c = await counts(pool)
        assert (c.positions, c.units_with_latest, c.dead_letters, c.units) == (6, 2, 2, 0)
    finally:
        await pool.close()

    with psycopg.connect(pg_url, autocommit=True) as sync_conn:
        assert [p.unit_id for p in load_latest_sync(sync_conn)] == ["a", "b"]
