"""The MAVLink gateway: a ground station's or autopilot's MAVLink stream in, native MQTT topics out.

``serenazgo mavlink-gateway --listen udp:0.0.0.0:14550`` reads MAVLink 2 (or 1)
frames, decodes them with :mod:`drones.mavlink` and publishes, with QoS 1,
``serenazgo/units/{unit_id}/position`` and ``serenazgo/units/{unit_id}/drone``
(the JSON contracts of :mod:`mqtt_bridge.codecs.native`), so the ingest bridge
has one path for every protocol.

* Links (pymavlink's connection-string spelling): ``udp:HOST:PORT`` (alias
  ``udpin:``) listens for datagrams, as a ground station does for an
  autopilot or a MAVLink router's output; ``udpout:HOST:PORT`` sends a ground
  station heartbeat once a second to HOST:PORT (how ArduPilot SITL and
  mavlink-router learn where to stream) and reads the replies;
  ``tcp:HOST:PORT`` connects to a TCP server such as SITL's port 5760,
  reconnecting when it drops.
* Unit ids: ``--unit SYSID=UNIT`` first, then units registered with the
  external id ``{"mavlink": "<sysid>"}`` (read from the database at start when
  one is configured), else the derived ``mav.<sysid>``.
* Rate: autopilots stream GLOBAL_POSITION_INT at 5-10 Hz; a position is
  published when it is at least ``1/position_hz`` after the last one published
  (2 Hz by default: every 0.5 s of a 10 Hz stream, every 0.6 s of a 5 Hz one),
  drone state likewise at most ``drone_hz`` (1), on the aircraft's clock.
* Time: a payload's ``ts`` is the autopilot's own (SYSTEM_TIME sync); before a
  sync it is left out, so the bridge stamps the receive time and flags it.
* Bad input (garbage, CRC errors, truncated frames, implausible values) is
  counted by reason and logged, never fatal. While the broker is away,
  messages wait in a bounded queue (the oldest are dropped and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiomqtt
import orjson
from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from drones.mavlink import MavlinkDecoder, MavlinkUpdate, SystemState
from tracker.config import MqttTarget
from tracker.errors import ConfigError
from tracker.model import DeviceRef, DroneTelemetry, Ping, Rejection, Source, Unit, is_valid_unit_id

log = logging.getLogger(__name__)

POSITION_TOPIC = "serenazgo/units/{unit_id}/position"
DRONE_TOPIC = "serenazgo/units/{unit_id}/drone"
DEFAULT_LISTEN = "udp:0.0.0.0:14550"
DEFAULT_CLIENT_ID = "serenazgo-mavlink-gateway"
GCS_SYSID = 255  # what ground stations use (QGroundControl, Mission Planner)
GCS_COMPID = 190  # MAV_COMP_ID_MISSIONPLANNER
HEARTBEAT_S = 1.0  # MAVLink's nominal heartbeat rate
TCP_READ = 4096
LOG_FIRST_REJECTIONS = 20  # then one log line per LOG_EVERY of the same reason
LOG_EVERY = 1000

LinkKind = Literal["udpin", "udpout", "tcp"]
_LINK_RE = re.compile(r"^(udp|udpin|udpout|tcp):(\[[0-9A-Fa-f:.]+\]|[^:\s]+):([0-9]{1,5})$")


@dataclass(slots=True, frozen=True)
class LinkSpec:
    """Where the MAVLink stream comes from (see the module docstring)."""

    kind: LinkKind
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.host}:{self.port}"


def parse_link(spec: str) -> LinkSpec:
    """Parse ``udp:HOST:PORT``, ``udpin:``, ``udpout:`` or ``tcp:``; raise :class:`ConfigError` otherwise.

    >>> parse_link("udp:0.0.0.0:14550")
    LinkSpec(kind='udpin', host='0.0.0.0', port=14550)
    """
    match = _LINK_RE.fullmatch(spec.strip())
    if match is None:
        raise ConfigError(
            f"--listen {spec!r}: expected udp:HOST:PORT (listen), udpout:HOST:PORT or tcp:HOST:PORT, "
            "e.g. udp:0.0.0.0:14550"
        )
    scheme, host, port_text = match.groups()
    port = int(port_text)
    if port > 65535:
        raise ConfigError(f"--listen {spec!r}: port {port} is above 65535")
    kind: LinkKind = "udpin" if scheme in ("udp", "udpin") else scheme  # type: ignore[assignment]
    if kind != "udpin" and port == 0:
        raise ConfigError(f"--listen {spec!r}: {scheme} needs the remote port")
    return LinkSpec(kind, host.strip("[]"), port)


def parse_unit_map(items: list[str]) -> dict[int, str]:
    """Parse ``--unit SYSID=UNIT`` options into ``{sysid: unit_id}``; raise :class:`ConfigError` when bad.

    >>> parse_unit_map(["1=dron-3", "2=dron-4"])
    {1: 'dron-3', 2: 'dron-4'}
    """
    out: dict[int, str] = {}
    for item in items:
        sysid_text, sep, unit_id = item.partition("=")
        sysid_text, unit_id = sysid_text.strip(), unit_id.strip()
        if not sep or not sysid_text.isdigit() or not 1 <= int(sysid_text) <= 255:
            raise ConfigError(
                f"--unit {item!r}: expected SYSID=UNIT_ID with SYSID 1-255, e.g. --unit 1=dron-3"
            )
        if not is_valid_unit_id(unit_id):
            raise ConfigError(
                f"--unit {item!r}: {unit_id!r} is not a valid unit id "
                "(letters, digits and _.:- , up to 64 characters)"
            )
        sysid = int(sysid_text)
        if sysid in out and out[sysid] != unit_id:
            raise ConfigError(f"--unit: system {sysid} is given twice ({out[sysid]!r} and {unit_id!r})")
        out[sysid] = unit_id
    return out


def registered_units(units: Iterable[Unit]) -> dict[int, str]:
    """``{sysid: unit_id}`` of registered units that carry a MAVLink external id (a sysid 1-255)."""
    out: dict[int, str] = {}
    for unit in units:
        ext = unit.external_ids.get(Source.MAVLINK.value)
        if ext is not None and ext.isdigit() and 1 <= int(ext) <= 255:
            out[int(ext)] = unit.unit_id
    return out


# --- payloads (the native JSON contracts) ------------------------------------------------------


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def encode_position(ping: Ping, defaulted: bool) -> bytes:
    """The native position JSON of ``ping``; ``ts`` left out when it is only the arrival time."""
    body: dict[str, Any] = {"lat": ping.lat, "lon": ping.lon}
    if not defaulted:
        body["ts"] = _iso(ping.ts)
    for key, value in (
        ("alt", _round(ping.alt, 3)),
        ("speed", _round(ping.speed, 2)),
        ("heading", _round(ping.heading, 2)),
        ("accuracy", _round(ping.accuracy, 3)),
        ("battery", ping.battery),
    ):
        if value is not None:
            body[key] = value
    return orjson.dumps(body)


_DRONE_FIELDS = (
    "alt_takeoff_m", "alt_msl_m", "alt_ellipsoid_m", "vertical_speed_mps", "battery_pct",
    "remaining_flight_s", "return_home_pct", "flight_mode", "mode_code", "gps_fix", "satellites",
    "wind_speed_mps", "height_limit_m", "docked", "dock_id",
)  # fmt: skip


def encode_drone(t: DroneTelemetry, defaulted: bool) -> bytes:
    """The native drone JSON of ``t`` (DroneTelemetry's own field names, ``home: {lat, lon}``)."""
    body: dict[str, Any] = {}
    if not defaulted:
        body["ts"] = _iso(t.ts)
    for key in _DRONE_FIELDS:
        value = getattr(t, key)
        if value is not None:
            body[key] = value
    if t.home_lat is not None and t.home_lon is not None:
        body["home"] = {"lat": t.home_lat, "lon": t.home_lon}
    return orjson.dumps(body)


# --- what to publish, and when (pure) ----------------------------------------------------------


def _due(last: datetime | None, ts: datetime, period_s: float) -> bool:
    """True when ``ts`` is at least a period after ``last``, or the clock went back (a reboot)."""
    if last is None or ts < last:
        return True
    return (ts - last).total_seconds() >= period_s


@dataclass(slots=True)
class _Published:
    position_ts: datetime | None = None  # time of the last position published
    drone_ts: datetime | None = None


class PublishPlan:
    """Turns decoder updates into the messages to publish, rate-limited per system.

    The rate is measured on the messages' own times (the autopilot's clock once
    synced, else their arrival), not on when the gateway happens to read them:
    a burst that was held up in a radio link or a router still comes out evenly
    sampled, and the result does not depend on how fast the gateway runs.
    """

    def __init__(self, units: dict[int, str], position_hz: float = 2.0, drone_hz: float = 1.0) -> None:
        if not (position_hz > 0 and drone_hz > 0):
            raise ConfigError("publishing rates must be above 0 Hz")
        self.units = dict(units)
        self.position_period = 1.0 / position_hz
        self.drone_period = 1.0 / drone_hz
        self._published: dict[int, _Published] = {}

    def unit_id(self, sysid: int) -> str:
        """The unit a system publishes as: ``--unit``, a registered external id, else ``mav.<sysid>``."""
        unit_id = self.units.get(sysid)
        if unit_id is None:
            unit_id = DeviceRef(Source.MAVLINK, str(sysid)).derived_unit_id()
            self.units[sysid] = unit_id
        return unit_id

    def messages(self, update: MavlinkUpdate, state: SystemState) -> list[tuple[str, bytes]]:
        """Topic and payload of what ``update`` makes due (maybe nothing)."""
        last = self._published.get(update.sysid)
        if last is None:
            last = self._published[update.sysid] = _Published()
        out: list[tuple[str, bytes]] = []
        unit_id = self.unit_id(update.sysid)
        if update.msg_type == "GLOBAL_POSITION_INT":
            ping = state.ping()
            when = state.position_ts()
            # _due is also true for an equal time: a repeated message must not publish twice.
            if (
                ping is not None
                and when is not None
                and ping.ts != last.position_ts
                and _due(last.position_ts, ping.ts, self.position_period)
            ):
                last.position_ts = ping.ts
                out.append((POSITION_TOPIC.format(unit_id=unit_id), encode_position(ping, when[1])))
        ts, defaulted = state.telemetry_ts()
        if ts != last.drone_ts and _due(last.drone_ts, ts, self.drone_period):
            t = state.telemetry()
            # A SYSTEM_TIME alone says nothing about the drone: no row of nulls.
            if t.home_lat is not None or any(getattr(t, key) is not None for key in _DRONE_FIELDS):
                last.drone_ts = ts
                out.append((DRONE_TOPIC.format(unit_id=unit_id), encode_drone(t, defaulted)))
        return out


# --- the running gateway -----------------------------------------------------------------------


@dataclass(slots=True)
class GatewayStats:
    """What the gateway has done so far (read by the status line and at shutdown)."""

    datagrams: int = 0  # UDP datagrams or TCP reads
    bytes: int = 0
    updates: int = 0  # accepted messages that changed a system's state
    rejected: Counter[str] = field(default_factory=Counter)
    positions: int = 0  # position messages acknowledged by the broker
    drone: int = 0  # drone-state messages acknowledged
    dropped: int = 0  # queued messages dropped while the broker was away
    connected: bool = False  # to the broker
    link_up: bool = False  # the MAVLink socket is open (TCP: connected)
    listening: str = ""  # the bound address (udp: the actual port when 0 was asked)
    last_error: str = ""
    systems: dict[int, SystemState] = field(default_factory=dict)
    units: dict[int, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        """One line for logs and the end of a run."""
        rejected = sum(self.rejected.values())
        reasons = ", ".join(f"{r} {n}" for r, n in self.rejected.most_common(3))
        return (
            f"{len(self.systems)} aircraft, {self.updates} messages used, {self.positions} positions and "
            f"{self.drone} drone states published, {rejected} rejected" + (f" ({reasons})" if reasons else "")
            + (f", {self.dropped} dropped" if self.dropped else "")
        )  # fmt: skip


@dataclass(slots=True)
class GatewayOptions:
    """How the gateway runs (the CLI's options)."""

    link: LinkSpec
    units: dict[int, str] = field(default_factory=dict)
    position_hz: float = 2.0
    drone_hz: float = 1.0
    client_id: str = DEFAULT_CLIENT_ID
    queue_max: int = 10_000


class Gateway:
    """Decoder, rate plan and outgoing queue; the socket side calls :meth:`on_bytes`."""

    def __init__(self, options: GatewayOptions, stats: GatewayStats | None = None) -> None:
        self.options = options
        self.stats = stats or GatewayStats()
        self.decoder = MavlinkDecoder()
        self.plan = PublishPlan(options.units, options.position_hz, options.drone_hz)
        self.stats.systems = self.decoder.systems
        self.stats.units = self.plan.units
        self.stats.rejected = self.decoder.rejected
        self.queue: deque[tuple[str, bytes]] = deque()
        self.ready = asyncio.Event()  # something to publish

    def on_bytes(self, data: bytes, peer: Hashable, datagram: bool) -> None:
        """Decode what arrived from ``peer`` and queue what falls due; never raises."""
        self.stats.datagrams += 1
        self.stats.bytes += len(data)
        received_at = datetime.now(UTC)
        for result in self.decoder.feed(data, received_at, stream=peer, datagram=datagram):
            if isinstance(result, Rejection):
                count = self.decoder.rejected[result.reason]
                if count <= LOG_FIRST_REJECTIONS or count % LOG_EVERY == 0:
                    log.warning(
                        "mavlink: rejected from %s (%s #%d): %s", peer, result.reason, count, result.detail
                    )
                continue
            self.stats.updates += 1
            state = self.decoder.systems[result.sysid]
            for message in self.plan.messages(result, state):
                self._enqueue(message)

    def _enqueue(self, message: tuple[str, bytes]) -> None:
        if len(self.queue) >= self.options.queue_max:
            self.queue.popleft()  # real-time telemetry: the newest matters most
            self.stats.dropped += 1
        self.queue.append(message)
        self.ready.set()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.gateway.on_bytes(data, addr[:2], datagram=True)

    def error_received(self, exc: Exception) -> None:
        # ICMP "port unreachable" after a udpout heartbeat: the aircraft is not there yet.
        self.gateway.stats.last_error = f"udp: {exc}"


def _gcs_heartbeat() -> bytes:
    mav = mavlink2.MAVLink(None, srcSystem=GCS_SYSID, srcComponent=GCS_COMPID)
    # MAV_TYPE_GCS, MAV_AUTOPILOT_INVALID, no mode, MAV_STATE_ACTIVE
    return bytes(mav.heartbeat_encode(6, 8, 0, 0, 4).pack(mav))


async def _run_udp(gateway: Gateway, stop: asyncio.Event) -> None:
    link = gateway.options.link
    loop = asyncio.get_running_loop()
    if link.kind == "udpin":
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(gateway), local_addr=(link.host, link.port)
        )
    else:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(gateway), remote_addr=(link.host, link.port)
        )
    sockname = transport.get_extra_info("sockname")
    gateway.stats.listening = f"udp:{sockname[0]}:{sockname[1]}"
    gateway.stats.link_up = True
    try:
        if link.kind == "udpout":
            heartbeat = _gcs_heartbeat()
            while not stop.is_set():
                transport.sendto(heartbeat)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), HEARTBEAT_S)
        else:
            await stop.wait()
    finally:
        transport.close()
        gateway.stats.link_up = False


