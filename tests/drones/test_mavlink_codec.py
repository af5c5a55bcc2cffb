"""MAVLink 2 decoding (drones/mavlink.py): frames packed by pymavlink's own encoder, and hostile bytes."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drones.mavlink import UERE_M, MavlinkDecoder, MavlinkUpdate
from drones.telemetry import FLIGHT_MODE_SET, check_telemetry
from tests.drones.mavlink_frames import (
    ARMED_CUSTOM,
    HOME_LAT_E7,
    MAV_AUTOPILOT_PX4,
    MAV_STATE_ACTIVE,
    MAV_STATE_STANDBY,
    Aircraft,
)
from tracker.model import PingFlag, Rejection, Source

ARRIVAL = datetime(2026, 11, 26, 1, 0, 0, tzinfo=UTC)
# The autopilot's clock: booted at BOOT (UTC), SYSTEM_TIME says so at boot time 10 s.
BOOT = datetime(2026, 11, 26, 0, 30, 0, 250_000, tzinfo=UTC)


def feed_all(decoder: MavlinkDecoder, frames: list[bytes]) -> list[MavlinkUpdate | Rejection]:
    out: list[MavlinkUpdate | Rejection] = []
    for frame in frames:
        out.extend(decoder.feed(frame, ARRIVAL, stream="peer"))
    return out


def full_stream(a: Aircraft) -> list[bytes]:
    return [
        a.system_time(BOOT + timedelta(seconds=10), 10_000),
        a.heartbeat(custom_mode=6),  # ArduCopter RTL
        a.position(boot_ms=12_500),
        a.gps_raw(fix=3, eph=90, satellites=14),
        a.sys_status(battery=63),
        a.battery_status(battery=62, time_remaining=1_210),
        a.home(),
    ]


def test_a_full_stream_decodes_to_the_right_position_and_drone_state() -> None:
    decoder = MavlinkDecoder()
    results = feed_all(decoder, full_stream(Aircraft(sysid=7)))
    assert all(isinstance(r, MavlinkUpdate) for r in results), results
    state = decoder.systems[7]
    ping = state.ping()
    assert ping is not None
    # Measured at boot + 12.5 s on the autopilot's clock, not when it arrived.
    assert ping.ts == BOOT + timedelta(seconds=12.5)
    assert ping.flags == PingFlag.NONE
    assert (ping.lat, ping.lon) == (-12.119, -77.037)
    assert ping.alt == pytest.approx(152.3)  # mm above mean sea level -> m
    # vx 3 m/s north, vy 4 m/s west: 5 m/s over the ground (a 3-4-5 triangle).
    assert ping.speed == pytest.approx(5.0)
    assert ping.heading == pytest.approx(270.0)
    assert ping.accuracy == pytest.approx(0.9 * UERE_M)  # HDOP 0.9
    assert ping.battery == 62.0  # BATTERY_STATUS came after SYS_STATUS
    assert ping.source is Source.MAVLINK

    t = state.telemetry()
    assert t.ts == ping.ts
    assert t.alt_takeoff_m == pytest.approx(61.5)
    assert t.alt_msl_m == pytest.approx(152.3)
    assert t.vertical_speed_mps == pytest.approx(-1.5)  # vz +150 cm/s is *down*: descending
    assert t.battery_pct == 62.0
    assert t.remaining_flight_s == 1210.0
    assert (t.flight_mode, t.mode_code) == ("returning_home", 6)
    assert (t.gps_fix, t.satellites) == (3, 14)
    assert (t.home_lat, t.home_lon) == (-12.1211, -77.0297)
    assert t.source is Source.MAVLINK
    assert decoder.rejected == {}


def test_trimmed_trailing_zeros_are_filled_back() -> None:
    a = Aircraft()
    # hdg 0 (due north) and vz 0 are the payload's last fields: MAVLink 2 trims them off the wire.
    frame = a.position(boot_ms=1_000, vz=0, hdg=0)
    payload_len = frame[1]
    assert payload_len < 28, "the encoder did not trim: this test would prove nothing"
    decoder = MavlinkDecoder()
    assert isinstance(decoder.feed(frame, ARRIVAL)[0], MavlinkUpdate)
    state = decoder.systems[a.sysid]
    assert state.heading_deg == 0.0  # read as zero, not as missing or as garbage
    assert state.vertical_speed_mps == 0.0
    assert state.lat == -12.119

    # GPS_RAW_INT without its MAVLink 2 extensions (alt_ellipsoid, h_acc...): all trimmed.
    gps = a.gps_raw(fix=3, eph=150, satellites=9)
    assert gps[1] < 52
    decoder.feed(gps, ARRIVAL)
    assert state.accuracy_m == pytest.approx(1.5 * UERE_M)
    assert state.alt_ellipsoid_m is None


def test_gps_extensions_are_read_when_sent() -> None:
    decoder = MavlinkDecoder()
    a = Aircraft()
    decoder.feed(a.gps_raw(fix=6, eph=70, satellites=22, alt_ellipsoid_mm=178_100, h_acc_mm=20), ARRIVAL)
    state = decoder.systems[a.sysid]
    assert state.accuracy_m == pytest.approx(0.02)  # RTK fixed: the receiver's own h_acc
    assert state.alt_ellipsoid_m == pytest.approx(178.1)
    assert state.telemetry().gps_fix == 6


def test_unknown_values_become_none() -> None:
    decoder = MavlinkDecoder()
    a = Aircraft()
    feed_all(
        decoder,
        [
            a.position(boot_ms=500, hdg=65535),
            a.gps_raw(fix=1, eph=65535, satellites=255),
            a.sys_status(battery=-1),
            a.battery_status(battery=-1, time_remaining=0),
        ],
    )
    state = decoder.systems[a.sysid]
    assert state.heading_deg is None
    assert state.satellites is None
    assert state.accuracy_m is None  # no fix: no accuracy
    assert state.battery_pct is None
    assert state.remaining_flight_s is None
    assert state.telemetry().gps_fix == 1


def test_without_system_time_the_arrival_time_is_used_and_flagged() -> None:
    decoder = MavlinkDecoder()
    a = Aircraft()
    # time_unix_usec 0: the autopilot has no GPS time yet; that is no sync either.
    feed_all(decoder, [a.system_time(0, 9_000), a.position(boot_ms=10_000)])
    ping = decoder.systems[a.sysid].ping()
    assert ping is not None
    assert ping.ts == ARRIVAL
    assert ping.flags == PingFlag.TS_DEFAULTED
    assert decoder.systems[a.sysid].telemetry_ts() == (ARRIVAL, True)
    assert decoder.ignored["system_time_unset"] == 1


def test_a_reboot_voids_the_clock_sync_until_the_next_system_time() -> None:
    decoder = MavlinkDecoder()
    a = Aircraft()
    feed_all(decoder, [a.system_time(BOOT + timedelta(seconds=600), 600_000), a.position(boot_ms=600_500)])
    state = decoder.systems[a.sysid]
    assert state.position_ts() == (BOOT + timedelta(seconds=600.5), False)
    feed_all(decoder, [a.position(boot_ms=2_000)])  # the clock went back: a new boot
    assert state.position_ts() == (ARRIVAL, True)
    reboot = BOOT + timedelta(minutes=20)
    feed_all(decoder, [a.system_time(reboot + timedelta(seconds=3), 3_000), a.position(boot_ms=3_200)])
    assert state.position_ts() == (reboot + timedelta(seconds=3.2), False)


def test_no_fix_yet_gives_no_position_but_keeps_the_height_above_home() -> None:
    decoder = MavlinkDecoder()
    a = Aircraft()
    feed_all(decoder, [a.position(boot_ms=100, lat=0, lon=0, rel_mm=1_200)])
    state = decoder.systems[a.sysid]
    assert state.ping() is None
    assert state.telemetry().alt_takeoff_m == pytest.approx(1.2)
    assert state.telemetry().alt_msl_m is None


ARDUCOPTER = [(0, "manual"), (2, "manual"), (3, "mission"), (4, "mission"), (5, "hovering"),
              (6, "returning_home"), (9, "landing"), (16, "hovering"), (21, "returning_home"),
              (99, "other")]  # fmt: skip
PX4 = [((3, 0), "hovering"), ((4, 4), "mission"), ((4, 5), "returning_home"), ((4, 6), "landing"),
       ((4, 3), "hovering"), ((4, 2), "taking_off"), ((1, 0), "manual"), ((7, 0), "manual"),
       ((6, 0), "other")]  # fmt: skip


@pytest.mark.parametrize(("custom_mode", "expected"), ARDUCOPTER)
def test_arducopter_modes(custom_mode: int, expected: str) -> None:
    decoder = MavlinkDecoder()
    a = Aircraft()
    decoder.feed(a.heartbeat(custom_mode=custom_mode), ARRIVAL)
    t = decoder.systems[a.sysid].telemetry()
    assert (t.flight_mode, t.mode_code) == (expected, custom_mode)


@pytest.mark.parametrize(("modes", "expected"), PX4)
def test_px4_modes(modes: tuple[int, int], expected: str) -> None:
    main, sub = modes
    custom = (main << 16) | (sub << 24)
    decoder = MavlinkDecoder()
    a = Aircraft()
    decoder.feed(a.heartbeat(custom_mode=custom, autopilot=MAV_AUTOPILOT_PX4), ARRIVAL)
    assert decoder.systems[a.sysid].telemetry().flight_mode == expected


@pytest.mark.parametrize(("base_mode", "status"), [(1, MAV_STATE_ACTIVE), (ARMED_CUSTOM, MAV_STATE_STANDBY)])
def test_disarmed_or_standby_is_on_the_ground(base_mode: int, status: int) -> None:
    decoder = MavlinkDecoder()
    a = Aircraft()
    decoder.feed(a.heartbeat(custom_mode=5, base_mode=base_mode, status=status), ARRIVAL)
    assert decoder.systems[a.sysid].flight_mode == "on_ground"


def test_a_ground_station_heartbeat_is_not_an_aircraft() -> None:
    decoder = MavlinkDecoder()
    gcs = Aircraft(sysid=255, compid=190)
    # QGroundControl: MAV_TYPE_GCS, MAV_AUTOPILOT_INVALID.
    assert decoder.feed(gcs.heartbeat(custom_mode=0, base_mode=0, autopilot=8, vehicle_type=6), ARRIVAL) == []
    assert decoder.systems == {}


def test_systems_are_kept_apart() -> None:
    decoder = MavlinkDecoder()
    one, two = Aircraft(sysid=1), Aircraft(sysid=2)
    # Several frames in one datagram, as autopilots send them.
    decoder.feed(
        one.position(boot_ms=1, lat=-121_000_000) + two.position(boot_ms=1, lat=-122_000_000), ARRIVAL
    )
    assert decoder.systems[1].lat == -12.1
    assert decoder.systems[2].lat == -12.2


def test_a_crc_error_is_rejected_with_its_reason() -> None:
    decoder = MavlinkDecoder()
    frame = bytearray(Aircraft().position(boot_ms=1))
    frame[15] ^= 0x01  # one bit of the latitude flipped in transit
    (result,) = decoder.feed(bytes(frame), ARRIVAL)
    assert isinstance(result, Rejection)
    assert result.reason == "crc_error"
    assert "CRC" in result.detail
    assert decoder.systems == {}
    assert decoder.rejected["crc_error"] == 1


def test_garbage_and_truncated_frames_are_rejected_and_good_frames_around_them_survive() -> None:
    decoder = MavlinkDecoder()
    good = Aircraft().position(boot_ms=1)
    results = decoder.feed(b"hello, world" + good, ARRIVAL)
    assert [type(r) for r in results] == [Rejection, MavlinkUpdate]
    assert isinstance(results[0], Rejection)
    assert results[0].reason == "garbage_bytes"

    (cut,) = decoder.feed(good[:20], ARRIVAL)
    assert isinstance(cut, Rejection)
    assert cut.reason == "truncated_frame"
    # The cut datagram left nothing behind: the next one decodes on its own.
    assert isinstance(decoder.feed(good, ARRIVAL)[0], MavlinkUpdate)


@pytest.mark.parametrize(
    ("frame_of", "reason"),
    [
        (lambda a: a.position(boot_ms=1, lat=950_000_000), "lat_out_of_range"),
        (lambda a: a.position(boot_ms=1, alt_mm=90_000_000), "alt_msl_m_out_of_range"),
        (lambda a: a.sys_status(battery=120), "battery_pct_out_of_range"),
        (lambda a: a.gps_raw(fix=42), "gps_fix_out_of_range"),
        (lambda a: a.home(lat=HOME_LAT_E7 * 10), "home_lat_out_of_range"),
    ],
)
def test_implausible_values_are_rejected(frame_of: object, reason: str) -> None:
    decoder = MavlinkDecoder()
    (result,) = decoder.feed(frame_of(Aircraft()), ARRIVAL)  # type: ignore[operator]
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert decoder.systems == {}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    decoder = MavlinkDecoder()
    results = decoder.feed(data, ARRIVAL)
    for r in results:
        assert isinstance(r, MavlinkUpdate | Rejection)
    for state in decoder.systems.values():
        t = state.telemetry()
        assert t.flight_mode is None or t.flight_mode in FLIGHT_MODE_SET
        ping = state.ping()
        if ping is not None:
            assert -90 <= ping.lat <= 90
            assert ping.speed is None or math.isfinite(ping.speed)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=80), st.integers(min_value=0, max_value=39), st.integers(min_value=1, max_value=255)
)
def test_corrupted_frames_never_raise_and_a_valid_frame_after_them_is_read(
    junk: bytes, at: int, xor: int
) -> None:
    a = Aircraft()
    frame = bytearray(a.position(boot_ms=5))
    frame[at % len(frame)] ^= xor
    decoder = MavlinkDecoder()
    decoder.feed(junk + bytes(frame), ARRIVAL, stream="tcp", datagram=False)
    # On a byte stream the parser resynchronises on the next start-of-frame marker.
    results = decoder.feed(bytes(300) + a.position(boot_ms=6), ARRIVAL, stream="tcp", datagram=False)
    for r in results:
        assert isinstance(r, MavlinkUpdate | Rejection)
    # 300 bytes outlast any frame (280 at most) a corrupted header may have announced.
    assert results[-1] == MavlinkUpdate(a.sysid, "GLOBAL_POSITION_INT", ARRIVAL)
    assert decoder.systems[a.sysid].position_boot_ms == 6


int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
int16 = st.integers(min_value=-(2**15), max_value=2**15 - 1)
uint16 = st.integers(min_value=0, max_value=2**16 - 1)
uint32 = st.integers(min_value=0, max_value=2**32 - 1)
uint8 = st.integers(min_value=0, max_value=255)
KNOWN_REASONS = {
    "lat_out_of_range", "lon_out_of_range", "alt_msl_m_out_of_range", "alt_takeoff_m_out_of_range",
    "vertical_speed_mps_out_of_range", "battery_pct_out_of_range", "remaining_flight_s_out_of_range",
    "gps_fix_out_of_range", "home_lat_out_of_range", "home_lon_out_of_range", "alt_ellipsoid_m_out_of_range",
}  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    position=st.tuples(uint32, int32, int32, int32, int32, int16, int16, int16, uint16),
    gps=st.tuples(uint8, uint16, uint8, int32, uint32),
    battery=st.tuples(
        st.integers(min_value=-128, max_value=127), st.integers(min_value=-(2**31), max_value=2**31 - 1)
    ),
    heartbeat=st.tuples(uint8, uint8, uint8, uint32, uint8),
    home=st.tuples(int32, int32),
)
def test_any_field_values_decode_or_are_refused_with_a_known_reason(
    position: tuple[int, ...],
    gps: tuple[int, int, int, int, int],
    battery: tuple[int, int],
    heartbeat: tuple[int, int, int, int, int],
    home: tuple[int, int],
) -> None:
    a = Aircraft()
    mav = a.mav
    fix, eph, sats, ellipsoid, h_acc = gps
    frames = [
        a.pack(mav.heartbeat_encode(*heartbeat)),
        a.pack(mav.global_position_int_encode(*position)),
        a.pack(mav.gps_raw_int_encode(0, fix, 0, 0, 0, eph, 0, 0, 0, sats, ellipsoid, h_acc % 2**32)),
        a.pack(mav.battery_status_encode(0, 0, 0, 0, [0] * 10, 0, 0, 0, battery[0], battery[1])),
        a.home(*home),
    ]
    decoder = MavlinkDecoder()
    for frame in frames:
        for result in decoder.feed(frame, ARRIVAL):
            if isinstance(result, Rejection):
                assert result.reason in KNOWN_REASONS, result
    state = decoder.systems.get(a.sysid)
    if state is not None:
        t = state.telemetry()
        assert t.flight_mode is None or t.flight_mode in FLIGHT_MODE_SET
        assert check_telemetry(t) is None  # what was merged is always storable
        ping = state.ping()
        if ping is not None:
            assert -90 <= ping.lat <= 90 and -180 <= ping.lon <= 180
            assert ping.heading is None or 0 <= ping.heading < 360
            assert ping.accuracy is None or ping.accuracy >= 0
