"""The one place that talks MQTT for ingest: paho-mqtt 2.x with manual acknowledgement.

Why paho and not aiomqtt: aiomqtt 2.5 has no public manual-ack API (empicano/aiomqtt
issue #345), and "acknowledged only once stored" needs exactly that.

What this client guarantees:

* **Ack after commit.** QoS 1 messages are never acknowledged by the library; the
  caller calls :meth:`AckClient.ack` once the message is durably stored (or
  deliberately dead-lettered).
* **Nothing lost while down.** MQTT 5 ``clean_start=False`` with a long Session
  Expiry Interval: the broker keeps the session, queues what is published while
  the bridge is away, and redelivers every unacknowledged message on reconnect.
* **Bounded memory.** The CONNECT carries MQTT 5 *Receive Maximum*: the broker
  stops sending once that many messages are unacknowledged, so a stalled
  database cannot make the bridge buffer without limit (Mosquitto's
  ``max_inflight_messages`` only governs MQTT 3 clients). Mosquitto 2.0.11
  miscounts its send quota when an *older* in-flight message is acknowledged
  and then sends up to Receive Maximum more per PUBACK (db__message_delete_outgoing,
  eclipse-mosquitto/mosquitto#2301; seen here: each ack of the oldest of 10
  released 10 more). The window therefore holds while nothing is acknowledged
  (a stalled database), and the bridge adds its own bound: ``pause_reading``
  stops reading the socket while its queue is too long, so TCP backpressure
  holds the broker back.
* **No wrong acks after a reconnect.** Packet ids are per connection: after a
  reconnect, acknowledging mid 17 of the old connection would acknowledge
  whatever the broker now calls 17. Every message is tagged with the
  connection *generation* it arrived on; acks for an older generation are
  dropped (the broker redelivers those messages; storage is idempotent).
* **Reconnects** with jittered exponential backoff, ``uniform(0, 1.5 ** min(10, n))``
  seconds (aiomqtt's reconnect delay), capped at ``max_backoff_s``.

Narrow overrides of paho internals make ingest fast enough (paho ``>=2.1,<3``; the
decoder is checked against paho's own in tests/mqtt_bridge/test_ackclient.py):
paho reads every packet with three ``recv`` calls and builds an MQTT 5
``Properties`` object for every PUBLISH, which caps it near 15,000 messages/s on
our box. :class:`_IngestClient` reads the socket in 256 KiB chunks and decodes the
complete QoS 0/1 PUBLISH packets in them directly (anything else, and anything
unusual, goes to paho's own reader),
and queues a batch's PUBACKs as one write (paho's ``ack()`` costs a packet and a
wake-up syscall per message).
"""

from __future__ import annotations

import logging
import random
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from tracker.config import MqttTarget

log = logging.getLogger(__name__)

# A week: a bridge that is down for a long weekend still finds everything queued. The
# broker's own bound (max_queued_bytes, see mqtt_bridge.broker) decides how much.
SESSION_EXPIRY_S = 7 * 24 * 3600
MQTT_RECEIVE_MAXIMUM_LIMIT = 65535  # a two-byte property
READ_CHUNK = 256 * 1024
# Packets decoded per turn before paho's loop runs again (writes acks, keepalive), and
# between two looks at pause_reading (so a paused reader overshoots by READ_SLICE at most).
_DRAIN_PACKETS = 2000
READ_SLICE = 256
_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
_PUBACK_BASE = 0x40020000  # PUBACK, remaining length 2; the packet id fills the low 16 bits
_UNSUPPORTED_PROTOCOL_VERSION = 0x84  # CONNACK reason code
CONNACK_TIMEOUT_S = 10.0


@dataclass(slots=True)
class InboundMessage:
    """One message from the broker, tagged with the connection it arrived on."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at: float  # time.time() when it was read
    dup: bool = False
    retain: bool = False


MessageSink = Callable[[InboundMessage], None]


# Jitter from a generator of our own: reconnect threads must not move the global random state
# that applications (and property-based tests) rely on.
_JITTER = random.Random()


def reconnect_delay(attempt: int, cap: float) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based): jittered, exponential, capped.

    >>> 0.0 <= reconnect_delay(0, 30.0) <= 1.0
    True
    >>> reconnect_delay(50, 2.0) <= 2.0
    True
    """
    return _JITTER.uniform(0.0, min(cap, 1.5 ** min(10, attempt)))


