"""Faults mid-stream: kill -9 of the bridge, broker restarts, database outages, shared load, SIGTERM.

The ground truth is the publisher's own record of which messages the broker
acknowledged (PUBACK): every one of them must end up stored exactly once, and
nothing is stored that was not published.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from mqtt_bridge.ackclient import AckClient, InboundMessage
from mqtt_bridge.broker import EmbeddedBroker
from mqtt_bridge.topics import subscription_filters
from tests.fixtures.mosquitto import PublishResult, TestNames
from tests.mqtt_bridge.ingest_rig import WAIT_S, IngestRig, Sent, recent_start, track_messages
from tracker.config import parse_mqtt_url
from tracker.metrics import REGISTRY
from tracker.store.embedded import EmbeddedPostgres
from tracker.store.migrations import migrate

pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.fixture
def private_pg(pg_server_factory: Callable[..., EmbeddedPostgres]) -> EmbeddedPostgres:
    """A PostgreSQL server of this test's own, migrated, that it may stop and kill."""
    server = pg_server_factory()
    migrate(server.url, timescale=False)
    return server


@pytest.fixture
def rig_on_private_pg(
    mqtt_broker: EmbeddedBroker, private_pg: EmbeddedPostgres, test_names: TestNames
) -> Iterator[IngestRig]:
    rig = IngestRig(mqtt_broker, private_pg.url, test_names)
    try:
        yield rig
    finally:
        if not private_pg.running:
            private_pg.start()
        rig.close()


class Publisher(threading.Thread):
    """Publishes a stream in the background; ``progress[0]`` counts messages handed to paho."""

    def __init__(self, rig: IngestRig, messages: list[Sent]) -> None:
        super().__init__(name="test-publisher", daemon=True)
        self.rig, self.messages = rig, messages
        self.progress = [0]
        self.result: PublishResult | None = None

    def run(self) -> None:
        self.result = self.rig.publish(self.messages, progress=self.progress, inflight=50, settle_s=60.0)

    def finish(self) -> PublishResult:
        self.join(120)
        assert self.result is not None, "the publisher did not finish"
        return self.result


def probe(rig: IngestRig, unit_id: str, seconds_ago: int) -> Sent:
    """A single fix of ``unit_id``, well before the test stream."""
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seconds_ago)
    body = orjson.dumps({"ts": int(ts.timestamp() * 1000), "lat": -12.0, "lon": -77.0})
    return Sent(f"serenazgo/units/{unit_id}/position", body, unit_id, ts, -12.0, -77.0)


def assert_exactly_once(rig: IngestRig, published: list[Sent], result: PublishResult) -> None:
    """Every acknowledged message stored, nothing unpublished stored, no (unit, ts) twice."""
    acked = {(published[i].unit_id, published[i].ts) for i in result.acked_indexes}
    everything = {(m.unit_id, m.ts) for m in published}
    rig.wait_for(
        f"{len(acked)} acknowledged pings stored", lambda: acked <= set(rig.position_keys()), timeout=WAIT_S
    )
    keys = rig.position_keys()
    assert len(keys) == len(set(keys))
    assert acked <= set(keys) <= everything


