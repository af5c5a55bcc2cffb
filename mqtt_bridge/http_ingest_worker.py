"""HTTP ingest's commit worker: a child process that decodes, filters and commits batches of requests.

Why a process of its own: the API serves phones, consoles and the bridge from one
Python process, whose threads share one interpreter lock. Measured on the 2-core
box (bench_http_ingest, 2026-11-26), a commit thread inside the API held that
lock for about 40 µs per request and the event loop spent another ~60 µs per
request beyond bare HTTP, decoding and handing requests across threads: the API
process sat at one full core at ~6,000 requests/s. Here the decoding, the GPS
filters, building the rows and waiting on PostgreSQL happen in this process; the
API only reads each request's token and waits for its batch's outcome.

Protocol, on this process's stdin and stdout: frames of a 4-byte big-endian length
and a pickle. The parent (:class:`mqtt_bridge.http_ingest.HttpIngest`, the only
writer of those pipes: pickles are trusted because they come from it) first sends
a :class:`Hello`, then one :class:`Batch` at a time, each answered by one
:class:`Reply`. End of input: the worker closes its database connection and
exits 0. Anything printed to stdout by a library goes to stderr instead (the
protocol keeps a duplicate of the real stdout), and logging goes to stderr.

Per request the answer is an :class:`Outcome`: 200 once its batch committed; 403
when the token's unit does not own the device id the request names; 422 with the
reason when nothing of it was stored because it was rejected (the rejection is
stored as a dead letter in the same transaction, as on MQTT); 503 when the
database could not take the batch (nothing of it is acknowledged: the client
resends, and storage is idempotent on ``(unit_id, ts)``).

Run by the parent: ``python -c "from mqtt_bridge.http_ingest_worker import main; main()"``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

from mqtt_bridge.bridge import tune_gc
from mqtt_bridge.codecs import decode_message
from mqtt_bridge.pipeline import NO_ENDS, IngestPipeline, PipelineResult
from mqtt_bridge.storing import store_isolating
from tracker.config import Settings
from tracker.errors import StorageDataError, StorageError
from tracker.model import Decoded, DecodeResult, DroneTelemetry, Ping, Rejection, StatusUpdate, Unit
from tracker.registry import UnitRegistry
from tracker.store.units import load_all_units_sync
from tracker.store.writer import PositionWriter

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5  # what a 503 asks the client to wait
OUTAGE = "outage"  # a Reply's failure when the database could not take the batch
# An unknown device or a device id its token's unit does not own reloads the units from the
# database (registered by another process, or a moment ago), at most this often.
REFRESH_MIN_S = 1.0
_LENGTH = struct.Struct(">I")

# One request as the parent sends it: (topic, payload, received_at as time.time(), unit id of its
# device token or None when device authentication is off).
Item = tuple[str, bytes, float, str | None]


@dataclass(slots=True, frozen=True)
class HttpMessage:
    """One HTTP request as the pipeline sees it (a :class:`mqtt_bridge.pipeline.RawMessage`)."""

    topic: str
    payload: bytes
    received_at: float  # time.time()


@dataclass(slots=True, frozen=True)
class Outcome:
    """What to answer a request: ``status`` 200, 403, 422 (rejected, dead-lettered), 500 or 503."""

    status: int
    reason: str = ""
    detail: str = ""


OK = Outcome(200)


@dataclass(slots=True, frozen=True)
class Hello:
    """The first frame: the service's settings (as the API runs with them) and the database."""

    settings: Settings
    conninfo: str


@dataclass(slots=True, frozen=True)
class Batch:
    """Requests to store in one transaction.

    ``generation``: the parent registry's :attr:`UnitRegistry.generation`; when it
    moved since the last batch, units were registered in the parent and the worker
    reloads its own from the database first.
    """

    generation: int
    items: list[Item]


@dataclass(slots=True)
class Reply:
    """A batch's outcomes (one per item, in order) and what the parent does once it is committed."""

    outcomes: list[Outcome]
    committed: bool = False
    commit_s: float = 0.0
    # "data": the database refused part of it (the rest is stored); OUTAGE: nothing is stored, the
    # database is down; "internal": nothing is stored, a bug (see the log).
    failure: str = ""
    # For the parent's registry and LiveFleet: units it may not know (auto-registered by this batch,
    # or loaded from the database since the last reply), then what the writer committed.
    units: list[Unit] = field(default_factory=list)
    pings: list[Ping] = field(default_factory=list)
    statuses: list[tuple[str, StatusUpdate]] = field(default_factory=list)
    disconnected: list[str] = field(default_factory=list)
    telemetry: list[DroneTelemetry] = field(default_factory=list)
    # For the parent's metrics and the dead-letter announcements:
    pings_received: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)
    announcements: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class Prepared:
    """A batch between the worker's two stages: decoded, checked and filtered, not yet stored."""

    outcomes: list[Outcome]  # 403s filled in; the rest come from the commit
    messages: list[HttpMessage]  # what goes to the transaction ...
    index: list[int]  # ... and where each of them stands in the batch
    result: PipelineResult
    loaded: list[Unit]  # units the database gave a reload since the last batch


