"""The OsmAnd codec on real Traccar Client requests (query and JSON), and on broken ones.

The captures are the requests of Traccar's own decoder tests
(traccar/traccar, OsmAndProtocolDecoderTest: Traccar Client on Android and iOS,
and OsmAnd-protocol trackers). Expected values are worked out by hand from the
protocol's units: knots are 1852 m per hour, battery levels 0..1 are fractions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtt_bridge.codecs import OSMAND_HTTP_TOPIC, decode_message
from tracker.model import Decoded, DeviceRef, PingFlag, Rejection, Source

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# Traccar Client 9 (background-geolocation) on Android: moving, battery 79 %.
JSON_ANDROID = (
    b'{"location":{"event":"motionchange","is_moving":false,"uuid":"0e9a2473-a9a7-4c00-997b-fb97d2154e75",'
    b'"timestamp":"2021-07-21T08:06:34.444Z","odometer":0,"coords":{"latitude":-6.1148096,'
    b'"longitude":106.6837015,"accuracy":3.8,"speed":18.67,"speed_accuracy":0.26,"heading":63,'
    b'"heading_accuracy":0.28,"altitude":35.7,"altitude_accuracy":3.8},"activity":{"type":"still",'
    b'"confidence":100},"battery":{"is_charging":false,"level":0.79},"extras":{}},"device_id":"8737767034"}'
)
# Traccar Client 9 on the iOS simulator: unknown speed/heading/battery (-1), a mock fix.
JSON_IOS = (
    b'{"location":{"extras":{},"mock":true,"coords":{"speed_accuracy":-1,"speed":-1,"longitude":-122.406417,'
    b'"ellipsoidal_altitude":0,"floor":null,"heading_accuracy":-1,"latitude":37.785834000000001,"accuracy":5,'
    b'"altitude_accuracy":-1,"altitude":0,"heading":-1},"is_moving":false,"age":188,"odometer":0,'
    b'"uuid":"2FB04C65-99CF-42AB-8DD3-EBCB4B108BF8","event":"motionchange","battery":{"level":-1,'
    b'"is_charging":false},"activity":{"type":"unknown","confidence":100},'
    b'"timestamp":"2025-05-09T04:11:30.579Z"},"device_id":"658765"}'
)


def decode(payload: bytes) -> Decoded:
    res = decode_message(OSMAND_HTTP_TOPIC, payload, NOW)
    assert isinstance(res, Decoded), res
    return res


def test_query_iso_timestamp_speed_in_knots() -> None:
    res = decode(
        b"id=902064&lat=42.06288&lon=-88.23412&timestamp=2016-01-27T18%3A55%3A47Z&hdop=6.0&altitude=224.0&speed=10.0"
    )
    assert res.ref == DeviceRef(Source.OSMAND, "902064")
    (p,) = res.pings
    assert (p.lat, p.lon, p.alt) == (42.06288, -88.23412, 224.0)
    assert p.ts == datetime(2016, 1, 27, 18, 55, 47, tzinfo=UTC)
    assert p.speed == pytest.approx(10.0 * 1852 / 3600)
    assert p.source is Source.OSMAND and p.flags == PingFlag.NONE


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("1442068686579", datetime(2015, 9, 12, 14, 38, 6, 579000, tzinfo=UTC)),  # ms
        ("1377177267", datetime(2013, 8, 22, 13, 14, 27, tzinfo=UTC)),  # s
        (
            "2014-06-04+09%3A10%3A11",
            datetime(2014, 6, 4, 9, 10, 11, tzinfo=UTC),
        ),  # Traccar's local format, UTC
    ],
)
def test_query_timestamps(stamp: str, expected: datetime) -> None:
    (p,) = decode(f"id=123456&timestamp={stamp}&lat=60.0&lon=30.0".encode()).pings
    assert p.ts == expected


def test_query_deviceid_heading_batt_and_location_pair() -> None:
    (p,) = decode(
        b"lat=60.0&lon=30.0&speed=0.0&heading=90.5&vacc=0&hacc=0&altitude=0&deviceid=123456&batt=87"
    ).pings
    assert (p.heading, p.battery, p.speed) == (90.5, 87.0, 0.0)
    assert p.flags == PingFlag.TS_DEFAULTED and p.ts == NOW
    res = decode(b"id=123456&timestamp=1377177267&location=60.0,30.0&bearing=7.19889788244&accuracy=12")
    assert (res.pings[0].lat, res.pings[0].lon, res.pings[0].heading, res.pings[0].accuracy) == (
        60.0,
        30.0,
        7.19889788244,
        12.0,
    )


def test_json_android_capture() -> None:
    res = decode(JSON_ANDROID)
    assert res.ref == DeviceRef(Source.OSMAND, "8737767034")
    (p,) = res.pings
    assert (p.lat, p.lon, p.accuracy, p.alt, p.heading) == (-6.1148096, 106.6837015, 3.8, 35.7, 63.0)
    assert p.speed == 18.67  # m/s in the JSON body, unlike the query's knots
    assert p.battery == pytest.approx(79.0)
    assert p.ts == datetime(2021, 7, 21, 8, 6, 34, 444000, tzinfo=UTC)


def test_json_ios_unknowns_and_mock() -> None:
    (p,) = decode(JSON_IOS).pings
    assert (p.speed, p.heading, p.battery) == (None, None, None)
    assert p.flags == PingFlag.MOCK
    assert p.lat == pytest.approx(37.785834)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"lat=60.0&lon=30.0", "missing_field"),
        (b"id=1&lat=abc&lon=30.0", "wrong_type"),
        (b"id=1&lat=60.0&lon=nan", "wrong_type"),
        (b"id=1&lat=60.0", "missing_field"),
        (b"id=1&lat=1&lon=2&timestamp=yesterday", "invalid_timestamp"),
        (b"id=1&lat=1&lon=2&speed=fast", "wrong_type"),
        (b"id=1&lat=1&lon=2&valid=false", "invalid_fix"),
        (b"id=" + b"9" * 65 + b"&lat=1&lon=2", "invalid_device_id"),
        (b"&".join(b"k%d=1" % i for i in range(200)), "too_many_fields"),
        (b"id=1&lat=\xff&lon=2", "invalid_encoding"),
        (b"", "missing_field"),
        (b'{"device_id": "1"}', "missing_field"),
        (b'{"location": {"coords": {"latitude": 1, "longitude": 2}}}', "missing_field"),
        (b'{"device_id": "1", "location": {"coords": {"latitude": "x", "longitude": 2}}}', "wrong_type"),
        (b'{"device_id": "1", "location": {"coords": {"latitude": 1}}}', "missing_field"),
        (b'{"device_id": "1", "location": {"coords": 5}}', "wrong_type"),
        (b'{"device_id": [], "location": {}}', "wrong_type"),
        (b"[1, 2]", "not_an_object"),
        (b"{not json", "invalid_json"),
    ],
)
def test_broken_requests_are_rejections_with_a_reason(payload: bytes, reason: str) -> None:
    res = decode_message(OSMAND_HTTP_TOPIC, payload, NOW)
    assert isinstance(res, Rejection), res
    assert res.reason == reason
    assert res.detail


@pytest.mark.parametrize("text", ["NaN", "nan", "inf", "-Infinity", "1e400", "0x1A", "1,5", "1_000", ""])
def test_odd_numbers_are_wrong_type_or_missing(text: str) -> None:
    res = decode_message(OSMAND_HTTP_TOPIC, f"id=1&lat={text}&lon=2".encode(), NOW)
    assert isinstance(res, Rejection)
    assert res.reason == ("missing_field" if text == "" else "wrong_type")


_FIELD = st.sampled_from(["id", "deviceid", "lat", "lon", "location", "timestamp", "speed", "bearing",
                          "heading", "altitude", "accuracy", "batt", "valid", "token", "x"])  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_FIELD, st.text(max_size=30)))
def test_any_fields_decode_to_a_value(fields: dict[str, str]) -> None:
    payload = urlencode(fields).encode()
    res = decode_message(OSMAND_HTTP_TOPIC, payload, NOW)
    assert isinstance(res, Decoded | Rejection)
    if isinstance(res, Rejection):
        assert res.reason != "internal_error" and res.detail


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_value(payload: bytes) -> None:
    res = decode_message(OSMAND_HTTP_TOPIC, payload, NOW)
    assert isinstance(res, Decoded | Rejection)
    assert not (isinstance(res, Rejection) and res.reason == "internal_error")
