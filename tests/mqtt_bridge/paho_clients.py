"""paho clients for broker access tests: what a client got back (CONNACK, SUBACKs, messages), in order."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

WAIT_S = 20.0  # an upper bound for things that happen in milliseconds; never the assertion itself


@dataclass
class Received:
    """Messages a client received, in order, with a condition to wait on."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, topic: str, payload: bytes) -> None:
        """Record one message."""
        with self.cond:
            self.messages.append((topic, payload))
            self.cond.notify_all()

    def wait_for(self, payload: bytes) -> list[tuple[str, bytes]]:
        """Wait until ``payload`` arrived; return what arrived up to and including it."""
        with self.cond:
            ok = self.cond.wait_for(lambda: any(p == payload for _, p in self.messages), WAIT_S)
            assert ok, f"{payload!r} never arrived; got {self.messages}"
            index = next(i for i, (_, p) in enumerate(self.messages) if p == payload)
            return list(self.messages[: index + 1])


class Client:
    """A paho client that records its CONNACK, SUBACKs, disconnects and received messages."""

    def __init__(
        self,
        port: int,
        username: str | None,
        password: str | None,
        *,
        v5: bool = False,
        client_id: str = "",
        clean_session: bool | None = None,  # MQTT 3.1.1 only; paho's default (a clean one) when None
        will: tuple[str, bytes] | None = None,  # topic and payload, at QoS 1
    ) -> None:
        self.proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=self.proto, clean_session=clean_session
        )
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            self.c.will_set(*will, qos=1)
        self.connack: ReasonCode | None = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.subscribed = threading.Condition()
        self.received = Received()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = lambda _c, _u, msg: self.received.add(msg.topic, bytes(msg.payload))
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        assert self.connected.wait(WAIT_S), "no CONNACK"

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        if self.connack is None:
            self.connack = rc
        self.connected.set()
        if rc.is_failure:
            self.c.disconnect()  # do not retry with the refused credentials

    def _on_disconnect(self, _c: object, _u: object, _f: object, _rc: ReasonCode, _p: object) -> None:
        self.disconnected.set()

    def _on_subscribe(self, _c: object, _u: object, mid: int, rcs: list[ReasonCode], _p: object) -> None:
        with self.subscribed:
            self.subacks[mid] = rcs
            self.subscribed.notify_all()

    @property
    def accepted(self) -> bool:
        """The broker accepted the CONNECT."""
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, *filters: str) -> list[ReasonCode]:
        """Subscribe at QoS 1; return the SUBACK's reason codes."""
        _, mid = self.c.subscribe([(f, 1) for f in filters])
        assert mid is not None
        with self.subscribed:
            assert self.subscribed.wait_for(lambda: mid in self.subacks, WAIT_S), "no SUBACK"
            return self.subacks[mid]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the PUBACK."""
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.c.disconnect()
        self.c.loop_stop()
