"""The gateway's other links on real sockets and a real Mosquitto: ``tcp:`` (SITL's 5760) and ``udpout:``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from drones.mavlink_gateway import GatewayOptions, LinkSpec
from mqtt_bridge.broker import EmbeddedBroker
from tests.drones.gateway_runner import GatewayThread, Subscriber
from tests.drones.mavlink_frames import Aircraft
from tests.fixtures.mosquitto import TestNames
from tracker.config import parse_mqtt_url

pytestmark = pytest.mark.integration

WAIT_S = 30.0


def wait_for(what: str, check: object) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def subscriber(mqtt_broker: EmbeddedBroker, test_names: TestNames) -> Iterator[Subscriber]:
    sub = Subscriber(mqtt_broker.port, test_names.client("sub"))
    yield sub
    sub.close()


def gateway_on(link: LinkSpec, broker: EmbeddedBroker, names: TestNames) -> GatewayThread:
    assert broker.url is not None
    options = GatewayOptions(link, units={7: names.unit("dron")}, client_id=names.client("gw"))
    return GatewayThread(options, parse_mqtt_url(broker.url))


def test_tcp_link_reads_a_byte_stream_split_anywhere(
    mqtt_broker: EmbeddedBroker, test_names: TestNames, subscriber: Subscriber
) -> None:
    a = Aircraft(sysid=7)
    stream = a.heartbeat(custom_mode=5) + a.position(boot_ms=1_000) + a.sys_status(battery=44)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def autopilot() -> None:
            conn, _ = server.accept()
            with conn:
                # TCP has no message boundaries: frames arrive cut at arbitrary places.
                for cut in range(0, len(stream), 7):
                    conn.sendall(stream[cut : cut + 7])
                    time.sleep(0.005)
                time.sleep(2.0)

        thread = threading.Thread(target=autopilot, daemon=True)
        thread.start()
        gateway = gateway_on(LinkSpec("tcp", "127.0.0.1", port), mqtt_broker, test_names).start()
        try:
            topic = f"serenazgo/units/{test_names.unit('dron')}/position"
            wait_for("the position over TCP", lambda: subscriber.on(topic))
            assert gateway.stats.rejected == {}
            state = gateway.stats.systems[7]
            wait_for("the battery report", lambda: state.battery_pct == 44.0)
            assert state.flight_mode == "hovering"
        finally:
            gateway.stop()
            thread.join(5)


def test_udpout_link_heartbeats_to_the_autopilot_and_reads_its_replies(
    mqtt_broker: EmbeddedBroker, test_names: TestNames, subscriber: Subscriber
) -> None:
    a = Aircraft(sysid=7)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as autopilot:
        autopilot.bind(("127.0.0.1", 0))
        autopilot.settimeout(WAIT_S)
        port = autopilot.getsockname()[1]
        gateway = gateway_on(LinkSpec("udpout", "127.0.0.1", port), mqtt_broker, test_names).start()
        try:
            # Like ArduPilot SITL or mavlink-router: stream to whoever sent us a heartbeat.
            heartbeat, gcs = autopilot.recvfrom(2048)
            assert heartbeat[0] == 0xFD and heartbeat[5] == 255  # MAVLink 2, sysid 255 (a ground station)
            autopilot.sendto(a.position(boot_ms=2_000), gcs)
            topic = f"serenazgo/units/{test_names.unit('dron')}/position"
            wait_for("the position over udpout", lambda: subscriber.on(topic))
            # The gateway's own heartbeat never became an aircraft.
            assert set(gateway.stats.systems) == {7}
        finally:
            gateway.stop()


@pytest.mark.fault
def test_while_the_broker_is_away_messages_wait_and_go_out_when_it_is_back(
    mqtt_broker: EmbeddedBroker, test_names: TestNames
) -> None:
    assert mqtt_broker.url is not None
    options = GatewayOptions(
        LinkSpec("udpin", "127.0.0.1", 0), position_hz=1000.0, client_id=test_names.client("gw")
    )
    gateway = GatewayThread(options, parse_mqtt_url(mqtt_broker.url)).start()
    a = Aircraft(sysid=7)
    try:
        # Synced, so the positions below are 0.1 s apart on the aircraft's clock however fast they come.
        gateway.send(a.system_time(datetime.now(UTC) - timedelta(minutes=1), 0), a.position(boot_ms=1_000))
        wait_for("the first position acknowledged", lambda: gateway.stats.positions == 1)
        mqtt_broker.stop()
        wait_for("the gateway to notice", lambda: not gateway.stats.connected)
        gateway.send(*(a.position(boot_ms=2_000 + 100 * k) for k in range(20)))
        wait_for("20 positions decoded", lambda: gateway.stats.updates == 22)
        assert gateway.stats.positions == 1  # nothing can be acknowledged now
        mqtt_broker.start()
        wait_for("the queued positions acknowledged", lambda: gateway.stats.positions == 21)
        assert gateway.stats.dropped == 0
        assert gateway.stats.last_error.startswith("broker:")  # the outage was noticed, not hidden

        # Stopped while the broker is away: it gives up after its drain time and says what it lost.
        mqtt_broker.stop()
        wait_for("the gateway to notice again", lambda: not gateway.stats.connected)
        gateway.send(*(a.position(boot_ms=5_000 + 100 * k) for k in range(5)))
        wait_for("5 more positions decoded", lambda: gateway.stats.updates == 27)
    finally:
        gateway.stop()
    assert gateway.error is None
    assert gateway.stats.dropped >= 5
    assert gateway.stats.positions == 21
