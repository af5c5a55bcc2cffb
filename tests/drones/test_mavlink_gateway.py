"""The gateway's pure parts: link and unit options, the rate plan, payloads the native codecs read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from drones.mavlink import MavlinkDecoder, MavlinkUpdate
from drones.mavlink_gateway import (
    Gateway,
    GatewayOptions,
    LinkSpec,
    PublishPlan,
    parse_link,
    parse_unit_map,
    registered_units,
)
from mqtt_bridge.codecs import decode_message
from tests.drones.mavlink_frames import Aircraft
from tracker.errors import ConfigError
from tracker.model import Decoded, PingFlag, Source, Unit, UnitKind

ARRIVAL = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
BOOT = datetime(2026, 11, 26, 0, 40, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("udp:0.0.0.0:14550", LinkSpec("udpin", "0.0.0.0", 14550)),
        ("udpin:127.0.0.1:0", LinkSpec("udpin", "127.0.0.1", 0)),
        ("udpout:10.0.0.5:14555", LinkSpec("udpout", "10.0.0.5", 14555)),
        ("tcp:localhost:5760", LinkSpec("tcp", "localhost", 5760)),
        ("udp:[::1]:14550", LinkSpec("udpin", "::1", 14550)),
    ],
)
def test_links_are_parsed(spec: str, expected: LinkSpec) -> None:
    assert parse_link(spec) == expected


@pytest.mark.parametrize(
    "spec", ["14550", "udp:14550", "serial:/dev/ttyACM0:57600", "udp:host:99999", "tcp:host:0", "udp::14550"]
)
def test_bad_links_say_what_is_expected(spec: str) -> None:
    with pytest.raises(ConfigError, match="--listen"):
        parse_link(spec)


def test_unit_options() -> None:
    assert parse_unit_map(["1=dron-3", " 2 = dron-4 "]) == {1: "dron-3", 2: "dron-4"}
    for bad in ("1", "0=dron", "256=dron", "x=dron", "1=bad id", "1="):
        with pytest.raises(ConfigError, match="--unit"):
            parse_unit_map([bad])
    with pytest.raises(ConfigError, match="twice"):
        parse_unit_map(["1=a", "1=b"])


def test_registered_sysids_map_to_their_units() -> None:
    units = [
        Unit("dron-1", UnitKind.DRONE, external_ids={"mavlink": "3"}),
        Unit("dron-2", UnitKind.DRONE, external_ids={"dji": "1581F5FHD"}),
        Unit("dron-3", UnitKind.DRONE, external_ids={"mavlink": "not-a-sysid"}),
    ]
    assert registered_units(units) == {3: "dron-1"}


def publish_stream(
    decoder: MavlinkDecoder, plan: PublishPlan, frames: list[bytes]
) -> list[tuple[str, bytes]]:
    """Feed the frames one by one (all arriving at once) and collect what the plan publishes."""
    out = []
    for frame in frames:
        for r in decoder.feed(frame, ARRIVAL):
            assert isinstance(r, MavlinkUpdate), r
            out += plan.messages(r, decoder.systems[r.sysid])
    return out


def test_positions_at_10_hz_are_published_at_2_hz_on_the_aircraft_clock() -> None:
    a = Aircraft(sysid=3)
    decoder = MavlinkDecoder()
    plan = PublishPlan({}, position_hz=2.0, drone_hz=1.0)
    frames = [a.system_time(BOOT, 0)] + [a.position(boot_ms=100 * k) for k in range(1, 31)]  # 3 s at 10 Hz
    topics = [
        (topic, datetime.fromisoformat(orjson.loads(payload)["ts"]))
        for topic, payload in publish_stream(decoder, plan, frames)
    ]
    positions = [ts for topic, ts in topics if topic == "serenazgo/units/mav.3/position"]
    drone = [ts for topic, ts in topics if topic == "serenazgo/units/mav.3/drone"]
    ms = [round((ts - BOOT).total_seconds() * 1000) for ts in positions]
    assert ms == [100, 600, 1100, 1600, 2100, 2600]  # every 0.5 s, all arriving at once
    # Drone state from the first fix on (the SYSTEM_TIME before it says nothing about the drone).
    assert [round((ts - BOOT).total_seconds() * 1000) for ts in drone] == [100, 1100, 2100]


def test_a_clock_that_goes_back_publishes_at_once() -> None:
    a = Aircraft(sysid=3)
    decoder = MavlinkDecoder()
    plan = PublishPlan({3: "dron-9"}, position_hz=2.0)
    published = []
    later = BOOT + timedelta(minutes=5)
    for frame in [
        a.system_time(later, 0),
        a.position(boot_ms=1000),
        a.system_time(BOOT, 0),
        a.position(boot_ms=1100),
    ]:
        for update in decoder.feed(frame, ARRIVAL):
            assert isinstance(update, MavlinkUpdate)
            published += [t for t, _ in plan.messages(update, decoder.systems[3]) if t.endswith("/position")]
    assert published == ["serenazgo/units/dron-9/position"] * 2


def test_payloads_read_back_through_the_native_codecs_unchanged() -> None:
    a = Aircraft(sysid=5)
    decoder = MavlinkDecoder()
    plan = PublishPlan({5: "dron-5"})
    frames = [
        a.system_time(BOOT, 0),
        a.heartbeat(custom_mode=16),
        a.gps_raw(fix=4, eph=110, satellites=12, alt_ellipsoid_mm=131_000),
        a.battery_status(battery=55, time_remaining=900),
        a.home(),
        a.position(boot_ms=2_345),
    ]
    sent = dict(publish_stream(decoder, plan, frames))
    state = decoder.systems[5]

    position = decode_message(
        "serenazgo/units/dron-5/position", sent["serenazgo/units/dron-5/position"], ARRIVAL
    )
    assert isinstance(position, Decoded)
    (ping,) = position.pings
    expected = state.ping()
    assert expected is not None
    assert ping.ts == expected.ts == BOOT + timedelta(milliseconds=2_345)
    assert (ping.lat, ping.lon, ping.alt, ping.speed, ping.heading, ping.accuracy, ping.battery) == (
        expected.lat, expected.lon, expected.alt, expected.speed, expected.heading, expected.accuracy,
        expected.battery,
    )  # fmt: skip
    assert ping.flags == PingFlag.NONE

    drone = decode_message("serenazgo/units/dron-5/drone", sent["serenazgo/units/dron-5/drone"], ARRIVAL)
    assert isinstance(drone, Decoded)
    (t,) = drone.telemetry
    want = state.telemetry()
    want.unit_id, want.source = "dron-5", Source.NATIVE  # the native topic names the unit, not the protocol
    assert t == want
    assert (t.flight_mode, t.gps_fix, t.alt_ellipsoid_m) == ("hovering", 4, 131.0)


def test_without_a_clock_sync_the_payloads_leave_ts_to_the_bridge() -> None:
    a = Aircraft(sysid=5)
    decoder = MavlinkDecoder()
    plan = PublishPlan({})
    sent = dict(publish_stream(decoder, plan, [a.heartbeat(), a.position(boot_ms=10)]))
    assert "ts" not in orjson.loads(sent["serenazgo/units/mav.5/position"])
    assert "ts" not in orjson.loads(sent["serenazgo/units/mav.5/drone"])
    position = decode_message(
        "serenazgo/units/mav.5/position", sent["serenazgo/units/mav.5/position"], ARRIVAL
    )
    assert isinstance(position, Decoded)
    assert position.pings[0].flags == PingFlag.TS_DEFAULTED


def test_state_without_a_timestamp_of_its_own_moves_on_with_the_arrival_clock() -> None:
    a = Aircraft(sysid=5)
    decoder = MavlinkDecoder()
    decoder.feed(a.system_time(BOOT, 60_000), ARRIVAL)
    decoder.feed(a.heartbeat(custom_mode=6), ARRIVAL + timedelta(seconds=2))
    # Two seconds after the last stamped message, on the autopilot's clock.
    assert decoder.systems[5].telemetry_ts() == (BOOT + timedelta(seconds=2), False)


def test_the_gateway_counts_bad_datagrams_and_bounds_its_queue() -> None:
    gateway = Gateway(GatewayOptions(LinkSpec("udpin", "127.0.0.1", 0), queue_max=3))
    a = Aircraft(sysid=8)
    gateway.on_bytes(b"\xfd\x01garbage", ("10.0.0.1", 1), datagram=True)
    gateway.on_bytes(a.system_time(BOOT, 0), ("10.0.0.1", 1), datagram=True)
    for k in range(10):
        gateway.on_bytes(a.position(boot_ms=1000 * (k + 1)), ("10.0.0.1", 1), datagram=True)
    assert sum(gateway.stats.rejected.values()) == 1
    assert len(gateway.queue) == 3
    assert gateway.stats.dropped > 0
    # The newest are kept: real-time telemetry.
    assert orjson.loads(gateway.queue[-1][1])["ts"].startswith(
        (BOOT + timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%S")
    )
