"""Device credentials on a real Mosquitto: the generated password file and ACL, real PostgreSQL.

Each test starts its own Mosquitto (:class:`EmbeddedBroker` with ``access``, as
``serenazgo up`` does) from files rendered from a real database, then connects
with paho as the devices and service accounts would.

Mosquitto 2.0.11 acknowledges a denied QoS 1 publish (PUBACK: success for MQTT
3.1.1, reason 135 for MQTT 5), drops it and then closes the connection; and its
ACL grants every SUBSCRIBE and filters each message by the reader's grants when
delivering it. So "cannot publish" and "cannot read the fleet" are checked on
what arrives: a later *allowed* message is the barrier (one broker thread,
in-order delivery per subscriber), and the denied ones must not have arrived
before it.
"""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_bridge.broker import find_mosquitto
from mqtt_bridge.broker_acl import (
    BRIDGE_USER,
    SIMULATOR_USER,
    AccessRefresher,
)
from mqtt_bridge.topics import SUBSCRIPTION_FILTERS
from tests.mqtt_bridge.access_rig import WAIT_S, Client, Rig, open_rig
from tracker.model import Unit, UnitKind
from tracker.mosquitto_hash import mosquitto_hash, verify_mosquitto_hash
from tracker.server_process import free_port
from tracker.store.credentials import issue_token_sync, revoke_tokens_sync
from tracker.store.units import create_unit_sync

SERENAZGO = Path(sys.executable).with_name("serenazgo")


@pytest.fixture
def rig(pg_url: str) -> Iterator[Rig]:
    """Units a and b with their tokens on a secured Mosquitto."""
    with open_rig(pg_url, mosquitto=True) as rig:
        yield rig


