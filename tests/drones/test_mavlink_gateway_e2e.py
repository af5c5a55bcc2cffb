"""Gateway end to end: pymavlink frames over UDP → gateway → real Mosquitto → real bridge → PostgreSQL.

The frames carry known values; the stored ``positions`` and ``drone_telemetry``
rows and the bridge's LiveFleet must hold exactly those, in SI units, at the
times the autopilot measured them (SYSTEM_TIME), not when they arrived.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from drones.mavlink_gateway import GatewayOptions, GatewayStats, LinkSpec
from drones.mavlink_sim import SimAircraft, SimConfig, fly_through_gateway
from tests.drones.gateway_runner import GatewayThread
from tests.drones.mavlink_frames import Aircraft
from tests.mqtt_bridge.ingest_rig import IngestRig
from tracker.config import parse_mqtt_url
from tracker.model import PingFlag, Source, Unit, UnitKind

pytestmark = pytest.mark.integration

SOURCE_CODES = {s: i for i, s in enumerate(Source)}


@pytest.fixture
def gateways(ingest: IngestRig) -> Iterator[list[GatewayThread]]:
    started: list[GatewayThread] = []
    yield started
    for gateway in started:
        gateway.stop()


def start_gateway(ingest: IngestRig, gateways: list[GatewayThread], units: dict[int, str]) -> GatewayThread:
    # Every message published, so the stored rows can be compared one to one (the rate limit has
    # its own unit tests); port 0: a free UDP port, never 14550.
    options = GatewayOptions(
        link=LinkSpec("udpin", "127.0.0.1", 0),
        units=units,
        position_hz=1000.0,
        drone_hz=1000.0,
        client_id=ingest.names.client("mavgw"),
    )
    assert ingest.broker.url is not None
    gateway = GatewayThread(options, parse_mqtt_url(ingest.broker.url)).start()
    gateways.append(gateway)
    return gateway


def test_mavlink_over_udp_ends_in_stored_positions_drone_state_and_the_live_fleet(
    ingest: IngestRig, gateways: list[GatewayThread]
) -> None:
    unit_id = ingest.names.unit("dron")
    ingest.add_units([Unit(unit_id, UnitKind.DRONE, external_ids={"mavlink": "7"})])
    bridge = ingest.bridge()
    gateway = start_gateway(ingest, gateways, {7: unit_id})

    a = Aircraft(sysid=7)
    boot = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    gateway.send(
        a.system_time(boot + timedelta(seconds=100), 100_000),
        a.heartbeat(custom_mode=3),  # ArduCopter AUTO
        a.gps_raw(fix=3, eph=80, satellites=15),
        a.sys_status(battery=71),
        a.battery_status(battery=71, time_remaining=1500),
        a.home(),
        b"\x00garbage that is no MAVLink",
    )
    corrupted = bytearray(a.position(boot_ms=100_050))
    corrupted[12] ^= 0x40
    gateway.send(bytes(corrupted))
    # Five fixes 1 s apart climbing north at 5 m/s; one datagram each, as autopilots send them.
    for k in range(5):
        gateway.send(
            a.position(
                boot_ms=101_000 + 1000 * k,
                lat=-121_190_000 + 450 * k,
                rel_mm=40_000 + 1000 * k,
                alt_mm=120_000 + 1000 * k,
                vx=500,
                vy=0,
                vz=-100,
                hdg=0,
            )
        )
    ingest.wait_rows(5)
    ingest.wait_for(
        "the drone state of the last fix",
        lambda: ingest.query("SELECT count(*) FROM drone_telemetry WHERE alt_takeoff_m >= 44")[0][0] >= 1,
    )

    rows = ingest.query(
        "SELECT unit_id, ts, lat, lon, alt, speed, heading, accuracy, battery, flags"
        " FROM positions ORDER BY ts"
    )
    assert [r[0] for r in rows] == [unit_id] * 5
    for k, (_, ts, lat, lon, alt, speed, heading, accuracy, battery, flags) in enumerate(rows):
        assert ts == boot + timedelta(seconds=101 + k)  # the autopilot's clock, to the microsecond
        assert lat == pytest.approx(-12.119 + 0.000045 * k, abs=1e-9)
        assert lon == pytest.approx(-77.037, abs=1e-9)
        assert alt == pytest.approx(120.0 + k, abs=1e-3)
        assert speed == pytest.approx(5.0)
        assert heading == pytest.approx(0.0)
        assert accuracy == pytest.approx(0.8 * 5.0)  # HDOP 0.8 x the 5 m UERE
        assert battery == pytest.approx(71.0)
        assert flags & PingFlag.TS_DEFAULTED == 0

    (latest,) = ingest.query(
        "SELECT ts, alt_takeoff_m, alt_msl_m, vertical_speed_mps, battery_pct, remaining_flight_s,"
        " flight_mode, mode_code, gps_fix, satellites, home_lat, home_lon FROM drone_telemetry"
        " ORDER BY ts DESC LIMIT 1"
    )
    assert latest == (
        boot + timedelta(seconds=105),
        pytest.approx(44.0),
        pytest.approx(124.0),
        pytest.approx(1.0),  # vz -100 cm/s: climbing at 1 m/s
        pytest.approx(71.0),
        pytest.approx(1500.0),
        "mission",
        3,
        3,
        15,
        pytest.approx(-12.1211),
        pytest.approx(-77.0297),
    )

    def live_state_caught_up() -> bool:
        state = bridge.fleet.get(unit_id)
        return (
            state is not None and state.drone is not None and state.drone.alt_takeoff_m == pytest.approx(44.0)
        )

    ingest.wait_for("the LiveFleet's drone state", live_state_caught_up)
    state = bridge.fleet.get(unit_id)
    assert state is not None and state.fix is not None and state.drone is not None
    assert state.fix.ts == boot + timedelta(seconds=105)
    assert state.drone.flight_mode == "mission"
    assert state.drone.battery_pct == pytest.approx(71.0)

    # The bad datagrams were counted with their reasons and stopped nothing.
    assert gateway.stats.rejected["garbage_bytes"] == 1
    assert gateway.stats.rejected["crc_error"] == 1
    assert ingest.query("SELECT count(*) FROM dead_letters")[0][0] == 0


def test_an_unmapped_system_publishes_as_its_derived_unit_and_without_a_clock_the_bridge_stamps_it(
    ingest: IngestRig, gateways: list[GatewayThread]
) -> None:
    ingest.add_units([Unit("mav.42", UnitKind.DRONE, external_ids={"mavlink": "42"})])
    ingest.bridge()
    gateway = start_gateway(ingest, gateways, {})
    a = Aircraft(sysid=42)
    before = datetime.now(UTC)
    gateway.send(a.heartbeat(custom_mode=5), a.position(boot_ms=5_000))  # no SYSTEM_TIME
    ingest.wait_rows(1)
    ((unit_id, ts, flags),) = ingest.query("SELECT unit_id, ts, flags FROM positions")
    assert unit_id == "mav.42"
    assert flags & PingFlag.TS_DEFAULTED
    assert ts >= before - timedelta(seconds=1)  # the receive time, not 5 s after 1970


def test_the_demo_aircraft_flies_through_its_own_gateway_into_storage(ingest: IngestRig) -> None:
    unit_id = ingest.names.unit("mav")
    ingest.add_units([Unit(unit_id, UnitKind.DRONE, external_ids={"mavlink": "1"})])
    bridge = ingest.bridge()
    assert ingest.broker.url is not None
    target = parse_mqtt_url(ingest.broker.url)
    sim = SimAircraft(SimConfig(sysid=1), datetime.now(UTC))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    stats = GatewayStats()
    runner = threading.Thread(
        target=lambda: loop.run_until_complete(
            fly_through_gateway(sim, target, unit_id, stop, ingest.names.client("demo"), stats)
        ),
        daemon=True,
    )
    runner.start()
    try:
        ingest.wait_rows(4)
        ingest.wait_for(
            "the aircraft's drone state in the LiveFleet",
            lambda: (
                (s := bridge.fleet.get(unit_id)) is not None and s.drone is not None and s.fix is not None
            ),
        )
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(30)
    assert not runner.is_alive()
    state = bridge.fleet.get(unit_id)
    assert state is not None and state.drone is not None and state.fix is not None
    assert state.drone.flight_mode in {"on_ground", "mission"}  # 5 s on its dock, then taking off
    assert state.drone.home_lat == pytest.approx(sim.config.home_lat)
    # Still at or just above its dock: the first seconds of the cycle.
    assert state.fix.lat == pytest.approx(sim.config.home_lat, abs=1e-4)
    assert state.fix.lon == pytest.approx(sim.config.home_lon, abs=1e-4)
    assert stats.positions >= 4
    assert sum(stats.rejected.values()) == 0
    # Every stored fix carries the aircraft's own time, at most 2 a second.
    rows = ingest.query("SELECT ts, flags FROM positions WHERE unit_id = %s ORDER BY ts", unit_id)
    assert all(flags & PingFlag.TS_DEFAULTED == 0 for _, flags in rows)
    assert all((b - a).total_seconds() >= 0.5 for (a, _), (b, _) in itertools.pairwise(rows))