class _IngestClient(paho.Client):
    """paho's Client with buffered socket reads and a direct QoS 0/1 PUBLISH decoder."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()
        self.sink: Callable[[str, bytes, int, int, bool, bool], None] | None = None

    @property
    def buffered(self) -> int:
        """Bytes read from the socket and not yet consumed by paho."""
        return len(self._rbuf)

    def _sock_recv(self, bufsize: int) -> bytes:
        buf = self._rbuf
        if not buf:
            data = super()._sock_recv(READ_CHUNK)  # BlockingIOError when nothing is there
            if len(data) <= bufsize:
                return data
            buf += data
        chunk = bytes(buf[:bufsize])
        del buf[:bufsize]  # bytearray deletes from the front in O(1) amortised
        return chunk

    def take_publishes(self, limit: int) -> int:
        """Decode up to ``limit`` complete QoS 0/1 PUBLISH packets at the head of the read buffer.

        Returns how many were handed to the sink. Stops at anything else (another
        packet type, QoS 2, a packet not fully read yet, a malformed one): paho's
        own reader takes it from there. Only runs between packets, never while
        paho is half-way through one.
        """
        sink = self.sink
        if sink is None or self._in_packet["command"] != 0:
            return 0
        buf = self._rbuf
        end_of_data = len(buf)
        v5 = self._protocol == paho.MQTTv5
        pos = count = 0
        while count < limit and pos < end_of_data:
            first = buf[pos]
            qos = (first & 0x06) >> 1
            if first & 0xF0 != 0x30 or qos == 2:
                break
            i = pos + 1
            length = 0
            mult = 1
            complete = False
            while i < end_of_data and mult <= 128**3:
                byte = buf[i]
                i += 1
                length += (byte & 0x7F) * mult
                if not byte & 0x80:
                    complete = True
                    break
                mult *= 128
            end = i + length
            if not complete or end > end_of_data:
                break
            try:
                decoded = decode_publish_fast(buf[i:end], qos, v5)
            except (IndexError, ValueError):
                break  # malformed: paho's reader reports it and drops the connection
            if decoded is None:
                break
            topic, mid, payload = decoded
            sink(topic, payload, mid, qos, bool(first & 0x08), bool(first & 0x01))
            pos = end
            count += 1
        if pos:
            del buf[:pos]
        return count

    def ack_batch(self, mids: list[int]) -> None:
        """Queue QoS 1 PUBACKs for ``mids`` as one write instead of one packet (and syscall) each.

        A PUBACK with success and no properties is 4 bytes in MQTT 3.1.1 and 5
        alike: 0x40, remaining length 2, the packet id (MQTT 5 section 3.4.2.1).
        """
        if mids:
            data = struct.pack(f"!{len(mids)}I", *[_PUBACK_BASE | mid for mid in mids])
            self._packet_queue(paho.PUBACK, data, 0, 0)

    def close_socket(self) -> None:
        """Close the connection's socket at once (no DISCONNECT packet)."""
        self._sock_close()

    def _sock_close(self) -> None:
        # Bytes of a dead connection must never be parsed as the start of the next one.
        self._rbuf.clear()
        super()._sock_close()

    def _handle_publish(self) -> MQTTErrorCode:
        sink = self.sink
        command = self._in_packet["command"]
        qos = (command & 0x06) >> 1
        if sink is None or qos == 2:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        try:
            decoded = decode_publish_fast(packet, qos, self._protocol == paho.MQTTv5)
        except (IndexError, ValueError) as exc:
            raise MalformedPacket(f"bad PUBLISH: {exc}") from exc
        if decoded is None:  # e.g. a topic alias: let paho's general decoder deal with it
            return super()._handle_publish()
        topic, mid, payload = decoded
        sink(topic, payload, mid, qos, bool(command & 0x08), bool(command & 0x01))
        return _SUCCESS


