"""A secured embedded broker (Mosquitto or the amqtt fallback) over a real database, and paho clients.

:func:`open_rig` starts the broker as ``serenazgo up`` does, with the accounts of
two units and the service accounts; :class:`Client` records what a client got
back (CONNACK, SUBACKs, disconnects, messages), in order.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from mqtt_bridge.broker import EmbeddedBroker, find_mosquitto
from mqtt_bridge.broker_acl import (
    BRIDGE_USER,
    DJI_GATEWAY,
    AccessRefresher,
    ServiceAccounts,
    load_service_accounts,
)
from mqtt_bridge.topics import SUBSCRIPTION_FILTERS
from tracker.model import Unit, UnitKind
from tracker.store.credentials import issue_token_sync
from tracker.store.units import create_unit_sync

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


@dataclass
class Rig:
    """A secured broker over a real database: units ``a`` and ``b`` with their tokens."""

    broker: EmbeddedBroker
    conninfo: str
    services: ServiceAccounts
    access: AccessRefresher
    a: str
    b: str
    tokens: dict[str, str]
    clients: list[Client] = field(default_factory=list)

    def client(self, user: str | None, password: str | None, **kwargs: Any) -> Client:
        """A connected client (closed after the test); ``kwargs`` go to :class:`Client`."""
        c = Client(self.broker.port, user, password, **kwargs)
        self.clients.append(c)
        return c

    def device(self, unit: str, **kwargs: Any) -> Client:
        """A client logged in with ``unit``'s device token."""
        return self.client(unit, self.tokens[unit], **kwargs)

    def service(self, user: str, **kwargs: Any) -> Client:
        """A client logged in as a service account."""
        return self.client(*self.services.login(user), **kwargs)

    def foreign_topics(self) -> list[str]:
        """Topics unit a may not publish on: another unit's, or the service's."""
        return [
            f"serenazgo/units/{self.b}/position",
            "owntracks/bob/phone",
            "owntracks/jane/tablet",  # the same OwnTracks user, another device: another unit's
            "thing/product/SNOTHER/osd",
            "sys/product/DOCKOTHER/status",
            "serenazgo/events/geofence",  # only the bridge speaks for the service
            "serenazgo/deadletter",
        ]

    def bridge(self, **kwargs: Any) -> Client:
        """The bridge's account and client id, subscribed to the bridge's own filters."""
        bridge = self.service(BRIDGE_USER, client_id=BRIDGE_USER, **kwargs)
        assert all(not rc.is_failure for rc in bridge.subscribe(*SUBSCRIPTION_FILTERS))
        return bridge


@contextlib.contextmanager
def open_rig(pg_url: str, *, mosquitto: bool) -> Iterator[Rig]:
    """Units a (OwnTracks phone, DJI aircraft under a dock) and b, each with a token; the broker started."""
    if mosquitto and find_mosquitto() is None:
        pytest.fail("these tests need the mosquitto binary: apt-get install mosquitto")
    a, b = "acl-a", "acl-b"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_unit_sync(
            conn,
            Unit(
                a,
                UnitKind.DRONE,
                external_ids={"owntracks": "owntracks/jane/phone", "dji": "SNA1", DJI_GATEWAY: "DOCKA"},
            ),
        )
        create_unit_sync(conn, Unit(b, UnitKind.FOOT, external_ids={"owntracks": "owntracks/bob/phone"}))
    tokens = {u: issue_token_sync(pg_url, u) for u in (a, b)}
    root = Path(tempfile.mkdtemp(prefix="serenazgo-test-acl-"))
    root.chmod(0o755)  # the mosquitto user must reach its state folder inside
    services = load_service_accounts(root / "data")
    access = AccessRefresher(pg_url, services.accounts())
    broker = EmbeddedBroker(root / "broker", access=access.render(), mosquitto=None if mosquitto else False)
    rig = Rig(broker, pg_url, services, access, a, b, tokens)
    try:
        broker.start()
        assert broker.kind == ("mosquitto" if mosquitto else "amqtt")
        access.check(broker.set_access)  # as the runtime does right after the start
        yield rig
    finally:
        for c in rig.clients:
            c.close()
        broker.kill()
        shutil.rmtree(root, ignore_errors=True)
