"""EmbeddedBroker: the generated Mosquitto configuration, restarts that keep state, the amqtt fallback."""

from __future__ import annotations

import queue
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt_bridge.ackclient import AckClient, InboundMessage
from mqtt_bridge.broker import MAX_QUEUED_BYTES, EmbeddedBroker, mosquitto_config
from tests.fixtures.mosquitto import TestNames, publish_qos1
from tracker.config import parse_mqtt_url
from tracker.errors import EmbeddedServerError

WAIT_S = 20.0


def conf_values(text: str) -> dict[str, str]:
    pairs = (line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {k: v for k, v in pairs if k != "log_type"}


def test_generated_config_makes_the_guarantee_hold(tmp_path: Path) -> None:
    conf = conf_values(mosquitto_config(18830, tmp_path))
    assert conf["listener"] == "18830 127.0.0.1"  # loopback only while devices are anonymous
    assert conf["persistence"] == "true"
    assert conf["persistence_location"] == f"{tmp_path}/"
    assert conf["autosave_on_changes"] == "false" and int(conf["autosave_interval"]) > 0
    # Mosquitto's default (1000 queued messages per client, then silent drops) is lifted,
    # and bounded by bytes instead.
    assert conf["max_queued_messages"] == "0"
    assert int(conf["max_queued_bytes"]) == MAX_QUEUED_BYTES > 0
    assert int(conf["max_inflight_messages"]) > 0
    assert int(conf["max_packet_size"]) > 65536  # above the bridge's own dead-letter limit
    assert conf["persistent_client_expiration"].endswith("d")


def receive(broker: EmbeddedBroker, names: TestNames, n: int) -> list[bytes]:
    """Connect the bridge's session, take ``n`` messages (acknowledging them), disconnect."""
    inbox: queue.Queue[InboundMessage] = queue.Queue()
    client = AckClient(
        parse_mqtt_url(broker.url),
        names.client("bridge"),
        [names.topic("#")],
        inbox.put,
        connack_timeout_s=1.0,  # amqtt never answers an MQTT 5 CONNECT
        max_backoff_s=0.2,
    )
    client.start()
    try:
        assert client.wait_connected(WAIT_S), client.stats.last_error
        got = [inbox.get(timeout=WAIT_S) for _ in range(n)]
        assert client.ack_many(got) == n
        return [m.payload for m in got]
    finally:
        client.stop()


@pytest.mark.integration
def test_clean_restart_keeps_port_sessions_and_queued_messages(
    mqtt_broker: EmbeddedBroker, test_names: TestNames
) -> None:
    assert mqtt_broker.kind == "mosquitto"
    receive(mqtt_broker, test_names, 0)  # creates the persistent session and its subscription
    result = publish_qos1(
        mqtt_broker.port,
        [(test_names.topic("x"), str(i).encode()) for i in range(1500)],
        client_id=test_names.client("pub"),
    )
    assert all(result.acked)
    port = mqtt_broker.port
    mqtt_broker.restart()
    assert mqtt_broker.port == port
    # All 1500 (more than Mosquitto's default 1000-message queue) come back, in order.
    assert receive(mqtt_broker, test_names, 1500) == [str(i).encode() for i in range(1500)]


@pytest.mark.integration
def test_start_reports_a_taken_port(mqtt_broker: EmbeddedBroker) -> None:
    root = Path(tempfile.mkdtemp(prefix="serenazgo-test-mqtt-"))
    root.chmod(0o755)
    try:
        other = EmbeddedBroker(root / "b", port=mqtt_broker.port)
        with pytest.raises(EmbeddedServerError, match="address in use"):
            other.start()
        assert not other.running
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def amqtt_broker() -> Iterator[EmbeddedBroker]:
    root = Path(tempfile.mkdtemp(prefix="serenazgo-test-amqtt-"))
    broker = EmbeddedBroker(root / "b", mosquitto=False)
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
def test_amqtt_fallback_queues_for_a_persistent_session(
    amqtt_broker: EmbeddedBroker, test_names: TestNames
) -> None:
    """What the fallback does support: QoS 1 and a persistent session's offline queue (MQTT 3.1.1)."""
    assert amqtt_broker.kind == "amqtt"
    assert receive(amqtt_broker, test_names, 0) == []  # the session exists; the client falls back to 3.1.1
    result = publish_qos1(
        amqtt_broker.port,
        [(test_names.topic("x"), b"while-away")],
        client_id=test_names.client("pub"),
    )
    assert all(result.acked)
    assert receive(amqtt_broker, test_names, 1) == [b"while-away"]