def decode_publish_fast(packet: bytes | bytearray, qos: int, v5: bool) -> tuple[str, int, bytes] | None:
    """``(topic, mid, payload)`` of a PUBLISH's variable header + payload; None if it needs paho.

    Properties (MQTT 5) are skipped: ingest uses none of them. Raises IndexError
    or ValueError on a truncated packet.

    >>> decode_publish_fast(b"\\x00\\x03a/b\\x00\\x07\\x00hi", 1, True)
    ('a/b', 7, b'hi')
    """
    tlen = (packet[0] << 8) | packet[1]
    pos = 2 + tlen
    if tlen == 0 or pos > len(packet):
        return None
    topic = packet[2:pos].decode("utf-8", "replace")
    mid = 0
    if qos:
        mid = (packet[pos] << 8) | packet[pos + 1]
        pos += 2
    if v5:
        plen = 0
        mult = 1
        while True:
            byte = packet[pos]
            pos += 1
            plen += (byte & 0x7F) * mult
            if not byte & 0x80:
                break
            mult *= 128
            if mult > 128**3:
                raise ValueError("property length longer than four bytes")
        pos += plen
        if pos > len(packet):
            raise ValueError("property length beyond the packet")
    return topic, mid, bytes(packet[pos:])


@dataclass(slots=True)
class AckClientStats:
    """Counters of one :class:`AckClient` (read them from any thread)."""

    connected: bool = False
    generation: int = 0
    connects: int = 0
    session_resumed: int = 0  # connects where the broker still had our session
    received: int = 0
    acked: int = 0
    acks_dropped: int = 0  # for a message of an older connection, or while disconnected
    last_error: str = ""


