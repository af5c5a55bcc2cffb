"""HTTP ingest's group commit: requests from many devices, one transaction, answered once it commits.

The HTTP routes (:mod:`api.routes.ingest`) check each request's device token and
:meth:`HttpIngest.submit` its raw payload; the request waits for its batch's
outcome. The work behind it (decoding with the MQTT path's codecs, the sender's
check against its token, resolving, GPS filters, one transaction) runs in a
child process, :mod:`mqtt_bridge.http_ingest_worker`, so that it does not hold
the API's interpreter lock (that module says why, with figures).

Batching: up to two batches are in the worker at a time, one being committed
while the next is decoded and filtered; everything submitted meanwhile forms
the batch after (up to ``batch_max``). An idle server commits a lone request at
once; a busy one commits many per transaction, which is what makes "200 only
after commit" affordable (as PostgreSQL's own group commit does for fsync).
Once a batch is committed, this process applies it to the shared
:class:`LiveFleet` and registry, counts it in the metrics and announces its dead
letters.

The worker starts with the first request, and again after it died: the requests
of a batch it did not answer get 503 (nothing of them is acknowledged; the phone
resends, and storage is idempotent on ``(unit_id, ts)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import sys
from asyncio.subprocess import Process
from collections import deque
from collections.abc import Callable

from mqtt_bridge.bridge import DEAD_LETTER_TOPIC
from mqtt_bridge.http_ingest_worker import (
    OUTAGE,
    RETRY_AFTER_S,
    Batch,
    Hello,
    Item,
    Outcome,
    Reply,
    encode_frame,
    frame_length,
)
from tracker import metrics
from tracker.config import Settings
from tracker.errors import DuplicateUnitError
from tracker.fleet import LiveFleet
from tracker.registry import UnitRegistry

log = logging.getLogger(__name__)

# Run by import, not ``-m``: as ``__main__`` the module's classes would not be the ones pickled here.
WORKER_CODE = "from mqtt_bridge.http_ingest_worker import main; main()"
STOP_TIMEOUT_S = 10.0  # for the worker to close its connection and exit once told to
# Batches in the worker at once: one committing while the next is decoded and filtered.
IN_FLIGHT = 2
# A worker that holds a batch this long is stuck (its database calls time out well before): it is
# killed, its requests get 503 and the next request starts a new one.
REPLY_TIMEOUT_S = 60.0


class WorkerGoneError(Exception):
    """The worker process exited or its pipes broke before answering a batch."""


Futures = list["asyncio.Future[Outcome]"]
Deliver = Callable[[Reply, Futures], None]


def _restarting(n: int) -> list[Outcome]:
    return [Outcome(503, "ingest_restarting", f"HTTP ingest is restarting; retry in {RETRY_AFTER_S} s")] * n


def _answer(futures: Futures, outcomes: list[Outcome]) -> None:
    for future, outcome in zip(futures, outcomes, strict=True):
        if not future.done():  # the client may have gone away
            future.set_result(outcome)


class _Session:
    """One worker process, the batches sent to it and not yet answered, and the task reading its replies."""

    def __init__(self, proc: Process, deliver: Deliver, wake: Callable[[], None], timeout_s: float) -> None:
        self.proc = proc
        self.deliver = deliver
        self.wake = wake
        self.timeout_s = timeout_s
        # One entry per batch sent, answered in order: when it was sent (loop time), its requests.
        self.flights: deque[tuple[float, Futures]] = deque()
        self.alive = True
        self.reader = asyncio.create_task(self._read(), name="http-ingest-replies")
        self.watchdog = asyncio.create_task(self._watch(), name="http-ingest-watchdog")

    async def send(self, batch: Batch, futures: Futures) -> None:
        """Write ``batch`` to the worker; its futures are resolved when its reply comes."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(encode_frame(batch))
            await self.proc.stdin.drain()
        except OSError as exc:
            await self.end(f"the HTTP ingest worker stopped ({type(exc).__name__})")
            raise WorkerGoneError(str(exc)) from exc
        self.flights.append((asyncio.get_running_loop().time(), futures))

    async def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            while True:
                n = frame_length(await stdout.readexactly(4))
                # Our own child's frames (see the worker's docstring): trusted.
                reply = pickle.loads(await stdout.readexactly(n))  # noqa: S301
                assert isinstance(reply, Reply)
                self.deliver(reply, self.flights.popleft()[1])
        except (OSError, asyncio.IncompleteReadError) as exc:
            await self.end(f"the HTTP ingest worker stopped ({type(exc).__name__})")
        except Exception as exc:  # a garbled frame: this worker cannot be trusted to answer in order
            log.exception("HTTP ingest: unreadable reply from the worker")
            await self.end(f"the HTTP ingest worker sent an unreadable reply ({type(exc).__name__})")

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self.alive:
            await asyncio.sleep(min(1.0, self.timeout_s / 4))
            if self.flights and loop.time() - self.flights[0][0] > self.timeout_s:
                await self.end(f"the HTTP ingest worker did not answer within {self.timeout_s:g} s")

    async def end(self, why: str) -> None:
        """The worker is gone (or broken): answer 503 to what it held, and make sure it is dead."""
        if self.alive:
            self.alive = False
            if self.flights:
                n = sum(len(f) for _, f in self.flights)
                log.warning("%s; answering 503 to its %d requests and starting it again", why, n)
            while self.flights:
                futures = self.flights.popleft()[1]
                _answer(futures, _restarting(len(futures)))
            self.wake()  # the sender may start a new worker for what is queued
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()

    async def close(self) -> None:
        """Tell the worker to finish (end of its input) and wait for it to answer all and exit."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.reader), STOP_TIMEOUT_S)
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("the HTTP ingest worker did not exit within %.0f s: killed", STOP_TIMEOUT_S)
            await self.end("the HTTP ingest worker was killed at stop")
        finally:
            self.watchdog.cancel()


class _Worker:
    """The worker process: started on first use and again after it died."""

    def __init__(self, hello: Hello, deliver: Deliver, wake: Callable[[], None], timeout_s: float) -> None:
        self._hello = encode_frame(hello)
        self._deliver = deliver
        self._wake = wake
        self._timeout_s = timeout_s
        self._session: _Session | None = None

    @property
    def pid(self) -> int | None:
        """The running worker's process id, or None."""
        s = self._session
        return s.proc.pid if s is not None and s.alive and s.proc.returncode is None else None

    @property
    def in_flight(self) -> int:
        """Batches sent and not yet answered."""
        s = self._session
        return len(s.flights) if s is not None and s.alive else 0

    async def send(self, batch: Batch, futures: Futures) -> None:
        """Send ``batch`` (starting the worker if need be); :class:`WorkerGoneError` if it cannot take it."""
        s = self._session
        if s is None or not s.alive:
            s = self._session = await self._spawn()
        await s.send(batch, futures)

    async def _spawn(self) -> _Session:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER_CODE,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None
        proc.stdin.write(self._hello)
        return _Session(proc, self._deliver, self._wake, self._timeout_s)

    async def close(self) -> None:
        """Stop the worker once it answered everything sent to it."""
        s, self._session = self._session, None
        if s is not None:
            await s.close()


