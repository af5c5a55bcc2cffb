"""Hostile input: whatever arrives on whatever topic, decode_message answers with a value.

The codec's safety net turns an unexpected exception into Rejection("internal_error");
these tests also assert that the net never fires, so a codec bug cannot hide behind it.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drones.dji import DjiState
from drones.telemetry import FLIGHT_MODE_SET
from mqtt_bridge.codecs import DEFAULT_MAX_PAYLOAD_BYTES, decode_message
from tracker.model import Decoded, Ignored, Rejection

RECEIVED = datetime(2024, 5, 20, 15, 0, 0, tzinfo=UTC)
NATIVE = "serenazgo/units/car-7/position"
STATUS = "serenazgo/units/car-7/status"
OWNTRACKS = "owntracks/jane/phone"
DJI_DOCK = "6QCDL820020093"
DJI_AIRCRAFT = "1581F5BKD225D00BP891"
DJI_TOPICS = [
    f"thing/product/{DJI_AIRCRAFT}/osd",
    f"thing/product/{DJI_DOCK}/osd",
    f"thing/product/{DJI_AIRCRAFT}/state",
    f"sys/product/{DJI_DOCK}/status",
]
TOPICS = [NATIVE, STATUS, OWNTRACKS, OWNTRACKS + "/event", *DJI_TOPICS]

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_invariants(result: object) -> None:
    """What every answer must satisfy, whatever the input."""
    assert isinstance(result, (Decoded, Ignored, Rejection)), result
    if isinstance(result, Rejection):
        assert result.reason != "internal_error", result.detail
        assert result.reason and result.reason.replace("_", "").isalnum() and result.reason.islower()
        assert result.detail
        return
    if isinstance(result, Decoded):
        for ping in result.pings:
            assert type(ping.lat) is float and math.isfinite(ping.lat)
            assert type(ping.lon) is float and math.isfinite(ping.lon)
            for value in (ping.alt, ping.speed, ping.heading, ping.accuracy, ping.battery):
                assert value is None or (type(value) is float and math.isfinite(value))
            assert ping.ts.tzinfo is not None and ping.ts.utcoffset() is not None
        for t in result.telemetry:
            assert t.ts.tzinfo is not None and t.ts.utcoffset() is not None
            assert t.flight_mode is None or t.flight_mode in FLIGHT_MODE_SET
            for number in (t.alt_takeoff_m, t.alt_ellipsoid_m, t.battery_pct, t.wind_speed_mps, t.home_lat):
                assert number is None or (type(number) is float and math.isfinite(number))


def _decode(
    topic: str, payload: bytes, limit: int = DEFAULT_MAX_PAYLOAD_BYTES, dji: DjiState | None = None
) -> object:
    result = decode_message(topic, payload, RECEIVED, limit, dji)
    _check_invariants(result)
    return result


def _reason(topic: str, payload: bytes) -> str:
    result = _decode(topic, payload)
    assert isinstance(result, Rejection), result
    return result.reason


# -- size -----------------------------------------------------------------------------


@pytest.mark.parametrize("topic", TOPICS)
def test_ten_megabyte_payload_is_refused_before_parsing(topic: str) -> None:
    big = b'{"lat": 1.5, "lon": 2.5, "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    result = _decode(topic, big)
    assert isinstance(result, Rejection)
    assert result.reason == "payload_too_large"
    assert str(len(big)) in result.detail


def test_size_limit_is_inclusive_and_configurable() -> None:
    payload = b'{"lat": 1.5, "lon": 2.5}'
    assert isinstance(_decode(NATIVE, payload, limit=len(payload)), Decoded)
    result = _decode(NATIVE, payload, limit=len(payload) - 1)
    assert isinstance(result, Rejection)
    assert result.reason == "payload_too_large"
    assert f"{len(payload)} bytes" in result.detail and f"{len(payload) - 1}-byte" in result.detail


# -- not JSON -------------------------------------------------------------------------


@pytest.mark.parametrize("topic", TOPICS)
@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"hello", "invalid_json"),
        (b"lat=1.5&lon=2.5", "invalid_json"),  # an OsmAnd query string on the wrong transport
        (b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A", "invalid_json"),
        (b"\x00\x01\x02\x03", "invalid_json"),
        (b"\xff\xfe{\x00}\x00", "invalid_utf8"),  # UTF-16 with BOM
        (b'{"lat": "\xe9", "lon": 2.5}', "invalid_utf8"),  # Latin-1 inside a JSON string
        (b"\xef\xbb\xbf{}", "invalid_json"),  # UTF-8 BOM: orjson, like RFC 8259 parsers, refuses it
        (b"{", "invalid_json"),
        (b'{"lat": 1.5, "lon": 2.5,}', "invalid_json"),  # trailing comma
        (b"{'lat': 1.5}", "invalid_json"),  # Python repr, not JSON
        # ioBroker.owntracks#6: an iPhone payload as a subscriber received it, cut off after "tid".
        (
            b'{"cog":136,"batt":75,"lon":9.227956132971894,"acc":10,"vel":0,"vac":4,'
            b'"lat":47.72337962412063,"t":"u","conn":"m","tst":1494851972,"alt":394,"_type":"location","tid',
            "invalid_json",
        ),
    ],
)
def test_non_json(topic: str, payload: bytes, reason: str) -> None:
    assert _reason(topic, payload) == reason


def test_random_binary_is_rejected() -> None:
    blob = os.urandom(4096)
    assert _reason(NATIVE, blob) in {"invalid_json", "invalid_utf8"}


@pytest.mark.parametrize("topic", TOPICS)
def test_empty_payload_is_how_mqtt_clears_a_retained_message(topic: str) -> None:
    assert _decode(topic, b"") == Ignored("empty_payload")


def test_empty_payload_on_a_bad_topic_is_still_rejected() -> None:
    assert _reason("serenazgo/units/+/position", b"") == "invalid_unit_id"


def test_buffer_types_other_than_bytes_decode_the_same() -> None:
    payload = b'{"lat": 1.5, "lon": 2.5, "ts": 1716217200}'
    expected = _decode(NATIVE, payload)
    assert _decode(NATIVE, bytearray(payload)) == expected  # type: ignore[arg-type]
    assert _decode(NATIVE, memoryview(payload)) == expected  # type: ignore[arg-type]


def test_non_text_topic_is_rejected() -> None:
    result = decode_message(b"serenazgo/units/car-7/position", b"{}", RECEIVED)  # type: ignore[arg-type]
    assert isinstance(result, Rejection)
    assert result.reason == "unknown_topic"


# -- NaN, Infinity, huge numbers ------------------------------------------------------


@pytest.mark.parametrize("topic", [NATIVE, OWNTRACKS])
@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"nan", b"1e400", b"-1e999"])
def test_non_finite_literals_are_invalid_json(topic: str, literal: bytes) -> None:
    payload = b'{"_type": "location", "lat": ' + literal + b', "lon": 2.5}'
    assert _reason(topic, payload) == "invalid_json"


@pytest.mark.parametrize("text", ["NaN", "nan", "Infinity", "-inf", "1e400", "0x1A", " 1", "1,5"])
def test_non_finite_or_odd_numeric_strings_are_wrong_type(text: str) -> None:
    # OwnTracks accepts numeric strings; these are not plain decimals, so they are refused.
    payload = orjson.dumps({"_type": "location", "lat": text, "lon": 2.5})
    assert _reason(OWNTRACKS, payload) == "wrong_type"
    # Native accepts no strings for coordinates at all.
    assert _reason(NATIVE, orjson.dumps({"lat": text, "lon": 2.5})) == "wrong_type"


def test_huge_integer_becomes_a_finite_float_for_the_filters() -> None:
    result = _decode(NATIVE, b'{"lat": 123456789012345678901234567890, "lon": 2.5}')
    assert isinstance(result, Decoded)
    assert result.pings[0].lat == 1.2345678901234568e29  # the filters reject it as out of range


# -- deep nesting ---------------------------------------------------------------------


@pytest.mark.parametrize("topic", TOPICS)
def test_deeply_nested_json_is_rejected(topic: str) -> None:
    deep = b"[" * 30_000 + b"]" * 30_000  # 60 KB: under the size limit, over the depth limit
    assert _reason(topic, deep) == "invalid_json"
    deep_object = b'{"a":' * 5000 + b"1" + b"}" * 5000
    assert _reason(topic, deep_object) == "invalid_json"


def test_nested_value_within_the_parser_limit_is_a_wrong_type() -> None:
    nested = b"[" * 500 + b"]" * 500
    assert _reason(NATIVE, b'{"lat": ' + nested + b', "lon": 2.5}') == "wrong_type"


# -- topics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("serenazgo/units/+/position", "invalid_unit_id"),
        ("serenazgo/units/#/status", "invalid_unit_id"),
        ("serenazgo/units//position", "invalid_unit_id"),
        ("serenazgo/units/a/../b/position", "invalid_unit_id"),
        ("serenazgo/units/car 7/position", "invalid_unit_id"),
        ("serenazgo/units/carro-ñ/position", "invalid_unit_id"),
        ("serenazgo/units/\u202ecar/position", "invalid_unit_id"),  # right-to-left override
        ("serenazgo/units/car\x00/position", "invalid_unit_id"),
        ("owntracks/jane//event", "invalid_device_id"),
        ("owntracks/+/+", "invalid_device_id"),
        ("owntracks/jane/ph\u200bone\x07", "invalid_device_id"),
        ("", "unknown_topic"),
        ("//////", "unknown_topic"),
        ("serenazgo/units/car-7/position/extra", "unknown_topic"),
        ("thing/product/+/osd", "invalid_device_id"),
        ("thing/product/#", "unknown_topic"),
        ("sys/product/\u202edock/status", "invalid_device_id"),
        ("thing/product/dock\x00/state", "invalid_device_id"),
        ("thing/product/../osd", "invalid_device_id"),
        ("sys/product", "unknown_topic"),
    ],
)
def test_hostile_topics(topic: str, reason: str) -> None:
    assert _reason(topic, b'{"lat": 1.5, "lon": 2.5}') == reason


# -- fuzzing --------------------------------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
_json = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Values aimed at the fields the codecs read: right types, wrong types, edge values.
_field_values = (
    _json
    | st.sampled_from(["NaN", "Infinity", "-1", "1716217200", "1716217200123", "2024-05-20T15:00:00Z", ""])
    | st.sampled_from([2**31 - 1, 2**31, -1, 0, 1e308, -1e308, 2**63 - 1])
)
_keys = st.sampled_from(
    [
        "_type",
        "lat",
        "lon",
        "ts",
        "tst",
        "alt",
        "speed",
        "heading",
        "accuracy",
        "battery",
        "mock",
        "status",
        "acc",
        "vel",
        "cog",
        "batt",
        "event",
        "desc",
        "wtst",
        "topic",
        "inregions",
        "created_at",
    ]
)
_types = st.sampled_from(
    [
        "location",
        "location",
        "location",
        "transition",
        "lwt",
        "card",
        "cmd",
        "waypoints",
        "encrypted",
        "x",
        "",
    ]
)


@st.composite
def _targeted_object(draw: st.DrawFn) -> dict[str, object]:
    """A mostly valid message with a few fields removed or replaced by anything at all."""
    obj: dict[str, object] = {
        "_type": draw(_types),
        "lat": draw(st.floats(-90, 90)),
        "lon": draw(st.floats(-180, 180)),
        "status": draw(st.sampled_from(["available", "on_scene", "busy"])),
        "event": draw(st.sampled_from(["enter", "leave", "arrive"])),
    }
    for key in draw(st.sets(_keys, max_size=2)):
        obj.pop(key, None)
    obj.update(draw(st.dictionaries(_keys, _field_values, max_size=3)))
    return obj


_payloads = (
    st.binary(max_size=300)
    | _json.map(orjson.dumps)
    | _targeted_object().map(orjson.dumps)
    | st.lists(_targeted_object(), max_size=4).map(orjson.dumps)
)
_levels = st.text(max_size=12) | st.sampled_from(
    ["+", "#", "", "car-7", "jane", "phone", "event", "position"]
)
_topics = (
    st.sampled_from(TOPICS)
    | st.builds(lambda sn, sub: f"thing/product/{sn}/{sub}", _levels, st.sampled_from(["osd", "state", "x"]))
    | st.builds(lambda sn: f"sys/product/{sn}/status", _levels)
    | st.text(max_size=60)
    | st.builds(lambda u: f"serenazgo/units/{u}/position", _levels)
    | st.builds(lambda u: f"serenazgo/units/{u}/status", _levels)
    | st.builds(lambda u, d: f"owntracks/{u}/{d}", _levels, _levels)
    | st.builds(lambda u, d, s: f"owntracks/{u}/{d}/{s}", _levels, _levels, _levels)
)


@FUZZ
@given(topic=_topics, payload=_payloads)
def test_fuzz_decode_message_never_raises(topic: str, payload: bytes) -> None:
    _decode(topic, payload)


@FUZZ
@given(payload=_targeted_object().map(orjson.dumps), topic=st.sampled_from(TOPICS))
def test_fuzz_targeted_fields_on_valid_topics(topic: str, payload: bytes) -> None:
    _decode(topic, payload)


@FUZZ
@given(payload=st.binary(max_size=2000), limit=st.integers(min_value=0, max_value=3000))
def test_fuzz_any_limit(payload: bytes, limit: int) -> None:
    result = _decode(NATIVE, payload, limit)
    if len(payload) > limit:
        assert isinstance(result, Rejection) and result.reason == "payload_too_large"


# -- DJI Cloud API: envelopes whose fields are replaced by anything, in any order ---------------

_DJI_KEYS = st.sampled_from(
    ["latitude", "longitude", "elevation", "height", "attitude_head", "horizontal_speed", "vertical_speed",
     "wind_speed", "battery", "mode_code", "position_state", "height_limit", "home_latitude",
     "home_longitude", "low_battery_warning_threshold", "drone_in_dock", "drone_charge_state", "sub_device",
     "network_state", "rainfall", "home_position_is_valid", "sub_devices", "domain"]
)  # fmt: skip
_dji_nested = st.fixed_dictionaries(
    {},
    optional={
        "capacity_percent": _field_values, "remain_flight_time": _field_values,
        "return_home_power": _field_values, "gps_number": _field_values, "is_fixed": _field_values,
        "quality": _field_values, "state": _field_values,
        "device_sn": _field_values | st.sampled_from([DJI_AIRCRAFT, "", "+", "x" * 70]),
        "device_online_status": _field_values, "type": _field_values,
    },
)  # fmt: skip
_dji_sub_device = st.fixed_dictionaries(
    {"sn": st.sampled_from([DJI_AIRCRAFT, "A1", "", "a/b"]) | _field_values},
    optional={"domain": st.sampled_from([0, "0", 1, 2, 3, "x", None, 1.5])},
)


@st.composite
def _dji_message(draw: st.DrawFn) -> tuple[str, bytes]:
    """A DJI envelope, mostly right, with a few fields of any type, on one of the DJI topics."""
    data: dict[str, object] = {
        "latitude": draw(st.floats(-90, 90)),
        "longitude": draw(st.floats(-180, 180)),
        "mode_code": draw(st.integers(-5, 30)),
        "battery": draw(_dji_nested),
        "position_state": draw(_dji_nested),
        "drone_charge_state": draw(_dji_nested),
        "sub_device": draw(_dji_nested),
        "drone_in_dock": draw(st.sampled_from([0, 1, True, False, 2, "1", None])),
        "sub_devices": draw(st.lists(_dji_sub_device, max_size=3)),
    }
    for key in draw(st.sets(_DJI_KEYS, max_size=6)):
        data.pop(key, None)
    data.update(draw(st.dictionaries(_DJI_KEYS, _field_values | _dji_nested, max_size=3)))
    envelope: dict[str, object] = {
        "tid": "t",
        "bid": "b",
        "timestamp": draw(st.one_of(*(st.just(1716217200000 + 2000 * k) for k in range(4)), _field_values)),
        "gateway": draw(st.sampled_from([DJI_DOCK, DJI_AIRCRAFT, None, "", "+", 5])),
        "method": draw(st.sampled_from(["update_topo", "update_topo", "other", None, 3])),
        "data": draw(st.just(data) | _field_values),
    }
    for key in draw(st.sets(st.sampled_from(list(envelope)), max_size=2)):
        del envelope[key]
    return draw(st.sampled_from(DJI_TOPICS)), orjson.dumps(envelope)


@FUZZ
@given(messages=st.lists(_dji_message(), min_size=1, max_size=8))
def test_fuzz_dji_message_sequences_never_raise(messages: list[tuple[str, bytes]]) -> None:
    state = DjiState(max_devices=4)
    for topic, payload in messages:
        result = _decode(topic, payload, dji=state)
        if isinstance(result, Decoded):
            assert result.ref.source.value == "dji"
    assert len(state) <= 16


def test_topic_flood_keeps_the_route_table_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import mqtt_bridge.codecs as codecs

    monkeypatch.setattr(codecs, "ROUTE_CACHE_SIZE", 10)
    monkeypatch.setattr(codecs, "_routes", {})
    for i in range(100):
        result = _decode(f"serenazgo/units/flood-{i}/position", b'{"lat": 1.5, "lon": 2.5}')
        assert isinstance(result, Decoded)
        assert result.pings[0].unit_id == f"flood-{i}"
        assert len(codecs._routes) <= 10
    # Cached answers are the same as fresh ones.
    again = _decode("serenazgo/units/flood-99/position", b'{"lat": 1.5, "lon": 2.5}')
    assert again == result
    assert _reason("serenazgo/units/+/position", b"{}") == "invalid_unit_id"
    assert _reason("serenazgo/units/+/position", b"{}") == "invalid_unit_id"
