"""The real ``serenazgo up`` as a subprocess: embedded PostgreSQL and Mosquitto, a ping end to end."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import paho.mqtt.client as mqtt
import pytest

from tests.fixtures.processes import processes_using
from tracker.store.embedded import free_port

pytestmark = pytest.mark.integration

SERENAZGO = Path(sys.executable).with_name("serenazgo")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


class Up:
    """One ``serenazgo up`` process and what it printed."""

    def __init__(self, data_dir: Path, *args: str, env_extra: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.broker_port = free_port()
        self.osmand_port = free_port()  # never the conventional 5055: tests run side by side
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"up-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
        env.update(SERENAZGO_DATA_DIR=str(data_dir), COLUMNS="200", NO_COLOR="1", TERM="dumb")
        env.update(SERENAZGO_OSMAND_PORT=str(self.osmand_port), **(env_extra or {}))
        self.env = env
        self._auth: dict[str, str] | None = None
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(SERENAZGO), "up", "--port", str(self.port), "--broker-port", str(self.broker_port), *args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self) -> dict:
        deadline = time.monotonic() + START_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serenazgo up exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                resp = httpx.get(f"{self.base}/healthz", timeout=5)
                last = resp.text
                # Healthy, and done starting: the summary of where everything is comes last.
                if resp.status_code == 200 and "Ctrl-C to stop" in self.output():
                    return resp.json()
            time.sleep(0.3)
        pytest.fail(f"/healthz never became healthy (last: {last}):\n{self.output()}")

    @property
    def auth(self) -> dict[str, str]:
        """An admin's API token, issued by `serenazgo user token` against the running service's database."""
        if self._auth is None:
            done = subprocess.run(
                [str(SERENAZGO), "user", "token", "admin", "--name", "test"],
                capture_output=True, text=True, timeout=60, check=False, env=self.env,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            self._auth = {"Authorization": f"Bearer {done.stdout.strip().splitlines()[-1]}"}
        return self._auth

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"serenazgo up did not stop within {STOP_TIMEOUT_S} s:\n{self.output()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Under /tmp and open to others (0755): PostgreSQL runs as the postgres user when we are root.
    root = Path(tempfile.mkdtemp(prefix="serenazgo-up-"))
    root.chmod(0o755)
    yield root / "data"
    shutil.rmtree(root, ignore_errors=True)


def connack(port: int, username: str | None = None, password: str | None = None) -> mqtt.ReasonCode:
    """The broker's answer to a CONNECT with these credentials."""
    got: list[mqtt.ReasonCode] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-connect-{os.getpid()}")
    client.username_pw_set(username, password)
    client.on_connect = lambda _c, _u, _f, rc, _p: got.append(rc)
    client.connect("127.0.0.1", port)
    try:
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    finally:
        client.disconnect()
    assert got, "no CONNACK"
    return got[0]


def publish(port: int, topic: str, payload: dict, username: str, password: str) -> None:
    """Publish one QoS 1 message with paho and wait for the broker's PUBACK."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{os.getpid()}")
    client.username_pw_set(username, password)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        info = client.publish(topic, json.dumps(payload), qos=1)
        info.wait_for_publish(timeout=30)
        assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def unit_credentials(up: Up, unit_id: str, *flags: str) -> str:
    """``serenazgo unit credentials UNIT [flags]`` against the running service's database; its stdout."""
    found = re.search(r"postgresql://postgres@127\.0\.0\.1:\d+/\w+", up.output())
    assert found, up.output()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    done = subprocess.run(
        [str(SERENAZGO), "unit", "credentials", unit_id, *flags, "--database-url", found.group(0)],
        capture_output=True, text=True, timeout=60, check=True, env=env,
    )  # fmt: skip
    return done.stdout.strip()


