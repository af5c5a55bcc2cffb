"""The fleet simulator's edge: registers the simulated units and publishes their fixes over MQTT.

The movement model is :mod:`tracker.simulation` (pure); this module turns its
fixes into the wire formats real devices use (OwnTracks ``location`` JSON for
most serenos' phones, DJI Cloud API OSD for aircraft in DJI docks, serenazgo's
native JSON for the rest), publishes them
with QoS 1 through aiomqtt, and keeps the simulated clock in step with the wall
clock.

Timestamps are never in the future (the ingest filters would reject them), so
a speed-up replays the recent past faster: with ``speedup`` S and a catch-up
period D, the simulation starts (S-1)·D seconds ago, runs S times faster than
the wall clock, meets the present after D seconds and then runs in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import orjson
import psycopg

from tracker.config import MqttTarget
from tracker.errors import DuplicateUnitError
from tracker.model import Source, Unit, UnitKind
from tracker.simulation import (
    DRONE_RETURN_AT_PCT,
    PROFILES,
    FleetSimulation,
    SimFix,
    SimStatus,
    SimUnit,
)
from tracker.store.units import create_unit_sync

log = logging.getLogger(__name__)

NATIVE_POSITION_TOPIC = "serenazgo/units/{unit_id}/position"
NATIVE_STATUS_TOPIC = "serenazgo/units/{unit_id}/status"
DEFAULT_CATCH_UP_S = 300.0
TICK_S = 0.25  # how often the publisher wakes up to send what became due
MAX_IN_FLIGHT = 500  # unacknowledged QoS 1 publishes at once


def _iso_ms(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


DJI_OSD_TOPIC = "thing/product/{sn}/osd"
DJI_STATE_TOPIC = "thing/product/{sn}/state"
DJI_STATUS_TOPIC = "sys/product/{sn}/status"
# A docked drone's dock: DJI Dock 2 ("type" 3 in update_topo with "domain" 3), aircraft M3D ("0-91-0").
DJI_DOCK_MODEL = {"domain": "3", "type": 3, "sub_type": 0}
DJI_AIRCRAFT_MODEL = {"domain": "0", "type": 91, "sub_type": 0}
DJI_RETURN_HOME_PCT = 20  # what the simulated aircraft says it needs to get home
SIM_WIND_MPS = 3.0  # a light sea breeze on the Costa Verde


def _dji_envelope(fix: SimFix, gateway: str, data: dict[str, Any]) -> bytes:
    body: dict[str, Any] = {
        "tid": f"sim-{gateway}",
        "bid": f"sim-{gateway}",
        "gateway": gateway,
        "data": data,
    }
    if fix.ts is not None:  # a NO_TIMESTAMP fix: a broken gateway sends no timestamp
        body["timestamp"] = int(fix.ts.timestamp() * 1000)
    return orjson.dumps(body)


def encode_dji(fix: SimFix) -> tuple[str, bytes]:
    """A DJI aircraft's report: its own OSD in the air, its dock's OSD once it sits in the dock.

    Fields and units as in DJI's Cloud API property tables (see :mod:`drones.dji`):
    ``attitude_head`` -180..180, ``wind_speed`` in 0.1 m/s from the aircraft and in
    m/s from the dock, ``timestamp`` in epoch milliseconds. The aircraft's
    ``height`` (ellipsoidal) is sent as the fix's altitude: the simulation has no geoid.
    """
    unit = fix.unit
    dock = unit.dock_id or ""
    sn = unit.external_ids[Source.DJI.value]
    battery = None if fix.battery is None else round(fix.battery)
    if fix.airborne is False:
        home = (fix.home_lat, fix.home_lon)
        dock_osd = {
            "drone_in_dock": 1,
            "drone_charge_state": {"state": 1 if battery is not None and battery < 100 else 0,
                                   "capacity_percent": battery},
            "latitude": home[0],
            "longitude": home[1],
            "wind_speed": SIM_WIND_MPS,
            "rainfall": 0,
            "mode_code": 0,
            "network_state": {"type": 2, "quality": 5, "rate": 640.0},
            "sub_device": {"device_sn": sn, "device_online_status": 0, "device_paired": 1},
        }  # fmt: skip
        return DJI_OSD_TOPIC.format(sn=dock), _dji_envelope(fix, dock, dock_osd)
    drain = PROFILES[UnitKind.DRONE].battery_drain_pct_per_h or 1.0
    heading = fix.heading
    data: dict[str, Any] = {
        "latitude": fix.lat,
        "longitude": fix.lon,
        "elevation": fix.agl,
        "height": fix.alt,
        "attitude_head": None if heading is None else (heading + 180.0) % 360.0 - 180.0,
        "horizontal_speed": fix.speed,
        "vertical_speed": 0.0,
        "wind_speed": round(SIM_WIND_MPS * 10),
        "mode_code": 9 if fix.returning else 5,  # auto return to home / wayline flight
        "height_limit": 120,
        "battery": {
            "capacity_percent": battery,
            "remain_flight_time": None
            if fix.battery is None
            else round(max(fix.battery, 0.0) / drain * 3600),
            "return_home_power": DJI_RETURN_HOME_PCT,
            "landing_power": 10,
        },
        "position_state": {"is_fixed": 2, "quality": 10, "gps_number": 17, "rtk_number": 25},
    }
    return DJI_OSD_TOPIC.format(sn=sn), _dji_envelope(
        fix, dock, {k: v for k, v in data.items() if v is not None}
    )


def dji_announcements(sim: FleetSimulation, ts: datetime) -> list[tuple[str, bytes]]:
    """What each simulated DJI dock and aircraft sends on connecting.

    The dock's ``update_topo`` with its aircraft, the dock's position (a partial
    OSD, as docks split theirs) and the aircraft's state (home point, height
    limit, low-battery thresholds), so the codec knows the topology and the
    home point before the first flight report.
    """
    out = []
    ms = int(ts.timestamp() * 1000)
    for unit in sim.units:
        if unit.source is not Source.DJI or unit.dock_id is None:
            continue
        dock, sn = unit.dock_id, unit.external_ids[Source.DJI.value]
        lat, lon = sim.home_of(unit.unit_id)
        aircraft = {"sn": sn, **DJI_AIRCRAFT_MODEL, "index": "A"}
        messages: list[tuple[str, dict[str, Any], str]] = [
            (DJI_STATUS_TOPIC.format(sn=dock),
             {"method": "update_topo", "data": {**DJI_DOCK_MODEL, "sub_devices": [aircraft]}}, dock),
            (DJI_OSD_TOPIC.format(sn=dock),
             {"data": {"latitude": lat, "longitude": lon, "mode_code": 0, "home_position_is_valid": 1,
                       "network_state": {"type": 2, "quality": 5, "rate": 640.0}}}, dock),
            (DJI_STATE_TOPIC.format(sn=sn),
             {"data": {"home_latitude": lat, "home_longitude": lon, "height_limit": 120,
                       "low_battery_warning_threshold": round(DRONE_RETURN_AT_PCT),
                       "serious_low_battery_warning_threshold": 10}}, dock),
        ]  # fmt: skip
        for topic, body, gateway in messages:
            full = {"tid": f"sim-{dock}", "bid": f"sim-{dock}", "timestamp": ms, "gateway": gateway, **body}
            out.append((topic, orjson.dumps(full)))
    return out


def encode_fix(fix: SimFix) -> tuple[str, bytes]:
    """The topic and payload a real device of this kind would publish for ``fix``.

    OwnTracks phones send integers (acc, alt, cog, batt), speed in km/h and time
    in epoch seconds; native clients send SI floats and ISO-8601 times. A fix
    without a timestamp simply omits the field, as broken clients do.
    """
    unit = fix.unit
    if unit.source is Source.DJI:
        return encode_dji(fix)
    topic = unit.owntracks_topic
    if topic is not None:
        msg: dict[str, Any] = {
            "_type": "location",
            "tid": unit.callsign[-2:],
            "lat": round(fix.lat, 7),
            "lon": round(fix.lon, 7),
            "acc": round(fix.accuracy),
            "conn": "m",
        }
        if fix.ts is not None:
            msg["tst"] = int(fix.ts.timestamp())
        if fix.alt is not None:
            msg["alt"] = round(fix.alt)
        if fix.speed is not None:
            msg["vel"] = round(fix.speed * 3.6)
        if fix.heading is not None:
            msg["cog"] = round(fix.heading) % 360
        if fix.battery is not None:
            msg["batt"] = round(fix.battery)
        return topic, orjson.dumps(msg)
    native: dict[str, Any] = {"lat": round(fix.lat, 7), "lon": round(fix.lon, 7), "accuracy": fix.accuracy}
    if fix.ts is not None:
        native["ts"] = _iso_ms(fix.ts)
    for key in ("alt", "speed", "heading", "battery"):
        value = getattr(fix, key)
        if value is not None:
            native[key] = value
    return NATIVE_POSITION_TOPIC.format(unit_id=unit.unit_id), orjson.dumps(native)


def encode_status(event: SimStatus) -> tuple[str, bytes]:
    """The native status message the dispatch console publishes for ``event``."""
    body = {"status": str(event.status), "ts": _iso_ms(event.ts)}
    return NATIVE_STATUS_TOPIC.format(unit_id=event.unit.unit_id), orjson.dumps(body)


def encode(message: SimFix | SimStatus) -> tuple[str, bytes]:
    """Topic and payload of a fix or a status change."""
    return encode_status(message) if isinstance(message, SimStatus) else encode_fix(message)


def as_unit(sim_unit: SimUnit) -> Unit:
    """The :class:`Unit` to register for a simulated unit."""
    return Unit(
        unit_id=sim_unit.unit_id,
        kind=sim_unit.kind,
        callsign=sim_unit.callsign,
        sector=sim_unit.sector,
        capabilities=sim_unit.capabilities,
        external_ids=dict(sim_unit.external_ids),
    )


def register_units(conninfo: str, units: Iterable[SimUnit]) -> tuple[list[Unit], int]:
    """Insert the simulated units into the database; return (newly created, count already there).

    A unit already registered under the same id (an earlier run) is left as it is.
    """
    created: list[Unit] = []
    existing = 0
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for sim_unit in units:
            unit = as_unit(sim_unit)
            try:
                create_unit_sync(conn, unit)
            except DuplicateUnitError:
                existing += 1
            else:
                created.append(unit)
    return created, existing


@dataclass(slots=True)
class SimClock:
    """Maps the wall clock to the simulation clock (see the module docstring)."""

    speedup: float = 1.0
    catch_up_s: float = DEFAULT_CATCH_UP_S
    wall_start: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if not (self.speedup >= 1.0 and math.isfinite(self.speedup)):
            raise ValueError(f"speedup must be a finite number >= 1, got {self.speedup}")

    @property
    def sim_start(self) -> datetime:
        """When the simulated shift begins."""
        return self.wall_start - timedelta(seconds=(self.speedup - 1.0) * self.catch_up_s)

    def sim_time(self, wall: datetime) -> datetime:
        """The simulation time at wall time ``wall`` (never later than ``wall``)."""
        elapsed = (wall - self.wall_start).total_seconds()
        return min(self.sim_start + timedelta(seconds=self.speedup * elapsed), wall)


@dataclass(slots=True)
class PublishStats:
    """What the publisher has done so far (read by the status line and at shutdown)."""

    sent: int = 0  # fixes acknowledged by the broker
    statuses: int = 0  # status changes acknowledged
    failed: int = 0
    bad: int = 0
    started: float = field(default_factory=time.monotonic)
    sim_now: datetime | None = None
    connected: bool = False
    last_error: str = ""
    _window: list[tuple[float, int]] = field(default_factory=list)

    def rate(self) -> float:
        """Pings acknowledged per second over the last ~10 s."""
        now = time.monotonic()
        self._window.append((now, self.sent))
        while len(self._window) > 2 and now - self._window[0][0] > 10.0:
            self._window.pop(0)
        t0, n0 = self._window[0]
        return (self.sent - n0) / (now - t0) if now > t0 else 0.0


def _tls(target: MqttTarget) -> ssl.SSLContext | None:
    return ssl.create_default_context() if target.tls else None


async def publish_fleet(
    sim: FleetSimulation,
    target: MqttTarget,
    clock: SimClock,
    stats: PublishStats,
    stop: asyncio.Event,
    *,
    duration_s: float | None = None,
    client_id: str = "serenazgo-simulator",
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PublishStats:
    """Publish the fleet's fixes with QoS 1 until ``stop`` is set or ``duration_s`` (wall) has passed.

    Reconnects with jittered exponential backoff when the broker goes away; the
    fixes that fell due meanwhile are published late (with their own times),
    as a phone uploads its buffer.
    """
    deadline = time.monotonic() + duration_s if duration_s is not None else math.inf
    attempt = 0
    pending: list[SimFix | SimStatus] = []
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            async with aiomqtt.Client(
                target.host,
                target.port,
                username=target.username,
                password=target.password,
                identifier=client_id,
                tls_context=_tls(target),
                max_inflight_messages=MAX_IN_FLIGHT,
                timeout=10.0,
            ) as client:
                # Many QoS 1 publishes in flight is the point here, not a warning sign.
                client.pending_calls_threshold = MAX_IN_FLIGHT + 1
                stats.connected = True
                attempt = 0
                # DJI docks announce their aircraft on every (re)connection, as real docks do.
                for topic, payload in dji_announcements(sim, min(sim.now(), now())):
                    await client.publish(topic, payload, qos=1, timeout=30.0)
                while not stop.is_set() and time.monotonic() < deadline:
                    pending.extend(sim.advance_to(clock.sim_time(now())))
                    pending.extend(sim.take_status_events())
                    stats.sim_now = sim.now()
                    if pending:
                        await _publish_all(client, pending, stats)
                        pending = []
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), TICK_S)
        except aiomqtt.MqttError as exc:
            stats.connected = False
            stats.last_error = str(exc)
            attempt += 1
            delay = min(30.0, 0.5 * 1.5 ** min(attempt, 10))
            log.warning(
                "simulator: broker %s:%s unavailable (%s); retrying in %.1f s",
                target.host,
                target.port,
                exc,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    stats.connected = False
    return stats


async def _publish_all(
    client: aiomqtt.Client, messages: list[SimFix | SimStatus], stats: PublishStats
) -> None:
    """Publish ``messages`` concurrently (bounded), counting acknowledgements; raise if the link drops."""
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def one(message: SimFix | SimStatus) -> None:
        topic, payload = encode(message)
        async with gate:
            await client.publish(topic, payload, qos=1, timeout=30.0)
        if isinstance(message, SimStatus):
            stats.statuses += 1
            return
        stats.sent += 1
        if message.bad is not None:
            stats.bad += 1

    results = await asyncio.gather(*(one(m) for m in messages), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        stats.failed += len(errors)
        first = errors[0]
        if isinstance(first, aiomqtt.MqttError):
            raise first
        raise aiomqtt.MqttError(f"publish failed: {first!r}")


def owntracks_share(units: Iterable[SimUnit]) -> float:
    """Share of units publishing through OwnTracks (for the start-up summary)."""
    units = list(units)
    return sum(u.source is Source.OWNTRACKS for u in units) / len(units) if units else 0.0
