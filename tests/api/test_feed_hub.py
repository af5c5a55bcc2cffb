"""LiveFeedHub logic without servers: hand-over coalescing, fan-out, slow-client drop, snapshot.

The socket is an in-memory stand-in with the three calls the hub uses; the fleet
is a real LiveFleet fed from a real writer-like thread.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from api.feed import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER, LiveFeedHub
from tracker.fleet import LiveFleet
from tracker.model import Ping, StatusUpdate, Unit, UnitKind, UnitStatus


class MemorySocket:
    """Collects what the hub sends; ``hold`` makes send_text block (a peer that stopped reading)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str | None] | None = None
        self.hold = asyncio.Event()
        self.hold.set()
        self.gone = asyncio.Event()
        self.arrived = asyncio.Event()

    async def send_text(self, data: str) -> None:
        await self.hold.wait()
        self.sent.append(orjson.loads(data))
        self.arrived.set()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = (code, reason)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m["data"] for m in self.sent if m["type"] == kind]

    async def wait_for(self, check: Any) -> None:
        async with asyncio.timeout(WAIT_S):
            while not check():
                self.arrived.clear()
                await self.arrived.wait()


WAIT_S = 10.0


def fleet_of(n: int) -> LiveFleet:
    fleet = LiveFleet()
    fleet.load([Unit(f"u{i}", UnitKind.PATROL_CAR, callsign=f"MOV-{i:02d}") for i in range(n)], [])
    return fleet


def ping(unit: str, ts: datetime, k: float = 0.0) -> Ping:
    return Ping(unit, ts, -12.12 + 0.0001 * k, -77.03)


async def test_a_burst_from_the_writer_thread_is_one_hand_over_with_one_message_per_unit() -> None:
    fleet = fleet_of(50)
    hub = LiveFeedHub(fleet)
    sock = MemorySocket()
    serve = asyncio.create_task(hub.serve(sock))
    await sock.wait_for(lambda: sock.of_type("snapshot"))
    t0 = datetime.now(UTC) - timedelta(minutes=10)

    def writer() -> None:
        # 5,000 pings in 100 batches applied back to back, as the bridge's writer thread does.
        for b in range(100):
            fleet.apply([ping(f"u{i}", t0 + timedelta(seconds=b), b) for i in range(50)])

    # Keep the loop busy-free but not running the hand-over until the writer is done:
    # the writer runs in a thread while this coroutine does not yield.
    thread = threading.Thread(target=writer)
    thread.start()
    thread.join()
    await sock.wait_for(lambda: len(sock.of_type("position")) >= 50)
    assert hub.stats.fleet_changes == 5000
    assert hub.stats.handovers == 1
    positions = sock.of_type("position")
    assert len(positions) == 50
    # Each unit's message carries its newest state (the last batch).
    last = (t0 + timedelta(seconds=99)).strftime("%Y-%m-%dT%H:%M:%S")
    assert all(p["properties"]["fix_time"].startswith(last) for p in positions)
    sock.gone.set()
    await serve
    assert hub.stats.clients == 0
    await hub.stop()


async def test_position_then_status_of_one_unit_arrive_with_the_newest_state() -> None:
    fleet = fleet_of(1)
    hub = LiveFeedHub(fleet)
    sock = MemorySocket()
    serve = asyncio.create_task(hub.serve(sock))
    await sock.wait_for(lambda: sock.of_type("snapshot"))
    now = datetime.now(UTC)
    fleet.apply([ping("u0", now - timedelta(seconds=5))])
    fleet.apply(statuses=[("u0", StatusUpdate(UnitStatus.DISPATCHED, now))])
    await sock.wait_for(lambda: sock.of_type("status"))
    assert [m["type"] for m in sock.sent] == ["snapshot", "position", "status"]
    assert sock.of_type("position")[0]["properties"]["status"] == "dispatched"
    assert sock.of_type("status")[0]["geometry"]["coordinates"] == [-77.03, -12.12]
    sock.gone.set()
    await serve
    await hub.stop()


