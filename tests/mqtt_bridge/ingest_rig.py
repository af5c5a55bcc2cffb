"""Support for the bridge tests: a real broker and database, pings built from a known track.

The ``ingest`` fixture (tests/fixtures/ingest.py) gives an :class:`IngestRig`
on the test's own Mosquitto and its own migrated database; fault tests build
one on a private PostgreSQL server (``pg_server_factory``) so they can stop and
kill it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from mqtt_bridge.bridge import Bridge, load_state
from mqtt_bridge.broker import EmbeddedBroker
from tests.fixtures.mosquitto import PublishResult, TestNames, publish_qos1
from tracker.config import Settings, parse_mqtt_url
from tracker.model import Unit, UnitKind
from tracker.store.units import create_unit_sync

WAIT_S = 60.0
REPO = Path(__file__).resolve().parents[2]

Key = tuple[str, datetime]


@dataclass(frozen=True)
class Sent:
    """One message of a test stream and the fix it carries."""

    topic: str
    payload: bytes
    unit_id: str
    ts: datetime
    lat: float
    lon: float


def track_messages(
    native_units: list[str], owntracks: dict[str, str], per_unit: int, start: datetime
) -> list[Sent]:
    """Pings of units driving north at 4 m/s, 5 s apart, interleaved across units (in order per unit).

    ``owntracks`` maps a unit id to its device topic (``owntracks/user/device``).
    Timestamps are whole seconds (OwnTracks ``tst``), so the expected (unit, ts) set is exact.
    """
    out: list[Sent] = []
    all_units = [*native_units, *owntracks]
    for k in range(per_unit):
        for i, unit in enumerate(all_units):
            ts = start + timedelta(seconds=5 * k)
            lat = -12.13 + 0.00018 * k  # 20 m further north every 5 s
            lon = -77.04 + 0.001 * i
            if unit in owntracks:
                body = {"_type": "location", "tst": int(ts.timestamp()), "lat": lat, "lon": lon, "acc": 5,
                        "vel": 14, "batt": 80}  # fmt: skip
                topic = owntracks[unit]
            else:
                body = {
                    "ts": int(ts.timestamp() * 1000),
                    "lat": lat,
                    "lon": lon,
                    "accuracy": 5.0,
                    "speed": 4.0,
                }
                topic = f"serenazgo/units/{unit}/position"
            out.append(Sent(topic, orjson.dumps(body), unit, ts, lat, lon))
    return out


def recent_start(per_unit: int) -> datetime:
    """A start time so that a stream of ``per_unit`` fixes ends a minute ago (whole seconds)."""
    now = datetime.now(UTC).replace(microsecond=0)
    return now - timedelta(seconds=5 * per_unit + 60)


class IngestRig:
    """A broker, a database and the bridges a test runs against them."""

    def __init__(self, broker: EmbeddedBroker, conninfo: str, names: TestNames) -> None:
        self.broker = broker
        self.conninfo = conninfo
        self.names = names
        self.bridges: list[Bridge] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[str] = []

    def settings(self, **overrides: Any) -> Settings:
        """Settings for a test bridge: short batches, a small in-flight window."""
        values: dict[str, Any] = {
            "database_url": self.conninfo,
            "mqtt_url": self.broker.url,
            "mqtt_client_id": self.names.client("bridge"),
            "batch_interval_ms": 10,
            "batch_max": 500,
            "receive_maximum": 2000,
        }
        values.update(overrides)
        return Settings(**values)

    def add_units(self, units: list[Unit]) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            for unit in units:
                create_unit_sync(conn, unit)

    def native_units(self, n: int, kind: UnitKind = UnitKind.PATROL_CAR) -> list[str]:
        ids = [self.names.unit(f"car{i}") for i in range(n)]
        self.add_units([Unit(u, kind) for u in ids])
        return ids

    def owntracks_units(self, n: int) -> dict[str, str]:
        """Registered OwnTracks phones: unit id -> topic."""
        phones = {self.names.unit(f"ot{i}"): f"owntracks/{self.names.base}/phone{i}" for i in range(n)}
        self.add_units([Unit(u, UnitKind.FOOT, external_ids={"owntracks": t}) for u, t in phones.items()])
        return phones

    def bridge(self, start: bool = True, **overrides: Any) -> Bridge:
        """An in-process bridge (registry and fleet loaded from the database), stopped after the test."""
        settings = self.settings(**overrides)
        registry, fleet = load_state(self.conninfo, settings)
        assert settings.mqtt_url is not None
        bridge = Bridge(
            settings,
            parse_mqtt_url(settings.mqtt_url),
            self.conninfo,
            registry,
            fleet,
            max_backoff_s=0.5,
            storage_retry_max_s=0.5,
        )
        self.bridges.append(bridge)
        if start:
            bridge.start()
            assert bridge.wait_connected(WAIT_S), bridge.stats().last_error
        return bridge

    def spawn_bridge(self, log_name: str = "bridge", **env: str) -> subprocess.Popen[bytes]:
        """``python -m mqtt_bridge`` as a subprocess (for kill -9 and SIGTERM), once it is connected.

        It logs to ``log_path(log_name)``; its session on the broker exists (and
        queues) from the moment this returns.
        """
        full = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
        full.update(
            SERENAZGO_DATABASE_URL=self.conninfo,
            SERENAZGO_MQTT_URL=self.broker.url,
            SERENAZGO_MQTT_CLIENT_ID=self.names.client("bridge"),
            SERENAZGO_BATCH_INTERVAL_MS="10",
            SERENAZGO_BATCH_MAX="500",
            SERENAZGO_RECEIVE_MAXIMUM="2000",
            PYTHONPATH=str(REPO),
        )
        full.update(env)
        log_path = self.log_path(log_name)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mqtt_bridge"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full,
                cwd=REPO,
            )
        self.processes.append(proc)
        self.logs.append(log_name)
        self.wait_for(
            "the bridge process to connect",
            lambda: (
                (proc.poll() is None and " running: " in self.log_text(log_name)) or proc.poll() is not None
            ),
        )
        if proc.poll() is not None:
            pytest.fail(f"the bridge exited with {proc.returncode}:\n{self.log_text(log_name)}")
        return proc

    def log_path(self, name: str) -> Path:
        return self.broker.state_dir.parent / f"{name}.log"

    def log_text(self, name: str = "bridge") -> str:
        try:
            return self.log_path(name).read_text(errors="replace")
        except OSError:
            return ""

    def publish(self, messages: list[Sent], role: str = "pub", **kw: Any) -> PublishResult:
        return publish_qos1(
            self.broker.port,
            [(m.topic, m.payload) for m in messages],
            client_id=self.names.client(role),
            **kw,
        )

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (none for a statement that returns no rows)."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def position_keys(self) -> list[Key]:
        """Every stored (unit_id, ts), with repeats if there were any."""
        return [(u, t) for u, t in self.query("SELECT unit_id, ts FROM positions")]

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                logs = "".join(f"\n--- {name}.log ---\n{self.log_text(name)[-3000:]}" for name in self.logs)
                pytest.fail(f"timed out waiting for {what}{logs}")
            time.sleep(0.05)

    def wait_rows(self, n: int, timeout: float = WAIT_S) -> None:
        self.wait_for(
            f"{n} stored positions", lambda: self.query("SELECT count(*) FROM positions")[0][0] >= n, timeout
        )

    def close(self) -> None:
        for bridge in self.bridges:
            bridge.stop(timeout=5.0)
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