class AckClient:
    """MQTT 5 subscriber with manual, generation-checked acknowledgement (see the module docstring).

    ``on_message`` runs on the network thread for every message and must be
    quick (append to a queue). While ``pause_reading()`` is true the client
    reads nothing from the socket (it still sends acks and keepalives), so TCP
    backpressure holds the broker back. Start with :meth:`start`; the network
    thread then connects and reconnects on its own until :meth:`stop`.
    """

    def __init__(
        self,
        target: MqttTarget,
        client_id: str,
        topic_filters: Sequence[str],
        on_message: MessageSink,
        *,
        receive_maximum: int = 20000,
        session_expiry_s: int = SESSION_EXPIRY_S,
        keepalive_s: int = 30,
        max_backoff_s: float = 30.0,
        protocol: int = paho.MQTTv5,
        on_connection_change: Callable[[bool], None] | None = None,
        pause_reading: Callable[[], bool] | None = None,
        connack_timeout_s: float = CONNACK_TIMEOUT_S,
    ) -> None:
        if not 1 <= receive_maximum <= MQTT_RECEIVE_MAXIMUM_LIMIT:
            raise ValueError(f"receive_maximum must be 1-{MQTT_RECEIVE_MAXIMUM_LIMIT}, got {receive_maximum}")
        self.target = target
        self.client_id = client_id
        self.topic_filters = list(topic_filters)
        self.receive_maximum = receive_maximum
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self.max_backoff_s = max_backoff_s
        self.protocol = protocol
        self._on_message = on_message
        self._on_connection_change = on_connection_change
        self._pause_reading = pause_reading
        self._downgrade = False
        self._disconnecting = False
        self.connack_timeout_s = connack_timeout_s
        self._lock = threading.Lock()  # guards generation/connected against ack()
        self._generation = 0
        self._connected = False
        self._stopping = threading.Event()
        self._connected_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = AckClientStats()
        self._client = self._make_client()

    # -- setup ---------------------------------------------------------------------------

    def _make_client(self) -> _IngestClient:
        v5 = self.protocol == paho.MQTTv5
        client = _IngestClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self.protocol,
            manual_ack=True,
            **({} if v5 else {"clean_session": False}),
        )
        if self.target.username is not None:
            client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            client.tls_set()
        client.sink = self._fast_message
        client.on_message = self._paho_message
        client.on_connect = self._handle_connect
        client.on_subscribe = self._handle_subscribe
        client.on_disconnect = self._handle_disconnect
        # With a write callback registered, paho only queues packets sent from other threads
        # (acks from the writer) and our network thread writes them; without it the calling
        # thread would write to the socket concurrently with ours.
        client.on_socket_register_write = _ignore_socket
        client.max_queued_messages_set(0)
        properties: Properties | None = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.session_expiry_s
            properties.ReceiveMaximum = self.receive_maximum
            client.connect_async(
                self.target.host,
                self.target.port,
                keepalive=self.keepalive_s,
                clean_start=False,
                properties=properties,
            )
        else:
            client.connect_async(self.target.host, self.target.port, keepalive=self.keepalive_s)
        return client

    # -- public API ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the loss of that connection."""
        return self._connected

    @property
    def generation(self) -> int:
        """Number of the current connection (1 for the first); acks must match it."""
        return self._generation

    def start(self) -> None:
        """Start the network thread (it connects, and reconnects, on its own)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until connected and the broker has confirmed the subscriptions; False on timeout.

        Waiting for the SUBACK, not just the CONNACK, matters on a new session: a
        message published between the two would match no subscription of ours yet.
        """
        return self._connected_event.wait(timeout)

    def ack(self, message: InboundMessage) -> bool:
        """Acknowledge one message; False (and nothing sent) if it came on an older connection."""
        return self.ack_many((message,)) == 1

    def ack_many(self, messages: Iterable[InboundMessage]) -> int:
        """Acknowledge messages of the current connection; return how many were acknowledged.

        Thread-safe. Messages of an older connection (or any, while disconnected)
        are skipped: their ids now mean other messages, and the broker will send
        them again.
        """
        sent = dropped = 0
        mids: list[int] = []
        with self._lock:
            generation = self._generation if self._connected else -1
            for m in messages:
                if m.generation != generation:
                    dropped += 1
                    continue
                if m.qos:
                    mids.append(m.mid)
                sent += 1
            self._client.ack_batch(mids)
            self.stats.acked += sent
            self.stats.acks_dropped += dropped
        return sent

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        """Best-effort publish (dead letters, events); False when not connected."""
        if not self._connected:
            return False
        info = self._client.publish(topic, payload, qos=qos)
        return info.rc == _SUCCESS

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect cleanly (the session stays on the broker) and stop the network thread.

        Unacknowledged messages stay in the session: the broker sends them again
        on the next connect with this client id.
        """
        if self._stopping.is_set():
            return
        self._disconnecting = True
        if self._connected:
            # Queued after every ack already queued, so those reach the broker first; queued
            # before the network thread is told to stop, so it is still there to write it.
            self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection"))
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("MQTT network thread of %s did not stop within %.0f s", self.client_id, timeout)
        self._set_connected(False)

    # -- network thread ----------------------------------------------------------------------

    def _run(self) -> None:
        client = self._client
        attempt = 0
        open_socket = False
        connack_deadline = 0.0
        awaiting_connack = False
        while not self._stopping.is_set():
            if not open_socket:
                if self._downgrade:
                    self._downgrade = False
                    self.protocol = paho.MQTTv311
                    with self._lock:
                        self._client = client = self._make_client()
                try:
                    rc = client.reconnect()
                except (OSError, ValueError) as exc:  # refused, unreachable, DNS
                    self._note_error(f"cannot connect to {self.target.host}:{self.target.port}: {exc}")
                    rc = MQTTErrorCode.MQTT_ERR_CONN_REFUSED
                if rc != _SUCCESS:
                    attempt = self._backoff(attempt)
                    continue
                open_socket = True
                awaiting_connack = True
                connack_deadline = time.monotonic() + self.connack_timeout_s
            if self._pause_reading is not None and self._connected and self._pause_reading():
                rc = self._service_without_reading()
            else:
                rc = client.loop(timeout=0.0 if client.buffered else 0.1)
                drained = 0
                while rc == _SUCCESS and client.buffered and drained < _DRAIN_PACKETS:
                    if self._pause_reading is not None and self._pause_reading():
                        break
                    taken = client.take_publishes(READ_SLICE)
                    drained += taken
                    if not taken:  # not a whole PUBLISH at the head: paho's reader handles it
                        rc = client.loop_read()
                        drained += 1
            if rc == _SUCCESS:
                if self._connected:
                    attempt = 0
                    awaiting_connack = False
                    continue
                if not awaiting_connack or time.monotonic() < connack_deadline:
                    continue
                # No CONNACK: an MQTT 3.1.1-only broker may choke on an MQTT 5 CONNECT.
                if self.protocol == paho.MQTTv5:
                    log.warning("MQTT %s: no CONNACK to an MQTT 5 CONNECT; trying MQTT 3.1.1", self.client_id)
                    self._downgrade = True
                client.close_socket()
                rc = MQTTErrorCode.MQTT_ERR_CONN_LOST
            # The connection is gone (or the broker refused us): later acks must not use it.
            self._set_connected(False)
            open_socket = False
            if self._stopping.is_set() or self._disconnecting:
                break  # our own DISCONNECT went out
            self._note_error(f"connection to {self.target.host}:{self.target.port} lost ({rc.name})")
            attempt = self._backoff(attempt)
        # Let the acks and the DISCONNECT queued by stop() go out, then close the socket.
        deadline = time.monotonic() + 2.0
        while open_socket and client.want_write() and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != _SUCCESS:
                break
        client.close_socket()

    def _service_without_reading(self) -> MQTTErrorCode:
        """Send queued acks and keep the connection alive, but read nothing (TCP backpressure)."""
        client = self._client
        rc = client.loop_write() if client.want_write() else _SUCCESS
        if rc == _SUCCESS:
            rc = client.loop_misc()
        if rc == _SUCCESS:
            self._stopping.wait(0.002)
        return rc

    def _backoff(self, attempt: int) -> int:
        self._stopping.wait(reconnect_delay(attempt, self.max_backoff_s))
        return attempt + 1

    def _note_error(self, text: str) -> None:
        if text != self.stats.last_error:
            log.warning("MQTT %s: %s", self.client_id, text)
        self.stats.last_error = text

    def _set_connected(self, value: bool) -> None:
        with self._lock:
            changed = self._connected != value
            self._connected = value
            if value:
                self._generation += 1
                self.stats.generation = self._generation
                self.stats.connects += 1
            self.stats.connected = value
        if not value:
            self._connected_event.clear()  # set again by the SUBACK of the next connection
        if changed and self._on_connection_change is not None:
            self._on_connection_change(value)

    def _handle_connect(
        self,
        client: paho.Client,
        _userdata: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            if self.protocol == paho.MQTTv5 and reason.value == _UNSUPPORTED_PROTOCOL_VERSION:
                # An MQTT 3.1.1-only broker (the amqtt fallback): no Receive Maximum, no session
                # expiry; the read pause still bounds memory.
                log.warning("MQTT %s: the broker does not speak MQTT 5; using MQTT 3.1.1", self.client_id)
                self._downgrade = True
            self._note_error(f"broker refused the connection: {reason}")
            return
        if flags.session_present:
            self.stats.session_resumed += 1
        elif self.stats.connects:
            # A broker that lost its state (or our session expired): what it had queued is gone.
            log.warning(
                "MQTT %s: the broker had no session for us; messages queued for it are lost", self.client_id
            )
        # Subscribe every time: idempotent, and it repairs a broker that lost our session.
        # Retained messages only come with a subscription the session did not have yet.
        if self.protocol == paho.MQTTv5:
            options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
            client.subscribe([(f, options) for f in self.topic_filters])
        else:
            client.subscribe([(f, 1) for f in self.topic_filters])
        self.stats.last_error = ""
        self._set_connected(True)
        log.info(
            "MQTT %s connected to %s:%s (generation %d, session %s)",
            self.client_id,
            self.target.host,
            self.target.port,
            self._generation,
            "resumed" if flags.session_present else "new",
        )

    def _handle_subscribe(
        self,
        _client: paho.Client,
        _userdata: object,
        _mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            # Not subscribed means nothing arrives: say so, and stay "not connected" for waiters.
            self._note_error(f"broker refused the subscription ({', '.join(refused)}): check its ACL")
            return
        if self._connected:
            self._connected_event.set()

    def _handle_disconnect(self, *_args: object) -> None:
        self._set_connected(False)

    def _fast_message(self, topic: str, payload: bytes, mid: int, qos: int, dup: bool, retain: bool) -> None:
        self.stats.received += 1
        self._on_message(InboundMessage(topic, payload, mid, qos, self._generation, time.time(), dup, retain))

    def _paho_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "replace")
        self._fast_message(topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.dup), bool(msg.retain))


def _ignore_socket(*_args: object) -> None:
    """Write-interest callback: our own network thread always selects for writes when needed."""


__all__ = ["SESSION_EXPIRY_S", "AckClient", "AckClientStats", "InboundMessage", "reconnect_delay"]