@pytest.fixture(params=["mosquitto", "amqtt"])
def any_rig(pg_url: str, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """The same on each embedded broker: for what both hold the same way (amqtt: test_amqtt_acl.py)."""
    with open_rig(pg_url, mosquitto=request.param == "mosquitto") as rig:
        yield rig


def assert_all_arrive(publisher: Client, bridge: Client, topics: list[str]) -> None:
    """``publisher`` publishes one message on each of ``topics``; ``bridge`` receives them all, in order."""
    for i, topic in enumerate(topics):
        publisher.publish(topic, f"m-{i}".encode())
    got = bridge.received.wait_for(f"m-{len(topics) - 1}".encode())
    assert got == [(topic, f"m-{i}".encode()) for i, topic in enumerate(topics)]


def test_a_device_publishes_its_own_topics_and_the_bridge_receives_them(any_rig: Rig) -> None:
    bridge = any_rig.bridge()
    device = any_rig.device(any_rig.a)
    assert device.accepted
    own = [
        f"serenazgo/units/{any_rig.a}/position",
        f"serenazgo/units/{any_rig.a}/status",
        "owntracks/jane/phone",  # '#' in the grant also matches the base topic
        "owntracks/jane/phone/event",
        "thing/product/SNA1/osd",
        "thing/product/DOCKA/osd",
        "sys/product/DOCKA/status",
    ]
    assert_all_arrive(device, bridge, own)


def test_a_device_cannot_publish_on_another_units_topics(rig: Rig) -> None:
    bridge = rig.bridge()
    for i, topic in enumerate(rig.foreign_topics()):
        # Mosquitto closes the connection after a denied publish: one connection per attempt.
        rig.device(rig.a).publish(topic, f"foreign-{i}".encode())  # returns on its PUBACK
    rig.device(rig.a).publish(f"serenazgo/units/{rig.a}/position", b"barrier")
    # Everything published before the barrier would have reached the bridge before it.
    assert bridge.received.wait_for(b"barrier") == [(f"serenazgo/units/{rig.a}/position", b"barrier")]


@pytest.mark.parametrize("v5", [False, True], ids=["mqtt311", "mqtt5"])
def test_a_device_cannot_read_the_fleet(rig: Rig, v5: bool) -> None:
    spy = rig.device(rig.a, v5=v5)
    # Mosquitto's ACL grants the SUBSCRIBE and filters each message on delivery.
    spy.subscribe("#", "serenazgo/units/#", "owntracks/+/+", "serenazgo/events/#")
    other = rig.device(rig.b)
    other.publish(f"serenazgo/units/{rig.b}/position", b"b-fix")
    other.publish("owntracks/bob/phone", b"b-owntracks")
    rig.service(SIMULATOR_USER).publish("serenazgo/units/someone/position", b"sim-fix")
    rig.service(BRIDGE_USER).publish("serenazgo/events/geofence", b"event")
    spy.publish(f"serenazgo/units/{rig.a}/position", b"barrier")
    # Its own message, and nothing of anyone else's before it.
    assert spy.received.wait_for(b"barrier") == [(f"serenazgo/units/{rig.a}/position", b"barrier")]


@pytest.mark.parametrize("v5", [False, True], ids=["mqtt311", "mqtt5"])
def test_wrong_password_unknown_user_and_anonymous_are_refused(rig: Rig, v5: bool) -> None:
    refused = [
        rig.client(rig.a, rig.tokens[rig.b], v5=v5),  # b's token is not a's password
        rig.client(rig.a, "not-the-token", v5=v5),
        rig.client("nobody", rig.tokens[rig.a], v5=v5),
        rig.client(BRIDGE_USER, rig.tokens[rig.a], v5=v5),
        rig.client(None, None, v5=v5),
    ]
    # MQTT 5: 135 not authorized or 134 bad user name or password; paho maps 3.1.1's 5 and 4 onto them.
    for c in refused:
        assert c.connack is not None and c.connack.is_failure, c.connack
        assert c.connack.value in (134, 135), c.connack
    assert rig.device(rig.a, v5=v5).accepted


def test_revoking_cuts_the_device_off_and_a_new_token_bites_after_a_refresh(any_rig: Rig) -> None:
    bridge = any_rig.bridge()
    connected = any_rig.device(any_rig.a)
    assert connected.accepted
    revoke_tokens_sync(any_rig.conninfo, any_rig.a)
    assert any_rig.access.check(any_rig.broker.set_access)  # what the runtime runs every refresh_s
    # The broker drops a connected client whose credential is gone (Mosquitto at the reload).
    assert connected.disconnected.wait(WAIT_S)
    connected.c.loop_stop()
    assert not any_rig.device(any_rig.a).accepted
    fresh = issue_token_sync(any_rig.conninfo, any_rig.a)
    assert any_rig.access.check(any_rig.broker.set_access)
    again = any_rig.client(any_rig.a, fresh)
    assert again.accepted
    # The bridge kept its connection and subscriptions through the reloads.
    again.publish(f"serenazgo/units/{any_rig.a}/position", b"after-reload")
    assert bridge.received.wait_for(b"after-reload")[-1] == (
        f"serenazgo/units/{any_rig.a}/position",
        b"after-reload",
    )
    # Nothing changed since: no rewrite, no reload.
    assert not any_rig.access.check(any_rig.broker.set_access)


def test_the_bridge_account_receives_every_source(any_rig: Rig) -> None:
    bridge = any_rig.bridge()
    sim = any_rig.service(SIMULATOR_USER)
    topics = [
        "serenazgo/units/any-unit/position",
        "serenazgo/units/any-unit/status",
        "serenazgo/units/any-unit/drone",
        "serenazgo/units/any-unit/incident",
        "owntracks/anyone/phone",
        "owntracks/anyone/phone/event",
        "thing/product/ANYSN/osd",
        "thing/product/ANYSN/state",
        "sys/product/ANYDOCK/status",
    ]
    assert_all_arrive(sim, bridge, topics)
    # The simulator publishes but reads nothing.
    sim.subscribe("#")
    sim.publish("serenazgo/units/any-unit/position", b"unseen")
    bridge.received.wait_for(b"unseen")
    assert sim.received.messages == []


def test_our_hash_and_mosquitto_passwd_agree() -> None:
    """Our verifier accepts what mosquitto_passwd writes, and our hash has its exact shape."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    folder = Path(tempfile.mkdtemp(prefix="serenazgo-test-passwd-"))
    try:
        path = folder / "pw"
        subprocess.run([tool, "-c", "-b", str(path), "alice", "s3cret-Ñ"], check=True, capture_output=True)
        user, theirs = path.read_text().strip().split(":", 1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert user == "alice"
    assert verify_mosquitto_hash("s3cret-Ñ", theirs)
    assert not verify_mosquitto_hash("s3cret-N", theirs)
    ours = mosquitto_hash("s3cret-Ñ")
    assert verify_mosquitto_hash("s3cret-Ñ", ours)
    assert [len(part) for part in ours.split("$")] == [len(part) for part in theirs.split("$")]
    assert ours.split("$")[:3] == theirs.split("$")[:3]  # "", "7", the same iteration count
    # The same salt gives mosquitto_passwd's exact bytes.
    salt = base64.b64decode(theirs.split("$")[3])
    assert mosquitto_hash("s3cret-Ñ", salt=salt) == theirs


def test_broker_acl_command_configures_an_external_mosquitto(pg_url: str) -> None:
    """``serenazgo broker acl --out DIR`` + a Mosquitto configured by hand as the README says."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_unit_sync(
            conn, Unit("ext-1", UnitKind.FOOT, external_ids={"owntracks": "owntracks/ana/phone"})
        )
    token = issue_token_sync(pg_url, "ext-1")
    root = Path(tempfile.mkdtemp(prefix="serenazgo-test-acl-cli-"))
    root.chmod(0o755)
    out = root / "acl"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    env["SERENAZGO_MQTT_URL"] = "mqtt://ext-bridge:bridge%20pw@127.0.0.1:1883"
    owner = "mosquitto" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    proc: subprocess.Popen[bytes] | None = None
    clients: list[Client] = []
    try:
        done = subprocess.run(
            [str(SERENAZGO), "broker", "acl", "--out", str(out), "--owner", owner, "--database-url", pg_url],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 device(s)" in done.stdout
        conf = root / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {out / 'password_file'}\nacl_file {out / 'acl_file'}\n"
        )
        mosquitto = find_mosquitto()
        assert mosquitto is not None
        proc = subprocess.Popen([str(mosquitto), "-c", str(conf)], stderr=subprocess.PIPE)
        wait_listening(port, proc)

        def client(user: str | None, password: str | None) -> Client:
            c = Client(port, user, password)
            clients.append(c)
            return c

        bridge = client("ext-bridge", "bridge pw")
        assert bridge.accepted
        bridge.subscribe(*SUBSCRIPTION_FILTERS)
        assert not client(None, None).accepted
        assert not client("ext-1", "wrong").accepted
        device = client("ext-1", token)
        device.publish("owntracks/ana/phone", b"hola")
        assert bridge.received.wait_for(b"hola") == [("owntracks/ana/phone", b"hola")]
        # Unchanged credentials: the files are left alone (no reload needed).
        again = subprocess.run(
            [str(SERENAZGO), "broker", "acl", "--out", str(out), "--owner", owner, "--database-url", pg_url],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert again.returncode == 0 and "unchanged" in again.stdout, again.stdout + again.stderr
    finally:
        for c in clients:
            c.close()
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait until ``proc`` (Mosquitto) accepts TCP connections on ``port``; fail with its log if it exits."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            assert proc.stderr is not None
            pytest.fail(f"mosquitto exited: {proc.stderr.read().decode(errors='replace')}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail("mosquitto never listened")


def test_a_device_cannot_take_over_the_bridges_session_by_its_client_id(rig: Rig) -> None:
    """The client id is the username: a device sending the id ``serenazgo-bridge`` cannot kick the bridge."""
    bridge = rig.bridge()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=BRIDGE_USER, clean_session=True)
    c.username_pw_set(rig.a, rig.tokens[rig.a])
    done = threading.Event()
    c.on_connect = lambda *_args: done.set()
    c.connect("127.0.0.1", rig.broker.port)
    c.loop_start()
    try:
        assert done.wait(WAIT_S)
        c.publish(f"serenazgo/units/{rig.a}/position", b"after-takeover-attempt", qos=1).wait_for_publish(
            WAIT_S
        )
        # Had Mosquitto closed the bridge's connection, its clean session (and subscriptions) would be gone.
        assert bridge.received.wait_for(b"after-takeover-attempt")
        assert not bridge.disconnected.is_set()
    finally:
        c.disconnect()
        c.loop_stop()


def test_a_token_issued_before_the_broker_hash_existed_is_reported_not_admitted(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_unit_sync(conn, Unit("old-1", UnitKind.FOOT))
        create_unit_sync(conn, Unit("new-1", UnitKind.FOOT))
        # What issue_token_sync stored before migration 10: no mqtt_hash.
        conn.execute(
            "INSERT INTO device_credentials (unit_id, token_sha256) VALUES ('old-1', %s)", (b"\x01" * 32,)
        )
    issue_token_sync(pg_url, "new-1")
    files = AccessRefresher(pg_url, []).render()
    assert [line.partition(":")[0] for line in files.password_file.splitlines()] == ["new-1"]
    assert files.skipped == (
        "unit 'old-1' has a credential without a Mosquitto hash (reissue it): no broker access",
    )
