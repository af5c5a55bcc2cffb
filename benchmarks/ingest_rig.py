"""What the ingest benchmarks share: a private Mosquitto, consumer processes, the bridge's session.

Every server is ours: :func:`temp_broker` runs Mosquitto with the product's
generated configuration on a free 127.0.0.1 port in a temporary folder (the
database comes from :func:`benchmarks.pg_server.temp_postgres`). Each consumer —
a bare subscriber (:mod:`benchmarks.consumers`) or the bridge
(:mod:`benchmarks._bridge_runner`) — runs in its own process and speaks one line
protocol on stdout: ``READY`` once subscribed, ``PROGRESS <count> [detail]``
every second, and one JSON line with its result.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from benchmarks.report import say
from mqtt_bridge.ackclient import SESSION_EXPIRY_S
from mqtt_bridge.broker import EmbeddedBroker

REPO = Path(__file__).resolve().parent.parent
NATIVE_AND_OWNTRACKS = ("serenazgo/units/+/position", "owntracks/+/+")


@contextmanager
def temp_broker() -> Iterator[EmbeddedBroker]:
    """Mosquitto with the product's configuration on a free port in a temp folder; removed after."""
    root = Path(tempfile.mkdtemp(prefix="serenazgo-bench-mqtt-"))
    root.chmod(0o755)  # as root, Mosquitto runs as the mosquitto user, which must enter it
    broker = EmbeddedBroker(root / "broker")
    if broker.kind != "mosquitto":
        raise SystemExit("the ingest benchmarks need the mosquitto binary (apt-get install mosquitto)")
    try:
        broker.start()
        yield broker
    finally:
        broker.kill()  # its state is thrown away anyway
        shutil.rmtree(root, ignore_errors=True)


class ConsumerProcess:
    """One consumer in its own process; its stdout protocol read by a thread, its stderr logged."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, expect: int, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.env = env or {}
        self.argv = list(argv)
        self.log_path = log_path
        self.expect = expect
        self.ready = threading.Event()
        self.finished = threading.Event()
        self.result: dict[str, Any] | None = None
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self._last_progress: tuple[float, int] | None = None

    def start(self) -> None:
        """Start the process and the thread that reads its stdout."""
        # Only what we pass: a SERENAZGO_* of the caller's shell must not reach the consumer.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self._log = open(self.log_path, "a")  # noqa: SIM115  # closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, *self.argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=REPO,
            env=env,
        )
        threading.Thread(target=self._read, name=f"read-{self.name}", daemon=True).start()

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.strip()
            if line == "READY":
                self.ready.set()
            elif line.startswith("PROGRESS "):
                self._progress(line[len("PROGRESS ") :])
            elif line.startswith("{"):
                with contextlib.suppress(ValueError):
                    self.result = json.loads(line)
            elif line:
                say(f"{self.name}: {line}")
        self.finished.set()

    def _progress(self, text: str) -> None:
        count_text, _, detail = text.partition(" ")
        count = int(count_text)
        now = time.monotonic()
        rate = ""
        if self._last_progress is not None:
            t, c = self._last_progress
            if now > t:
                rate = f" ({(count - c) / (now - t):>9,.0f}/s)"
        self._last_progress = (now, count)
        say(f"  {self.name}: {count:>9,}/{self.expect:,}{rate} {detail}".rstrip())

    def wait_ready(self, timeout: float) -> None:
        """Block until the consumer says READY; raise with its log when it dies or times out."""
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.finished.is_set() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{self.name} did not get ready:\n{self.log_tail()}")

    def wait_result(self, timeout: float) -> dict[str, Any]:
        """Block until the consumer printed its result and exited; raise with its log otherwise."""
        self.finished.wait(timeout)
        assert self.proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(max(5.0, timeout / 10))
        result = self.result
        self.close()
        if result is None:
            raise RuntimeError(f"{self.name} gave no result:\n{self.log_tail()}")
        return result

    def close(self) -> None:
        """Stop the process if it still runs (it is ours), close its log."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        """The end of the consumer's stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def bare_consumer(
    kind: str,
    broker: EmbeddedBroker,
    expect: int,
    log_dir: Path,
    timeout: float,
    times_out: Path | None = None,
) -> ConsumerProcess:
    """A bare paho or gmqtt counting subscriber on the native and OwnTracks topics, started and READY."""
    argv = ["-m", "benchmarks.consumers", kind, "--port", str(broker.port), "--expect", str(expect),
            "--timeout", str(timeout), "--progress", "--topic", "#"]  # fmt: skip
    if times_out is not None:
        argv += ["--times-out", str(times_out)]
    consumer = ConsumerProcess(kind, argv, log_dir / f"{kind}.log", expect)
    consumer.start()
    consumer.wait_ready(60.0)
    return consumer


def _session_client(broker: EmbeddedBroker, client_id: str, expiry_s: int) -> tuple[mqtt.Client, Properties]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry_s
    return client, props


def create_session(broker: EmbeddedBroker, client_id: str, topic_filters: Sequence[str]) -> None:
    """Leave a persistent session for ``client_id``, subscribed at QoS 1, on the broker.

    What a deployed bridge always has: from here on the broker keeps every
    message for it, so nothing published after this call can miss the bridge,
    whenever its process gets to subscribe.
    """
    client, props = _session_client(broker, client_id, SESSION_EXPIRY_S)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect("127.0.0.1", broker.port, clean_start=True, properties=props)
    client.loop_start()
    try:
        client.subscribe([(f, SubscribeOptions(qos=1)) for f in topic_filters])
        if not subscribed.wait(30):
            raise RuntimeError(f"no SUBACK for the session of {client_id}")
    finally:
        client.disconnect()
        client.loop_stop()


def drop_session(broker: EmbeddedBroker, client_id: str) -> None:
    """End ``client_id``'s session (clean start, expiry 0): the broker stops queueing for it."""
    client, props = _session_client(broker, client_id, 0)
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect("127.0.0.1", broker.port, clean_start=True, properties=props)
    client.loop_start()
    try:
        connected.wait(30)
    finally:
        client.disconnect()
        client.loop_stop()


def reset_ingest_tables(url: str) -> None:
    """Empty what ingest writes (positions, latest, dead letters); units stay."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE positions, unit_latest, dead_letters")


def stored_counts(url: str) -> dict[str, Any]:
    """Rows in positions, unit_latest and dead_letters, and positions per quality flag."""
    with psycopg.connect(url, autocommit=True) as conn:
        out: dict[str, Any] = {}
        for table in ("positions", "unit_latest", "dead_letters"):
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            out[table] = int(row[0]) if row else 0
        flags = conn.execute("SELECT flags, count(*) FROM positions GROUP BY flags ORDER BY flags").fetchall()
        out["positions_by_flags"] = {str(f): int(c) for f, c in flags}
    return out