def encode_frame(obj: object) -> bytes:
    """``obj`` as one frame: its pickle's length (4 bytes, big-endian), then the pickle."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def write_frame(out: BinaryIO, obj: object) -> None:
    """Send ``obj`` as one frame and flush."""
    out.write(encode_frame(obj))
    out.flush()


def frame_length(head: bytes) -> int:
    """The payload length announced by a frame's 4-byte head."""
    (n,) = _LENGTH.unpack(head)
    return int(n)


def read_frame(inp: BinaryIO) -> object | None:
    """The next frame's object, or None at the end of input."""
    head = inp.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    n = frame_length(head)
    data = inp.read(n)
    if len(data) < n:
        return None
    obj: object = pickle.loads(data)  # noqa: S301  (the parent's frames: see the module docstring)
    return obj


class CommitWorker:
    """What the worker process does with each :class:`Batch` (its own registry, pipeline and writer)."""

    def __init__(self, settings: Settings, conninfo: str) -> None:
        self.settings = settings
        self.conninfo = conninfo
        self.registry = UnitRegistry()
        self.pipeline = IngestPipeline(self.registry, settings, refresh_units=self._refresh_on_miss)
        self.writer = PositionWriter(conninfo)
        self.generation = -1  # the parent's registry generation last loaded; -1: never
        self._last_refresh = -REFRESH_MIN_S
        self._loaded: list[Unit] = []  # found by a reload, not yet told to the parent
        self.database_down = False

    def start(self) -> None:
        """Connect (creating the days' partitions) and load the units; without a database, later."""
        with contextlib.suppress(StorageError):
            self.writer.connect()
        with contextlib.suppress(StorageError):
            self._reload()

    def close(self) -> None:
        """Close the database connection."""
        self.writer.close()

    def prepare(self, batch: Batch) -> Prepared:
        """Decode ``batch``, check each sender against its token, resolve and filter (the first stage)."""
        if batch.generation != self.generation:
            with contextlib.suppress(StorageError):  # no database: the writer says so at commit
                self._reload()
                self.generation = batch.generation
        outcomes: list[Outcome] = [OK] * len(batch.items)
        messages: list[HttpMessage] = []
        decoded: list[DecodeResult] = []
        index: list[int] = []
        limit = self.settings.max_payload_bytes
        fromtimestamp = datetime.fromtimestamp
        for i, (topic, payload, received, unit_id) in enumerate(batch.items):
            result = decode_message(topic, payload, fromtimestamp(received, UTC), limit)
            if unit_id is not None and type(result) is Decoded:
                refused = self._not_owner(result, unit_id)
                if refused is not None:
                    outcomes[i] = refused
                    continue
            messages.append(HttpMessage(topic, payload, received))
            decoded.append(result)
            index.append(i)
        filtered = self.pipeline.run(messages, decoded=decoded)  # may reload the units on a miss
        loaded, self._loaded = self._loaded, []
        return Prepared(outcomes, messages, index, filtered, loaded)

    def commit(self, prepared: Prepared) -> Reply:
        """Store a prepared batch in one transaction (the second stage): its Reply."""
        reply = self._commit(prepared.result, prepared.messages)
        outcomes = prepared.outcomes
        for i, outcome in zip(prepared.index, reply.outcomes, strict=True):
            outcomes[i] = outcome
        reply.outcomes = outcomes
        # Loaded from the database: the parent may learn them whatever became of the batch.
        reply.units = prepared.loaded + reply.units
        return reply

    # -- units -----------------------------------------------------------------------------------

    def _reload(self) -> None:
        units = load_all_units_sync(self.conninfo)
        known = self.registry
        self._loaded.extend(u for u in units if u.unit_id not in known)
        known.replace(units)
        self._last_refresh = time.monotonic()

    def _refresh_on_miss(self) -> bool:
        """Reload the units (at most every REFRESH_MIN_S); True when it ran."""
        if time.monotonic() - self._last_refresh < REFRESH_MIN_S:
            return False
        try:
            self._reload()
        except StorageError:
            return False
        return True

    def _owner(self, result: Decoded) -> str | None:
        found = self.registry.resolve(result.ref, False)
        return None if isinstance(found, Rejection) else found[0].unit_id

    def _not_owner(self, result: Decoded, unit_id: str) -> Outcome | None:
        """403 when the token's unit does not own the request's device id (after one reload)."""
        if self._owner(result) == unit_id:
            return None
        if self._refresh_on_miss() and self._owner(result) == unit_id:
            return None
        ref = result.ref
        return Outcome(
            403,
            "wrong_device",
            f"this token belongs to unit {unit_id!r}, and {ref.source.value} device id "
            f"{ref.external_id!r} is not one of its external ids (PATCH the unit to add it)",
        )

    # -- one transaction -------------------------------------------------------------------------

    def _commit(self, result: PipelineResult, messages: list[HttpMessage]) -> Reply:
        """One transaction (more when the database refuses some data): a Reply, one outcome per message."""
        if not messages:
            return Reply(outcomes=[], committed=True)
        started = time.perf_counter()
        try:
            try:
                parts = store_isolating(self.writer, result, messages, who="HTTP ingest")
            except StorageError as first:
                if isinstance(first, StorageDataError):
                    raise
                # Once more at once: a new day's partition may race another writer (or deadlock);
                # an outage fails again just as fast (a refused connection).
                parts = store_isolating(self.writer, result, messages, who="HTTP ingest")
        except StorageError as exc:
            return self._outage(exc, len(messages))
        self.database_down = False
        reply = Reply(
            outcomes=[],
            committed=True,
            commit_s=time.perf_counter() - started,
            failure="data" if any(part.refused is not None for part in parts) else "",
            pings_received=result.pings_received,
            rejected=dict(result.rejected),
            ignored=dict(result.ignored),
        )
        for part in parts:  # what was stored, so that a refused message never reaches the LiveFleet
            b = part.result.batch
            if part.refused is not None:
                letter = part.refused
                reply.outcomes.append(Outcome(422, letter.reason, letter.detail))
                reply.rejected[letter.reason] = reply.rejected.get(letter.reason, 0) + 1
            else:
                reply.outcomes.extend(_outcomes(part.result, part.hi - part.lo))
            reply.units.extend(b.new_units)
            reply.pings.extend(b.pings)
            reply.statuses.extend(b.statuses)
            reply.disconnected.extend(part.result.disconnected)
            reply.telemetry.extend(b.telemetry)
            reply.announcements.extend(d.announcement() for d in b.dead_letters)
        return reply

    def _outage(self, exc: StorageError, n: int) -> Reply:
        if not self.database_down:
            log.warning("HTTP ingest: cannot store (%s); answering 503", exc)
        self.database_down = True
        detail = f"the database is unavailable; retry in {RETRY_AFTER_S} s"
        return Reply(
            outcomes=[Outcome(503, "database_unavailable", detail)] * n,
            failure=OUTAGE,
        )


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
            out.append(OK)  # one object: it pickles once per reply
        prev = end
    return out


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    """Answer batches from ``inp`` on ``out`` until the end of input; the exit code.

    Two stages, as in the MQTT bridge: a thread reads and prepares the next batch
    (decoding, filters: Python) while this one commits the current one (mostly
    waiting for PostgreSQL), so the parent may send a batch before the previous
    one's reply. Replies go out in the order the batches came.
    """
    hello = read_frame(inp)
    if not isinstance(hello, Hello):
        log.error("HTTP ingest worker: expected a Hello frame, got %r", type(hello).__name__)
        return 2
    worker = CommitWorker(hello.settings, hello.conninfo)
    worker.start()
    stage: queue.Queue[Prepared | Reply | None] = queue.Queue(maxsize=1)

    def prepare_all() -> None:
        try:
            while (batch := read_frame(inp)) is not None:
                assert isinstance(batch, Batch)
                try:
                    stage.put(worker.prepare(batch))
                except Exception:
                    log.exception("HTTP ingest batch failed")
                    stage.put(_failed(len(batch.items)))
        finally:
            stage.put(None)  # end of input: the commit stage finishes and returns

    reader = threading.Thread(target=prepare_all, name="prepare", daemon=True)
    reader.start()
    try:
        while (item := stage.get()) is not None:
            if isinstance(item, Prepared):
                try:
                    item = worker.commit(item)
                except Exception:
                    log.exception("HTTP ingest batch failed")
                    item = _failed(len(item.outcomes))
            write_frame(out, item)
    finally:
        worker.close()
    return 0


def _failed(n: int) -> Reply:
    failed = Outcome(500, "internal_error", "ingest failed; see the server log")
    return Reply(outcomes=[failed] * n, failure="internal")


def main() -> None:
    """The worker process: the protocol on stdin/stdout, everything else printed to stderr."""
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    # Ctrl-C reaches the whole process group: the parent decides when to stop (it closes our stdin
    # once what is pending is committed), so a batch is never cut short here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_gc()  # an ingest process: see the bridge's measurement
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt a frame
    sys.exit(serve(sys.stdin.buffer, out))


__all__ = [
    "OK",
    "OUTAGE",
    "RETRY_AFTER_S",
    "Batch",
    "CommitWorker",
    "Hello",
    "HttpMessage",
    "Item",
    "Outcome",
    "Prepared",
    "Reply",
    "encode_frame",
    "read_frame",
    "serve",
    "write_frame",
]