async def test_a_client_that_stops_reading_is_dropped_and_the_others_keep_receiving() -> None:
    fleet = fleet_of(30)
    hub = LiveFeedHub(fleet, queue_size=40, close_timeout_s=5.0)
    slow, fast = MemorySocket(), MemorySocket()
    tasks = [asyncio.create_task(hub.serve(s)) for s in (slow, fast)]
    await slow.wait_for(lambda: slow.of_type("snapshot"))
    await fast.wait_for(lambda: fast.of_type("snapshot"))
    slow.hold.clear()  # from now on, a send to the slow peer never completes
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    for b in range(3):  # 30 frames each: the second burst overflows the slow queue of 40
        fleet.apply([ping(f"u{i}", t0 + timedelta(seconds=b), b) for i in range(30)])
        await fast.wait_for(lambda b=b: len(fast.of_type("position")) >= 30 * (b + 1))
    assert hub.stats.dropped == 1
    assert hub.stats.clients == 1
    # The slow client's socket task ends: it tried to close with a reason, and its queue is gone.
    slow.hold.set()
    await tasks[0]
    assert slow.closed is not None
    assert slow.closed[0] == CLOSE_TRY_AGAIN_LATER
    assert "too slow" in (slow.closed[1] or "")
    # Services' messages still reach the fast client, from any thread.
    threading.Thread(target=hub, args=("incident", {"incident_id": 7, "status": "open"})).start()
    await fast.wait_for(lambda: fast.of_type("incident"))
    assert fast.of_type("incident") == [{"incident_id": 7, "status": "open"}]
    await hub.stop()
    await tasks[1]
    assert fast.closed == (CLOSE_GOING_AWAY, "server shutting down")


async def test_snapshot_has_units_incidents_thresholds_and_keepalive_follows() -> None:
    fleet = fleet_of(2)
    now = datetime.now(UTC)
    fleet.apply([ping("u1", now - timedelta(seconds=3))])

    async def open_incidents() -> list[dict[str, Any]]:
        return [{"incident_id": 1, "status": "open", "lat": -12.12, "lon": -77.03}]

    hub = LiveFeedHub(fleet, keepalive_s=0.05, open_incidents=open_incidents)
    sock = MemorySocket()
    serve = asyncio.create_task(hub.serve(sock))
    await sock.wait_for(lambda: sock.of_type("keepalive"))
    snap = sock.of_type("snapshot")[0]
    by_id = {f["id"]: f for f in snap["units"]["features"]}
    assert by_id["u0"]["geometry"] is None
    assert by_id["u0"]["properties"]["freshness"] == "lost"
    assert by_id["u1"]["geometry"]["coordinates"] == [-77.03, -12.12]
    assert by_id["u1"]["properties"]["freshness"] == "live"
    assert snap["incidents"] == [{"incident_id": 1, "status": "open", "lat": -12.12, "lon": -77.03}]
    assert snap["freshness_thresholds"]["drone"] == {"stale_after_s": 15.0, "lost_after_s": 60.0}
    assert snap["keepalive_s"] == 0.05
    assert "server_time" in sock.of_type("keepalive")[0]
    sock.gone.set()
    await serve
    await hub.stop()


async def test_unknown_message_types_are_not_sent() -> None:
    hub = LiveFeedHub(fleet_of(1))
    sock = MemorySocket()
    serve = asyncio.create_task(hub.serve(sock))
    await sock.wait_for(lambda: sock.of_type("snapshot"))
    hub("snapshot", {"forged": True})
    hub("bogus", {})
    hub("event", {"type": "battery_low", "unit_id": "u0"})
    await sock.wait_for(lambda: sock.of_type("event"))
    assert [m["type"] for m in sock.sent] == ["snapshot", "event"]
    sock.gone.set()
    await serve
    await hub.stop()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="keepalive_s"):
        LiveFeedHub(fleet_of(1), keepalive_s=0)
    with pytest.raises(ValueError, match="queue_size"):
        LiveFeedHub(fleet_of(1), queue_size=0)
