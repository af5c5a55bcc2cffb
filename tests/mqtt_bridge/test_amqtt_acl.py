"""Device credentials on the in-process amqtt fallback: the same accounts as Mosquitto, real PostgreSQL.

What amqtt holds differently from Mosquitto (the cases both hold alike run on both
brokers in ``test_broker_acl.py``), on
``EmbeddedBroker(..., mosquitto=False, access=...)`` as ``serenazgo up`` starts it
without a ``mosquitto`` binary. amqtt speaks MQTT 3.1.1 only. It acknowledges a
denied publish and drops it (the connection stays open), and refuses a SUBSCRIBE
whose filter is not within a readable grant (0x80) where Mosquitto grants it and
filters delivery. "Never reached" is checked on what arrives, with a later allowed
message as the barrier: amqtt handles one client's packets in order, broadcasts from
one queue, and sends to each subscriber in the order it broadcast.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt_bridge.ackclient import AckClient, InboundMessage
from mqtt_bridge.amqtt_broker import InProcessBroker
from mqtt_bridge.broker import EmbeddedBroker
from mqtt_bridge.broker_acl import (
    BRIDGE_USER,
    SIMULATOR_USER,
)
from mqtt_bridge.topics import SUBSCRIPTION_FILTERS
from tests.mqtt_bridge.access_rig import WAIT_S, Client, Rig, open_rig
from tracker.config import parse_mqtt_url

REFUSED = 0x80  # SUBACK failure (paho's reason code 128)


@pytest.fixture
def rig(pg_url: str) -> Iterator[Rig]:
    """Units a and b with their tokens on a secured amqtt fallback."""
    with open_rig(pg_url, mosquitto=False) as rig:
        yield rig


def test_a_device_cannot_publish_on_another_units_topics(rig: Rig) -> None:
    bridge = rig.bridge()
    device = rig.device(rig.a)
    for i, topic in enumerate(rig.foreign_topics()):
        device.publish(topic, f"foreign-{i}".encode())  # acknowledged and dropped
    device.publish(f"serenazgo/units/{rig.a}/position", b"barrier")
    # The same connection, handled in order: every foreign publish came before the barrier.
    assert bridge.received.wait_for(b"barrier") == [(f"serenazgo/units/{rig.a}/position", b"barrier")]


def test_a_device_cannot_read_the_fleet(rig: Rig) -> None:
    bridge = rig.bridge()
    spy = rig.device(rig.a)
    hostile = [
        "#",
        "serenazgo/units/#",
        "+/units/acl-a/#",
        "owntracks/+/+",
        "serenazgo/events/#",
        "serenazgo/#",
    ]
    codes = spy.subscribe(*hostile, f"serenazgo/units/{rig.a}/#")
    assert [rc.value for rc in codes] == [REFUSED] * len(hostile) + [1]
    other = rig.device(rig.b)
    other.publish(f"serenazgo/units/{rig.b}/position", b"b-fix")
    other.publish("owntracks/bob/phone", b"b-owntracks")
    sim = rig.service(SIMULATOR_USER)
    sim.publish("serenazgo/units/someone/position", b"sim-fix")
    rig.service(BRIDGE_USER, client_id="bridge-events").publish("serenazgo/events/geofence", b"event")
    # Broadcast (to every subscriber at once) before the barrier is even published.
    bridge.received.wait_for(b"sim-fix")
    spy.publish(f"serenazgo/units/{rig.a}/position", b"barrier")
    assert spy.received.wait_for(b"barrier") == [(f"serenazgo/units/{rig.a}/position", b"barrier")]


def test_retained_messages_reach_only_their_readers(rig: Rig) -> None:
    """amqtt sends retained messages at CONNECT for every filter anyone subscribed: held to grants here."""
    bridge = rig.bridge()  # its filters include owntracks/+/+
    rig.device(rig.b).publish("owntracks/bob/phone", b"b-retained", retain=True)
    bridge.received.wait_for(b"b-retained")
    spy = rig.device(rig.a)
    assert [rc.value for rc in spy.subscribe("owntracks/jane/phone")] == [1]
    spy.publish("owntracks/jane/phone", b"barrier")
    assert spy.received.wait_for(b"barrier") == [("owntracks/jane/phone", b"barrier")]
    # The bridge may read it: a new bridge connection gets the retained location.
    again = rig.service(BRIDGE_USER, client_id="bridge-2")
    again.subscribe("owntracks/+/+")
    assert again.received.wait_for(b"b-retained") == [("owntracks/bob/phone", b"b-retained")]


def test_wrong_password_unknown_user_and_anonymous_are_refused(rig: Rig) -> None:
    refused = [
        rig.client(rig.a, rig.tokens[rig.b]),  # b's token is not a's password
        rig.client(rig.a, "not-the-token"),
        rig.client(rig.a, ""),
        rig.client("nobody", rig.tokens[rig.a]),
        rig.client(BRIDGE_USER, rig.tokens[rig.a]),
        rig.client(None, None),
    ]
    # amqtt answers 5 (not authorized), which paho maps onto MQTT 5's 135.
    for c in refused:
        assert c.connack is not None and c.connack.is_failure, c.connack
        assert c.connack.value == 135, c.connack
    assert rig.device(rig.a).accepted


def test_a_will_on_another_units_topic_is_refused(rig: Rig) -> None:
    """A will is a publish the broker makes later for the client: refused at CONNECT, as Mosquitto does."""
    forged = (f"serenazgo/units/{rig.b}/status", b'{"status": "out_of_service"}')
    assert rig.client(rig.a, rig.tokens[rig.a], will=forged).connack.value == 135  # type: ignore[union-attr]
    own = (f"serenazgo/units/{rig.a}/status", b'{"status": "out_of_service"}')
    assert rig.client(rig.a, rig.tokens[rig.a], will=own).accepted


def test_a_device_cannot_take_the_bridges_persistent_session_and_its_queue(rig: Rig) -> None:
    """A persistent session (and what is queued for it) stays with the login that made it."""
    bridge = rig.bridge(clean_session=False)
    bridge.close()  # away: amqtt queues QoS 1 messages for it
    wait_session_state(rig.broker, BRIDGE_USER, "disconnected")
    witness = rig.service(BRIDGE_USER, client_id="witness")
    witness.subscribe(f"serenazgo/units/{rig.a}/position")
    rig.device(rig.a).publish(f"serenazgo/units/{rig.a}/position", b"queued")
    witness.received.wait_for(b"queued")  # broadcast, hence queued for the absent bridge too
    thief = rig.client(rig.a, rig.tokens[rig.a], client_id=BRIDGE_USER, clean_session=False)
    assert thief.connack is not None and thief.connack.value == 135
    back = rig.service(BRIDGE_USER, client_id=BRIDGE_USER, clean_session=False)
    assert back.received.wait_for(b"queued") == [(f"serenazgo/units/{rig.a}/position", b"queued")]
    assert thief.received.messages == []


def wait_session_state(broker: EmbeddedBroker, client_id: str, state: str) -> None:
    """Wait until the in-process broker has processed what makes ``client_id``'s session ``state``."""
    in_process = broker._amqtt  # the test looks inside the broker it started
    assert isinstance(in_process, InProcessBroker)
    deadline = time.monotonic() + WAIT_S
    while in_process.session_state(client_id) != state:
        assert time.monotonic() < deadline, f"session {client_id!r} never became {state}"
        time.sleep(0.01)


