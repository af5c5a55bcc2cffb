"""The ingest bridge: MQTT in, PostgreSQL out; a message is acknowledged only once stored.

Three threads:

* the MQTT network thread (:class:`mqtt_bridge.ackclient.AckClient`) appends every
  received message to a queue;
* the pipeline thread takes batches from it (up to ``settings.batch_max``
  messages, waiting at most ``settings.batch_interval_ms`` after the first) and
  runs :class:`mqtt_bridge.pipeline.IngestPipeline` on each;
* the writer thread stores each batch in one transaction
  (:class:`tracker.store.writer.PositionWriter`), in order, and only **then**
  acknowledges every message of it (dead-lettered ones included), updates the
  :class:`LiveFleet` and announces dead letters on ``serenazgo/deadletter``
  (JSON ``{topic, reason, detail, received_at}``, QoS 0, best effort). One
  prepared batch waits at most, so the next batch's decoding and filtering
  overlaps the database's work on the current one.

Failures:

* :class:`StorageError` (database down, connection lost): the batch is kept as
  built and retried with backoff; nothing is acknowledged meanwhile and the
  ``serenazgo_database_down`` gauge is 1. Memory stays bounded: the broker stops
  sending at Receive Maximum unacknowledged messages, and the network thread
  stops reading the socket while the queue is that long.
* :class:`StorageDataError` (the database refuses the data itself): the batch is
  split in halves, recursively, until the message at fault is alone; it is then
  stored as a ``storage_refused`` dead letter instead, and the rest is stored
  (:func:`mqtt_bridge.storing.store_isolating`, shared with HTTP ingest).
* A crash at any point: whatever was not acknowledged is redelivered by the
  broker (persistent session) and stored once (``(unit_id, ts)`` is unique).
  Dead letters have no natural key: one that was committed but not yet
  acknowledged at the crash is stored again.

Scale-out (``SERENAZGO_SHARE_GROUP``): N bridges subscribe as ``$share/<group>/...``
and the broker spreads messages over them; storage is idempotent, so that is
safe. Two caveats with Mosquitto: it round-robins *per message*, so each
bridge's kinematic filter sees only part of a unit's fixes (``unit_latest`` and
LATE are still right: the database enforces them; SUSPECT/JITTER get weaker;
a broker that shares by topic hash, such as EMQX's ``hash_topic``, avoids
this); and messages in flight to a bridge that dies wait in its session until
it returns with the same client id (eclipse-mosquitto/mosquitto#2662), so give
every bridge a stable ``SERENAZGO_MQTT_CLIENT_ID``.

The caller loads the :class:`UnitRegistry` and :class:`LiveFleet` (from ``units``
and ``unit_latest``) before starting the bridge, and shares them with the API;
:func:`load_state` does it, and :func:`run_bridge` (``python -m mqtt_bridge``,
``serenazgo bridge``) uses it. Units registered later by another process are
picked up when an unknown sender shows up (at most every ``registry_refresh_s``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

import psycopg

from mqtt_bridge import ackclient
from mqtt_bridge.ackclient import AckClient, InboundMessage
from mqtt_bridge.pipeline import IngestPipeline, PipelineResult
from mqtt_bridge.storing import StoredPart, store_isolating
from mqtt_bridge.topics import subscription_filters
from tracker import metrics
from tracker.batch import DeadLetter
from tracker.config import MqttTarget, Settings
from tracker.errors import ConfigError, DuplicateUnitError, StorageError
from tracker.filters import FilterPipeline
from tracker.fleet import LiveFleet
from tracker.registry import UnitRegistry
from tracker.store.migrations import migrate
from tracker.store.queries import load_latest_sync, load_latest_telemetry_sync
from tracker.store.units import load_all_units_sync
from tracker.store.writer import PositionWriter

log = logging.getLogger(__name__)

DEAD_LETTER_TOPIC = "serenazgo/deadletter"
# Cycle-collector thresholds for a process that ingests (see tune_gc). Measured in the
# ingest benchmark: the default (700, 10, 10) spent ~10 µs of GIL time per message in
# collections (about 1,100 of them per 200,000 messages), this under 1 µs.
INGEST_GC_THRESHOLDS = (50_000, 20, 10)

_Prepared = tuple[list[InboundMessage], PipelineResult]


def tune_gc() -> None:
    """Make the cyclic garbage collector run rarely in this process (never more often than it did).

    Ingest allocates and frees several container objects per message (messages, pings,
    batch lists) that form no reference cycles and die by reference counting; with the
    default threshold the collector would still scan them every 700 allocations, and the
    survivors (a queued or in-flight batch) again in the older generations. Cycles are
    still collected, every 50,000 net allocations instead of 700. Process-wide, hence
    only ever raised.
    """
    current = gc.get_threshold()
    if current[0] == 0:  # automatic collection already off
        return
    gc.set_threshold(*(max(c, t) for c, t in zip(current, INGEST_GC_THRESHOLDS, strict=True)))


@dataclass(slots=True)
class BridgeStats:
    """A snapshot of the bridge's state and counters (JSON-able, for /healthz)."""

    running: bool
    connected: bool
    database_down: bool
    received: int
    in_flight: int  # received and not yet settled (acknowledged, or left to the broker to resend)
    queued: int  # waiting for the writer
    stored: int
    duplicates: int
    dead_letters: int
    ignored: int
    batches: int
    storage_retries: int
    acked: int
    acks_dropped: int
    connects: int
    last_error: str