def wait_connack(port: int, username: str, password: str, refused: bool, what: str) -> None:
    """Wait until the broker refuses (or accepts) this login: the service picks changes up within seconds."""
    deadline = time.monotonic() + 60
    while connack(port, username, password).is_failure != refused:
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def wait_live(base: str, auth: dict[str, str], predicate, what: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{base}/api/v1/live", headers=auth, timeout=5).json()
        if predicate(body):
            return body
        time.sleep(0.3)
    pytest.fail(f"never saw {what} in /api/v1/live; last: {json.dumps(body)[:2000]}")


def test_up_ingests_a_ping_end_to_end_stops_cleanly_and_keeps_its_data(data_dir: Path) -> None:
    up = Up(data_dir)
    try:
        health = up.wait_healthy()
        assert health["checks"]["bridge"]["ok"] is True
        out = up.output()
        for where in (up.base, f"{up.base}/docs", f"mqtt://127.0.0.1:{up.broker_port}", str(data_dir)):
            assert where in out, f"{where!r} not printed:\n{out}"
        # A first start creates the admin and says, once, how to log in.
        password = re.search(r"as admin, password (\S+)\s+\(shown once\)", out)
        assert password is not None, out
        assert httpx.get(f"{up.base}/api/v1/live", timeout=5).status_code == 401  # nothing without a user
        login = httpx.post(
            f"{up.base}/api/v1/auth/login", json={"username": "admin", "password": password[1]}, timeout=30
        )
        assert login.status_code == 200 and login.json()["role"] == "admin", login.text

        unit = {"unit_id": "mov-07", "kind": "patrol_car", "callsign": "MOV-07", "sector": "S3"}
        assert (
            httpx.post(f"{up.base}/api/v1/units", headers=up.auth, json=unit, timeout=10).status_code == 201
        )
        # The broker admits no anonymous client; a device token issued by the CLI in another process
        # becomes the unit's broker password within SERENAZGO_BROKER__REFRESH_S.
        assert connack(up.broker_port).is_failure
        token = unit_credentials(up, "mov-07")
        wait_connack(
            up.broker_port, "mov-07", token, False, f"the token never opened the broker:\n{up.output()}"
        )
        # Registered through the API a moment ago: the bridge must accept its pings at once.
        ts = time.time() - 5
        publish(
            up.broker_port,
            "serenazgo/units/mov-07/position",
            {"ts": int(ts * 1000), "lat": -12.1211, "lon": -77.0297, "speed": 8.5, "accuracy": 4.0},
            "mov-07",
            token,
        )

        def has_fix(body: dict) -> bool:
            return any(f["id"] == "mov-07" and f["geometry"] for f in body["features"])

        live = wait_live(up.base, up.auth, has_fix, "mov-07's fix")
        feature = next(f for f in live["features"] if f["id"] == "mov-07")
        assert feature["geometry"]["coordinates"] == [-77.0297, -12.1211]
        assert feature["properties"]["speed"] == 8.5
        assert feature["properties"]["freshness"] == "live"
        assert "serenazgo_" in httpx.get(f"{up.base}/metrics", headers=up.auth, timeout=5).text
        # Revoked through the CLI: the broker refuses the token within the refresh.
        unit_credentials(up, "mov-07", "--revoke")
        wait_connack(
            up.broker_port, "mov-07", token, True, f"the revoked token still opens the broker:\n{up.output()}"
        )

        # A separate simulator registering through this API, with the demo's broker account: its units
        # report at once.
        sim_password = json.loads((data_dir / "broker" / "service-accounts.json").read_text())[
            "serenazgo-sim"
        ]
        sim_url = f"mqtt://serenazgo-sim:{quote(sim_password, safe='')}@127.0.0.1:{up.broker_port}"
        sim = subprocess.run(
            [str(SERENAZGO), "simulate", "--api-url", up.base, "--mqtt-url", sim_url,
             "--api-token", up.auth["Authorization"].removeprefix("Bearer "),
             "--foot", "2", "--cars", "0", "--motorcycles", "0", "--drones", "1", "--duration", "3",
             "--speedup", "8", "--incidents-per-hour", "0", "--bad-fix-rate", "0"],
            capture_output=True, text=True, timeout=120, check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")},
        )  # fmt: skip
        assert sim.returncode == 0, sim.stdout + sim.stderr
        assert "registered 3 new units (0 already known)" in sim.stdout
        wait_live(
            up.base,
            up.auth,
            lambda body: (
                {"ser-001", "ser-002", "dron-01"} <= {f["id"] for f in body["features"] if f["geometry"]}
            ),
            "the simulated units registered through the API",
        )

        assert up.stop(signal.SIGINT) == 0
        out = up.output()
        assert "stopped cleanly" in out
        assert (
            out.index("stopped HTTP API")
            < out.index("stopped ingest bridge")
            < out.index("stopped MQTT broker")
        )
        assert out.index("stopped MQTT broker") < out.index("stopped PostgreSQL")
        assert processes_using(data_dir) == []
        assert port_closed(up.broker_port)
        assert port_closed(up.port)
    finally:
        up.close()

    # Again on the same data folder: the unit and its last position were kept.
    again = Up(data_dir)
    try:
        again.wait_healthy()
        feature = next(
            f
            for f in httpx.get(f"{again.base}/api/v1/live", headers=again.auth, timeout=5).json()["features"]
            if f["id"] == "mov-07"
        )
        assert feature["geometry"]["coordinates"] == [-77.0297, -12.1211]
        assert again.stop(signal.SIGTERM) == 0
        assert processes_using(data_dir) == []
    finally:
        again.close()


def test_up_demo_shows_the_simulated_fleet_moving_in(data_dir: Path) -> None:
    up = Up(data_dir, "--demo")
    try:
        up.wait_healthy()
        units = httpx.get(f"{up.base}/api/v1/units", headers=up.auth, timeout=10).json()
        assert len(units) == 104
        kinds = {u["kind"] for u in units}
        assert kinds == {"foot", "patrol_car", "motorcycle", "drone"}
        # The demo's restricted airspace (tracker/data) is stored and served.
        zones = httpx.get(f"{up.base}/api/v1/airspace", headers=up.auth, timeout=10).json()["features"]
        assert sorted(z["properties"]["kind"] for z in zones) == ["embassy", "hospital", "military"]

        def fleet_reporting(body: dict) -> bool:
            seen = {f["properties"]["kind"] for f in body["features"] if f["geometry"]}
            return {"drone", "patrol_car", "foot"} <= seen

        live = wait_live(up.base, up.auth, fleet_reporting, "drones, cars and serenos reporting")
        for f in live["features"]:
            if f["geometry"]:
                lon, lat = f["geometry"]["coordinates"]
                # Inside Miraflores' bounding box, in lon/lat order.
                assert -77.06 < lon < -77.0
                assert -12.15 < lat < -12.1
        # The drones' view, with the endurance model the runtime built from the settings and demo docks.
        drones = httpx.get(f"{up.base}/api/v1/drones", headers=up.auth, timeout=10).json()["drones"]
        assert sorted(d["unit_id"] for d in drones) == sorted(
            u["unit_id"] for u in units if u["kind"] == "drone"
        )
        assert all(d["endurance"]["profile"]["key"] in ("m3td", "m4td") for d in drones)
        assert up.stop(signal.SIGINT) == 0
        out = up.output()
        assert "stopped simulator" in out
        assert out.index("stopped simulator") < out.index("stopped HTTP API")
        assert processes_using(data_dir) == []
    finally:
        up.close()


def test_up_serves_traccar_client_on_the_osmand_port(data_dir: Path) -> None:
    up = Up(data_dir, env_extra={"SERENAZGO_INGEST_AUTH": "false"})
    try:
        up.wait_healthy()
        assert f"http://127.0.0.1:{up.osmand_port}/" in up.output()
        unit = {"unit_id": "moto-3", "kind": "motorcycle", "external_ids": {"osmand": "48241179"}}
        assert (
            httpx.post(f"{up.base}/api/v1/units", headers=up.auth, json=unit, timeout=10).status_code == 201
        )
        ts = int(time.time()) - 5
        # What Traccar Client sends to host:5055 (speed in knots).
        query = f"id=48241179&lat=-12.1211&lon=-77.0297&timestamp={ts}&speed=10.0&bearing=90&batt=64"
        resp = httpx.get(f"http://127.0.0.1:{up.osmand_port}/?{query}", timeout=10)
        assert resp.status_code == 200, resp.text  # answered once committed: the live map has it now

        live = httpx.get(
            f"{up.base}/api/v1/live", headers=up.auth, timeout=5
        ).json()  # no waiting: the 200 came after
        feature = next(f for f in live["features"] if f["id"] == "moto-3")
        assert feature["geometry"]["coordinates"] == [-77.0297, -12.1211]
        assert feature["properties"]["speed"] == round(10.0 * 1852 / 3600, 2)  # knots -> m/s, 2 decimals
    finally:
        assert up.stop(signal.SIGTERM) == 0, up.output()


def test_up_says_which_flag_to_change_when_the_api_port_is_taken(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
        env.update(SERENAZGO_DATA_DIR=str(data_dir), COLUMNS="200", NO_COLOR="1")
        proc = subprocess.run(
            [str(SERENAZGO), "up", "--port", str(port)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1
    assert f"port {port}" in proc.stdout + proc.stderr
    assert "--port" in proc.stdout + proc.stderr
    assert processes_using(data_dir) == []


def test_up_killed_with_sigkill_takes_its_servers_along(data_dir: Path) -> None:
    up = Up(data_dir)
    try:
        up.wait_healthy()
        assert processes_using(data_dir) != []  # the embedded servers run (they name their folders)
        up.proc.kill()  # no chance to stop them itself: their parent-death signal must
        up.proc.wait()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while processes_using(data_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_using(data_dir) == []
        assert port_closed(up.broker_port)
    finally:
        up.close()
