"""/api/v1/ws end to end: real Mosquitto, real PostgreSQL, the real bridge, the app in uvicorn.

Pings are published over MQTT, go through the bridge (decode, filter, store,
LiveFleet) and reach WebSocket clients through the hub; a client that stops
reading is dropped without holding ingest or the other clients back.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.api.live_stack import LiveStack, native_ping, start_stack
from tests.fixtures.auth import bearer
from tests.mqtt_bridge.ingest_rig import IngestRig, Sent
from tracker.store.users import add_user_sync, issue_api_token_sync, list_tokens_sync, revoke_token_id_sync
from tracker.users import Role

pytestmark = pytest.mark.integration

WAIT_S = 30.0


@pytest.fixture
def make_stack(ingest: IngestRig) -> Iterator[Callable[..., LiveStack]]:
    stacks: list[LiveStack] = []

    def make(**kwargs: Any) -> LiveStack:
        stack = start_stack(ingest, **kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


class Reader:
    """Reads a WebSocket in the background and keeps every message."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for raw in self.ws:
                self.messages.append(orjson.loads(raw))
                self.arrived.set()
        except ConnectionClosed:
            pass
        self.arrived.set()

    def of_type(self, kind: str) -> list[Any]:
        return [m["data"] for m in self.messages if m["type"] == kind]

    async def wait_for(self, what: str, check: Callable[[], bool]) -> None:
        try:
            async with asyncio.timeout(WAIT_S):
                while not check():
                    if self.task.done():
                        pytest.fail(f"the connection closed before {what}")
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            pytest.fail(f"timed out waiting for {what}; got {[m['type'] for m in self.messages][-20:]}")

    async def close(self) -> None:
        await self.ws.close()
        await self.task


def position_of(message: dict[str, Any]) -> tuple[str, list[float] | None]:
    geometry = message["geometry"]
    return message["id"], geometry["coordinates"] if geometry else None


def fix_of(message: dict[str, Any]) -> tuple[str, str | None]:
    return message["id"], message["properties"]["fix_time"]


def iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_snapshot_then_pings_then_keepalive(
    ingest: IngestRig, make_stack: Callable[..., LiveStack]
) -> None:
    units = ingest.native_units(3)
    stack = make_stack(hub_options={"keepalive_s": 0.3})
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    # A unit seen before the console connects is in its snapshot.
    first = native_ping(units[0], t0, -12.1200, -77.0300)
    await asyncio.to_thread(ingest.publish, [first])
    stack.wait_fleet("the first ping in the fleet", lambda: stack.bridge.fleet.get(units[0]).fix is not None)  # type: ignore[union-attr]

    reader = Reader(await connect(stack.served.ws_url, additional_headers=stack.auth))
    await reader.wait_for("the snapshot", lambda: bool(reader.of_type("snapshot")))
    assert reader.messages[0]["type"] == "snapshot"
    snap = reader.of_type("snapshot")[0]
    by_id = {f["id"]: f for f in snap["units"]["features"]}
    assert set(by_id) == set(units)
    assert by_id[units[0]]["geometry"]["coordinates"] == [-77.03, -12.12]
    assert by_id[units[0]]["properties"]["kind"] == "patrol_car"
    assert by_id[units[0]]["properties"]["status"] == "available"
    assert by_id[units[0]]["properties"]["freshness"] == "stale"  # two minutes old: a car is stale after 60 s
    assert by_id[units[1]]["geometry"] is None
    assert by_id[units[1]]["properties"]["freshness"] == "lost"
    assert snap["incidents"] == []  # no incident service in this process
    assert snap["freshness_thresholds"]["patrol_car"] == {"stale_after_s": 60.0, "lost_after_s": 300.0}
    assert snap["keepalive_s"] == 0.3

    # A client connected before a ping receives it.
    now = datetime.now(UTC).replace(microsecond=0)
    second = native_ping(units[1], now - timedelta(seconds=1), -12.1250, -77.0350, speed=3.0)
    await asyncio.to_thread(ingest.publish, [second])
    await reader.wait_for(
        "the ping on the feed",
        lambda: (units[1], [-77.035, -12.125]) in map(position_of, reader.of_type("position")),
    )
    feature = next(f for f in reader.of_type("position") if f["id"] == units[1])
    assert feature["properties"]["freshness"] == "live"
    assert feature["properties"]["speed"] == 3.0
    assert feature["properties"]["fix_time"] == (now - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    await reader.wait_for("a keepalive", lambda: bool(reader.of_type("keepalive")))
    assert reader.of_type("keepalive")[0]["clients"] == 1
    await reader.close()


async def _stalled_client(port: int) -> ClientConnection:
    """A client that never reads: a tiny receive buffer, the library stops reading after one frame.

    Without compression, so that frames fill the socket buffers at their full size.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: it sets the window
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return await connect(
        f"ws://127.0.0.1:{port}/api/v1/ws",
        sock=sock,
        max_queue=1,
        ping_interval=None,
        compression=None,
        additional_headers=bearer(),
    )


async def test_a_stalled_client_is_dropped_while_ingest_and_other_clients_go_on(
    ingest: IngestRig, make_stack: Callable[..., LiveStack]
) -> None:
    units = ingest.native_units(40)
    # A long close timeout: the dropped client gets its close frame once it reads again.
    stack = make_stack(hub_options={"queue_size": 50, "close_timeout_s": 120.0}, send_buffer=16384)
    hub = stack.hub
    stalled = await _stalled_client(stack.served.port)
    healthy = Reader(await connect(stack.served.ws_url, additional_headers=stack.auth))
    await healthy.wait_for("the snapshot", lambda: bool(healthy.of_type("snapshot")))
    stack.wait_fleet("both clients registered", lambda: hub.stats.clients == 2)

    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    sent: list[Sent] = []
    step = 0
    # Publish rounds until the stalled client's queue overflows (its socket buffers fill first).
    for _ in range(200):
        batch = [
            native_ping(
                u, t0 + timedelta(seconds=step + j), -12.13 + 0.00002 * (step + j), -77.04 + 0.001 * i
            )
            for j in range(5)
            for i, u in enumerate(units)
        ]
        step += 5
        result = await asyncio.to_thread(ingest.publish, batch)
        assert all(result.acked)
        sent.extend(batch)
        # (2 m steps: JITTER keeps the shown place, so the fix time tells the ping arrived.)
        await healthy.wait_for(
            "the round on the healthy client",
            lambda b=batch: (b[-1].unit_id, iso(b[-1].ts)) in map(fix_of, healthy.of_type("position")),
        )
        if hub.stats.dropped:
            break
    assert hub.stats.dropped == 1, "the stalled client was never dropped"
    assert hub.stats.clients == 1

    # Ingest went on: everything published is stored, and the healthy client still gets new pings.
    last = native_ping(units[0], t0 + timedelta(seconds=step + 120), -12.12, -77.03)
    await asyncio.to_thread(ingest.publish, [last])
    sent.append(last)
    await healthy.wait_for(
        "a ping after the drop",
        lambda: (units[0], [-77.03, -12.12]) in map(position_of, healthy.of_type("position")),
    )
    await asyncio.to_thread(ingest.wait_rows, len(sent))
    assert stack.bridge.stats().last_error in ("", None)

    # The dropped client, reading again, finds the close code and the reason after what was in flight.
    async def read_to_the_end() -> None:
        while True:
            await stalled.recv()

    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(read_to_the_end(), WAIT_S)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1013
    assert "too slow" in closed.value.rcvd.reason
    await healthy.close()
    await stalled.close()


async def test_the_feed_needs_a_user_of_any_role(make_stack: Callable[..., LiveStack]) -> None:
    stack = make_stack()
    for headers in ({}, {"Authorization": "Bearer sza_not-a-token"}, {"Authorization": "Basic b3A6cHc="}):
        with pytest.raises(InvalidStatus) as refused:
            await connect(stack.served.ws_url, additional_headers=headers)
        assert refused.value.response.status_code == 403, headers
    viewer = Reader(await connect(stack.served.ws_url, additional_headers=bearer("viewer")))
    await viewer.wait_for("the viewer's snapshot", lambda: bool(viewer.of_type("snapshot")))
    await viewer.close()


async def test_an_open_feed_ends_when_its_token_is_revoked(
    ingest: IngestRig, make_stack: Callable[..., LiveStack]
) -> None:
    stack = make_stack()
    stack.ctx.settings.auth.cache_s = 0.0  # checked again every second (MIN_RECHECK_S)
    add_user_sync(ingest.conninfo, "wall-screen", Role.VIEWER, None)
    token = issue_api_token_sync(ingest.conninfo, "wall-screen", "sala de monitoreo")
    kept = Reader(await connect(stack.served.ws_url, additional_headers=bearer()))
    reader = Reader(
        await connect(stack.served.ws_url, additional_headers={"Authorization": f"Bearer {token}"})
    )
    await reader.wait_for("the snapshot", lambda: bool(reader.of_type("snapshot")))
    [row] = list_tokens_sync(ingest.conninfo, "wall-screen")
    assert revoke_token_id_sync(ingest.conninfo, row.token_id)
    async with asyncio.timeout(WAIT_S):
        await reader.task  # the server closes it
    assert reader.ws.close_code == 1008
    assert "log in again" in (reader.ws.close_reason or "")
    # Another console's feed goes on.
    assert not kept.task.done()
    await kept.close()