class Bridge:
    """One ingest bridge (see the module docstring); ``start()``, then ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        mqtt: MqttTarget,
        conninfo: str,
        registry: UnitRegistry,
        fleet: LiveFleet,
        *,
        client_id: str | None = None,
        filters: FilterPipeline | None = None,
        max_backoff_s: float = 10.0,
        storage_retry_max_s: float = 5.0,
        registry_refresh_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.conninfo = conninfo
        self.registry = registry
        self.fleet = fleet
        self.client_id = client_id or settings.mqtt_client_id
        self.batch_max = settings.batch_max
        self.batch_interval_s = settings.batch_interval_ms / 1000.0
        self.storage_retry_max_s = storage_retry_max_s
        self.registry_refresh_s = registry_refresh_s
        self.pipeline = IngestPipeline(registry, settings, filters, refresh_units=self._refresh_units)
        self.writer = PositionWriter(conninfo)
        # Told the ids of the incidents that field reports created, once committed (on the commit
        # thread): ``IncidentService.learn`` under ``serenazgo up``; None in a bridge of its own.
        self.on_incidents: Callable[[Sequence[int]], None] | None = None
        self._queue: deque[InboundMessage] = deque()
        self._wake = threading.Event()
        self._closing = threading.Event()  # stop taking messages; flush what is queued
        self._abandon = threading.Event()  # stop retrying: leave the rest to the broker
        self._stopped = threading.Event()
        # A batch runs through the pipeline while the one before it is being committed: the
        # database's share of a commit (parsing, indexes, fsync) overlaps our Python work.
        self._prepared: queue.Queue[_Prepared | None] = queue.Queue(maxsize=1)
        self._threads: list[threading.Thread] = []
        self._last_refresh = 0.0
        # Counters: written by one thread each, read by anyone.
        self._received = 0
        self._settled = 0  # acknowledged, or left to the broker at stop (commit thread)
        self._abandoned = 0  # taken from the queue but never committed, at stop (pipeline thread)
        self._stored = 0
        self._duplicates = 0
        self._dead = 0
        self._ignored = 0
        self._batches = 0
        self._retries = 0
        self._db_down = False
        self._last_error = ""
        self._inflight_gauge = metrics.INFLIGHT.labels(self.client_id)
        self._db_down_gauge = metrics.DATABASE_DOWN.labels(self.client_id)
        self._connected_gauge = metrics.MQTT_CONNECTED.labels(self.client_id)
        self.mqtt = AckClient(
            mqtt,
            self.client_id,
            subscription_filters(settings.share_group or None),  # an empty variable means none
            self._on_message,
            receive_maximum=min(settings.receive_maximum, ackclient.MQTT_RECEIVE_MAXIMUM_LIMIT),
            max_backoff_s=max_backoff_s,
            on_connection_change=self._on_connection_change,
            pause_reading=self._queue_full,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, wait_connected_s: float | None = 10.0) -> None:
        """Start the writer and the MQTT client; wait up to ``wait_connected_s`` for the broker.

        Not reaching the broker in time is logged, not raised: the client keeps retrying.
        """
        if self._threads:
            return
        tune_gc()
        self._threads = [
            threading.Thread(target=self._prepare_loop, name="ingest-pipeline", daemon=True),
            threading.Thread(target=self._commit_loop, name="ingest-writer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self.mqtt.start()
        if wait_connected_s and not self.mqtt.wait_connected(wait_connected_s):
            log.warning(
                "bridge %s: not connected to %s:%s yet (%s); retrying in the background",
                self.client_id,
                self.mqtt.target.host,
                self.mqtt.target.port,
                self.mqtt.stats.last_error or "no answer",
            )

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until connected to the broker; False on timeout."""
        return self.mqtt.wait_connected(timeout)

    def stop(self, timeout: float = 15.0) -> bool:
        """Graceful stop: take no new messages, store and acknowledge what was received, disconnect.

        Returns True when everything received was settled. If the database does
        not let the last batches through within ``timeout`` seconds, they are left
        unacknowledged: the broker sends them again to the next bridge with this
        client id (or, in a share group, when this one returns).
        """
        self._closing.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        flushed = not any(t.is_alive() for t in self._threads)
        if not flushed:
            log.warning(
                "bridge %s: could not store the last %d messages within %.0f s; the broker keeps them",
                self.client_id,
                self._unsettled(),
                timeout,
            )
            self._abandon.set()
            for thread in self._threads:
                thread.join(10.0)
        self.mqtt.stop()
        self.writer.close()
        self._stopped.set()
        self._connected_gauge.set(0)
        return flushed and self._unsettled() == 0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the bridge has stopped; False on timeout."""
        return self._stopped.wait(timeout)

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        threads = self._threads
        return bool(threads) and all(t.is_alive() for t in threads) and not self._stopped.is_set()

    def _unsettled(self) -> int:
        return self._received - self._settled - self._abandoned

    def stats(self) -> BridgeStats:
        """Counters and state right now."""
        mq = self.mqtt.stats
        return BridgeStats(
            running=self.running,
            connected=self.mqtt.connected,
            database_down=self._db_down,
            received=self._received,
            in_flight=self._unsettled(),
            queued=len(self._queue),
            stored=self._stored,
            duplicates=self._duplicates,
            dead_letters=self._dead,
            ignored=self._ignored,
            batches=self._batches,
            storage_retries=self._retries,
            acked=mq.acked,
            acks_dropped=mq.acks_dropped,
            connects=mq.connects,
            last_error=self._last_error or mq.last_error,
        )

    # -- network thread --------------------------------------------------------------------------

    def _on_message(self, message: InboundMessage) -> None:
        if self._closing.is_set():
            return  # never acknowledged: the broker sends it again next time
        q = self._queue
        q.append(message)
        self._received += 1
        n = len(q)
        if n == 1 or n == self.batch_max:
            self._wake.set()

    @property
    def max_in_flight(self) -> int:
        """Most messages this bridge holds unacknowledged: its memory bound.

        The queue stops growing at Receive Maximum (the read pause, plus one read
        slice), one batch waits for the writer and one is being written.
        """
        return self.mqtt.receive_maximum + ackclient.READ_SLICE + 2 * self.batch_max

    def _queue_full(self) -> bool:
        # Mosquitto 2.0.11 can overshoot Receive Maximum (see ackclient): stop reading instead.
        return len(self._queue) >= self.mqtt.receive_maximum

    def _on_connection_change(self, connected: bool) -> None:
        self._connected_gauge.set(1 if connected else 0)
        if connected:
            metrics.MQTT_CONNECTS.inc()

    # -- pipeline thread ------------------------------------------------------------------------------

    def _prepare_loop(self) -> None:
        """Take batches from the queue, run the pipeline, hand them to the commit thread."""
        try:
            while not self._abandon.is_set():
                batch = self._next_batch()
                if not batch:
                    if self._closing.is_set():
                        break
                    continue
                if not self._hand_over((batch, self.pipeline.run(batch))):
                    self._abandoned += len(batch)
        except Exception:
            log.exception("bridge %s: pipeline thread failed; stopping ingest", self.client_id)
            self._last_error = "pipeline thread failed (see the log)"
        finally:
            self._hand_over(None)

    def _hand_over(self, item: _Prepared | None) -> bool:
        """Queue ``item`` for the commit thread (waiting while it is busy); False if abandoned."""
        while True:
            try:
                self._prepared.put(item, timeout=0.2)
                return True
            except queue.Full:
                commit_alive = len(self._threads) > 1 and self._threads[1].is_alive()
                if self._abandon.is_set() or not commit_alive:
                    return False

    def _next_batch(self) -> list[InboundMessage]:
        q, wake, batch_max = self._queue, self._wake, self.batch_max
        while not q:
            if self._closing.is_set():
                return []
            wake.wait(0.5)
            wake.clear()
        if len(q) < batch_max and not self._closing.is_set():
            deadline = time.monotonic() + self.batch_interval_s
            while len(q) < batch_max:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closing.is_set():
                    break
                wake.clear()
                if len(q) >= batch_max:
                    break
                wake.wait(remaining)
        popleft = q.popleft
        return [popleft() for _ in range(min(len(q), batch_max))]

    # -- commit thread --------------------------------------------------------------------------------

    def _commit_loop(self) -> None:
        try:
            while True:
                try:
                    item = self._prepared.get(timeout=0.2)
                except queue.Empty:
                    if self._threads[0].is_alive():
                        continue
                    break  # the pipeline thread ended without a last word (it failed)
                if item is None:
                    break
                messages, result = item
                if self._abandon.is_set():
                    self._settled += len(messages)  # left to the broker
                    continue
                self._commit(messages, result)
        except Exception:
            log.exception("bridge %s: writer thread failed; stopping ingest", self.client_id)
            self._last_error = "writer thread failed (see the log)"
        finally:
            self._inflight_gauge.set(self._unsettled())

    def _commit(self, messages: list[InboundMessage], result: PipelineResult) -> None:
        """Store one batch (retrying through outages), then ack, update the fleet, announce dead letters."""
        started = time.perf_counter()
        parts = self._store_until_done(result, messages)
        if parts is None:  # abandoned at stop: the broker resends these
            self._settled += len(messages)
            return
        committed_at = time.time()
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        acked = self.mqtt.ack_many(messages)
        self._settled += len(messages)
        stored = sum(p.written.stored for p in parts)
        duplicates = sum(p.written.duplicates for p in parts)
        dead = sum(p.written.dead_letters for p in parts)
        self._stored += stored
        self._duplicates += duplicates
        self._dead += dead
        self._ignored += sum(result.ignored.values())
        self._batches += 1
        self._record(result, messages, stored, duplicates, committed_at, len(messages) - acked)
        for p in parts:
            b = p.result.batch
            for unit in b.new_units:
                self.fleet.upsert_unit(unit)
            self.fleet.apply(b.pings, b.statuses, p.result.disconnected, b.telemetry)
            if b.dead_letters:
                self._announce(b.dead_letters)
        incidents = [i for p in parts for i in p.written.incidents]
        if incidents and self.on_incidents is not None:
            try:
                self.on_incidents(incidents)
            except Exception:  # the incidents are stored; a listener's failure must not stop ingest
                log.exception("bridge %s: the incident listener failed", self.client_id)

    def _store_until_done(
        self, result: PipelineResult, messages: Sequence[InboundMessage]
    ) -> list[StoredPart] | None:
        delay = 0.05
        while True:
            try:
                parts = store_isolating(self.writer, result, messages, who=f"bridge {self.client_id}")
            except StorageError as exc:  # an outage: keep the batch, acknowledge nothing
                self._retries += 1
                metrics.BATCH_FAILURES.labels("outage").inc()
                if not self._db_down:
                    log.warning("bridge %s: cannot store (%s); retrying", self.client_id, exc)
                self._set_db_down(True, str(exc))
                self._inflight_gauge.set(self._unsettled())
                if self._abandon.wait(delay):
                    return None
                delay = min(delay * 2, self.storage_retry_max_s)
                continue
            if self._db_down:
                log.info("bridge %s: storing again", self.client_id)
            self._set_db_down(False, "")
            return parts

    def _set_db_down(self, down: bool, error: str) -> None:
        self._db_down = down
        self._last_error = error
        self._db_down_gauge.set(1 if down else 0)

    def _record(
        self,
        result: PipelineResult,
        messages: Sequence[InboundMessage],
        stored: int,
        duplicates: int,
        committed_at: float,
        not_acked: int,
    ) -> None:
        """Metrics of one committed batch (one update per metric, not per message)."""
        metrics.MESSAGES_RECEIVED.inc(len(messages))
        metrics.PINGS_RECEIVED.inc(result.pings_received)
        metrics.PINGS_STORED.inc(stored)
        if duplicates:
            metrics.PINGS_DUPLICATE.inc(duplicates)
        for reason, n in result.rejected.items():
            metrics.REJECTED.labels(reason).inc(n)
        for reason, n in result.ignored.items():
            metrics.IGNORED.labels(reason).inc(n)
        for step, n in result.fired.items():
            metrics.FILTER_STEPS.labels(step).inc(n)
        if result.batch.statuses:
            metrics.STATUS_UPDATES.inc(len(result.batch.statuses))
        if result.batch.new_units:
            metrics.UNITS_AUTO_REGISTERED.inc(len(result.batch.new_units))
        if not_acked:
            metrics.ACKS_DROPPED.inc(not_acked)
        metrics.BATCHES.inc()
        metrics.INGEST_LAG.observe_many([committed_at - m.received_at for m in messages])
        self._inflight_gauge.set(self._unsettled())

    def _announce(self, letters: list[DeadLetter]) -> None:
        sent = 0
        for d in letters:
            sent += self.mqtt.publish(DEAD_LETTER_TOPIC, d.announcement(), qos=0)
        if sent:
            metrics.DEAD_LETTERS_PUBLISHED.inc(sent)

    def _refresh_units(self) -> bool:
        """Load units registered since start (by the API in another process); True if any were new."""
        now = time.monotonic()
        if now - self._last_refresh < self.registry_refresh_s:
            return False
        self._last_refresh = now
        try:
            units = load_all_units_sync(self.conninfo)
        except StorageError:
            return False
        added = []
        for unit in units:
            if unit.unit_id not in self.registry:
                with contextlib.suppress(DuplicateUnitError):
                    self.registry.add(unit)
                    added.append(unit)
        for unit in added:
            self.fleet.upsert_unit(unit)
        return bool(added)


def load_state(conninfo: str, settings: Settings) -> tuple[UnitRegistry, LiveFleet]:
    """A registry and a fleet filled from the database (``units``, ``unit_latest``, drone telemetry)."""
    units = load_all_units_sync(conninfo)
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            latest = load_latest_sync(conn)
            telemetry = load_latest_telemetry_sync(conn)
    except psycopg.Error as exc:
        raise StorageError(f"cannot load latest positions: {exc}") from exc
    fleet = LiveFleet(settings.freshness)
    fleet.load(units, latest, telemetry)
    return UnitRegistry(units), fleet


def run_bridge(settings: Settings, stop: threading.Event | None = None) -> None:
    """Run one bridge until SIGTERM/SIGINT (or ``stop`` is set), then flush and exit.

    Needs SERENAZGO_DATABASE_URL and SERENAZGO_MQTT_URL. Applies migrations first,
    loads units and latest positions, and uses SERENAZGO_MQTT_CLIENT_ID,
    SERENAZGO_SHARE_GROUP and SERENAZGO_AUTO_REGISTER.
    """
    if not settings.database_url:
        raise ConfigError("the bridge needs SERENAZGO_DATABASE_URL (postgresql://user@host:port/db)")
    target = settings.mqtt
    if target is None:
        raise ConfigError("the bridge needs SERENAZGO_MQTT_URL (mqtt://user:pass@host:port)")
    conninfo = settings.database_url
    applied = migrate(conninfo)
    if applied:
        log.info("applied %d migration(s)", len(applied))
    registry, fleet = load_state(conninfo, settings)
    log.info("loaded %d units", len(registry))
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping the bridge (flushing)", signal.Signals(signum).name)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    bridge = Bridge(settings, target, conninfo, registry, fleet)
    try:
        bridge.start()
        log.info(
            "bridge %s running: %s:%s -> database (share group: %s)",
            bridge.client_id,
            target.host,
            target.port,
            settings.share_group or "none",
        )
        while not stop.wait(1.0):
            if not bridge.running:
                raise StorageError(f"the bridge stopped by itself: {bridge.stats().last_error}")
    finally:
        flushed = bridge.stop()
        stats = bridge.stats()
        log.info(
            "bridge %s stopped%s: %d received, %d stored, %d duplicates, %d dead letters",
            bridge.client_id,
            "" if flushed else " (some messages left to the broker)",
            stats.received,
            stats.stored,
            stats.duplicates,
            stats.dead_letters,
        )
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["DEAD_LETTER_TOPIC", "Bridge", "BridgeStats", "load_state", "run_bridge", "tune_gc"]
