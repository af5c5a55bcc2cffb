"""The simulator publishing to a real Mosquitto: QoS 1, both wire formats, survives a broker restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from drones.dji import DjiState
from mqtt_bridge.codecs import decode_message
from mqtt_bridge.simulator import PublishStats, SimClock, publish_fleet
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE, parse_mqtt_url
from tracker.model import Decoded, Ignored
from tracker.simulation import FleetMix, FleetSimulation

pytestmark = pytest.mark.integration


class Subscriber:
    """A paho QoS 1 subscriber on the device topics, recording what arrives."""

    TOPICS = ("serenazgo/units/+/position", "serenazgo/units/+/status", "owntracks/+/+")

    def __init__(self, port: int, client_id: str, topics: tuple[str, ...] = TOPICS) -> None:
        self.topics = topics
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10), "subscriber never subscribed"

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        client.subscribe([(topic, 1) for topic in self.topics])
        self.ready.set()

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload))

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


async def until(predicate, limit_s: float = 40.0) -> None:
    for _ in range(int(limit_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    pytest.fail("condition not reached")


@pytest.fixture(scope="module")
def miraflores():
    return load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")


def test_publishes_every_fix_with_qos1_in_both_formats(mqtt_broker, test_names, miraflores) -> None:
    sub = Subscriber(mqtt_broker.port, test_names.client("sub"))
    try:
        clock = SimClock(speedup=30.0, catch_up_s=3.0)
        sim = FleetSimulation(
            miraflores,
            FleetMix(5, 1, 1, 1),
            seed=4,
            start=clock.sim_start,
            bad_fix_rate=0.0,
            incidents_per_hour=300,
        )
        stats = PublishStats()
        target = parse_mqtt_url(mqtt_broker.url)
        asyncio.run(
            publish_fleet(
                sim, target, clock, stats, asyncio.Event(), duration_s=3.0, client_id=test_names.client("p")
            )
        )
        assert stats.sent > 50
        assert stats.failed == 0
        assert stats.statuses > 0
        assert wait_for(lambda: sub.count() >= stats.sent + stats.statuses)
        assert sub.count() == stats.sent + stats.statuses
        now = datetime.now(UTC)
        units = set()
        statuses = 0
        for topic, payload in sub.messages:
            result = decode_message(topic, payload, now)
            assert isinstance(result, Decoded), (topic, payload, result)
            if result.status is not None:
                statuses += 1
                assert topic.endswith("/status")
                continue
            ping = result.pings[0]
            assert ping.ts <= now  # a speed-up never sends times from the future
            units.add(result.ref.external_id)
        assert statuses == stats.statuses
        assert len(units) == 8
        assert any(u.startswith("owntracks/") for u in units)
    finally:
        sub.close()


def test_dji_docked_drones_announce_their_topology_then_report_osd(
    mqtt_broker, test_names, miraflores
) -> None:
    topics = ("thing/product/+/osd", "thing/product/+/state", "sys/product/+/status")
    sub = Subscriber(mqtt_broker.port, test_names.client("sub"), topics)
    try:
        clock = SimClock(speedup=30.0, catch_up_s=3.0)
        # No deliberately bad fixes here (a DJI one without a timestamp is a rejection by design).
        sim = FleetSimulation(
            miraflores, FleetMix(0, 0, 0, 1), seed=4, start=clock.sim_start, dji_docks=1, bad_fix_rate=0.0
        )
        stats = PublishStats()
        asyncio.run(
            publish_fleet(
                sim, parse_mqtt_url(mqtt_broker.url), clock, stats, asyncio.Event(), duration_s=3.0,
                client_id=test_names.client("p"),
            )
        )  # fmt: skip
        assert stats.sent > 10
        assert wait_for(lambda: sub.count() >= stats.sent + 3)
        (unit,) = sim.units
        dock, aircraft = unit.dock_id, unit.external_ids["dji"]
        assert [t for t, _ in sub.messages[:3]] == [
            f"sys/product/{dock}/status",
            f"thing/product/{dock}/osd",
            f"thing/product/{aircraft}/state",
        ]
        state = DjiState()
        now = datetime.now(UTC)
        results = [decode_message(t, p, now, dji_state=state) for t, p in sub.messages]
        assert all(isinstance(r, Decoded | Ignored) for r in results), results
        pings = [p for r in results if isinstance(r, Decoded) for p in r.pings]
        assert len(pings) > 10
        assert all(r.ref.external_id == aircraft for r in results if isinstance(r, Decoded))
        assert all(p.ts <= now for p in pings)
    finally:
        sub.close()


def test_keeps_publishing_after_the_broker_restarts(mqtt_broker, test_names, miraflores) -> None:
    clock = SimClock()
    sim = FleetSimulation(miraflores, FleetMix(0, 0, 0, 3), seed=2, start=clock.sim_start)
    stats = PublishStats()
    target = parse_mqtt_url(mqtt_broker.url)

    async def scenario() -> tuple[int, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(
            publish_fleet(sim, target, clock, stats, stop, client_id=test_names.client("p"))
        )
        await until(lambda: stats.sent >= 3)  # drones report every 2 s
        await asyncio.to_thread(mqtt_broker.stop)
        await until(lambda: not stats.connected)
        before = stats.sent
        await asyncio.to_thread(mqtt_broker.start)
        await until(lambda: stats.sent >= before + 3)
        stop.set()
        await asyncio.wait_for(task, 30)
        return before, stats.sent

    before, after = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert after >= before + 3
    assert stats.last_error  # the outage was noticed, not hidden


def test_simulate_command_registers_units_and_publishes(mqtt_broker, pg_url) -> None:
    serenazgo = Path(sys.executable).with_name("serenazgo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    env.update(COLUMNS="200", NO_COLOR="1")
    proc = subprocess.run(
        [
            str(serenazgo), "simulate", "--mqtt-url", mqtt_broker.url, "--database-url", pg_url,
            "--foot", "3", "--cars", "2", "--motorcycles", "1", "--drones", "1",
            "--duration", "2", "--speedup", "10",
        ],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "registered 7 new units (0 already known)" in proc.stdout
    assert "done:" in proc.stdout
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT unit_id, kind, external_ids FROM units ORDER BY unit_id").fetchall()
    assert sorted(r[0] for r in rows) == [
        "dron-01",
        "moto-01",
        "mov-01",
        "mov-02",
        "ser-001",
        "ser-002",
        "ser-003",
    ]
    by_id = {r[0]: r for r in rows}
    assert by_id["ser-001"][1:] == ("foot", {"owntracks": "owntracks/ser001/phone"})
    assert by_id["dron-01"][1:] == ("drone", {})
