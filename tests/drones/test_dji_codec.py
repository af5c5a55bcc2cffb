"""DJI Cloud API codec: OSD, state and topology messages as DJI's documentation defines them.

Payloads are built from the documentation's property tables and its example
messages (dock-to-cloud "Dock > Properties" shows an aircraft OSD while docked
and a dock OSD split in three messages; "Topic Definition" shows update_topo
online and offline). Each test uses a fresh :class:`DjiState`.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from drones.dji import AIRCRAFT_MODES, DjiState, flight_mode
from drones.telemetry import FLIGHT_MODE_SET
from mqtt_bridge.codecs import decode_message
from tracker.model import Decoded, DeviceRef, Ignored, PingFlag, Rejection, Source

DOCK = "6QCDL820020093"
AIRCRAFT = "1581F5BKD225D00BP891"
RC = "5YSZKAE0030012"
RECEIVED = datetime(2024, 5, 20, 15, 0, 5, tzinfo=UTC)
T0_MS = 1716217200000  # 2024-05-20T15:00:00Z
T0 = datetime(2024, 5, 20, 15, 0, tzinfo=UTC)
MIRAFLORES_DOCK = (-12.1211, -77.0297)


def envelope(data: dict[str, Any], ts_ms: int = T0_MS, gateway: str | None = DOCK, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "tid": "2d2040eb-23b0-43dc-b7ac-64838276c4ac",
        "bid": "6a7bfe89-c386-4043-b600-b518e10096cc",
        "timestamp": ts_ms,
        "data": data,
        **extra,
    }
    if gateway is not None:
        body["gateway"] = gateway
    return orjson.dumps(body)


def osd(sn: str) -> str:
    return f"thing/product/{sn}/osd"


def state_topic(sn: str) -> str:
    return f"thing/product/{sn}/state"


def status(sn: str) -> str:
    return f"sys/product/{sn}/status"


# The documentation's aircraft OSD example (aircraft in the dock: position 0, 0), trimmed of payload detail.
DOCKED_AIRCRAFT_OSD: dict[str, Any] = {
    "activation_time": 1667935211,
    "attitude_head": 41.7,
    "attitude_pitch": 2.7,
    "attitude_roll": 0,
    "battery": {
        "batteries": [
            {
                "capacity_percent": 95,
                "index": 0,
                "sn": "4BUPJ99DAD009W",
                "temperature": 33.3,
                "voltage": 24303,
            },
            {"capacity_percent": 85, "index": 1, "sn": "4BUPJ9EDAD01CE", "temperature": 32, "voltage": 24311},
        ],
        "capacity_percent": 90,
        "landing_power": 0,
        "remain_flight_time": 0,
        "return_home_power": 0,
    },
    "distance_limit_status": {"distance_limit": 5000, "state": 0},
    "elevation": 0,
    "firmware_version": "05.01.0214",
    "gear": 1,
    "height": 38.41746520996094,
    "height_limit": 120,
    "home_distance": 0,
    "horizontal_speed": 0,
    "latitude": 0,
    "longitude": 0,
    "mode_code": 0,
    "night_lights_state": 0,
    "obstacle_avoidance": {"downside": 1, "horizon": 1, "upside": 1},
    "position_state": {"gps_number": 0, "is_fixed": 0, "quality": 0, "rtk_number": 0},
    "storage": {"total": 0, "used": 0},
    "total_flight_distance": 0,
    "total_flight_sorties": 0,
    "total_flight_time": 0,
    "track_id": "",
    "vertical_speed": 0,
    "wind_direction": 0,
    "wind_speed": 0,
}


def flying_osd(**changes: Any) -> dict[str, Any]:
    """The same aircraft on a wayline over Miraflores, 61.5 m above its dock."""
    data = copy.deepcopy(DOCKED_AIRCRAFT_OSD)
    data.update(
        {
            "latitude": -12.1234567,
            "longitude": -77.0312345,
            "elevation": 61.5,
            "height": 100.25,
            "attitude_head": -90.0,
            "horizontal_speed": 12.4,
            "vertical_speed": -1.5,
            "wind_speed": 43,  # 4.3 m/s in the aircraft's 0.1 m/s units
            "mode_code": 5,
            "position_state": {"gps_number": 19, "is_fixed": 2, "quality": 10, "rtk_number": 27},
        }
    )
    data["battery"].update({"capacity_percent": 63, "remain_flight_time": 1210, "return_home_power": 18})
    data.update(changes)
    return data


# The documentation's dock OSD, as the three partial messages it shows.
DOCK_PART_1 = {"job_number": 492, "acc_time": 1859010, "working_voltage": 25440, "working_current": 1120}
DOCK_PART_2 = {"flighttask_step_code": 5, "media_file_detail": {"remain_upload": 0}}
DOCK_PART_3: dict[str, Any] = {
    "network_state": {"type": 2, "quality": 0, "rate": 5.0970001220703125},
    "drone_charge_state": {"state": 1, "capacity_percent": 78},
    "drone_in_dock": 1,
    "rainfall": 0,
    "wind_speed": 3.5,
    "environment_temperature": 24,
    "temperature": 24.9,
    "humidity": 62,
    "latitude": MIRAFLORES_DOCK[0],
    "longitude": MIRAFLORES_DOCK[1],
    "height": 112.3,
    "position_state": {"is_calibration": 1, "is_fixed": 2, "quality": 5, "gps_number": 6, "rtk_number": 25},
    "mode_code": 0,
    "cover_state": 0,
    "sub_device": {
        "device_sn": AIRCRAFT,
        "device_model_key": "0-67-0",
        "device_online_status": 0,
        "device_paired": 1,
    },
}

TOPO_ONLINE: dict[str, Any] = {
    "domain": "3",
    "type": 3,
    "sub_type": 0,
    "device_secret": "secret",
    "nonce": "nonce",
    "thing_version": "1.1.2",
    "sub_devices": [
        {"sn": AIRCRAFT, "domain": "0", "type": 67, "sub_type": 0, "index": "A",
         "device_secret": "secret", "nonce": "nonce", "thing_version": "1.1.2"},
    ],
}  # fmt: skip


def decode(state: DjiState, topic: str, payload: bytes) -> Decoded | Ignored | Rejection:
    result = decode_message(topic, payload, RECEIVED, dji_state=state)
    if isinstance(result, Rejection):
        assert result.reason != "internal_error", result.detail
    return result


def decoded(state: DjiState, topic: str, payload: bytes) -> Decoded:
    result = decode(state, topic, payload)
    assert isinstance(result, Decoded), result
    return result


# -- aircraft OSD ---------------------------------------------------------------------------


def test_aircraft_in_flight_gives_a_ping_and_telemetry_in_si_units() -> None:
    state = DjiState()
    result = decoded(state, osd(AIRCRAFT), envelope(flying_osd()))
    assert result.ref == DeviceRef(Source.DJI, AIRCRAFT)
    assert result.ref.derived_unit_id() == f"dji.{AIRCRAFT}"
    (ping,) = result.pings
    assert (ping.ts, ping.lat, ping.lon) == (T0, -12.1234567, -77.0312345)
    assert ping.speed == 12.4
    assert ping.heading == 270.0  # -90 (west of true north) on the 0..360 compass
    assert ping.battery == 63.0
    assert ping.alt is None  # DJI heights are above take-off and the ellipsoid, not sea level
    assert ping.source is Source.DJI and ping.received_at == RECEIVED
    (t,) = result.telemetry
    assert t.ts == T0
    assert t.alt_takeoff_m == 61.5
    assert t.alt_ellipsoid_m == 100.25
    assert t.alt_msl_m is None
    assert t.vertical_speed_mps == -1.5
    assert (t.battery_pct, t.remaining_flight_s, t.return_home_pct) == (63.0, 1210.0, 18.0)
    assert (t.flight_mode, t.mode_code) == ("mission", 5)
    assert (t.gps_fix, t.satellites) == (6, 27)  # RTK fixed; the larger satellite count
    assert t.wind_speed_mps == pytest.approx(4.3)
    assert t.height_limit_m == 120.0
    assert t.source is Source.DJI


def test_millisecond_timestamps_keep_their_milliseconds() -> None:
    result = decoded(DjiState(), osd(AIRCRAFT), envelope(flying_osd(), ts_ms=T0_MS + 1234))
    assert result.pings[0].ts == result.telemetry[0].ts == T0 + timedelta(milliseconds=1234)


@pytest.mark.parametrize(
    ("attitude_head", "heading"),
    [(0.0, 0.0), (41.7, 41.7), (180.0, 180.0), (-180.0, 180.0), (-0.5, 359.5), (-179.9, 180.1)],
)
def test_attitude_head_becomes_a_compass_heading(attitude_head: float, heading: float) -> None:
    result = decoded(DjiState(), osd(AIRCRAFT), envelope(flying_osd(attitude_head=attitude_head)))
    assert result.pings[0].heading == pytest.approx(heading)
    assert 0.0 <= result.pings[0].heading < 360.0  # type: ignore[operator]


def test_attitude_head_outside_the_documented_range_is_dropped_and_flagged() -> None:
    result = decoded(DjiState(), osd(AIRCRAFT), envelope(flying_osd(attitude_head=250.0)))
    (ping,) = result.pings
    assert ping.heading is None
    assert ping.flags & PingFlag.FIELD_DROPPED


def test_docked_aircraft_at_zero_zero_has_telemetry_but_no_ping() -> None:
    state = DjiState()
    result = decoded(state, osd(AIRCRAFT), envelope(DOCKED_AIRCRAFT_OSD))
    assert result.pings == []
    (t,) = result.telemetry
    assert (t.flight_mode, t.mode_code, t.battery_pct) == ("on_ground", 0, 90.0)
    assert t.alt_takeoff_m == 0.0
    assert t.alt_ellipsoid_m == pytest.approx(38.41746520996094)
    assert (t.gps_fix, t.satellites) == (1, 0)  # no fix
    assert t.wind_speed_mps == 0.0


def test_every_documented_mode_code_maps_to_a_flight_mode() -> None:
    assert set(AIRCRAFT_MODES) == set(range(21))  # 0 Standby … 20 POI
    assert set(AIRCRAFT_MODES.values()) <= FLIGHT_MODE_SET
    expected = {0: "on_ground", 3: "manual", 4: "taking_off", 5: "mission", 9: "returning_home",
                10: "landing", 11: "landing", 14: "disconnected"}  # fmt: skip
    for code, mode in expected.items():
        assert flight_mode(code) == mode
        t = decoded(DjiState(), osd(AIRCRAFT), envelope(flying_osd(mode_code=code))).telemetry[0]
        assert (t.flight_mode, t.mode_code) == (mode, code)
    t = decoded(DjiState(), osd(AIRCRAFT), envelope(flying_osd(mode_code=77))).telemetry[0]
    assert (t.flight_mode, t.mode_code) == ("other", 77)  # a newer firmware's code: kept raw


@pytest.mark.parametrize(
    ("position_state", "fix", "satellites"),
    [
        ({"gps_number": 19, "is_fixed": 2, "quality": 10, "rtk_number": 27}, 6, 27),
        ({"gps_number": 15, "is_fixed": 1, "quality": 4, "rtk_number": 12}, 5, 15),
        ({"gps_number": 14, "is_fixed": 0, "quality": 4, "rtk_number": 0}, 3, 14),
        ({"gps_number": 3, "is_fixed": 0, "quality": 1, "rtk_number": 0}, 1, 3),
    ],
)
def test_position_state_maps_to_gps_fix_type(
    position_state: dict[str, int], fix: int, satellites: int
) -> None:
    t = decoded(DjiState(), osd(AIRCRAFT), envelope(flying_osd(position_state=position_state))).telemetry[0]
    assert (t.gps_fix, t.satellites) == (fix, satellites)


def test_an_osd_with_only_camera_state_is_ignored() -> None:
    payload = envelope({"52-0-0": {"payload_index": "52-0-0", "measure_target_distance": 591.7}})
    state = DjiState()
    decode(state, status(DOCK), envelope(TOPO_ONLINE))
    assert decode(state, osd(AIRCRAFT), payload) == Ignored("dji_osd_no_flight_data")


@pytest.mark.parametrize(
    ("change", "reason", "says"),
    [
        ({"latitude": "-12.1"}, "wrong_type", "latitude"),
        ({"mode_code": "5"}, "wrong_type", "mode_code"),
        ({"mode_code": 5.5}, "wrong_type", "mode_code"),
        ({"battery": 63}, "wrong_type", "battery"),
        ({"battery": {"capacity_percent": 140}}, "battery_pct_out_of_range", "battery_pct"),
        ({"battery": {"remain_flight_time": -5}}, "remaining_flight_s_out_of_range", "remaining"),
        ({"position_state": {"gps_number": "many"}}, "wrong_type", "position_state.gps_number"),
        ({"elevation": 90000}, "alt_takeoff_m_out_of_range", "alt_takeoff_m"),
        ({"vertical_speed": 300}, "vertical_speed_mps_out_of_range", "vertical_speed"),
        ({"wind_speed": 5000}, "wind_speed_mps_out_of_range", "wind_speed"),  # 500 m/s
        ({"height_limit": -3}, "height_limit_m_out_of_range", "height_limit"),
    ],
)
def test_malformed_aircraft_osd_is_refused_with_what_is_wrong(
    change: dict[str, Any], reason: str, says: str
) -> None:
    state = DjiState()
    result = decode(state, osd(AIRCRAFT), envelope(flying_osd(**change)))
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert says in result.detail
    assert state.aircraft_state(AIRCRAFT) is None  # a refused message teaches the state nothing


@pytest.mark.parametrize(
    ("payload", "reason", "says"),
    [
        (b"not json", "invalid_json", "JSON"),
        (b"[1, 2]", "not_an_object", "array"),
        (orjson.dumps({"tid": "t", "timestamp": T0_MS}), "missing_field", "'data'"),
        (orjson.dumps({"tid": "t", "data": {}}), "missing_field", "'timestamp'"),
        (orjson.dumps({"timestamp": T0_MS, "data": [1]}), "wrong_type", "'data'"),
        (orjson.dumps({"timestamp": T0_MS, "data": "x"}), "wrong_type", "'data'"),
        (orjson.dumps({"timestamp": "2024-05-20", "data": {}}), "invalid_timestamp", "milliseconds"),
        (orjson.dumps({"timestamp": 1716217200, "data": {}}), "invalid_timestamp", "milliseconds"),  # seconds
        (b'{"timestamp": 100000000000000000000, "data": {}}', "invalid_timestamp", "representable"),
        (orjson.dumps({"timestamp": T0_MS, "tid": 5, "data": {}}), "wrong_type", "'tid'"),
        (orjson.dumps({"timestamp": T0_MS, "gateway": "a/b", "data": {}}), "invalid_device_id", "gateway"),
    ],
)
def test_malformed_envelopes_are_refused(payload: bytes, reason: str, says: str) -> None:
    for topic in (osd(AIRCRAFT), state_topic(AIRCRAFT), status(DOCK)):
        result = decode(DjiState(), topic, payload)
        assert isinstance(result, Rejection), (topic, result)
        if topic == status(DOCK) and reason not in {"invalid_json", "not_an_object", "invalid_timestamp"}:
            continue  # a status message misses 'method' first
        assert result.reason == reason, (topic, result)
        assert says in result.detail


# -- dock OSD, merged ---------------------------------------------------------------------


def test_dock_osd_split_in_three_messages_is_merged_never_replaced() -> None:
    state = DjiState()
    for i, part in enumerate((DOCK_PART_3, DOCK_PART_1, DOCK_PART_2)):
        decode(state, osd(DOCK), envelope(part, ts_ms=T0_MS + 1000 * i))
    dock = state.dock_state(DOCK)
    assert dock is not None
    # Everything the third message said survives the two partial messages after it.
    assert (dock.lat, dock.lon) == MIRAFLORES_DOCK
    assert dock.drone_in_dock is True
    assert (dock.charging, dock.charge_pct) == (True, 78.0)
    assert (dock.rainfall, dock.wind_speed_mps) == (0, 3.5)
    assert (dock.network_type, dock.network_quality) == (2, 0)
    assert (dock.aircraft_sn, dock.aircraft_powered) == (AIRCRAFT, False)
    assert state.aircraft_under(DOCK) == AIRCRAFT  # sub_device names the dock's aircraft
    # A later message changes only what it carries.
    decode(state, osd(DOCK), envelope({"drone_in_dock": 0, "rainfall": 2}, ts_ms=T0_MS + 5000))
    assert (dock.drone_in_dock, dock.rainfall, dock.charge_pct, dock.lat) == (
        False,
        2,
        78.0,
        MIRAFLORES_DOCK[0],
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"latitude": 120.0}, "dock_latitude_out_of_range"),
        ({"wind_speed": 250.0}, "dock_wind_speed_out_of_range"),
        ({"drone_in_dock": 2}, "wrong_type"),
        ({"drone_charge_state": {"capacity_percent": 32767}}, "battery_pct_out_of_range"),
        ({"drone_charge_state": [78]}, "wrong_type"),
        ({"sub_device": {"device_sn": "a b"}}, "invalid_device_id"),
        ({"network_state": {"quality": "good"}}, "wrong_type"),
    ],
)
def test_malformed_dock_osd_is_refused_and_not_merged(change: dict[str, Any], reason: str) -> None:
    state = DjiState()
    decode(state, osd(DOCK), envelope(DOCK_PART_3))
    result = decode(state, osd(DOCK), envelope({**DOCK_PART_3, **change}, ts_ms=T0_MS + 60_000))
    assert isinstance(result, Rejection)
    assert result.reason == reason
    dock = state.dock_state(DOCK)
    assert dock is not None
    assert (dock.lat, dock.wind_speed_mps, dock.drone_in_dock, dock.charge_pct) == (
        MIRAFLORES_DOCK[0], 3.5, True, 78.0,
    )  # fmt: skip


def test_a_dock_message_about_its_silent_aircraft_is_the_aircrafts_telemetry() -> None:
    state = DjiState()
    assert decode(state, osd(DOCK), envelope(DOCK_PART_1)) == Ignored("dji_dock_osd_merged")
    result = decoded(state, osd(DOCK), envelope(DOCK_PART_3, ts_ms=T0_MS + 2000))
    assert result.ref == DeviceRef(Source.DJI, AIRCRAFT)  # the unit is the aircraft, not the dock
    assert result.pings == []
    (t,) = result.telemetry
    assert t.ts == T0 + timedelta(seconds=2)
    assert (t.docked, t.dock_id, t.flight_mode) == (True, DOCK, "on_ground")
    assert t.battery_pct == 78.0  # drone_charge_state.capacity_percent
    assert t.wind_speed_mps == 3.5  # the dock reports m/s, unlike the aircraft
    assert (t.home_lat, t.home_lon) == MIRAFLORES_DOCK  # a dock aircraft's home is its dock
    # A part without aircraft news is only merged.
    assert decode(state, osd(DOCK), envelope(DOCK_PART_2)) == Ignored("dji_dock_osd_merged")


def test_aircraft_osd_carries_the_docks_state_and_the_dock_stays_quiet_meanwhile() -> None:
    state = DjiState()
    decode(state, status(DOCK), envelope(TOPO_ONLINE))
    decode(state, osd(DOCK), envelope(DOCK_PART_3))
    result = decoded(state, osd(AIRCRAFT), envelope(DOCKED_AIRCRAFT_OSD, ts_ms=T0_MS + 1000))
    (t,) = result.telemetry
    assert (t.docked, t.dock_id) == (True, DOCK)
    assert t.battery_pct == 90.0  # the aircraft's own reading wins over the dock's charge
    assert t.wind_speed_mps == 0.0  # 0 in 0.1 m/s units
    assert (t.home_lat, t.home_lon) == MIRAFLORES_DOCK
    # While the aircraft speaks for itself, the dock's drone_in_dock is merged only.
    again = decode(state, osd(DOCK), envelope(DOCK_PART_3, ts_ms=T0_MS + 3000))
    assert again == Ignored("dji_dock_osd_merged")
    # After it falls silent (powered off in the dock), the dock reports for it again.
    later = decoded(state, osd(DOCK), envelope(DOCK_PART_3, ts_ms=T0_MS + 60_000))
    assert later.ref.external_id == AIRCRAFT
    assert later.telemetry[0].docked is True


def test_a_stale_drone_in_dock_does_not_dock_an_aircraft_that_took_off_since() -> None:
    state = DjiState()
    decode(state, status(DOCK), envelope(TOPO_ONLINE))
    decode(state, osd(DOCK), envelope(DOCK_PART_3))  # in the dock at T0
    flying = decoded(state, osd(AIRCRAFT), envelope(flying_osd(), ts_ms=T0_MS + 30_000)).telemetry[0]
    assert (flying.docked, flying.dock_id) == (False, DOCK)
    offline = {**TOPO_ONLINE, "sub_devices": []}
    (gone,) = decoded(
        state, status(DOCK), envelope(offline, ts_ms=T0_MS + 60_000, method="update_topo")
    ).telemetry
    assert (gone.flight_mode, gone.docked, gone.battery_pct) == ("disconnected", False, None)
    # The dock sees it back inside later: that is newer than the aircraft's last word.
    back = decoded(state, osd(DOCK), envelope(DOCK_PART_3, ts_ms=T0_MS + 900_000)).telemetry[0]
    assert (back.flight_mode, back.docked, back.battery_pct) == ("on_ground", True, 78.0)


def test_wind_units_differ_between_aircraft_and_dock() -> None:
    state = DjiState()
    decode(state, status(DOCK), envelope(TOPO_ONLINE))
    air = decoded(state, osd(AIRCRAFT), envelope(flying_osd(wind_speed=35)))
    dock = decoded(state, osd(DOCK), envelope({**DOCK_PART_3, "wind_speed": 3.5}, ts_ms=T0_MS + 60_000))
    assert air.telemetry[0].wind_speed_mps == pytest.approx(3.5)
    assert dock.telemetry[0].wind_speed_mps == pytest.approx(3.5)


# -- state topic -------------------------------------------------------------------------


def test_state_keeps_home_height_limit_and_thresholds_for_later_osd() -> None:
    state = DjiState()
    home = (-12.1190, -77.0350)
    kept = decode(
        state,
        state_topic(AIRCRAFT),
        envelope(
            {
                "home_latitude": home[0],
                "home_longitude": home[1],
                "height_limit": 150,
                "low_battery_warning_threshold": 30,
                "serious_low_battery_warning_threshold": 15,
                "firmware_version": "05.01.0214",
            }
        ),
    )
    assert kept == Ignored("dji_state_kept")
    air = state.aircraft_state(AIRCRAFT)
    assert air is not None
    assert (air.low_battery_pct, air.serious_low_battery_pct) == (30.0, 15.0)
    t = decoded(state, osd(AIRCRAFT), envelope(flying_osd(height_limit=None))).telemetry[0]
    assert (t.home_lat, t.home_lon) == home
    assert t.height_limit_m == 150.0
    # The OSD's own height limit wins and is kept.
    t = decoded(state, osd(AIRCRAFT), envelope(flying_osd(height_limit=120))).telemetry[0]
    assert t.height_limit_m == 120.0
    assert air.height_limit_m == 120.0


def test_state_home_point_wins_over_the_dock_position() -> None:
    state = DjiState()
    decode(state, status(DOCK), envelope(TOPO_ONLINE))
    decode(state, osd(DOCK), envelope(DOCK_PART_3))
    decode(state, state_topic(AIRCRAFT), envelope({"home_latitude": -12.13, "home_longitude": -77.02}))
    t = decoded(state, osd(AIRCRAFT), envelope(flying_osd())).telemetry[0]
    assert (t.home_lat, t.home_lon) == (-12.13, -77.02)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"home_latitude": 95.0, "home_longitude": -77.0}, "home_lat_out_of_range"),
        ({"home_latitude": -12.1}, "home_incomplete"),
        ({"home_latitude": "x", "home_longitude": -77.0}, "wrong_type"),
        ({"low_battery_warning_threshold": 130}, "threshold_out_of_range"),
        ({"height_limit": 20000}, "height_limit_m_out_of_range"),
    ],
)
def test_malformed_state_is_refused(data: dict[str, Any], reason: str) -> None:
    result = decode(DjiState(), state_topic(AIRCRAFT), envelope(data))
    assert isinstance(result, Rejection)
    assert result.reason == reason


def test_state_without_anything_we_keep_is_ignored() -> None:
    result = decode(DjiState(), state_topic(AIRCRAFT), envelope({"firmware_version": "05.01.0214"}))
    assert result == Ignored("dji_state_nothing_to_keep")


# -- topology ----------------------------------------------------------------------------


def test_update_topo_links_aircraft_to_dock_and_empty_sub_devices_means_offline() -> None:
    state = DjiState()
    assert decode(state, status(DOCK), envelope(TOPO_ONLINE, method="update_topo")) == Ignored(
        "dji_topology_updated"
    )
    assert state.aircraft_under(DOCK) == AIRCRAFT
    decoded(state, osd(AIRCRAFT), envelope(flying_osd(), ts_ms=T0_MS))
    offline = {**TOPO_ONLINE, "sub_devices": []}
    result = decoded(state, status(DOCK), envelope(offline, ts_ms=T0_MS + 4000, method="update_topo"))
    assert result.ref == DeviceRef(Source.DJI, AIRCRAFT)
    (t,) = result.telemetry
    assert t.ts == T0 + timedelta(seconds=4)
    assert (t.flight_mode, t.dock_id, t.source) == ("disconnected", DOCK, Source.DJI)
    assert t.battery_pct is None  # not docked: nobody knows its charge any more
    assert state.aircraft_under(DOCK) is None
    # A second offline message has no aircraft left to report.
    again = decode(state, status(DOCK), envelope(offline, ts_ms=T0_MS + 6000, method="update_topo"))
    assert again == Ignored("dji_gateway_without_aircraft")


def test_offline_while_in_the_dock_says_docked_with_its_charge() -> None:
    state = DjiState()
    decode(state, status(DOCK), envelope(TOPO_ONLINE, method="update_topo"))
    decode(state, osd(DOCK), envelope(DOCK_PART_3))
    offline = {**TOPO_ONLINE, "sub_devices": []}
    (t,) = decoded(state, status(DOCK), envelope(offline, ts_ms=T0_MS + 4000, method="update_topo")).telemetry
    assert (t.flight_mode, t.docked, t.battery_pct, t.dock_id) == ("disconnected", True, 78.0, DOCK)


def test_remote_controller_gateway_is_not_a_dock() -> None:
    state = DjiState()
    topo = {
        "domain": 2,
        "type": 144,
        "sub_type": 0,
        "sub_devices": [{"sn": AIRCRAFT, "domain": 0, "type": 89}],
    }
    decode(state, status(RC), envelope(topo, gateway=RC, method="update_topo"))
    t = decoded(state, osd(AIRCRAFT), envelope(flying_osd(), gateway=RC)).telemetry[0]
    assert (t.dock_id, t.docked) == (None, False)  # in the air: not docked, whoever the gateway
    rc_osd = {"latitude": -12.12, "longitude": -77.03, "height": 90.0, "capacity_percent": 80}
    assert decode(state, osd(RC), envelope(rc_osd, gateway=RC)) == Ignored("dji_remote_controller_osd")
    result = decoded(
        state, status(RC), envelope({**topo, "sub_devices": []}, gateway=RC, method="update_topo")
    )
    assert result.telemetry[0].flight_mode == "disconnected"
    assert result.telemetry[0].dock_id is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"domain": "3"}, "missing_field"),
        ({"sub_devices": {"sn": AIRCRAFT}}, "wrong_type"),
        ({"sub_devices": ["x"]}, "wrong_type"),
        ({"sub_devices": [{"domain": 0}]}, "wrong_type"),
        ({"sub_devices": [{"sn": "+"}]}, "invalid_device_id"),
        ({"sub_devices": [{"sn": AIRCRAFT, "domain": "aircraft"}]}, "wrong_type"),
        ({"sub_devices": [{"sn": f"A{i}"} for i in range(100)]}, "too_many_sub_devices"),
    ],
)
def test_malformed_topology_is_refused(data: dict[str, Any], reason: str) -> None:
    result = decode(DjiState(), status(DOCK), envelope(data, method="update_topo"))
    assert isinstance(result, Rejection)
    assert result.reason == reason


def test_other_status_methods_and_missing_method() -> None:
    assert decode(DjiState(), status(DOCK), envelope({}, method="something_else")) == Ignored(
        "dji_status_other_method"
    )
    result = decode(DjiState(), status(DOCK), envelope({}))
    assert isinstance(result, Rejection)
    assert result.reason == "missing_field" and "method" in result.detail


# -- topics and state bounds -------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "outcome"),
    [
        ("thing/product/+/osd", "invalid_device_id"),
        ("thing/product/#/state", "invalid_device_id"),
        ("thing/product//osd", "invalid_device_id"),
        (f"thing/product/{'A' * 61}/osd", "invalid_device_id"),
        ("thing/product/ab cd/osd", "invalid_device_id"),
        (f"thing/product/{DOCK}/osd/extra", "unknown_topic"),
        (f"thing/product/{DOCK}/telemetry", "unknown_topic"),
        (f"sys/product/{DOCK}/osd", "unknown_topic"),
        ("thing/product", "unknown_topic"),
        (f"thing/product/{DOCK}/events", "dji_subtopic_not_decoded"),
        (f"thing/product/{DOCK}/property/set_reply", "dji_subtopic_not_decoded"),
    ],
)
def test_dji_topics(topic: str, outcome: str) -> None:
    result = decode(DjiState(), topic, envelope(flying_osd()))
    assert isinstance(result, Rejection | Ignored)
    assert result.reason == outcome


def test_a_flood_of_made_up_serials_keeps_the_state_bounded() -> None:
    state = DjiState(max_devices=50)
    for i in range(2000):
        decode(state, status(f"FAKEDOCK{i}"), envelope(TOPO_ONLINE | {"sub_devices": [{"sn": f"FAKE{i}"}]},
                                                          method="update_topo"))  # fmt: skip
        decode(state, osd(f"FAKEDOCK{i}"), envelope(DOCK_PART_3))
        decode(state, osd(f"FAKE{i}"), envelope(flying_osd(), gateway=f"FAKEDOCK{i}"))
    assert len(state.kinds) <= 50 and len(state.aircraft) <= 50
    assert len(state.docks) <= 50 and len(state.children) <= 50
    # The newest devices are still known and decode as before.
    assert state.aircraft_under("FAKEDOCK1999") is not None
    t = decoded(state, osd("FAKE1999"), envelope(flying_osd(), gateway="FAKEDOCK1999")).telemetry[0]
    assert t.dock_id == "FAKEDOCK1999"


def test_the_default_state_is_used_when_none_is_given() -> None:
    result = decode_message(osd(AIRCRAFT), envelope(flying_osd()), RECEIVED)
    assert isinstance(result, Decoded)
    assert result.telemetry[0].flight_mode == "mission"