def test_kill9_of_the_bridge_mid_stream_loses_nothing_acknowledged(ingest: IngestRig) -> None:
    cars = ingest.native_units(20)
    per_unit = 150
    sent = track_messages(cars, {}, per_unit, recent_start(per_unit))
    first = ingest.spawn_bridge()
    early = probe(ingest, cars[0], 5 * per_unit + 600)
    assert all(ingest.publish([early], role="probe").acked)
    ingest.wait_rows(1)  # the bridge is subscribed and storing

    publisher = Publisher(ingest, sent)
    publisher.start()
    ingest.wait_rows(len(sent) // 3)
    first.kill()  # SIGKILL, mid-stream
    first.wait()
    assert first.returncode == -signal.SIGKILL
    stored_at_kill = len(ingest.position_keys())
    ingest.spawn_bridge()
    result = publisher.finish()

    assert all(result.acked)  # the broker stayed up: it acknowledged everything
    assert stored_at_kill < len(sent) + 1  # the kill really came mid-stream
    assert_exactly_once(ingest, [early, *sent], PublishResult([True, *result.acked]))
    assert len(ingest.position_keys()) == len(sent) + 1


def test_a_received_but_uncommitted_message_comes_back_after_kill9(
    rig_on_private_pg: IngestRig, private_pg: EmbeddedPostgres
) -> None:
    rig = rig_on_private_pg
    (car,) = rig.native_units(1)
    bridge = rig.spawn_bridge()
    assert all(rig.publish([probe(rig, car, 120)], role="probe").acked)
    rig.wait_rows(1)

    private_pg.stop()  # nothing can commit now
    ping = probe(rig, car, 60)
    assert all(rig.publish([ping]).acked)
    # The bridge has the message: its writer tried to store it and failed.
    rig.wait_for("a failed write", lambda: "cannot store" in rig.log_text())
    bridge.kill()
    bridge.wait()

    private_pg.start()
    rig.spawn_bridge(log_name="bridge-again")
    rig.wait_rows(2)
    assert (car, ping.ts) in set(rig.position_keys())


def test_broker_restart_and_database_outage_mid_stream(
    rig_on_private_pg: IngestRig, private_pg: EmbeddedPostgres
) -> None:
    rig = rig_on_private_pg
    cars = rig.native_units(20)
    per_unit = 150
    sent = track_messages(cars, {}, per_unit, recent_start(per_unit))
    half = len(sent) // 2
    bridge = rig.bridge(receive_maximum=500)
    publisher = Publisher(rig, sent[:half])
    publisher.start()

    rig.wait_rows(half // 2)
    rig.broker.restart()  # graceful: the broker saves sessions and queues
    first = publisher.finish()
    rig.wait_rows(half)

    # The second half is published only once the database is down: a bridge fast enough to
    # drain the whole stream before the server stops would otherwise never see the outage.
    private_pg.stop()
    publisher = Publisher(rig, sent[half:])
    publisher.start()
    rig.wait_for("the bridge to see the outage", lambda: bridge.stats().database_down)
    acked_while_down = bridge.stats().acked
    time.sleep(1.0)  # messages keep arriving; none may be acknowledged
    during = bridge.stats()
    assert during.acked == acked_while_down
    assert during.database_down and during.in_flight > 0
    # Memory stays bounded: the queue stops at the Receive Maximum window, plus two batches.
    assert during.in_flight <= bridge.max_in_flight == 500 + 256 + 2 * 500
    private_pg.start()

    result = PublishResult(acked=first.acked + publisher.finish().acked)
    assert_exactly_once(rig, sent, result)
    rig.wait_for("everything acknowledged", lambda: bridge.stats().in_flight == 0)
    assert not bridge.stats().database_down


def test_two_bridges_in_a_share_group_store_everything_once(ingest: IngestRig) -> None:
    cars = ingest.native_units(10)
    per_unit = 100
    sent = track_messages(cars, {}, per_unit, recent_start(per_unit))
    bridges = [
        ingest.bridge(share_group="ingest", mqtt_client_id=ingest.names.client(name)) for name in ("a", "b")
    ]
    time.sleep(0.2)  # both subscriptions registered before the stream starts
    result = ingest.publish(sent)
    assert all(result.acked)
    assert_exactly_once(ingest, sent, result)
    assert len(ingest.position_keys()) == len(sent)
    stats = [b.stats() for b in bridges]
    assert all(s.stored > 0 for s in stats), stats  # both did work
    assert sum(s.stored for s in stats) == len(sent)


def test_sigterm_flushes_what_was_received(ingest: IngestRig) -> None:
    cars = ingest.native_units(5)
    per_unit = 40
    sent = track_messages(cars, {}, per_unit, recent_start(per_unit))
    # A batch window far longer than the test: only the shutdown flush can store these.
    proc = ingest.spawn_bridge(SERENAZGO_BATCH_INTERVAL_MS="600000", SERENAZGO_BATCH_MAX="100000")
    assert all(ingest.publish(sent).acked)
    time.sleep(1.0)  # let the bridge read them (it does so in milliseconds)
    assert ingest.query("SELECT count(*) FROM positions")[0][0] == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(WAIT_S) == 0, ingest.log_text()
    assert set(ingest.position_keys()) == {(m.unit_id, m.ts) for m in sent}
    assert f"{len(sent)} received, {len(sent)} stored" in ingest.log_text()
    assert "left to the broker" not in ingest.log_text()

    # Everything was acknowledged: the session holds nothing to resend, so a message
    # published now is the first one the bridge's client id receives.
    inbox: queue.Queue[InboundMessage] = queue.Queue()
    client = AckClient(
        parse_mqtt_url(ingest.broker.url),
        ingest.names.client("bridge"),
        subscription_filters(None),
        inbox.put,
    )
    client.start()
    assert client.wait_connected(WAIT_S)
    marker = probe(ingest, cars[0], 10)
    assert all(ingest.publish([marker], role="marker").acked)
    assert inbox.get(timeout=WAIT_S).payload == marker.payload
    client.stop()


def test_a_message_the_database_refuses_is_dead_lettered_alone(ingest: IngestRig) -> None:
    (car,) = ingest.native_units(1)
    per_unit = 60
    sent = track_messages([car], {}, per_unit, recent_start(per_unit))
    poison = sent[per_unit // 2]
    # A real refusal by the database (SQLSTATE 23514) for one fix the filters let through.
    ingest.query(f"ALTER TABLE positions ADD CONSTRAINT refuse_one CHECK (lat <> {poison.lat!r})")
    ingest.bridge().stop()  # the session exists: what is published now waits for the next bridge
    assert all(ingest.publish(sent).acked)
    refusals_before = data_failures()
    bridge = ingest.bridge(batch_interval_ms=200)  # the queued stream arrives at once: one batch
    ingest.wait_rows(per_unit - 1)
    ingest.wait_for("every message settled", lambda: bridge.stats().acked == per_unit)
    assert set(ingest.position_keys()) == {(m.unit_id, m.ts) for m in sent if m is not poison}
    rows = ingest.query("SELECT topic, payload, reason FROM dead_letters")
    assert [(t, bytes(p), r) for t, p, r in rows] == [(poison.topic, poison.payload, "storage_refused")]
    # The batch was split (more than one refused write) down to the message at fault.
    assert data_failures() - refusals_before >= 2
    assert bridge.running and bridge.stats().in_flight == 0


def data_failures() -> float:
    return REGISTRY.get_sample_value("serenazgo_ingest_batch_failures_total", {"kind": "data"}) or 0.0
