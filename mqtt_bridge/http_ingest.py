"""HTTP ingest's core: requests from many devices grouped into one transaction (group commit).

The HTTP routes (:mod:`api.routes.ingest`) decode each request with the same
codecs as MQTT (:func:`mqtt_bridge.codecs.decode_message`, OsmAnd under the
pseudo-topic ``http/osmand``, OwnTracks under ``owntracks/{user}/{device}``) and
:meth:`HttpIngest.submit` it; the request waits for its batch's outcome.

Batching: one writer thread commits one batch at a time; everything submitted
while it commits forms the next batch (up to ``batch_max``). An idle server
commits a lone request at once; a busy one commits many per transaction, which
is what makes "200 only after commit" affordable (as PostgreSQL's own group
commit does for fsync). Each batch runs through an
:class:`mqtt_bridge.pipeline.IngestPipeline` of its own (resolve through the
shared registry, GPS filters) and :class:`tracker.store.writer.PositionWriter`
(one transaction), then updates the shared :class:`LiveFleet`.

Per request the answer is an :class:`Outcome`: 200 once its batch committed; 422
with the reason when nothing of it was stored because it was rejected (the
rejection is stored as a dead letter in the same transaction, as on MQTT); 503
when the database could not take the batch (nothing of it is acknowledged: the
client resends, and storage is idempotent on ``(unit_id, ts)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from mqtt_bridge.bridge import DEAD_LETTER_TOPIC
from mqtt_bridge.pipeline import NO_ENDS, IngestPipeline, PipelineResult
from tracker import metrics
from tracker.batch import DeadLetter, IngestBatch
from tracker.config import Settings
from tracker.errors import StorageDataError, StorageError
from tracker.fleet import LiveFleet
from tracker.model import Decoded, DecodeResult
from tracker.registry import UnitRegistry
from tracker.store.writer import PositionWriter

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5  # what a 503 asks the client to wait


@dataclass(slots=True, frozen=True)
class HttpMessage:
    """One HTTP request as the pipeline sees it (a :class:`mqtt_bridge.pipeline.RawMessage`)."""

    topic: str
    payload: bytes
    received_at: float  # time.time()


@dataclass(slots=True, frozen=True)
class Outcome:
    """What to answer a request: ``status`` 200, 422 (rejected, dead-lettered) or 503."""

    status: int
    reason: str = ""
    detail: str = ""
    stored: int = 0


_Item = tuple[HttpMessage, DecodeResult, "asyncio.Future[Outcome]"]


class HttpIngest:
    """Group commit of HTTP ingest requests (see the module docstring); ``start()``, then ``stop()``.

    ``lanes`` batches may be in flight at once, each with its own writer connection and
    pipeline; a device always goes to the same lane (by its external id), so a unit's
    filter state lives in one pipeline and two lanes never hold one unit's
    ``unit_latest`` row at once. One lane is the default: on the 2-core benchmark
    machine two or four lanes were no faster (each lane's commit still waits for its
    own WAL flush, and smaller batches cost more per fix), so more lanes are left to
    measurement on bigger machines.
    """

    def __init__(
        self,
        settings: Settings,
        conninfo: str,
        registry: UnitRegistry,
        fleet: LiveFleet,
        *,
        lanes: int = 1,
        batch_max: int = 1000,
        publish: Callable[[str, bytes, int], object] | None = None,
    ) -> None:
        self._lanes = [
            _Lane(
                settings,
                conninfo,
                registry,
                fleet,
                batch_max=batch_max,
                publish=publish,
                name=f"http-ingest-{i}",
            )
            for i in range(max(1, lanes))
        ]

    @property
    def batches(self) -> int:
        """Batches committed so far."""
        return sum(lane.batches for lane in self._lanes)

    @property
    def database_down(self) -> bool:
        """True when the last commit of some lane failed for want of a database."""
        return any(lane.database_down for lane in self._lanes)

    async def start(self) -> None:
        """Start the lanes' commit loops on the running event loop."""
        for lane in self._lanes:
            await lane.start()

    async def stop(self) -> None:
        """Answer what is pending (committing it), then close the writers."""
        for lane in self._lanes:
            await lane.stop()

    async def submit(self, message: HttpMessage, decoded: DecodeResult) -> Outcome:
        """Queue one decoded request for its lane's next batch and wait for its outcome."""
        lanes = self._lanes
        lane = lanes[hash(decoded.ref.external_id) % len(lanes)] if type(decoded) is Decoded else lanes[0]
        return await lane.submit(message, decoded)


