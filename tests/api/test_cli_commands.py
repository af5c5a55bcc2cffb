"""The other ``serenazgo`` commands as a user runs them: db schema/migrate/status and bridge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.mosquitto import publish_qos1
from tracker.model import Unit, UnitKind
from tracker.store.units import create_unit_sync

pytestmark = pytest.mark.integration

SERENAZGO = Path(sys.executable).with_name("serenazgo")


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    base.update(COLUMNS="200", NO_COLOR="1", **(env or {}))
    return subprocess.run(
        [str(SERENAZGO), *args], capture_output=True, text=True, env=base, timeout=timeout, check=False
    )


def test_db_schema_prints_each_path_ddl() -> None:
    plain = run("db", "schema", "--plain")
    timescale = run("db", "schema", "--timescale")
    assert plain.returncode == timescale.returncode == 0
    assert "CREATE TABLE units" in plain.stdout
    assert "PARTITION BY RANGE (ts)" in plain.stdout
    assert "create_hypertable" not in plain.stdout
    assert "create_hypertable" in timescale.stdout


def test_db_migrate_and_status_on_a_given_database(pg_server) -> None:
    url = pg_server.url_for("cli_migrate")
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS cli_migrate")
        conn.execute("CREATE DATABASE cli_migrate")
    before = run("db", "status", "--database-url", url)
    assert before.returncode == 0, before.stderr
    assert "pending" in before.stdout
    first = run("db", "migrate", "--database-url", url)
    assert first.returncode == 0, first.stderr
    assert "applied 1:" in first.stdout
    again = run("db", "migrate", env={"SERENAZGO_DATABASE_URL": url})
    assert "the schema is up to date" in again.stdout
    status = run("db", "status", "--database-url", url)
    assert "up to date" in status.stdout
    assert "pending" not in status.stdout


def test_db_command_reports_an_unreachable_database_without_a_traceback() -> None:
    result = run("db", "status", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 1
    assert "error" in result.stderr
    assert "Traceback" not in result.stderr


def test_bridge_command_needs_its_urls() -> None:
    result = run("bridge", env={"SERENAZGO_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"})
    assert result.returncode == 2
    assert "SERENAZGO_MQTT_URL" in result.stderr


def test_bridge_command_stores_pings_and_stops_cleanly(pg_url, mqtt_broker, test_names) -> None:
    unit_id = test_names.unit(1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_unit_sync(conn, Unit(unit_id, UnitKind.MOTORCYCLE, callsign="MOTO-01"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    env.update(SERENAZGO_DATABASE_URL=pg_url, SERENAZGO_MQTT_URL=mqtt_broker.url,
               SERENAZGO_MQTT_CLIENT_ID=test_names.client("bridge"))  # fmt: skip
    proc = subprocess.Popen(
        [str(SERENAZGO), "bridge"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        payload = json.dumps({"ts": int(time.time() * 1000), "lat": -12.119, "lon": -77.031}).encode()
        row = None
        for _ in range(120):  # the bridge may still be connecting: publish until stored
            publish_qos1(
                mqtt_broker.port,
                [(f"serenazgo/units/{unit_id}/position", payload)],
                client_id=test_names.client("pub"),
            )
            with psycopg.connect(pg_url) as conn:
                row = conn.execute(
                    "SELECT lat, lon FROM unit_latest WHERE unit_id = %s", [unit_id]
                ).fetchone()
            if row is not None or proc.poll() is not None:
                break
            time.sleep(0.5)
        assert row == (-12.119, -77.031), proc.stdout.read() if proc.poll() is not None else "not stored"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