class HttpIngest:
    """Group commit of HTTP ingest requests (see the module docstring); ``start()``, then ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        conninfo: str,
        registry: UnitRegistry,
        fleet: LiveFleet,
        *,
        batch_max: int = 1000,
        publish: Callable[[str, bytes, int], object] | None = None,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
    ) -> None:
        self.registry = registry
        self.fleet = fleet
        self.batch_max = batch_max
        self.publish = publish  # dead-letter announcements on serenazgo/deadletter, best effort
        self._items: list[Item] = []
        self._futures: Futures = []
        self._wake = asyncio.Event()
        self._worker = _Worker(Hello(settings, conninfo), self._deliver, self._wake.set, reply_timeout_s)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.batches = 0
        self.database_down = False

    @property
    def worker_pid(self) -> int | None:
        """The commit worker's process id while it runs (it starts with the first request)."""
        return self._worker.pid

    async def start(self) -> None:
        """Start the sending loop on the running event loop."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="http-ingest")

    async def stop(self) -> None:
        """Answer what is pending (committing it), then stop the worker."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            await task  # it returns once nothing is pending or in flight
        await self._worker.close()

    async def submit(self, topic: str, payload: bytes, received_at: float, unit_id: str | None) -> Outcome:
        """Queue one request for the next batch and wait for its outcome.

        ``received_at`` is ``time.time()`` at arrival; ``unit_id`` the unit of the request's
        device token (None when device authentication is off).
        """
        if self._task is None:
            return Outcome(503, "not_running", "HTTP ingest is not running")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._items.append((topic, payload, received_at, unit_id))
        self._futures.append(future)
        self._wake.set()
        return await future

    async def _loop(self) -> None:
        """Send what is queued as a batch whenever fewer than IN_FLIGHT batches are in the worker."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._items and self._worker.in_flight < IN_FLIGHT:
                items, futures = self._items[: self.batch_max], self._futures[: self.batch_max]
                del self._items[: self.batch_max], self._futures[: self.batch_max]
                try:
                    await self._worker.send(Batch(self.registry.generation, items), futures)
                except WorkerGoneError:
                    _answer(futures, _restarting(len(futures)))
                except Exception:  # never leave a phone waiting: a bug here answers, and the loop goes on
                    log.exception("HTTP ingest batch failed")
                    failed = Outcome(500, "internal_error", "ingest failed; see the server log")
                    _answer(futures, [failed] * len(futures))
            if self._stopping and not self._items and not self._worker.in_flight:
                return

    def _deliver(self, reply: Reply, futures: Futures) -> None:
        """A batch's reply: the fleet, then the answers; wakes the sending loop."""
        try:
            self.database_down = reply.failure == OUTAGE
            if reply.failure:
                metrics.BATCH_FAILURES.labels(reply.failure).inc()
            if reply.committed:
                self._after_commit(reply, len(futures))
        except Exception:  # the batch is stored: its 200s stand even if the fleet update failed
            log.exception("HTTP ingest: updating the live fleet failed")
        _answer(futures, reply.outcomes)
        self._wake.set()

    def _after_commit(self, reply: Reply, n: int) -> None:
        """Registry, fleet, metrics and dead-letter announcements of a committed batch."""
        self.batches += 1
        metrics.COMMIT_SECONDS.observe(reply.commit_s)
        for unit in reply.units:  # auto-registered or loaded by the worker: known here too
            try:
                self.registry.add(unit)
            except DuplicateUnitError:
                continue
            self.fleet.upsert_unit(unit)
        self.fleet.apply(reply.pings, reply.statuses, reply.disconnected, reply.telemetry)
        metrics.MESSAGES_RECEIVED.inc(n)
        metrics.PINGS_RECEIVED.inc(reply.pings_received)
        for reason, count in reply.rejected.items():
            metrics.REJECTED.labels(reason).inc(count)
        for reason, count in reply.ignored.items():
            metrics.IGNORED.labels(reason).inc(count)
        metrics.BATCHES.inc()
        if self.publish is not None:
            for body in reply.announcements:
                try:
                    self.publish(DEAD_LETTER_TOPIC, body, 0)
                except Exception:  # best effort, as on MQTT: the dead letter is stored already
                    log.debug("dead-letter announcement failed", exc_info=True)


__all__ = ["HttpIngest", "WorkerGoneError"]
