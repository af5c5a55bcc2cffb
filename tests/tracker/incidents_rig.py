"""Helpers of the incident tests: units with fixes stored like the bridge stores them, a feed recorder.

A fix or a status goes through the real :class:`PositionWriter` and then into the
LiveFleet, in that order, as the bridge does after each committed batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from tracker.batch import IngestBatch
from tracker.fleet import LiveFleet
from tracker.model import Ping, Source, StatusUpdate, Unit, UnitKind, UnitStatus
from tracker.store.units import create_unit_sync
from tracker.store.writer import PositionWriter

WAIT_S = 30.0
# An incident on Av. Larco, Miraflores.
SCENE = (-12.1219, -77.0297)


def offset(lat: float, lon: float, north_m: float, east_m: float = 0.0) -> tuple[float, float]:
    """A point ``north_m``/``east_m`` metres from (lat, lon) (flat-earth: fine for a few km)."""
    import math

    dlat = north_m / 111_195.0
    dlon = east_m / (111_195.0 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


class FleetRig:
    """Units in a real database and a LiveFleet kept in step, as the bridge keeps them."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.fleet = LiveFleet()
        self.writer = PositionWriter(conninfo, retention_days=None)
        self.feed: list[tuple[str, dict[str, Any]]] = []

    def record(self, kind: str, payload: dict[str, Any]) -> None:
        """A FeedListener that keeps what it is given."""
        self.feed.append((kind, payload))

    def add_unit(self, unit_id: str, kind: UnitKind = UnitKind.PATROL_CAR, **kw: Any) -> Unit:
        unit = Unit(unit_id, kind, callsign=unit_id.upper(), **kw)
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            create_unit_sync(conn, unit)
        self.fleet.upsert_unit(unit)
        return unit

    def fix(self, unit_id: str, lat: float, lon: float, ts: datetime | None = None) -> Ping:
        ts = ts or datetime.now(UTC)
        ping = Ping(unit_id, ts, lat, lon, accuracy=5.0, source=Source.NATIVE, received_at=ts)
        self.writer.write(IngestBatch(pings=[ping]))
        self.fleet.apply(pings=[ping])
        return ping

    def status(self, unit_id: str, status: UnitStatus, ts: datetime | None = None) -> None:
        update = StatusUpdate(status, ts or datetime.now(UTC))
        self.writer.write(IngestBatch(statuses=[(unit_id, update)]))
        self.fleet.apply(statuses=[(unit_id, update)])

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def unit_status(self, unit_id: str) -> str:
        return str(self.query("SELECT status FROM units WHERE unit_id = %s", unit_id)[0][0])

    def close(self) -> None:
        self.writer.close()


async def wait_for(what: str, check: Callable[[], Any], limit_s: float = WAIT_S) -> None:
    """Poll ``check`` (sync or async) until it is true; fail after ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
