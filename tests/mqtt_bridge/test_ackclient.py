"""AckClient against a real Mosquitto: manual acks, redelivery, Receive Maximum, generations.

The fast PUBLISH decoder is checked against paho's own decoder, which is the
ground truth it replaces on the hot path.
"""

from __future__ import annotations

import queue
import struct
import time

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet as paho_packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_bridge.ackclient import (
    AckClient,
    InboundMessage,
    _IngestClient,
    decode_publish_fast,
    reconnect_delay,
)
from mqtt_bridge.broker import EmbeddedBroker
from tests.fixtures.mosquitto import TestNames, publish_qos1
from tracker.config import parse_mqtt_url

WAIT_S = 20.0


class Inbox:
    """Collects what an AckClient hands over, for the test thread to take."""

    def __init__(self) -> None:
        self.q: queue.Queue[InboundMessage] = queue.Queue()

    def __call__(self, m: InboundMessage) -> None:
        self.q.put(m)

    def take(self, n: int = 1) -> list[InboundMessage]:
        out = []
        for _ in range(n):
            try:
                out.append(self.q.get(timeout=WAIT_S))
            except queue.Empty:
                pytest.fail(f"expected {n} messages, got {len(out)}")
        return out

    def pending(self) -> int:
        return self.q.qsize()


def make_client(broker: EmbeddedBroker, names: TestNames, inbox: Inbox, **kw: object) -> AckClient:
    client = AckClient(
        parse_mqtt_url(broker.url),
        names.client("bridge"),
        [names.topic("#")],
        inbox,
        max_backoff_s=0.3,
        **kw,  # type: ignore[arg-type]
    )
    client.start()
    assert client.wait_connected(WAIT_S), client.stats.last_error
    return client


def publish(broker: EmbeddedBroker, names: TestNames, payloads: list[bytes], sub: str = "x") -> None:
    result = publish_qos1(
        broker.port, [(names.topic(sub), p) for p in payloads], client_id=names.client("pub")
    )
    assert all(result.acked)


pytestmark = pytest.mark.integration


def test_unacked_message_is_redelivered_and_acked_one_is_not(
    mqtt_broker: EmbeddedBroker, test_names: TestNames
) -> None:
    inbox = Inbox()
    client = make_client(mqtt_broker, test_names, inbox)
    publish(mqtt_broker, test_names, [b"first"])
    (first,) = inbox.take()
    assert (first.payload, first.qos, first.generation) == (b"first", 1, 1)
    client.stop()  # not acknowledged: the session on the broker keeps it

    client = make_client(mqtt_broker, test_names, inbox)
    (again,) = inbox.take()
    assert again.payload == b"first"
    assert again.dup  # the broker marks a resend
    assert client.stats.session_resumed == 1
    assert client.ack(again)
    client.stop()

    # Published while no client is connected: queued in the session and sent on connect,
    # after any unacknowledged message, so seeing it first proves "first" was acknowledged.
    publish(mqtt_broker, test_names, [b"second"])
    client = make_client(mqtt_broker, test_names, inbox)
    (second,) = inbox.take()
    assert second.payload == b"second"
    assert client.ack(second)
    client.stop()


def test_receive_maximum_bounds_unacknowledged_messages(
    mqtt_broker: EmbeddedBroker, test_names: TestNames
) -> None:
    inbox = Inbox()
    client = make_client(mqtt_broker, test_names, inbox, receive_maximum=10)
    publish(mqtt_broker, test_names, [str(i).encode() for i in range(100)])
    got = inbox.take(10)
    time.sleep(0.5)  # room for the broker to overstep the window, if it would
    assert inbox.pending() == 0
    # Acknowledging lets more through. (How many is up to the broker: Mosquitto 2.0.11
    # over-releases, see the AckClient docstring, which is why the bridge also stops reading.)
    assert client.ack_many(got[:4]) == 4
    got += inbox.take(4)
    assert [m.payload for m in got] == [str(i).encode() for i in range(14)]
    client.stop()


def test_paused_client_reads_nothing_until_resumed(
    mqtt_broker: EmbeddedBroker, test_names: TestNames
) -> None:
    inbox = Inbox()
    paused = [False]
    client = make_client(mqtt_broker, test_names, inbox, pause_reading=lambda: paused[0])
    paused[0] = True
    # The network loop may be inside a 0.1 s wait that began before the pause: let it end.
    time.sleep(0.3)
    publish(mqtt_broker, test_names, [b"held"])
    time.sleep(0.5)  # room for the message to be read, if it would be
    assert inbox.pending() == 0 and client.connected
    paused[0] = False
    (m,) = inbox.take()
    assert m.payload == b"held"
    client.stop()


