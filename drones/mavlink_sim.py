"""A simulated MAVLink 2 aircraft (ArduCopter-like) patrolling from its home, for the demo and tests.

:class:`SimAircraft` is pure (no clock, no socket): :meth:`SimAircraft.step`
advances it by a time step and returns the MAVLink 2 frames an autopilot would
stream in that step, packed by pymavlink's encoder. The cycle: on the ground
(disarmed, standby) until charged, take off in AUTO to the patrol height, fly
the patrol loop, return (RTL) when the battery reaches the reserve, land
(LAND), swap the battery, again. It streams what ArduPilot streams by default
on a telemetry link: GLOBAL_POSITION_INT at 5 Hz; HEARTBEAT, SYSTEM_TIME,
SYS_STATUS, BATTERY_STATUS and GPS_RAW_INT at 1 Hz; HOME_POSITION every 10 s.

:func:`stream_to` sends one datagram per step to a gateway in real time
(``serenazgo mavlink-sim --to udp:127.0.0.1:14550``); :func:`fly_through_gateway`
runs a gateway of its own on a free local port and streams into it, which is
how the demo flies one aircraft over MAVLink (UDP → gateway → MQTT → bridge).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from drones.mavlink_gateway import GatewayOptions, GatewayStats, LinkSpec, run_gateway
from geo.local_frame import LocalFrame
from tracker.config import MqttTarget
from tracker.simulation import GROUND_ALT_M

# Home: a dock by Parque Kennedy, Miraflores; the patrol loop (metres east, north of home) runs
# along the malecón and back through the centre of the district, inside its boundary.
DEFAULT_HOME = (-12.1211, -77.0297)  # lat, lon
DEFAULT_PATROL_M: tuple[tuple[float, float], ...] = (
    (-450.0, -250.0),
    (-900.0, -650.0),
    (-300.0, -1000.0),
    (500.0, -600.0),
    (600.0, 100.0),
    (0.0, 350.0),
)

STEP_S = 0.2  # GLOBAL_POSITION_INT at 5 Hz
COPTER_AUTO, COPTER_RTL, COPTER_LAND = 3, 6, 9  # ArduCopter custom_mode numbers
ARMED, CUSTOM = 128, 1  # MAV_MODE_FLAG_SAFETY_ARMED, MAV_MODE_FLAG_CUSTOM_MODE_ENABLED
MAV_STATE_STANDBY, MAV_STATE_ACTIVE = 3, 4
MAV_TYPE_QUADROTOR, MAV_AUTOPILOT_ARDUPILOTMEGA = 2, 3


@dataclass(slots=True)
class SimConfig:
    """One simulated aircraft: where it lives, how it flies, how long its battery lasts."""

    sysid: int = 1
    home_lat: float = DEFAULT_HOME[0]
    home_lon: float = DEFAULT_HOME[1]
    home_alt_msl_m: float = GROUND_ALT_M
    patrol_m: tuple[tuple[float, float], ...] = DEFAULT_PATROL_M
    height_m: float = 60.0  # patrol height above home
    speed_mps: float = 12.0
    climb_mps: float = 3.0
    descent_mps: float = 1.5
    endurance_s: float = 20 * 60.0  # full battery to empty while armed
    reserve_pct: float = 30.0  # return home at this charge
    ground_s: float = 20.0  # on the dock between flights (battery swap)


@dataclass(slots=True)
class SimAircraft:
    """The aircraft's state; :meth:`step` moves it and returns the frames it sends."""

    config: SimConfig
    boot_wall: datetime  # the autopilot's boot instant (UTC): its SYSTEM_TIME reference
    t: float = 0.0  # seconds since boot
    phase: str = "on_ground"  # on_ground | takeoff | mission | rtl | land
    east: float = 0.0
    north: float = 0.0
    up: float = 0.0  # metres above home
    v_east: float = 0.0
    v_north: float = 0.0
    v_up: float = 0.0
    heading: float = 0.0
    battery: float = 100.0
    waypoint: int = 0
    ground_until: float = 5.0
    _ticks: int = 0
    _frame: LocalFrame = field(init=False)
    _mav: mavlink2.MAVLink = field(init=False)

    def __post_init__(self) -> None:
        self._frame = LocalFrame(self.config.home_lon, self.config.home_lat)
        self._mav = mavlink2.MAVLink(None, srcSystem=self.config.sysid, srcComponent=1)

    @property
    def drain_per_s(self) -> float:
        """Battery percent used per second while armed."""
        return 100.0 / self.config.endurance_s

    def _fly_to(self, east: float, north: float, dt: float) -> bool:
        """Move horizontally towards a point at cruise speed; True on arrival."""
        de, dn = east - self.east, north - self.north
        dist = math.hypot(de, dn)
        step = self.config.speed_mps * dt
        if dist <= step:
            self.east, self.north = east, north
            self.v_east = self.v_north = 0.0
            return True
        self.v_east, self.v_north = de / dist * self.config.speed_mps, dn / dist * self.config.speed_mps
        self.east += self.v_east * dt
        self.north += self.v_north * dt
        self.heading = math.degrees(math.atan2(de, dn)) % 360.0
        return False

    def _advance(self, dt: float) -> None:
        cfg = self.config
        self.t += dt
        self.v_up = 0.0
        if self.phase != "on_ground":
            self.battery = max(0.0, self.battery - self.drain_per_s * dt)
        if self.phase == "on_ground":
            self.v_east = self.v_north = 0.0
            if self.t >= self.ground_until:
                self.battery = 100.0
                self.phase = "takeoff"
        elif self.phase == "takeoff":
            self.v_up = cfg.climb_mps
            self.up = min(cfg.height_m, self.up + cfg.climb_mps * dt)
            if self.up >= cfg.height_m:
                self.phase = "mission"
        elif self.phase == "mission":
            if self.battery <= cfg.reserve_pct:
                self.phase = "rtl"
            elif self._fly_to(*cfg.patrol_m[self.waypoint], dt):
                self.waypoint = (self.waypoint + 1) % len(cfg.patrol_m)
        elif self.phase == "rtl":
            if self._fly_to(0.0, 0.0, dt):
                self.phase = "land"
        elif self.phase == "land":
            self.v_up = -cfg.descent_mps
            self.up = max(0.0, self.up - cfg.descent_mps * dt)
            if self.up <= 0.0:
                self.phase = "on_ground"
                self.ground_until = self.t + cfg.ground_s
                self.waypoint = 0

    def _mode(self) -> tuple[int, int, int]:
        """(base_mode, custom_mode, system_status) of the current phase."""
        if self.phase == "on_ground":
            return CUSTOM, COPTER_AUTO, MAV_STATE_STANDBY
        custom = {"rtl": COPTER_RTL, "land": COPTER_LAND}.get(self.phase, COPTER_AUTO)
        return ARMED | CUSTOM, custom, MAV_STATE_ACTIVE

    def lat_lon(self) -> tuple[float, float]:
        """Where the aircraft is, in degrees."""
        lon, lat = self._frame.to_lonlat(self.east, self.north)
        return float(lat), float(lon)

    def step(self, dt: float = STEP_S) -> list[bytes]:
        """Advance by ``dt`` seconds; the frames an autopilot streams in that time (position each step)."""
        self._advance(dt)
        self._ticks += 1
        mav = self._mav
        boot_ms = round(self.t * 1000)
        lat, lon = self.lat_lon()
        # The 1 Hz messages first: SYSTEM_TIME before the first position lets it carry its own time.
        msgs: list[Any] = []
        once_a_second = max(1, round(1.0 / dt))
        if self._ticks % once_a_second == 1 or once_a_second == 1:
            base_mode, custom_mode, status = self._mode()
            wall = self.boot_wall + timedelta(milliseconds=boot_ms)
            unix_us = round((wall - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
            remaining = round(self.battery / self.drain_per_s)
            pct = round(self.battery)
            msgs += [
                mav.heartbeat_encode(
                    MAV_TYPE_QUADROTOR, MAV_AUTOPILOT_ARDUPILOTMEGA, base_mode, custom_mode, status
                ),
                mav.system_time_encode(unix_us, boot_ms),
                mav.sys_status_encode(0, 0, 0, 300, 15_600, 1_500, pct, 0, 0, 0, 0, 0, 0),
                mav.battery_status_encode(
                    0, 0, 0, 2500, [3900] * 4 + [65535] * 6, 1_500, -1, -1, pct, remaining, 0
                ),
                mav.gps_raw_int_encode(
                    time_usec=boot_ms * 1000,
                    fix_type=3,
                    lat=round(lat * 1e7),
                    lon=round(lon * 1e7),
                    alt=round((self.config.home_alt_msl_m + self.up) * 1000),
                    eph=80,
                    epv=120,
                    vel=round(math.hypot(self.v_east, self.v_north) * 100),
                    cog=round(self.heading * 100),
                    satellites_visible=16,
                ),
            ]
        if self._ticks % (10 * once_a_second) == 1:
            msgs.append(
                mav.home_position_encode(
                    latitude=round(self.config.home_lat * 1e7),
                    longitude=round(self.config.home_lon * 1e7),
                    altitude=round(self.config.home_alt_msl_m * 1000),
                    x=0.0,
                    y=0.0,
                    z=0.0,
                    q=[1.0, 0.0, 0.0, 0.0],
                    approach_x=0.0,
                    approach_y=0.0,
                    approach_z=0.0,
                )
            )
        msgs.append(
            mav.global_position_int_encode(
                boot_ms,
                round(lat * 1e7),
                round(lon * 1e7),
                round((self.config.home_alt_msl_m + self.up) * 1000),
                round(self.up * 1000),
                round(self.v_north * 100),
                round(self.v_east * 100),
                round(-self.v_up * 100),  # MAVLink's vz is positive down
                round(self.heading * 100) % 36000,
            )
        )
        return [bytes(m.pack(mav)) for m in msgs]


class _Sender(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        pass  # nobody listening yet (ICMP unreachable): an autopilot keeps streaming regardless


async def stream_to(
    sim: SimAircraft, host: str, port: int, stop: asyncio.Event, duration_s: float | None = None
) -> int:
    """Send ``sim``'s frames to ``host:port`` over UDP in real time, a datagram per step; return the count."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Sender, remote_addr=(host, port))
    sent = 0
    deadline = time.monotonic() + duration_s if duration_s is not None else math.inf
    next_at = time.monotonic()
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            transport.sendto(b"".join(sim.step(STEP_S)))
            sent += 1
            next_at += STEP_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
    finally:
        transport.close()
    return sent


async def fly_through_gateway(
    sim: SimAircraft,
    target: MqttTarget,
    unit_id: str,
    stop: asyncio.Event,
    client_id: str = "serenazgo-demo-mavlink",
    stats: GatewayStats | None = None,
) -> GatewayStats:
    """Run a gateway on a free local UDP port and stream ``sim`` into it until ``stop`` (the demo's aircraft).

    The aircraft publishes as ``unit_id`` (register it as a drone with the
    external id ``{"mavlink": "<sysid>"}``); its frames take the same path as a
    real ground station's: UDP → gateway → MQTT → bridge.
    """
    stats = stats or GatewayStats()
    options = GatewayOptions(
        LinkSpec("udpin", "127.0.0.1", 0), units={sim.config.sysid: unit_id}, client_id=client_id
    )
    gateway_stop = asyncio.Event()
    gateway = asyncio.create_task(run_gateway(options, target, gateway_stop, stats), name="mavlink gateway")
    try:
        # The gateway reports the port it bound (0 asked: a free one) in its stats; a few ms.
        while not stats.listening and not gateway.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if not gateway.done():
            await stream_to(sim, "127.0.0.1", int(stats.listening.rsplit(":", 1)[1]), stop)
    finally:
        gateway_stop.set()
        await gateway
    return stats