def test_without_access_the_fallback_stays_open(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "b", mosquitto=False)
    broker.start()
    clients: list[Client] = []
    try:
        reader = Client(broker.port, None, None)
        writer = Client(broker.port, "anyone", "anything")
        clients += [reader, writer]
        assert reader.accepted and writer.accepted
        assert [rc.value for rc in reader.subscribe("#")] == [1]
        writer.publish("serenazgo/units/whoever/position", b"open")
        assert reader.received.wait_for(b"open") == [("serenazgo/units/whoever/position", b"open")]
    finally:
        for c in clients:
            c.close()
        broker.stop()


def test_the_bridges_own_client_logs_in_and_receives_a_device_ping(rig: Rig) -> None:
    """The bridge's AckClient (MQTT 5 first, then 3.1.1 on amqtt) with its service login and filters."""
    user, password = rig.services.login(BRIDGE_USER)
    target = parse_mqtt_url(rig.broker.url).model_copy(update={"username": user, "password": password})
    inbox: queue.Queue[InboundMessage] = queue.Queue()
    client = AckClient(
        target, BRIDGE_USER, list(SUBSCRIPTION_FILTERS), inbox.put, connack_timeout_s=1.0, max_backoff_s=0.2
    )
    client.start()
    try:
        assert client.wait_connected(WAIT_S), client.stats.last_error
        rig.device(rig.a).publish(f"serenazgo/units/{rig.a}/position", b"ping")
        got = inbox.get(timeout=WAIT_S)
        assert (got.topic, got.payload) == (f"serenazgo/units/{rig.a}/position", b"ping")
        assert client.ack_many([got]) == 1
    finally:
        client.stop()