def test_acks_of_an_older_connection_are_dropped(mqtt_broker: EmbeddedBroker, test_names: TestNames) -> None:
    inbox = Inbox()
    client = make_client(mqtt_broker, test_names, inbox)
    publish(mqtt_broker, test_names, [b"a"])
    (old,) = inbox.take()
    assert old.generation == 1

    mqtt_broker.restart()  # clean restart: the session and the unacknowledged message survive
    (resent,) = inbox.take()
    assert resent.payload == b"a"
    assert resent.generation == 2 and client.generation == 2

    # Its mid may mean another message on the new connection: the ack must not go out.
    assert client.ack(old) is False
    assert client.stats.acks_dropped == 1

    mqtt_broker.restart()
    (third,) = inbox.take()  # still unacknowledged, so sent once more
    assert (third.payload, third.generation) == (b"a", 3)
    assert client.ack(third)
    client.stop()

    publish(mqtt_broker, test_names, [b"marker"])
    client = make_client(mqtt_broker, test_names, inbox)
    (marker,) = inbox.take()
    assert marker.payload == b"marker"  # "a" was acknowledged by its current-generation ack
    client.stop()


def test_nothing_is_acknowledged_while_disconnected(
    mqtt_broker: EmbeddedBroker, test_names: TestNames
) -> None:
    inbox = Inbox()
    client = make_client(mqtt_broker, test_names, inbox)
    publish(mqtt_broker, test_names, [b"a"])
    (msg,) = inbox.take()
    mqtt_broker.stop()
    deadline = time.monotonic() + WAIT_S
    while client.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not client.connected
    assert client.ack(msg) is False
    mqtt_broker.start()
    assert inbox.take()[0].payload == b"a"
    client.stop()


def test_shared_subscription_splits_messages(mqtt_broker: EmbeddedBroker, test_names: TestNames) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    target = parse_mqtt_url(mqtt_broker.url)
    group_filter = f"$share/g/{test_names.topic('#')}"
    clients = [
        AckClient(target, test_names.client(name), [group_filter], inbox)
        for name, inbox in (("a", inbox_a), ("b", inbox_b))
    ]
    for c in clients:
        c.start()
        assert c.wait_connected(WAIT_S)
    time.sleep(0.2)  # both SUBSCRIBEs processed
    publish(mqtt_broker, test_names, [str(i).encode() for i in range(40)])
    got: list[InboundMessage] = []
    deadline = time.monotonic() + WAIT_S
    while len(got) < 40 and time.monotonic() < deadline:
        for inbox, client in ((inbox_a, clients[0]), (inbox_b, clients[1])):
            while inbox.pending():
                m = inbox.q.get()
                client.ack(m)
                got.append(m)
        time.sleep(0.01)
    assert sorted(int(m.payload) for m in got) == list(range(40))
    assert clients[0].stats.received > 0 and clients[1].stats.received > 0
    for c in clients:
        c.stop()


def test_reconnect_delay_is_jittered_exponential_and_capped() -> None:
    for attempt in range(30):
        ceiling = min(5.0, 1.5 ** min(10, attempt))
        delays = [reconnect_delay(attempt, 5.0) for _ in range(50)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered, so many bridges do not reconnect in step


# -- the fast decoder against paho's ---------------------------------------------------------


def _properties(expiry: int | None, content_type: str | None, user: list[tuple[str, str]]) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    if expiry is not None:
        props.MessageExpiryInterval = expiry
    if content_type is not None:
        props.ContentType = content_type
    if user:
        props.UserProperty = user
    return props


# What a broker forwards: valid UTF-8 without NUL (MQTT-1.5.4), no wildcards in a topic name.
# (The fast path skips properties without validating them; the broker validated them.)
mqtt_text = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
topics = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"), min_size=1, max_size=80
)


