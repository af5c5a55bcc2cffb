"""``serenazgo mavlink-sim`` → ``serenazgo mavlink-gateway`` → a real Mosquitto, as a user runs them."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
import pytest

from mqtt_bridge.broker import EmbeddedBroker
from mqtt_bridge.codecs import decode_message
from tests.drones.gateway_runner import Subscriber
from tests.fixtures.mosquitto import TestNames
from tracker.model import Decoded, Unit, UnitKind
from tracker.store.units import create_unit_sync

pytestmark = pytest.mark.integration

SERENAZGO = Path(sys.executable).with_name("serenazgo")
WAIT_S = 60.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def spawn(procs: list[subprocess.Popen[str]], *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    base.update(COLUMNS="200", NO_COLOR="1", **env)
    proc = subprocess.Popen(
        [str(SERENAZGO), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=base
    )
    procs.append(proc)
    return proc


def wait_for(what: str, check: object) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_the_simulated_aircraft_reaches_the_broker_through_the_gateway_and_both_stop_cleanly(
    mqtt_broker: EmbeddedBroker, test_names: TestNames, processes: list[subprocess.Popen[str]]
) -> None:
    port = free_udp_port()
    unit_id = test_names.unit("dron")
    sub = Subscriber(mqtt_broker.port, test_names.client("sub"))
    try:
        gateway = spawn(
            processes,
            "mavlink-gateway",
            "--listen", f"udp:127.0.0.1:{port}",
            "--unit", f"3={unit_id}",
            "--client-id", test_names.client("gw"),
            env={"SERENAZGO_MQTT_URL": mqtt_broker.url or ""},
        )  # fmt: skip
        sim = spawn(processes, "mavlink-sim", "--to", f"udp:127.0.0.1:{port}", "--sysid", "3", env={})
        position_topic = f"serenazgo/units/{unit_id}/position"
        drone_topic = f"serenazgo/units/{unit_id}/drone"
        # HOME_POSITION comes every 10 s: the gateway may have started after the first one.
        wait_for(
            "positions and a drone state with its home",
            lambda: len(sub.on(position_topic)) >= 6 and any(b"home" in p for p in sub.on(drone_topic)),
        )
    finally:
        sub.close()

    now = datetime.now(UTC)
    bodies = [orjson.loads(p) for p in sub.on(position_topic)]
    # Until the gateway has seen a SYSTEM_TIME (1 Hz; the simulator may have started first) a
    # position leaves ts to the bridge; from the first sync on, each carries the aircraft's own time.
    synced = next(i for i, body in enumerate(bodies) if "ts" in body)
    assert all("ts" in body for body in bodies[synced:])
    times = []
    for payload in sub.on(position_topic)[synced:]:
        decoded = decode_message(position_topic, payload, now)
        assert isinstance(decoded, Decoded), decoded
        times.append(decoded.pings[0].ts)
    # At most 2 positions a second (the default) on the aircraft's clock, though it streams 5.
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.5 - 1e-6
    with_home = [p for p in sub.on(drone_topic) if b"home" in p]
    drone = decode_message(drone_topic, with_home[-1], now)
    assert isinstance(drone, Decoded)
    t = drone.telemetry[0]
    assert t.flight_mode in {"on_ground", "mission"}  # on its dock for 5 s, then taking off in AUTO
    assert (t.home_lat, t.home_lon) == (-12.1211, -77.0297)  # drones.mavlink_sim.DEFAULT_HOME
    assert t.gps_fix == 3
    assert t.battery_pct is not None and t.battery_pct > 90

    for proc in (sim, gateway):
        proc.send_signal(signal.SIGTERM)
    _sim_out, sim_err = sim.communicate(timeout=WAIT_S)
    gw_out, gw_err = gateway.communicate(timeout=WAIT_S)
    assert sim.returncode == 0, sim_err
    assert gateway.returncode == 0, gw_err
    assert "stopped:" in gw_out
    assert "1 aircraft" in gw_out


def test_the_gateway_finds_units_by_their_registered_sysid_and_refuses_bad_options(
    mqtt_broker: EmbeddedBroker, pg_url: str, test_names: TestNames, processes: list[subprocess.Popen[str]]
) -> None:
    unit_id = test_names.unit("registered")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_unit_sync(conn, Unit(unit_id, UnitKind.DRONE, external_ids={"mavlink": "5"}))
    port = free_udp_port()
    sub = Subscriber(mqtt_broker.port, test_names.client("sub"))
    try:
        gateway = spawn(
            processes,
            "mavlink-gateway", "--listen", f"udp:127.0.0.1:{port}", "--client-id", test_names.client("gw"),
            env={"SERENAZGO_MQTT_URL": mqtt_broker.url or "", "SERENAZGO_DATABASE_URL": pg_url},
        )  # fmt: skip
        sim = spawn(processes, "mavlink-sim", "--to", f"udp:127.0.0.1:{port}", "--sysid", "5", env={})
        wait_for("a position as the registered unit", lambda: sub.on(f"serenazgo/units/{unit_id}/position"))
    finally:
        sub.close()
    for proc in (sim, gateway):
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0

    for args, says in (
        (["--listen", "serial:/dev/ttyACM0"], "--listen"),
        (["--unit", "5=bad id"], "--unit"),
        (["--unit", "300=dron"], "SYSID 1-255"),
    ):
        bad = spawn(processes, "mavlink-gateway", *args, env={"SERENAZGO_MQTT_URL": "mqtt://127.0.0.1:1"})
        out, err = bad.communicate(timeout=WAIT_S)
        assert bad.returncode == 1, out + err
        assert says in err
