"""The shared server launcher: servers die with their owner, and state folders the server's user can reach."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_bridge.broker import EmbeddedBroker
from tests.fixtures.mosquitto import publish_qos1
from tests.fixtures.processes import processes_using
from tracker import server_process
from tracker.server_process import RunUser, pick_run_user, reachable_dir
from tracker.store.embedded import EmbeddedPostgres

GONE_WAIT_S = 60.0  # a bound for "the servers exit", not a timing under test
WAIT_S = 20.0
# Autosave far beyond the test: the queued message reaches mosquitto.db only through a clean stop.
NO_AUTOSAVE_S = 3600
SESSION = "owner-death-session"
TOPIC = "test/owner-death/x"

# The owner: starts both servers from its main thread, says where they are, then waits to be killed.
OWNER = """
import json, sys, time
from pathlib import Path
from mqtt_bridge.broker import EmbeddedBroker
from tracker.store.embedded import EmbeddedPostgres

root = Path(sys.argv[1])
broker = EmbeddedBroker(root / "broker", autosave_interval_s=int(sys.argv[2]))
broker.start()
pg = EmbeddedPostgres(root / "pg")
pg.start()
print(json.dumps({"broker_pid": broker.pid, "broker_port": broker.port, "pg_pid": pg.pid, "pg_url": pg.url}))
sys.stdout.flush()
time.sleep(3600)
"""


@pytest.fixture
def root() -> Iterator[Path]:
    # Under /tmp and open to others: as root, the servers run as the postgres and mosquitto users.
    path = Path(tempfile.mkdtemp(prefix="serenazgo-test-owner-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pid_gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = GONE_WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.1)


def session_client(port: int) -> tuple[mqtt.Client, queue.Queue[bytes]]:
    """A persistent MQTT 3.1.1 session subscribed to TOPIC at QoS 1, connected; its messages in a queue."""
    inbox: queue.Queue[bytes] = queue.Queue()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=SESSION, clean_session=False, protocol=mqtt.MQTTv311
    )
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe(TOPIC, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, msg: inbox.put(msg.payload)
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert subscribed.wait(WAIT_S), "no SUBACK"
    return client, inbox


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


@pytest.mark.integration
@pytest.mark.fault
def test_servers_stop_cleanly_when_their_owner_is_killed_and_start_again(root: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(root), str(NO_AUTOSAVE_S)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = owner.stdout.readline() if owner.stdout else ""
        if not line:
            owner.kill()
            pytest.fail(f"the owner process did not start its servers:\n{owner.communicate()[1]}")
        info = json.loads(line)
        # What only a clean stop keeps: a message queued for an offline persistent session (no
        # autosave meanwhile), and a row (durable anyway, so the new server must also recover).
        client, _ = session_client(info["broker_port"])
        close(client)
        published = publish_qos1(info["broker_port"], [(TOPIC, b"queued")], client_id="owner-death-pub")
        assert published.acked == [True]
        with psycopg.connect(info["pg_url"], autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")

        owner.send_signal(signal.SIGKILL)  # no chance to stop anything itself
        owner.wait()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        for stream in (owner.stdout, owner.stderr):
            if stream:
                stream.close()

    wait_until(lambda: pid_gone(info["broker_pid"]) and pid_gone(info["pg_pid"]), "both servers exiting")
    wait_until(lambda: processes_using(root) == [], "every server process (backends too) exiting")
    pg_log = (root / "pg" / "postgres.log").read_text(errors="replace")
    assert "received fast shutdown request" in pg_log  # SIGINT, PostgreSQL's own words
    assert not (root / "pg" / "pgdata" / "postmaster.pid").exists()

    broker = EmbeddedBroker(root / "broker", autosave_interval_s=NO_AUTOSAVE_S)
    pg = EmbeddedPostgres(root / "pg")
    try:
        broker.start()
        pg.start()
        client, inbox = session_client(broker.port)
        try:
            assert inbox.get(timeout=WAIT_S) == b"queued"  # Mosquitto saved its state on SIGTERM
        finally:
            close(client)
        with psycopg.connect(pg.url, autocommit=True) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]
    finally:
        broker.stop()
        pg.stop()
    assert processes_using(root) == []


@pytest.mark.integration
def test_a_server_stops_when_the_thread_that_started_it_ends(root: Path) -> None:
    """The documented caveat, for real: the death signal follows the starting *thread*."""
    broker = EmbeddedBroker(root / "broker")
    starter = threading.Thread(target=broker.start)
    starter.start()
    starter.join()
    try:
        assert broker.port  # it did start
        wait_until(lambda: not broker.running, "the broker stopping after its thread ended")
        assert "Saving in-memory database" in broker.log_path.read_text()  # SIGTERM: a clean stop
    finally:
        broker.kill()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands folders to another OS user")
def test_state_moves_where_the_server_user_can_reach_it(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = pick_run_user("PostgreSQL", ("postgres", "mosquitto"), hint="")
    assert isinstance(user, RunUser) and user.switches
    relocated_root = root / "relocated"
    monkeypatch.setattr(server_process, "RELOCATED_ROOT", relocated_root)

    open_dir = root / "open" / "state"
    assert reachable_dir(open_dir, user, server="test", prefix="t") == open_dir
    assert open_dir.stat().st_uid == user.uid

    closed = root / "closed"
    closed.mkdir(mode=0o700)  # like /root
    wanted = closed / "state"
    state = reachable_dir(wanted, user, server="test", prefix="t")
    digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:10]
    assert state == relocated_root / f"t-{digest}"
    assert state.stat().st_uid == user.uid
    assert user.can_write(state) and not user.can_write(wanted)

    # A folder an older version relocated to is adopted, not left behind.
    previous = relocated_root / "t-older"
    previous.mkdir()
    assert reachable_dir(wanted, user, server="test", prefix="t", previous=[previous]) == previous


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another OS user")
def test_postgres_finds_the_cluster_serenazgo_up_relocated_before(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serenazgo up`` used to relocate ``<data>/postgres`` to ``postgres-<hash of <data>>`` itself."""
    relocated_root = root / "relocated"
    monkeypatch.setattr(server_process, "RELOCATED_ROOT", relocated_root)
    closed = root / "home"
    closed.mkdir(mode=0o700)  # like /root
    data = closed / "data"
    old = relocated_root / f"postgres-{hashlib.sha256(str(data).encode()).hexdigest()[:10]}"
    old.mkdir(parents=True)
    with EmbeddedPostgres(data / "postgres") as pg:
        assert pg.state_dir == old
        with psycopg.connect(pg.url, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        assert row == (str(old / "pgdata"),)
