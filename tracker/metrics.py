"""Prometheus metrics: what the ingest bridge records and the API exposes at ``/metrics``.

Everything lives in :data:`REGISTRY` (with the process, platform and GC
collectors), so an API process and any bridges in it show one page. Counters
sum over the bridges of a process; the gauges that describe one bridge carry a
``client_id`` label.

The bridge updates these once per batch, not once per message: a labelled
``inc()`` costs ~2 µs, too much at tens of thousands of pings per second. For
the same reason the ingest lag is a :class:`BulkHistogram` that takes a whole
batch of observations under one lock.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

# Seconds, from a few ms (the usual ingest lag) to minutes (a database outage being caught up).
LAG_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
COMMIT_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class BulkHistogram(Collector):
    """A Prometheus histogram fed a batch of observations at a time (one lock per batch)."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry | None
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = sorted(buckets)
        self._lock = threading.Lock()
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        """Record every value of ``values``."""
        bounds = self.bounds
        local = [0] * len(self._counts)
        total = 0.0
        for v in values:
            local[bisect.bisect_left(bounds, v)] += 1  # bucket i holds v <= bounds[i]
            total += v
        with self._lock:
            counts = self._counts
            for i, n in enumerate(local):
                if n:
                    counts[i] += n
            self._sum += total

    def collect(self) -> Iterator[Metric]:
        """The histogram in Prometheus form (cumulative buckets)."""
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip([*self.bounds, float("inf")], counts, strict=True):
            running += n
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total)
        yield family

    def describe(self) -> Iterator[Metric]:
        """The metric's name and type, without values."""
        yield HistogramMetricFamily(self.name, self.documentation)


MESSAGES_RECEIVED = Counter(
    "serenazgo_messages_received", "MQTT messages the ingest bridge took from the broker", registry=REGISTRY
)
PINGS_RECEIVED = Counter(
    "serenazgo_pings_received", "Position fixes decoded from received messages", registry=REGISTRY
)
PINGS_STORED = Counter("serenazgo_pings_stored", "Position fixes stored (new rows)", registry=REGISTRY)
PINGS_DUPLICATE = Counter(
    "serenazgo_pings_duplicate",
    "Position fixes already stored (a redelivery after a crash or reconnect): stored once",
    registry=REGISTRY,
)
REJECTED = Counter(
    "serenazgo_rejected",
    "Messages or fixes refused and kept as dead letters, by reason",
    ["reason"],
    registry=REGISTRY,
)
IGNORED = Counter(
    "serenazgo_ignored",
    "Well-formed messages with nothing to store, by reason",
    ["reason"],
    registry=REGISTRY,
)
FILTER_STEPS = Counter(
    "serenazgo_filter_steps_fired", "GPS filter steps that flagged or fixed a ping, by step", ["step"],
    registry=REGISTRY,
)  # fmt: skip
STATUS_UPDATES = Counter("serenazgo_status_updates", "Unit status changes received", registry=REGISTRY)
UNITS_AUTO_REGISTERED = Counter(
    "serenazgo_units_auto_registered", "Units created because an unknown device sent a fix", registry=REGISTRY
)
BATCHES = Counter("serenazgo_ingest_batches", "Ingest batches committed", registry=REGISTRY)
BATCH_FAILURES = Counter(
    "serenazgo_ingest_batch_failures",
    "Failed batch writes: 'outage' (retried as is) or 'data' (split to find the bad message)",
    ["kind"],
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "serenazgo_ingest_commit_seconds",
    "Time to store one batch (one transaction)",
    buckets=COMMIT_BUCKETS,
    registry=REGISTRY,
)
INGEST_LAG = BulkHistogram(
    "serenazgo_ingest_lag_seconds",
    "From a message's arrival at the bridge to the commit of its batch",
    LAG_BUCKETS,
    REGISTRY,
)
INFLIGHT = Gauge(
    "serenazgo_ingest_inflight_messages",
    "Messages received and not yet acknowledged to the broker",
    ["client_id"],
    registry=REGISTRY,
)
DATABASE_DOWN = Gauge(
    "serenazgo_database_down",
    "1 while the bridge cannot store (it acknowledges nothing and retries)",
    ["client_id"],
    registry=REGISTRY,
)
MQTT_CONNECTED = Gauge(
    "serenazgo_mqtt_connected",
    "1 while the bridge is connected to the broker",
    ["client_id"],
    registry=REGISTRY,
)
MQTT_CONNECTS = Counter(
    "serenazgo_mqtt_connects", "Successful (re)connections to the broker", registry=REGISTRY
)
ACKS_DROPPED = Counter(
    "serenazgo_acks_dropped",
    "Acknowledgements not sent because the message came on an older connection (the broker resends it)",
    registry=REGISTRY,
)
DEAD_LETTERS_PUBLISHED = Counter(
    "serenazgo_dead_letters_published", "Dead letters announced on serenazgo/deadletter", registry=REGISTRY
)

__all__ = [
    "ACKS_DROPPED",
    "BATCHES",
    "BATCH_FAILURES",
    "COMMIT_SECONDS",
    "DATABASE_DOWN",
    "DEAD_LETTERS_PUBLISHED",
    "FILTER_STEPS",
    "IGNORED",
    "INFLIGHT",
    "INGEST_LAG",
    "MESSAGES_RECEIVED",
    "MQTT_CONNECTED",
    "MQTT_CONNECTS",
    "PINGS_DUPLICATE",
    "PINGS_RECEIVED",
    "PINGS_STORED",
    "REGISTRY",
    "REJECTED",
    "STATUS_UPDATES",
    "UNITS_AUTO_REGISTERED",
    "BulkHistogram",
]
