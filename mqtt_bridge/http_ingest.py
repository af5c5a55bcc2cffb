"""HTTP ingest's group commit: requests from many devices, one transaction, answered once it commits.

The HTTP routes (:mod:`api.routes.ingest`) check each request's device token and
:meth:`HttpIngest.submit` its raw payload; the request waits for its batch's
outcome. The work behind it (decoding with the MQTT path's codecs, the sender's
check against its token, resolving, GPS filters, one transaction) runs in a
child process, :mod:`mqtt_bridge.http_ingest_worker`, so that it does not hold
the API's interpreter lock (that module says why, with figures).

Batching: one batch is in the worker at a time; everything submitted while it
commits forms the next batch (up to ``batch_max``). An idle server commits a
lone request at once; a busy one commits many per transaction, which is what
makes "200 only after commit" affordable (as PostgreSQL's own group commit does
for fsync). Once a batch is committed, this process applies it to the shared
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
from collections.abc import Callable

from mqtt_bridge.bridge import DEAD_LETTER_TOPIC
from mqtt_bridge.http_ingest_worker import (
    RETRY_AFTER_S,
    Batch,
    Hello,
    Item,
    Outcome,
    Reply,
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


class WorkerGoneError(Exception):
    """The worker process exited or its pipes broke before answering a batch."""


class _WorkerProcess:
    """The child process and its pipes; started on first use and again after it died."""

    def __init__(self, hello: Hello) -> None:
        self._hello = pickle.dumps(hello, protocol=pickle.HIGHEST_PROTOCOL)
        self._proc: Process | None = None

    @property
    def pid(self) -> int | None:
        """The running worker's process id, or None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def call(self, batch: Batch) -> Reply:
        """Send ``batch`` and wait for its reply; :class:`WorkerGoneError` if the worker cannot answer."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            proc = await self._spawn()
        assert proc.stdin is not None
        assert proc.stdout is not None
        data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            proc.stdin.write(len(data).to_bytes(4, "big") + data)
            await proc.stdin.drain()
            n = frame_length(await proc.stdout.readexactly(4))
            # Our own child's frames (see the worker's docstring): trusted.
            reply = pickle.loads(await proc.stdout.readexactly(n))  # noqa: S301
        except (OSError, asyncio.IncompleteReadError) as exc:
            await self._reap()
            raise WorkerGoneError(f"the HTTP ingest worker stopped ({type(exc).__name__})") from exc
        assert isinstance(reply, Reply)
        return reply

    async def _spawn(self) -> Process:
        await self._reap()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER_CODE,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None
        proc.stdin.write(len(self._hello).to_bytes(4, "big") + self._hello)
        self._proc = proc
        return proc

    async def _reap(self) -> None:
        """Forget a dead (or broken) worker, killing it if it still runs."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()

    async def close(self) -> None:
        """Tell the worker to finish (end of its input) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("the HTTP ingest worker did not exit within %.0f s: killed", STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


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
    ) -> None:
        self.registry = registry
        self.fleet = fleet
        self.batch_max = batch_max
        self.publish = publish  # dead-letter announcements on serenazgo/deadletter, best effort
        self._worker = _WorkerProcess(Hello(settings, conninfo))
        self._items: list[Item] = []
        self._futures: list[asyncio.Future[Outcome]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.batches = 0
        self.database_down = False

    @property
    def worker_pid(self) -> int | None:
        """The commit worker's process id while it runs (it starts with the first request)."""
        return self._worker.pid

    async def start(self) -> None:
        """Start the commit loop on the running event loop."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="http-ingest")

    async def stop(self) -> None:
        """Answer what is pending (committing it), then stop the worker."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            await task  # it returns once nothing is pending
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
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._items:
                items, futures = self._items[: self.batch_max], self._futures[: self.batch_max]
                del self._items[: self.batch_max], self._futures[: self.batch_max]
                outcomes = await self._run(items)
                for future, outcome in zip(futures, outcomes, strict=True):
                    if not future.done():  # the client may have gone away
                        future.set_result(outcome)
            if self._stopping:
                return

    async def _run(self, items: list[Item]) -> list[Outcome]:
        """One batch through the worker, then the fleet: the outcome of each item."""
        try:
            reply = await self._worker.call(Batch(self.registry.generation, items))
        except WorkerGoneError as exc:
            log.warning("%s; answering 503 to its %d requests and starting it again", exc, len(items))
            detail = f"HTTP ingest is restarting; retry in {RETRY_AFTER_S} s"
            return [Outcome(503, "ingest_restarting", detail)] * len(items)
        except Exception:  # never leave a phone waiting: a bug here answers, and the loop goes on
            log.exception("HTTP ingest batch failed")
            return [Outcome(500, "internal_error", "ingest failed; see the server log")] * len(items)
        self.database_down = reply.database_down
        if reply.failure:
            metrics.BATCH_FAILURES.labels(reply.failure).inc()
        if reply.committed:
            self._after_commit(reply, len(items))
        return reply.outcomes

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
