"""Native codec (serenazgo/units/{unit_id}/position|status), through the public decode_message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from mqtt_bridge.codecs import decode_message
from tracker.model import (
    Decoded,
    DeviceRef,
    FieldReport,
    Ping,
    PingFlag,
    Rejection,
    Source,
    StatusUpdate,
    UnitStatus,
)

RECEIVED = datetime(2024, 5, 20, 15, 0, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
POS = "serenazgo/units/moto-3/position"
STATUS = "serenazgo/units/moto-3/status"


def _ping(payload: dict[str, object] | bytes, topic: str = POS) -> Ping:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    result = decode_message(topic, raw, RECEIVED)
    assert isinstance(result, Decoded), result
    assert len(result.pings) == 1
    return result.pings[0]


def _reject(payload: dict[str, object] | bytes, topic: str = POS) -> Rejection:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    result = decode_message(topic, raw, RECEIVED)
    assert isinstance(result, Rejection), result
    return result


def test_full_position_message() -> None:
    # The example payload of the wire contract (DESIGN.md), Miraflores coordinates.
    raw = (
        b'{"ts": "2024-05-20T14:59:58Z", "lat": -12.1211, "lon": -77.0297, "alt": 80.5,'
        b' "speed": 8.3, "heading": 182, "accuracy": 5, "battery": 81, "mock": false}'
    )
    result = decode_message(POS, raw, RECEIVED)
    assert result == Decoded(
        ref=DeviceRef(Source.NATIVE, "moto-3"),
        pings=[
            Ping(
                unit_id="moto-3",
                ts=datetime(2024, 5, 20, 14, 59, 58, tzinfo=UTC),
                lat=-12.1211,
                lon=-77.0297,
                alt=80.5,
                speed=8.3,
                heading=182.0,
                accuracy=5.0,
                battery=81.0,
                flags=PingFlag.NONE,
                source=Source.NATIVE,
                received_at=RECEIVED,
            )
        ],
    )


def test_only_lat_lon_required_and_ts_defaults_to_receive_time() -> None:
    ping = _ping({"lat": -12.1, "lon": -77.0})
    assert ping.ts == RECEIVED
    assert ping.flags == PingFlag.TS_DEFAULTED
    assert (ping.alt, ping.speed, ping.heading, ping.accuracy, ping.battery) == (None,) * 5


def test_null_ts_also_defaults() -> None:
    assert _ping({"lat": 1.5, "lon": 2.5, "ts": None}).flags == PingFlag.TS_DEFAULTED


def test_numbers_come_out_as_floats() -> None:
    ping = _ping({"lat": -12, "lon": -77, "battery": 81, "accuracy": 5, "ts": 1716217200})
    for value in (ping.lat, ping.lon, ping.battery, ping.accuracy):
        assert type(value) is float


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        # epoch seconds / milliseconds, as number or numeric string (2**31 threshold)
        (1716217200, datetime(2024, 5, 20, 15, 0, tzinfo=UTC)),
        (1716217200.5, datetime(2024, 5, 20, 15, 0, 0, 500000, tzinfo=UTC)),
        (1716217200123, datetime(2024, 5, 20, 15, 0, 0, 123000, tzinfo=UTC)),
        ("1716217200", datetime(2024, 5, 20, 15, 0, tzinfo=UTC)),
        ("1716217200123", datetime(2024, 5, 20, 15, 0, 0, 123000, tzinfo=UTC)),
        (2**31 - 1, EPOCH + timedelta(seconds=2**31 - 1)),  # 2038-01-19: still seconds
        (2**31, EPOCH + timedelta(milliseconds=2**31)),  # from here on: milliseconds
        # ISO-8601 with an offset, converted to UTC
        ("2024-05-20T15:00:00Z", datetime(2024, 5, 20, 15, 0, tzinfo=UTC)),
        ("2024-05-20T10:00:00-05:00", datetime(2024, 5, 20, 15, 0, tzinfo=UTC)),  # Lima local time
        ("2024-05-20T15:00:00.250+00:00", datetime(2024, 5, 20, 15, 0, 0, 250000, tzinfo=UTC)),
    ],
)
def test_timestamp_forms(ts: object, expected: datetime) -> None:
    ping = _ping({"lat": -12.1, "lon": -77.0, "ts": ts})
    assert ping.ts == expected
    assert ping.ts.tzinfo is not None and ping.ts.utcoffset() == timedelta(0)
    assert ping.flags == PingFlag.NONE


@pytest.mark.parametrize(
    "ts",
    [
        "2024-05-20T15:00:00",  # no offset: ambiguous in Lima (UTC-5)
        "2024-05-20",
        "yesterday",
        "NaN",
        "Infinity",
        "1e9",
        " 1716217200",
        "1_716_217_200",
        "",
        True,
        [1716217200],
        {"s": 1},
        10**18,  # far beyond year 9999 even as milliseconds
        "0001-01-01T00:00:00+05:00",  # overflows when moved to UTC
        "9" * 30,
    ],
)
def test_bad_timestamps_are_rejected(ts: object) -> None:
    rejection = _reject({"lat": -12.1, "lon": -77.0, "ts": ts})
    assert rejection.reason == "invalid_timestamp"
    assert "'ts'" in rejection.detail


def test_mock_flag() -> None:
    assert _ping({"lat": 1.5, "lon": 2.5, "ts": 1716217200, "mock": True}).flags == PingFlag.MOCK
    assert _ping({"lat": 1.5, "lon": 2.5, "ts": 1716217200, "mock": False}).flags == PingFlag.NONE
    both = _ping({"lat": 1.5, "lon": 2.5, "mock": True}).flags
    assert both == PingFlag.MOCK | PingFlag.TS_DEFAULTED
    assert _reject({"lat": 1.5, "lon": 2.5, "mock": "yes"}).reason == "wrong_type"
    assert _reject({"lat": 1.5, "lon": 2.5, "mock": 1}).reason == "wrong_type"


@pytest.mark.parametrize("field", ["lat", "lon"])
def test_missing_required_field(field: str) -> None:
    payload: dict[str, object] = {"lat": 1.5, "lon": 2.5}
    del payload[field]
    rejection = _reject(payload)
    assert rejection.reason == "missing_field"
    assert repr(field) in rejection.detail
    payload[field] = None
    assert _reject(payload).reason == "missing_field"


@pytest.mark.parametrize("field", ["lat", "lon", "alt", "speed", "heading", "accuracy", "battery"])
@pytest.mark.parametrize("value", ["12.5", True, [1.0], {"v": 1}])
def test_wrong_types_are_rejected_naming_the_field(field: str, value: object) -> None:
    payload: dict[str, object] = {"lat": 1.5, "lon": 2.5, field: value}
    rejection = _reject(payload)
    assert rejection.reason == "wrong_type"
    assert repr(field) in rejection.detail
    assert "number" in rejection.detail


def test_out_of_range_values_pass_the_codec() -> None:
    # Ranges are the filters' job (tracker.filters); the codec only guarantees finite floats.
    ping = _ping({"lat": 123.0, "lon": -500.0, "battery": 180, "speed": -3})
    assert (ping.lat, ping.lon, ping.battery, ping.speed) == (123.0, -500.0, 180.0, -3.0)


def test_unknown_fields_are_ignored() -> None:
    ping = _ping({"lat": 1.5, "lon": 2.5, "satellites": 9, "note": {"x": [1, 2]}})
    assert (ping.lat, ping.lon) == (1.5, 2.5)


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"lat"', b"42", b"null", b"true"])
def test_non_object_json_is_rejected(payload: bytes) -> None:
    assert _reject(payload).reason == "not_an_object"


@pytest.mark.parametrize("status", list(UnitStatus))
def test_every_status_value_decodes(status: UnitStatus) -> None:
    raw = orjson.dumps({"status": status.value, "ts": "2024-05-20T14:00:00Z"})
    result = decode_message(STATUS, raw, RECEIVED)
    assert result == Decoded(
        ref=DeviceRef(Source.NATIVE, "moto-3"),
        status=StatusUpdate(status, datetime(2024, 5, 20, 14, tzinfo=UTC)),
    )


def test_status_ts_defaults_to_receive_time() -> None:
    result = decode_message(STATUS, b'{"status": "on_scene"}', RECEIVED)
    assert isinstance(result, Decoded)
    assert result.status == StatusUpdate(UnitStatus.ON_SCENE, RECEIVED)
    assert result.pings == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"status": "busy"}', "unknown_status"),
        (b'{"status": "AVAILABLE"}', "unknown_status"),  # values are case-sensitive
        (b'{"status": 3}', "wrong_type"),
        (b"{}", "missing_field"),
        (b'{"status": "available", "ts": "noon"}', "invalid_timestamp"),
        (b'["available"]', "not_an_object"),
    ],
)
def test_bad_status_messages(payload: bytes, reason: str) -> None:
    assert _reject(payload, STATUS).reason == reason


def test_unknown_status_lists_the_valid_values() -> None:
    detail = _reject(b'{"status": "busy"}', STATUS).detail
    for status in UnitStatus:
        assert status.value in detail


def test_received_at_in_another_zone_is_kept_as_given() -> None:
    lima = timezone(timedelta(hours=-5))
    received = datetime(2024, 5, 20, 10, 0, tzinfo=lima)
    result = decode_message(POS, b'{"lat": 1.5, "lon": 2.5}', received)
    assert isinstance(result, Decoded)
    assert result.pings[0].ts == received  # the same instant as 15:00 UTC


INCIDENT = "serenazgo/units/moto-3/incident"


def test_incident_report_with_every_field() -> None:
    raw = orjson.dumps({"category": "apoyo_turista", "priority": 1, "description": "turista perdido",
                        "lat": -12.12, "lon": -77.03, "ts": "2024-05-20T14:59:00Z"})  # fmt: skip
    result = decode_message(INCIDENT, raw, RECEIVED)
    assert result == Decoded(
        ref=DeviceRef(Source.NATIVE, "moto-3"),
        report=FieldReport("moto-3", datetime(2024, 5, 20, 14, 59, tzinfo=UTC), "apoyo_turista", 1,
                           "turista perdido", -12.12, -77.03, RECEIVED, raw),
    )  # fmt: skip


def test_incident_report_defaults_ts_priority_and_place() -> None:
    result = decode_message(INCIDENT, b'{"category": "otro", "lat": null, "priority": null}', RECEIVED)
    assert isinstance(result, Decoded) and result.report is not None
    r = result.report
    assert (r.ts, r.priority, r.description, r.lat, r.lon, r.category) == (
        RECEIVED,
        3,
        "",
        None,
        None,
        "otro",
    )
    assert result.pings == [] and result.status is None