@settings(max_examples=300, deadline=None)
@given(
    topic=topics,
    payload=st.binary(max_size=300),
    qos=st.integers(0, 1),
    mid=st.integers(1, 65535),
    v5=st.booleans(),
    expiry=st.none() | st.integers(0, 2**32 - 1),
    content_type=st.none() | st.text(mqtt_text, max_size=20),
    user=st.lists(st.tuples(st.text(mqtt_text, max_size=10), st.text(mqtt_text, max_size=10)), max_size=3),
)
def test_fast_decoder_matches_paho(
    topic: str,
    payload: bytes,
    qos: int,
    mid: int,
    v5: bool,
    expiry: int | None,
    content_type: str | None,
    user: list[tuple[str, str]],
) -> None:
    raw_topic = topic.encode()
    body = struct.pack("!H", len(raw_topic)) + raw_topic
    if qos:
        body += struct.pack("!H", mid)
    if v5:
        body += _properties(expiry, content_type, user).pack()
    body += payload
    header = 0x30 | (qos << 1)
    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    expected = paho_packet.decode_publish(header, body, protocol)
    assert decode_publish_fast(body, qos, v5) == (
        expected.topic.decode(),
        expected.mid,
        bytes(expected.payload),
    )


def test_fast_decoder_refuses_truncated_packets() -> None:
    with pytest.raises(IndexError):
        decode_publish_fast(b"\x00", 1, True)
    with pytest.raises(ValueError, match="beyond"):
        decode_publish_fast(b"\x00\x01a\x00\x01\x05\x01", 1, True)


def test_stock_paho_path_is_used_for_qos2(mqtt_broker: EmbeddedBroker, test_names: TestNames) -> None:
    """A QoS 2 publish downgraded to our QoS 1 subscription still arrives through the same sink."""
    inbox = Inbox()
    client = make_client(mqtt_broker, test_names, inbox)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=test_names.client("q2"), protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mqtt_broker.port)
    pub.loop_start()
    pub.publish(test_names.topic("x"), b"two", qos=2).wait_for_publish(WAIT_S)
    pub.loop_stop()
    pub.disconnect()
    (m,) = inbox.take()
    assert (m.payload, m.qos) == (b"two", 1)
    client.stop()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish_packet(topic: str, payload: bytes, qos: int, mid: int, v5: bool, dup: bool = False) -> bytes:
    raw = topic.encode()
    body = struct.pack("!H", len(raw)) + raw + (struct.pack("!H", mid) if qos else b"")
    if v5:
        body += _properties(60, "application/json", [("k", "v")]).pack()
    body += payload
    return bytes([0x30 | (qos << 1) | (0x08 if dup else 0)]) + _varint(len(body)) + body


@pytest.mark.parametrize("v5", [True, False])
def test_publishes_are_taken_from_the_buffer_up_to_anything_else(v5: bool) -> None:
    client = _IngestClient(
        CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    )
    got: list[tuple[str, bytes, int, int, bool, bool]] = []
    client.sink = lambda *args: got.append(args)
    big = bytes(range(256)) * 80  # a three-byte remaining length
    stream = (
        _publish_packet("a/b", b"one", 1, 7, v5)
        + _publish_packet("c", big, 0, 0, v5)
        + _publish_packet("d/e/f", b"three", 1, 65535, v5, dup=True)
        + b"\xd0\x00"  # PINGRESP: paho's reader must see it
        + _publish_packet("g", b"four", 1, 9, v5)
    )
    partial = _publish_packet("h", b"five", 1, 10, v5)
    client._rbuf += stream + partial[:-2]
    assert client.take_publishes(100) == 3
    assert got == [
        ("a/b", b"one", 7, 1, False, False),
        ("c", big, 0, 0, False, False),
        ("d/e/f", b"three", 65535, 1, True, False),
    ]
    assert bytes(client._rbuf).startswith(b"\xd0\x00")
    del client._rbuf[:2]  # what paho's reader would consume
    assert client.take_publishes(1) == 1 and got[-1][:3] == ("g", b"four", 9)
    assert client.take_publishes(100) == 0  # the last packet is not complete yet
    client._rbuf += partial[-2:]
    assert client.take_publishes(100) == 1 and got[-1][:3] == ("h", b"five", 10)
    assert not client._rbuf


def test_retained_message_comes_once_not_at_every_reconnect(
    mqtt_broker: EmbeddedBroker, test_names: TestNames
) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=test_names.client("ret"), protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mqtt_broker.port)
    pub.loop_start()
    pub.publish(test_names.topic("x"), b"retained", qos=1, retain=True).wait_for_publish(WAIT_S)
    pub.loop_stop()
    pub.disconnect()
    inbox = Inbox()
    client = make_client(mqtt_broker, test_names, inbox)
    (first,) = inbox.take()
    assert (first.payload, first.retain) == (b"retained", True)
    assert client.ack(first)
    client.stop()

    client = make_client(mqtt_broker, test_names, inbox)  # subscribes again, to the same session
    publish(mqtt_broker, test_names, [b"marker"])
    (next_one,) = inbox.take()
    assert next_one.payload == b"marker"
    client.stop()
