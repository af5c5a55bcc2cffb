"""The live feed hub behind ``/api/v1/ws``: fleet changes, incidents and events fanned out to consoles.

Threads and loops: the hub lives on the API's event loop. Ingest calls it on the
bridge's writer thread (through :meth:`LiveFleet.subscribe`) and domain services
call it as a :data:`tracker.feed.FeedListener` from any thread. Those callers
only append to a pending list under a lock and, when no hand-over is scheduled
yet, schedule one with ``loop.call_soon_threadsafe``: a burst of 5,000 pings (or
of many batches) before the loop runs is one hand-over, and the writer never
waits for a console. On the loop, :meth:`LiveFeedHub._drain` coalesces the
pending fleet changes (one message per unit and change kind, carrying the
unit's newest state), encodes each message once and appends the encoded frames
to every client's bounded queue.

Slow consumers: a client whose queue would overflow is dropped at once (its
queue is freed and its socket closed with code 1013 and a reason), so it never
holds memory, the loop, ingest or the other clients back. A console reconnects
and starts again from a fresh snapshot.

Freshness: a unit's freshness changes with time, without any ping. The hub
does not send periodic freshness messages; the snapshot carries the per-kind
thresholds (``freshness_thresholds``) and the server time, every unit payload
carries its ``fix_time``, and every keepalive carries the server time again, so
a console computes each unit's freshness itself from the fix age (correcting
its own clock by the server time) and re-evaluates it every few seconds. That
costs the server nothing per unit and stays right between messages.

Messages (``{"type": ..., "data": ...}``, types of :data:`tracker.feed.FEED_TYPES`):

- ``snapshot``: ``{"units": <FeatureCollection of live features>, "incidents": [...],
  "freshness_thresholds": {kind: {"stale_after_s", "lost_after_s"}}, "server_time",
  "keepalive_s"}``, first on every connection;
- ``position``, ``status``, ``unit``, ``connection``: one unit's live feature
  (:func:`api.formats.live_feature`);
- ``incident``, ``event``: the payload the service handed over (its REST shape);
- ``keepalive``: ``{"server_time", "clients"}`` every ``keepalive_s`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from api.formats import live_collection, live_feature
from tracker.feed import FEED_TYPES
from tracker.fleet import FleetChange, LiveFleet, UnitState
from tracker.freshness import DEFAULT_THRESHOLDS, FreshnessThresholds, classify_freshness
from tracker.model import Freshness, UnitKind
from tracker.track_formats import iso_z

log = logging.getLogger(__name__)

DEFAULT_KEEPALIVE_S = 15.0
# Frames a client may have waiting. A drain carries at most one frame per unit and change
# kind, so this holds a few full-fleet bursts of a metropolis before a console is dropped.
DEFAULT_QUEUE_SIZE = 20_000
CLOSE_TIMEOUT_S = 2.0  # a stalled peer may never take the close frame: give up on it after this

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_GOING_AWAY = 1001  # the server stops
CLOSE_TRY_AGAIN_LATER = 1013  # dropped as too slow: reconnect and take a fresh snapshot
CLOSE_INTERNAL_ERROR = 1011
CLOSE_POLICY_VIOLATION = 1008  # no (longer a) valid session: log in, then reconnect

OpenIncidents = Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]

# Messages services may send through the listener (the rest are the hub's own).
_SERVICE_TYPES = frozenset(FEED_TYPES) - {"snapshot", "keepalive"}


class FeedSocket(Protocol):
    """The part of a WebSocket the hub uses (Starlette's :class:`WebSocket` has it)."""

    async def send_text(self, data: str) -> None:
        """Send one text frame."""

    async def receive(self) -> Mapping[str, Any]:
        """Wait for the next ASGI message from the client (``websocket.disconnect`` at the end)."""

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the connection with ``code`` and ``reason``."""


def _dumps(message: dict[str, Any]) -> str:
    # Services hand over their REST shapes: datetimes are fine for orjson, anything else becomes text.
    return orjson.dumps(message, default=str).decode()


class FeedClient:
    """One connected console: a bounded queue of encoded frames, filled by the hub, emptied by its socket."""

    __slots__ = ("close_code", "close_reason", "closed", "done", "max_queue", "name", "queue", "sent", "wake")

    def __init__(self, name: str, max_queue: int) -> None:
        self.name = name
        self.max_queue = max_queue
        self.queue: deque[str] = deque()
        self.wake = asyncio.Event()
        self.done = asyncio.Event()  # set when closed: wakes a socket task stuck sending to a stalled peer
        self.closed = False
        self.close_code = 1000
        self.close_reason = ""
        self.sent = 0

    def offer(self, frames: Sequence[str]) -> bool:
        """Queue ``frames``; False (and nothing queued) when they do not fit."""
        if len(self.queue) + len(frames) > self.max_queue:
            return False
        self.queue.extend(frames)
        self.wake.set()
        return True

    def end(self, code: int, reason: str) -> None:
        """Mark the client closed (its socket task closes the connection) and free its queue."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self.close_reason = reason
        self.queue.clear()
        self.wake.set()
        self.done.set()

    async def next_frames(self) -> list[str] | None:
        """Wait for queued frames and take them all; None once the client is closed."""
        while not self.queue and not self.closed:
            self.wake.clear()
            await self.wake.wait()
        if self.closed:
            return None
        frames = list(self.queue)
        self.queue.clear()
        return frames


@dataclass(slots=True)
class HubStats:
    """Counters of the hub (for tests, /metrics and the logs)."""

    clients: int = 0
    connected: int = 0  # connections accepted since start
    dropped: int = 0  # clients dropped because their queue was full
    handovers: int = 0  # times the loop took over what other threads handed in
    fleet_changes: int = 0  # fleet changes received (before coalescing)
    messages: int = 0  # messages encoded (after coalescing)


class LiveFeedHub:
    """Fan-out of fleet changes, incidents and events to WebSocket clients; a :data:`FeedListener`.

    ``thresholds``: the freshness thresholds per kind, the same as the fleet's
    (``settings.freshness``); the hub classifies with them and sends them to consoles.

    Wiring: build it with the LiveFleet, call :meth:`start` on the API's event
    loop (it binds to the running loop, subscribes to the fleet and starts the
    keepalive), pass the hub itself as the ``FeedListener`` of the incident and
    event services, and ``await stop()`` on the same loop before the API stops.
    """

    def __init__(
        self,
        fleet: LiveFleet,
        *,
        thresholds: Mapping[UnitKind, FreshnessThresholds] | None = None,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        open_incidents: OpenIncidents | None = None,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
    ) -> None:
        if keepalive_s <= 0:
            raise ValueError(f"keepalive_s must be positive, got {keepalive_s}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.fleet = fleet
        self.thresholds = dict(thresholds or DEFAULT_THRESHOLDS)
        self.keepalive_s = keepalive_s
        self.queue_size = queue_size
        self.open_incidents = open_incidents
        self.close_timeout_s = close_timeout_s
        self.stats = HubStats()
        self._lock = threading.Lock()
        # Fleet batches (the fleet's own lists, never copied) and service messages, in arrival order.
        self._pending: list[list[FleetChange] | tuple[str, dict[str, Any]]] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: list[FeedClient] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._serial = 0

    # ----- life cycle -------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._loop is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the hub runs on (None until started)."""
        return self._loop

    def start(self) -> None:
        """Bind to the running event loop, subscribe to the fleet, start the keepalive (idempotent)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self.fleet.subscribe(self._on_fleet)
        self._keepalive_task = self._loop.create_task(self._keepalive(), name="feed-keepalive")

    async def stop(self) -> None:
        """Unsubscribe, stop the keepalive and close every client with 1001 (going away)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        task, self._keepalive_task = self._keepalive_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in list(self._clients):
            client.end(CLOSE_GOING_AWAY, "server shutting down")
        self._clients.clear()
        self.stats.clients = 0
        with self._lock:
            self._pending.clear()
            self._loop = None
        # Let the socket tasks see their clients closed and send their close frames.
        await asyncio.sleep(0)

    # ----- input from other threads -------------------------------------------------------

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        """FeedListener: queue a service message (``incident``, ``event``...) for every client."""
        if kind not in _SERVICE_TYPES:
            log.warning("live feed: message type %r is not a feed type; dropped", kind)
            return
        self._hand_over((kind, payload))

    def _on_fleet(self, changes: list[FleetChange]) -> None:
        """LiveFleet subscriber (writer thread): hand the batch over, do nothing else here."""
        self._hand_over(changes)

    def _hand_over(self, item: list[FleetChange] | tuple[str, dict[str, Any]]) -> None:
        if not self._clients:
            return  # nobody listens; a console that connects takes a snapshot of the fleet
        with self._lock:
            loop = self._loop
            if loop is None:
                return
            self._pending.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            # The loop is closed (the API stopped without stop()): forget what was pending.
            with self._lock:
                self._pending.clear()
                self._scheduled = False

    # ----- on the loop ----------------------------------------------------------------------

    def _drain(self) -> None:
        """Take everything handed over, coalesce it, encode each message once, fan it out."""
        with self._lock:
            items, self._pending = self._pending, []
            self._scheduled = False
        if not items:
            return
        self.stats.handovers += 1
        if not self._clients:
            return
        now = datetime.now(UTC)
        frames: list[str] = []
        group: list[list[FleetChange]] = []
        for item in items:
            if isinstance(item, list):
                group.append(item)
                continue
            if group:
                frames.extend(self._fleet_frames(group, now))
                group = []
            kind, payload = item
            frames.append(_dumps({"type": kind, "data": payload}))
        if group:
            frames.extend(self._fleet_frames(group, now))
        self.stats.messages += len(frames)
        self._broadcast(frames)

    def _fleet_frames(self, batches: list[list[FleetChange]], now: datetime) -> list[str]:
        """One frame per unit and change kind, each with the unit's newest state in these batches."""
        latest: dict[str, UnitState] = {}
        kinds: dict[str, list[str]] = {}
        n = 0
        for changes in batches:
            n += len(changes)
            for change in changes:
                uid = change.unit_id
                latest[uid] = change.state
                seen = kinds.get(uid)
                if seen is None:
                    kinds[uid] = [change.kind]
                elif change.kind not in seen:
                    seen.append(change.kind)
        self.stats.fleet_changes += n
        frames: list[str] = []
        freshness = self.freshness
        for uid, state in latest.items():
            feature = live_feature(state, freshness(state, now), now)
            for kind in kinds[uid]:
                frames.append(_dumps({"type": kind, "data": feature}))
        return frames

    def _broadcast(self, frames: Sequence[str]) -> None:
        if not frames:
            return
        full: list[FeedClient] = []
        for client in self._clients:
            if not client.offer(frames):
                full.append(client)
        for client in full:
            self._drop(client)

    def _drop(self, client: FeedClient) -> None:
        waiting = len(client.queue)
        self._remove(client)
        self.stats.dropped += 1
        client.end(
            CLOSE_TRY_AGAIN_LATER,
            f"too slow: {waiting} messages waiting (limit {client.max_queue}); reconnect",
        )
        log.warning("live feed: dropped %s (%d messages waiting)", client.name, waiting)

    def _remove(self, client: FeedClient) -> None:
        if client in self._clients:
            self._clients.remove(client)
            self.stats.clients = len(self._clients)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            data = {"server_time": iso_z(datetime.now(UTC)), "clients": len(self._clients)}
            self._broadcast([_dumps({"type": "keepalive", "data": data})])

    # ----- clients ------------------------------------------------------------------------------

    def freshness(self, state: UnitState, now: datetime) -> Freshness:
        """A unit's freshness by the hub's thresholds: the ones the console is sent, so both agree."""
        if state.fix is None:
            return Freshness.LOST
        return classify_freshness((now - state.fix.ts).total_seconds(), state.unit.kind, self.thresholds)

    def thresholds_json(self) -> dict[str, dict[str, float]]:
        """The freshness thresholds per kind, as the snapshot sends them."""
        return {
            str(kind): {"stale_after_s": t.stale_after_s, "lost_after_s": t.lost_after_s}
            for kind, t in self.thresholds.items()
        }

    def fleet_collection(self, now: datetime) -> dict[str, Any]:
        """Every unit's live feature (the ``units`` part of a snapshot)."""
        freshness = self.freshness
        features = [live_feature(s, freshness(s, now), now) for s in self.fleet.snapshot()]
        return live_collection(features, now)

    def connect(self, name: str = "", queue_size: int | None = None) -> tuple[FeedClient, dict[str, Any]]:
        """Register a client and take the fleet part of its snapshot (on the loop, no await between).

        What was handed over before is drained first (to the other clients), so
        this client's queue only holds changes applied after the draining: the
        ones the snapshot already shows arrive again, harmlessly, and none is lost.
        """
        self.start()
        if self._loop is not asyncio.get_running_loop():
            # Its queues' events belong to one loop: the runtime must start the hub on the API's loop.
            raise RuntimeError("the live feed hub was started on another event loop than the API's")
        self._drain()
        self._serial += 1
        client = FeedClient(name or f"client-{self._serial}", queue_size or self.queue_size)
        # Registered before the snapshot is taken: the writer skips the hand-over while nobody
        # listens, so a change applied after the snapshot must already find this client.
        self._clients.append(client)
        self.stats.clients = len(self._clients)
        self.stats.connected += 1
        units = self.fleet_collection(datetime.now(UTC))
        return client, units

    def disconnect(self, client: FeedClient) -> None:
        """Forget ``client`` (its connection ended)."""
        self._remove(client)
        client.end(1000, "")

    async def snapshot_message(
        self, units: dict[str, Any], open_incidents: OpenIncidents | None = None
    ) -> str:
        """The encoded ``snapshot`` message around ``units``, with the open incidents."""
        incidents: list[Mapping[str, Any]] = []
        source = self.open_incidents or open_incidents
        if source is not None:
            try:
                incidents = list(await source())
            except Exception:
                # The map without incidents beats no map: the console still gets every unit.
                log.exception("live feed: open incidents unavailable for the snapshot")
        data = {
            "units": units,
            "incidents": incidents,
            "freshness_thresholds": self.thresholds_json(),
            "server_time": units.get("generated_at") or iso_z(datetime.now(UTC)),
            "keepalive_s": self.keepalive_s,
        }
        return _dumps({"type": "snapshot", "data": data})

    async def serve(
        self,
        socket: FeedSocket,
        name: str = "",
        open_incidents: OpenIncidents | None = None,
        still_allowed: Callable[[], Awaitable[bool]] | None = None,
        recheck_s: float = 5.0,
    ) -> None:
        """Run one accepted WebSocket: snapshot, then queued messages until it goes or is dropped.

        ``open_incidents``: where the snapshot's incidents come from when the hub was built without.
        ``still_allowed``: asked every ``recheck_s``; False ends the feed with 1008 (the session
        was revoked or expired, or the user disabled: the console asks to log in again).
        """
        client, units = self.connect(name)
        try:
            await socket.send_text(await self.snapshot_message(units, open_incidents))
            client.sent += 1
            pump = asyncio.create_task(self._pump(socket, client), name=f"feed-send-{client.name}")
            reader = asyncio.create_task(self._read_until_closed(socket), name=f"feed-recv-{client.name}")
            ended = asyncio.create_task(client.done.wait(), name=f"feed-end-{client.name}")
            tasks: tuple[asyncio.Task[Any], ...] = (pump, reader, ended)
            if still_allowed is not None:
                guard = self._guard(client, still_allowed, recheck_s)
                tasks += (asyncio.create_task(guard, name=f"feed-auth-{client.name}"),)
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            if client.closed:
                # Dropped or shutting down: say why (a stalled peer gets close_timeout_s to take it).
                closing = socket.close(client.close_code, client.close_reason)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(closing, self.close_timeout_s)
        finally:
            self.disconnect(client)

    @staticmethod
    async def _guard(
        client: FeedClient, still_allowed: Callable[[], Awaitable[bool]], every_s: float
    ) -> None:
        while not client.closed:
            await asyncio.sleep(every_s)
            if not await still_allowed():
                client.end(CLOSE_POLICY_VIOLATION, "the session has ended: log in again")
                return

    async def _pump(self, socket: FeedSocket, client: FeedClient) -> None:
        while True:
            frames = await client.next_frames()
            if frames is None:
                return
            for frame in frames:
                await socket.send_text(frame)
            client.sent += len(frames)

    @staticmethod
    async def _read_until_closed(socket: FeedSocket) -> None:
        # Consoles send nothing the hub needs; reading notices a closed connection at once.
        while True:
            message = await socket.receive()
            if message.get("type") == "websocket.disconnect":
                return