async def _run_tcp(gateway: Gateway, stop: asyncio.Event) -> None:
    link = gateway.options.link
    attempt = 0
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(link.host, link.port)
        except OSError as exc:
            gateway.stats.last_error = f"tcp {link.host}:{link.port}: {exc}"
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(10.0, 0.5 * 1.5 ** min(attempt, 10)))
            continue
        attempt = 0
        gateway.stats.link_up = True
        gateway.stats.listening = f"tcp:{link.host}:{link.port}"
        peer = ("tcp", link.host, link.port, time.monotonic())  # a fresh parser per connection
        try:
            while not stop.is_set():
                read = asyncio.ensure_future(reader.read(TCP_READ))
                stopping = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({read, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if read not in done:
                    read.cancel()
                    break
                data = read.result()
                if not data:
                    gateway.stats.last_error = "tcp: the remote end closed the connection"
                    break
                gateway.on_bytes(data, peer, datagram=False)
        except OSError as exc:
            gateway.stats.last_error = f"tcp: {exc}"
        finally:
            gateway.stats.link_up = False
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _until_disconnected(client: aiomqtt.Client) -> None:
    async for _ in client.messages:
        pass


async def _publish_connected(
    gateway: Gateway, client: aiomqtt.Client, stop: asyncio.Event, lost: asyncio.Future[None]
) -> None:
    """Publish the queue on one connection until ``stop`` finds it empty; raise MqttError if it drops."""
    stats = gateway.stats
    queue = gateway.queue
    while True:
        if lost.done():
            lost.result()  # raises the MqttError of the dropped connection
        if not queue:
            if stop.is_set():
                return
            gateway.ready.clear()
            waiter = asyncio.ensure_future(gateway.ready.wait())
            stopping = asyncio.ensure_future(stop.wait())
            pending: set[asyncio.Future[Any]] = {waiter, stopping, lost}
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopping.cancel()
            continue
        topic, payload = queue[0]
        await client.publish(topic, payload, qos=1, timeout=10.0)
        queue.popleft()  # only once the broker has acknowledged it
        if topic.endswith("/position"):
            stats.positions += 1
        else:
            stats.drone += 1


async def _publish_loop(
    gateway: Gateway, target: MqttTarget, stop: asyncio.Event, max_backoff_s: float
) -> None:
    """Publish the queue with QoS 1, reconnecting with backoff, until ``stop`` finds it empty."""
    stats = gateway.stats
    attempt = 0
    tls = ssl.create_default_context() if target.tls else None
    while not (stop.is_set() and not gateway.queue):
        try:
            async with aiomqtt.Client(
                target.host,
                target.port,
                username=target.username,
                password=target.password,
                identifier=gateway.options.client_id,
                tls_context=tls,
                timeout=10.0,
            ) as client:
                stats.connected = True
                attempt = 0
                # Nothing is subscribed, so the message iterator only ever ends by raising
                # MqttError when the connection drops: an idle gateway notices at once.
                lost = asyncio.ensure_future(_until_disconnected(client))
                try:
                    await _publish_connected(gateway, client, stop, lost)
                finally:
                    lost.cancel()
        except aiomqtt.MqttError as exc:
            stats.connected = False
            stats.last_error = f"broker: {exc}"
            attempt += 1
            delay = min(max_backoff_s, 0.5 * 1.5 ** min(attempt, 10))
            log.warning("mavlink gateway: broker %s:%s unavailable (%s); retrying in %.1f s",
                        target.host, target.port, exc, delay)  # fmt: skip
            if stop.is_set():
                # Draining: keep the backoff (run_gateway ends the drain after drain_s).
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            stats.connected = False


async def run_gateway(
    options: GatewayOptions,
    target: MqttTarget,
    stop: asyncio.Event,
    stats: GatewayStats | None = None,
    *,
    drain_s: float = 3.0,
    max_backoff_s: float = 30.0,
) -> GatewayStats:
    """Run the gateway until ``stop`` is set; then publish what is queued (for up to ``drain_s``).

    Raises :class:`OSError` only when the UDP address cannot be bound (a port in use).
    """
    gateway = Gateway(options, stats)
    link_runner: Callable[[Gateway, asyncio.Event], Any] = (
        _run_tcp if options.link.kind == "tcp" else _run_udp
    )
    link_stop = asyncio.Event()
    link_task = asyncio.ensure_future(link_runner(gateway, link_stop))
    publish_task = asyncio.ensure_future(_publish_loop(gateway, target, stop, max_backoff_s))
    try:
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({stopping, link_task}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if link_task.done() and not stop.is_set():
            stop.set()
            link_task.result()  # the link failed to start (e.g. the port is taken): say why
    finally:
        link_stop.set()
        with contextlib.suppress(Exception):
            await link_task
        stop.set()
        # What is queued goes out if the broker takes it within drain_s; the rest is reported.
        await asyncio.wait({publish_task}, timeout=drain_s)
        if not publish_task.done():
            publish_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publish_task
        if gateway.queue:
            gateway.stats.dropped += len(gateway.queue)
            log.warning("mavlink gateway: %d messages not delivered at stop", len(gateway.queue))
    log.info("mavlink gateway stopped: %s", gateway.stats.summary())
    return gateway.stats


__all__ = [
    "DEFAULT_LISTEN",
    "Gateway",
    "GatewayOptions",
    "GatewayStats",
    "LinkSpec",
    "PublishPlan",
    "encode_drone",
    "encode_position",
    "parse_link",
    "parse_unit_map",
    "registered_units",
    "run_gateway",
]