class _Lane:
    """One batch in flight at a time: a pipeline, a writer connection and its thread."""

    def __init__(
        self,
        settings: Settings,
        conninfo: str,
        registry: UnitRegistry,
        fleet: LiveFleet,
        *,
        batch_max: int = 1000,
        publish: Callable[[str, bytes, int], object] | None = None,
        name: str = "http-ingest",
    ) -> None:
        self.name = name
        self.pipeline = IngestPipeline(registry, settings)
        self.writer = PositionWriter(conninfo)
        self.fleet = fleet
        self.batch_max = batch_max
        self.publish = publish  # dead-letter announcements on serenazgo/deadletter, best effort
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._pending: list[_Item] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.batches = 0
        self.database_down = False

    async def start(self) -> None:
        """Connect (creating the days' partitions, one lane after the other), then start the commit loop."""
        if self._task is None:
            with contextlib.suppress(StorageError):  # no database yet: the first batch connects
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, self.writer.write, IngestBatch()
                )
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Answer what is pending (committing it), then close the writer."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            await task  # it returns once nothing is pending
        await asyncio.get_running_loop().run_in_executor(self._executor, self.writer.close)
        self._executor.shutdown(wait=True)

    async def submit(self, message: HttpMessage, decoded: DecodeResult) -> Outcome:
        """Queue one decoded request for the next batch and wait for its outcome."""
        if self._task is None:
            return Outcome(503, "not_running", "HTTP ingest is not running")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append((message, decoded, future))
        self._wake.set()
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                items = self._pending[: self.batch_max]
                del self._pending[: self.batch_max]
                try:
                    outcomes = await loop.run_in_executor(self._executor, self._process, items)
                except Exception:
                    log.exception("HTTP ingest batch failed")
                    failed = Outcome(500, "internal_error", "ingest failed; see the server log")
                    outcomes = [failed] * len(items)
                for (_, _, future), outcome in zip(items, outcomes, strict=True):
                    if not future.done():  # the client may have gone away
                        future.set_result(outcome)
            if self._stopping:
                return

    # -- the writer thread ------------------------------------------------------------------------

    def _process(self, items: Sequence[_Item]) -> list[Outcome]:
        """Pipeline, one transaction, fleet: the outcome of each item."""
        messages = [m for m, _, _ in items]
        result = self.pipeline.run(messages, decoded=[d for _, d, _ in items])
        started = time.perf_counter()
        try:
            try:
                self.writer.write(result.batch)
            except StorageError as first:
                if isinstance(first, StorageDataError):
                    raise
                # Once more at once: lanes can race to create a new day's partition (or deadlock);
                # an outage fails again just as fast (a refused connection).
                self.writer.write(result.batch)
            parts = [(0, len(items), result)]
        except StorageError as exc:
            if not isinstance(exc, StorageDataError):
                return self._outage(exc, len(items))
            try:
                parts = self._one_by_one(result, messages)
            except StorageError as again:
                return self._outage(again, len(items))
        self.database_down = False
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        self.batches += 1
        self._after_commit(result, messages)
        outcomes: list[Outcome] = []
        for lo, hi, part in parts:
            outcomes.extend(_outcomes(part, hi - lo))
        return outcomes

    def _outage(self, exc: StorageError, n: int) -> list[Outcome]:
        if not self.database_down:
            log.warning("HTTP ingest: cannot store (%s); answering 503", exc)
        self.database_down = True
        metrics.BATCH_FAILURES.labels("outage").inc()
        detail = f"the database is unavailable; retry in {RETRY_AFTER_S} s"
        return [Outcome(503, "database_unavailable", detail)] * n

    def _one_by_one(
        self, result: PipelineResult, messages: Sequence[HttpMessage]
    ) -> list[tuple[int, int, PipelineResult]]:
        """The database refused the batch's data: store each request alone, dead-letter the one at fault."""
        metrics.BATCH_FAILURES.labels("data").inc()
        parts: list[tuple[int, int, PipelineResult]] = []
        for i, m in enumerate(messages):
            part = result.part(i, i + 1)
            try:
                self.writer.write(part.batch)
            except StorageDataError as exc:
                detail = f"the database refused this request: {str(exc)[:500]}"
                received = datetime.fromtimestamp(m.received_at, UTC)
                letter = DeadLetter(m.topic, m.payload, "storage_refused", detail, received)
                part = PipelineResult(
                    batch=IngestBatch(dead_letters=[letter]), ends=[(0, 0, 0, 0, 1, 0, 0, 0)]
                )
                self.writer.write(part.batch)
            parts.append((i, i + 1, part))
        return parts

    def _after_commit(self, result: PipelineResult, messages: Sequence[HttpMessage]) -> None:
        """Fleet, metrics and dead-letter announcements of a committed batch."""
        b = result.batch
        for unit in b.new_units:
            self.fleet.upsert_unit(unit)
        self.fleet.apply(b.pings, b.statuses, result.disconnected, b.telemetry)
        metrics.MESSAGES_RECEIVED.inc(len(messages))
        metrics.PINGS_RECEIVED.inc(result.pings_received)
        for reason, n in result.rejected.items():
            metrics.REJECTED.labels(reason).inc(n)
        for reason, n in result.ignored.items():
            metrics.IGNORED.labels(reason).inc(n)
        metrics.BATCHES.inc()
        if self.publish is not None and b.dead_letters:
            for d in b.dead_letters:
                try:
                    self.publish(DEAD_LETTER_TOPIC, d.announcement(), 0)
                except Exception:  # best effort, as on MQTT: the dead letter is stored already
                    log.debug("dead-letter announcement failed", exc_info=True)


def _outcomes(result: PipelineResult, n: int) -> list[Outcome]:
    """Per message of a committed ``result``: 200, or 422 when it was only rejected."""
    out: list[Outcome] = []
    prev = NO_ENDS
    b = result.batch
    for i in range(n):
        end = result.ends[i]
        pings = end[0] - prev[0]
        letters = b.dead_letters[prev[4] : end[4]]
        other = end[1] - prev[1] + end[6] - prev[6] + end[5] - prev[5] + end[7] - prev[7]
        if letters and not pings and not other:
            first = letters[0]
            out.append(Outcome(422, first.reason, first.detail))
        else:
            out.append(Outcome(200, stored=pings))
        prev = end
    return out


__all__ = ["RETRY_AFTER_S", "HttpIngest", "HttpMessage", "Outcome"]
