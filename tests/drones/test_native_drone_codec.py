"""The native drone telemetry topic (serenazgo/units/{id}/drone): fields, units and refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drones.telemetry import FLIGHT_MODES, check_telemetry
from mqtt_bridge.codecs import decode_message
from tracker.model import Decoded, DroneTelemetry, Rejection, Source

NOW = datetime(2024, 5, 20, 15, 0, tzinfo=UTC)
TOPIC = "serenazgo/units/dron-1/drone"


def decode(body: object) -> Decoded | Rejection:
    result = decode_message(TOPIC, orjson.dumps(body), NOW)
    assert isinstance(result, Decoded | Rejection), result
    return result


def test_every_field_is_read_in_si_units() -> None:
    body = {
        "ts": "2024-05-20T14:59:58Z",
        "alt_takeoff_m": 61.5,
        "alt_msl_m": 140.2,
        "vertical_speed_mps": -1.5,
        "battery_pct": 63,
        "remaining_flight_s": 1210,
        "return_home_pct": 18.0,
        "flight_mode": "mission",
        "mode_code": 3,
        "gps_fix": 3,
        "satellites": 17,
        "wind_speed_mps": 4.2,
        "height_limit_m": 120,
        "home": {"lat": -12.1211, "lon": -77.0297},
        "docked": False,
        "dock_id": "DOCK-7",
    }
    result = decode(body)
    assert isinstance(result, Decoded)
    assert result.pings == []
    assert result.telemetry == [
        DroneTelemetry(
            "dron-1",
            datetime(2024, 5, 20, 14, 59, 58, tzinfo=UTC),
            alt_takeoff_m=61.5,
            alt_msl_m=140.2,
            vertical_speed_mps=-1.5,
            battery_pct=63.0,
            remaining_flight_s=1210.0,
            return_home_pct=18.0,
            flight_mode="mission",
            mode_code=3,
            gps_fix=3,
            satellites=17,
            wind_speed_mps=4.2,
            height_limit_m=120.0,
            home_lat=-12.1211,
            home_lon=-77.0297,
            docked=False,
            dock_id="DOCK-7",
            source=Source.NATIVE,
        )
    ]


def test_an_empty_object_is_a_report_at_the_receive_time() -> None:
    result = decode({})
    assert isinstance(result, Decoded)
    assert result.telemetry == [DroneTelemetry("dron-1", NOW)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"battery_pct": 140}, "battery_pct_out_of_range"),
        ({"battery_pct": "63"}, "wrong_type"),
        ({"alt_takeoff_m": 90_000}, "alt_takeoff_m_out_of_range"),
        ({"vertical_speed_mps": -300}, "vertical_speed_mps_out_of_range"),
        ({"gps_fix": 3.5}, "wrong_type"),
        ({"gps_fix": 12}, "gps_fix_out_of_range"),
        ({"satellites": -1}, "satellites_out_of_range"),
        ({"flight_mode": "barrel_roll"}, "unknown_flight_mode"),
        ({"flight_mode": 9}, "wrong_type"),
        ({"docked": 1}, "wrong_type"),
        ({"home": [-12.1, -77.0]}, "wrong_type"),
        ({"home": {"lat": -12.1}}, "missing_field"),
        ({"home": {"lat": 95.0, "lon": -77.0}}, "home_lat_out_of_range"),
        ({"dock_id": ""}, "invalid_dock_id"),
        ({"dock_id": "x\u0000y"}, "invalid_dock_id"),
        ({"ts": "yesterday"}, "invalid_timestamp"),
    ],
)
def test_impossible_or_malformed_fields_are_refused(body: dict[str, object], reason: str) -> None:
    result = decode(body)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.detail


def test_non_objects_are_refused() -> None:
    for raw in (b"[1,2]", b"not json", b'"text"'):
        result = decode_message(TOPIC, raw, NOW)
        assert isinstance(result, Rejection)


@given(
    battery=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    alt=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    mode=st.one_of(st.none(), st.sampled_from(FLIGHT_MODES), st.text(max_size=5)),
)
def test_check_telemetry_accepts_exactly_the_plausible_records(
    battery: float | None, alt: float | None, mode: str | None
) -> None:
    t = DroneTelemetry("d", NOW, battery_pct=battery, alt_takeoff_m=alt, flight_mode=mode)
    problem = check_telemetry(t)
    plausible = (
        (battery is None or 0 <= battery <= 100)
        and (alt is None or -1000 <= alt <= 10000)
        and (mode is None or mode in FLIGHT_MODES)
    )
    assert (problem is None) == plausible
