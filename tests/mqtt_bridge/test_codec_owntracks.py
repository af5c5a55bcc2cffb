"""OwnTracks codec, fed payloads copied from the OwnTracks documentation and bug reports.

Each payload cites where it came from. Where the source redacted coordinates
("XXX") we put Lima coordinates in their place and say so.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from mqtt_bridge.codecs import decode_message
from tracker.config import FilterSettings
from tracker.filters import check_fix
from tracker.model import Decoded, DeviceEvent, DeviceRef, Ignored, Ping, PingFlag, Rejection, Source

RECEIVED = datetime(2024, 5, 20, 15, 0, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TOPIC = "owntracks/jane/phone"
EVENT_TOPIC = "owntracks/jane/phone/event"
REF = DeviceRef(Source.OWNTRACKS, "owntracks/jane/phone")


def _at(tst: int) -> datetime:
    return EPOCH + timedelta(seconds=tst)


def _decode(payload: bytes, topic: str = TOPIC) -> Decoded:
    result = decode_message(topic, payload, RECEIVED)
    assert isinstance(result, Decoded), result
    assert result.ref == REF
    return result


def _one_ping(payload: bytes, topic: str = TOPIC) -> Ping:
    result = _decode(payload, topic)
    assert len(result.pings) == 1
    ping = result.pings[0]
    assert ping.source is Source.OWNTRACKS
    assert ping.unit_id == ""  # resolved later through the registry
    assert ping.received_at == RECEIVED
    return ping


# -- location -------------------------------------------------------------------------


def test_ios_manual_publish_t_u() -> None:
    # owntracks/ios#449 (2017-05-28, ckrey), iOS simulator, "t":"u" = manual publish by the user.
    raw = (
        b'{"t":"u","tst":1495968123,"acc":5,"_type":"location","alt":0,"lon":-122.0312186,'
        b'"vel":0,"lat":37.33233141,"_cp":true,"conn":"w","tid":"32"}'
    )
    result = _decode(raw)
    assert result.pings == [
        Ping(
            unit_id="",
            ts=_at(1495968123),
            lat=37.33233141,
            lon=-122.0312186,
            alt=0.0,
            speed=0.0,
            heading=None,
            accuracy=5.0,
            battery=None,
            flags=PingFlag.NONE,
            source=Source.OWNTRACKS,
            received_at=RECEIVED,
        )
    ]
    assert result.event is None and result.status is None


def test_ios_location_with_inregions_and_pressure() -> None:
    # owntracks/ios#523 (2018-05-19, krambriw), iOS 9.8.12 beta: inregions, barometric "p", "_cp":1.
    raw = (
        b'{"batt":100,"lon":18.005110195262557,"acc":65,"p":102.05797576904297,"vac":10,'
        b'"lat":59.428773424623124,"inregions":["Home","EBEFD083-70A2-47C8-9837-E7B5634DF524"],'
        b'"t":"u","_cp":1,"conn":"w","tst":1526721166,"alt":28,"_type":"location","tid":"wk","name":"wk"}'
    )
    ping = _one_ping(raw)
    assert (ping.lat, ping.lon) == (59.428773424623124, 18.005110195262557)
    assert (ping.accuracy, ping.alt, ping.battery) == (65.0, 28.0, 100.0)
    assert ping.ts == _at(1526721166)
    assert ping.speed is None and ping.heading is None


def test_iphone_full_location_with_course_and_speed() -> None:
    # iobroker-community-adapters/ioBroker.owntracks#6 (2017-05-19), OwnTracks 9.3.0 on iPhone.
    # The report shows it cut off after "tid"; the closing of that field is ours.
    raw = (
        b'{"cog":136,"batt":75,"lon":9.227956132971894,"acc":10,"vel":0,"vac":4,'
        b'"lat":47.72337962412063,"t":"u","conn":"m","tst":1494851972,"alt":394,"_type":"location","tid":"df"}'
    )
    ping = _one_ping(raw)
    assert ping.heading == 136.0
    assert ping.speed == 0.0
    assert (ping.alt, ping.battery, ping.accuracy) == (394.0, 75.0, 10.0)


def test_android_float_altitude_and_velocity() -> None:
    # owntracks/android#629 (2018-12-09), Android app 2.1.0: alt and vel as floats although the
    # booklet says integer. lat/lon were redacted ("XXX") in the report: Miraflores used instead.
    raw = (
        b'{"_type":"location","acc":66,"alt":167.10000610351562,"batt":9,"conn":"w","lat":-12.1211,'
        b'"lon":-77.0297,"tid":"px","tst":1544227351,"vac":2,"vel":0.0}'
    )
    ping = _one_ping(raw)
    assert ping.alt == 167.10000610351562
    assert ping.speed == 0.0
    assert ping.battery == 9.0
    assert ping.ts == _at(1544227351)


def test_android_float_accuracy_without_vel_or_cog() -> None:
    # owntracks/android#83 (2015-01-10): early Android sent only these fields, acc as a float.
    # The report shows a decoded object ("type: location"); this is its JSON form.
    raw = b'{"_type":"location","lat":-42.8926992,"lon":147.3347587,"tst":1420860181,"acc":30.0,"batt":93}'
    ping = _one_ping(raw)
    assert ping.accuracy == 30.0
    assert ping.speed is None and ping.heading is None and ping.alt is None


def test_modern_android_extra_fields_and_created_at_are_ignored() -> None:
    # owntracks/android#2216 (2026-03-20): BSSID/SSID, bs, m, source, created_at. The report's
    # lat/lon were mangled for privacy ("9.0'''"); Miraflores used instead. created_at is the
    # message build time and must not replace tst: we give it a different value to prove that.
    raw = (
        b'{"_type":"location","BSSID":"e0:28:6d:a4:4e:a3","SSID":"Vodafone-xxxxxx","_id":"2b021f63",'
        b'"acc":7,"alt":369,"batt":22,"bs":2,"cog":0,"conn":"w","created_at":1774028099,'
        b'"inregions":["Casa"],"lat":-12.1211,"lon":-77.0297,"m":2,"source":"fused","tid":"f3",'
        b'"tst":1774028001,"vac":10,"vel":0}'
    )
    ping = _one_ping(raw)
    assert ping.ts == _at(1774028001)
    assert ping.heading == 0.0
    assert (ping.accuracy, ping.alt, ping.battery) == (7.0, 369.0, 22.0)


def test_velocity_is_converted_from_kmh() -> None:
    # Booklet (tech/json, _type=location): "vel" velocity in km/h. 54 km/h = 15 m/s.
    ping = _one_ping(b'{"_type":"location","lat":-12.1,"lon":-77.0,"tst":1716217200,"vel":54}')
    assert ping.speed == pytest.approx(15.0, rel=1e-12)


@pytest.mark.parametrize("field", ["vel", "cog"])
def test_minus_one_means_unknown(field: str) -> None:
    # owntracks/ios#347 (2015-10-19): iOS published "vel" -1 (then -3) when the OS had no value;
    # since then vel/acc/vac/cog are published only when valid (>= 0).
    payload = {"_type": "location", "lat": -12.1, "lon": -77.0, "tst": 1716217200, field: -1}
    ping = _one_ping(orjson.dumps(payload))
    assert ping.speed is None and ping.heading is None
    assert ping.flags == PingFlag.NONE


def test_other_negative_velocity_is_left_for_the_filters() -> None:
    # The -3 of owntracks/ios#347 is not a documented sentinel: the codec passes it (as m/s)
    # and the structural filter drops it with FIELD_DROPPED, so the fix itself is kept.
    ping = _one_ping(b'{"_type":"location","lat":-12.1,"lon":-77.0,"tst":1716217200,"vel":-3}')
    assert ping.speed == pytest.approx(-3 / 3.6)
    assert check_fix(ping, _at(1716217200), FilterSettings()) is None
    assert ping.speed is None
    assert ping.flags == PingFlag.FIELD_DROPPED


def test_missing_acc_is_none() -> None:
    # Booklet: "The acc, alt, cog, vac, vel elements are only added if they are not zero".
    ping = _one_ping(b'{"_type":"location","lat":-12.1,"lon":-77.0,"tst":1716217200}')
    assert ping.accuracy is None and ping.alt is None


def test_numeric_strings_are_accepted() -> None:
    # owntracks/gw#67 (2014-09-14): "In the OwnTracks apps we originally decided to publish the
    # float numbers as strings"; owntracks/gw#68 shows a Greenwich "batt" of 11.9.
    raw = b'{"_type":"location","lat":"-12.1211","lon":"-77.0297","tst":"1716217200","batt":"11.9","cog":"0"}'
    ping = _one_ping(raw)
    assert (ping.lat, ping.lon, ping.battery, ping.heading) == (-12.1211, -77.0297, 11.9, 0.0)
    assert ping.ts == _at(1716217200)


def test_float_battery() -> None:
    ping = _one_ping(b'{"_type":"location","lat":-12.1,"lon":-77.0,"tst":1716217200,"batt":87.5}')
    assert ping.battery == 87.5


def test_http_mode_topic_field_does_not_override_the_mqtt_topic() -> None:
    # aaronpk/Overland-iOS#196: an OwnTracks-format HTTP payload with a "topic" field (booklet:
    # "topic (only in HTTP payloads) contains the original publish topic"). Coordinates were
    # REDACTED in the report. Its tst 806434679 is 1995: Overland sent seconds since 2001.
    raw = (
        b'{"tst": 806434679, "acc": 10, "_type": "location", "lon": -77.0297,'
        b' "topic": "owntracks/iPhoneDev", "lat": -12.1211, "batt": 100}'
    )
    result = _decode(raw)
    assert result.ref == REF  # the broker-authenticated topic, not the payload's claim
    ping = result.pings[0]
    assert ping.ts == _at(806434679)
    # The codec reads what was sent; the filters catch the impossible date.
    rejection = check_fix(ping, RECEIVED, FilterSettings())
    assert rejection is not None and rejection.reason == "fix_before_1999"


def test_missing_tst_defaults_to_receive_time() -> None:
    ping = _one_ping(b'{"_type":"location","lat":-12.1,"lon":-77.0}')
    assert ping.ts == RECEIVED
    assert ping.flags == PingFlag.TS_DEFAULTED


@pytest.mark.parametrize(
    ("payload", "reason", "field"),
    [
        (b'{"_type":"location","lon":-77.0,"tst":1716217200}', "missing_field", "lat"),
        (b'{"_type":"location","lat":-12.1,"tst":1716217200}', "missing_field", "lon"),
        (b'{"_type":"location","lat":[1],"lon":-77.0}', "wrong_type", "lat"),
        (b'{"_type":"location","lat":-12.1,"lon":-77.0,"batt":"full"}', "wrong_type", "batt"),
        (b'{"_type":"location","lat":-12.1,"lon":-77.0,"vel":"NaN"}', "wrong_type", "vel"),
        (b'{"_type":"location","lat":-12.1,"lon":-77.0,"acc":"Infinity"}', "wrong_type", "acc"),
        (b'{"_type":"location","lat":-12.1,"lon":-77.0,"cog":true}', "wrong_type", "cog"),
        (b'{"_type":"location","lat":-12.1,"lon":-77.0,"tst":"soon"}', "invalid_timestamp", "tst"),
        (b'{"_type":"location","lat":-12.1,"lon":-77.0,"tst":"NaN"}', "invalid_timestamp", "tst"),
    ],
)
def test_bad_location_fields(payload: bytes, reason: str, field: str) -> None:
    result = decode_message(TOPIC, payload, RECEIVED)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert repr(field) in result.detail


# -- transition -----------------------------------------------------------------------


def test_transition_from_the_booklet() -> None:
    # https://owntracks.org/booklet/features/waypoints/ ("this JSON might be published when
    # entering a region").
    raw = (
        b'{"_type": "transition", "desc": "My favorite coffee shop (Delaville)", "event": "enter",'
        b' "lat": 48.87069, "lon": 2.34916, "rid": "f7676c", "tid": "j1", "tst": 1707057574,'
        b' "wtst": 1610104395}'
    )
    result = _decode(raw, EVENT_TOPIC)
    assert result.event == DeviceEvent(
        "transition",
        _at(1707057574),
        {
            "event": "enter",
            "desc": "My favorite coffee shop (Delaville)",
            "rid": "f7676c",
            "tid": "j1",
            "wtst": 1610104395,
        },
    )
    assert len(result.pings) == 1
    ping = result.pings[0]
    assert (ping.lat, ping.lon, ping.ts) == (48.87069, 2.34916, _at(1707057574))
    assert ping.source is Source.OWNTRACKS


def test_transition_from_the_poster_with_beacon_trigger_and_accuracy() -> None:
    # OwnTracks poster (owntracks.org/booklet/images/OwnTracksPosterA1.pdf): transition on
    # owntracks/user/device/event with acc 130 and "t":"b" (beacon).
    raw = (
        b'{"_type":"transition","wtst":1425042603,"lat":12.34,"lon":44.5,"tst":1427634603,'
        b'"acc":130,"tid":"JP","event":"enter","desc":"my Indian restaurant","t":"b"}'
    )
    result = _decode(raw, EVENT_TOPIC)
    assert result.pings[0].accuracy == 130.0
    assert result.event is not None
    assert result.event.detail["t"] == "b"
    assert result.event.detail["acc"] == 130


def test_transition_without_position_is_an_event_only() -> None:
    # Booklet: transition lat/lon are "optional".
    result = _decode(b'{"_type":"transition","event":"leave","tst":1707057574,"wtst":1}', EVENT_TOPIC)
    assert result.pings == []
    assert result.event == DeviceEvent("transition", _at(1707057574), {"event": "leave", "wtst": 1})


def test_transition_on_the_base_topic_decodes_the_same() -> None:
    raw = b'{"_type":"transition","event":"leave","lat":1.5,"lon":2.5,"tst":1707057574}'
    assert _decode(raw, TOPIC) == _decode(raw, EVENT_TOPIC)


def test_location_on_the_event_topic_decodes_the_same() -> None:
    raw = b'{"_type":"location","lat":1.5,"lon":2.5,"tst":1707057574}'
    assert _decode(raw, EVENT_TOPIC) == _decode(raw, TOPIC)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"_type":"transition","lat":1.5,"lon":2.5,"tst":1707057574}', "missing_field"),
        (b'{"_type":"transition","event":"arrive","tst":1707057574}', "unknown_event"),
        (b'{"_type":"transition","event":1,"tst":1707057574}', "wrong_type"),
        (b'{"_type":"transition","event":"enter","lat":1.5,"tst":1707057574}', "missing_field"),
    ],
)
def test_bad_transitions(payload: bytes, reason: str) -> None:
    result = decode_message(EVENT_TOPIC, payload, RECEIVED)
    assert isinstance(result, Rejection)
    assert result.reason == reason


def test_transition_detail_keeps_only_short_scalars() -> None:
    raw = orjson.dumps(
        {"_type": "transition", "event": "enter", "tst": 1707057574, "desc": "x" * 5000, "rid": {"a": [1]}}
    )
    result = _decode(raw, EVENT_TOPIC)
    assert result.event is not None
    assert result.event.detail == {"event": "enter", "desc": "x" * 200}


# -- lwt ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        # owntracks/ios#604 (2019-10-20), iOS 13.0.2: lwt with tst as a STRING.
        b'{"tst":"1571457804","_type":"lwt"}',
        # Booklet tech/json, _type=lwt: tst integer.
        b'{"_type":"lwt","tst":1571457804}',
    ],
)
def test_lwt_is_an_event_at_receive_time(raw: bytes) -> None:
    result = _decode(raw)
    assert result.pings == []
    # The broker publishes the will when it loses the app: that is now; tst is the connect time.
    assert result.event == DeviceEvent("lwt", RECEIVED, {"connected_at": _at(1571457804).isoformat()})


def test_lwt_without_tst() -> None:
    assert _decode(b'{"_type":"lwt"}').event == DeviceEvent("lwt", RECEIVED, {})


# -- other types, arrays --------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        "card",
        "cmd",
        "waypoint",
        "waypoints",
        "configuration",
        "steps",
        "encrypted",
        "status",
        "request",
        "beacon",
    ],
)
def test_non_position_types_are_ignored(kind: str) -> None:
    result = decode_message(TOPIC, orjson.dumps({"_type": kind}), RECEIVED)
    assert result == Ignored(f"owntracks_{kind}")


def test_card_from_the_booklet_is_ignored() -> None:
    # Booklet features/card: {"_type":"card","name":...,"face":<base64 PNG>}; face shortened here.
    raw = b'{"_type":"card","name":"Jane Jolie","face":"iVBORw0KGgoAAAANSUhEUgAAAEgAAABI"}'
    assert decode_message(TOPIC, raw, RECEIVED) == Ignored("owntracks_card")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"lat":1.5,"lon":2.5}', "missing_field"),
        (b'{"_type":7}', "wrong_type"),
        (b'{"_type":"msg","title":"Lunch"}', "unknown_type"),
        (b'"location"', "not_an_object"),
        (b"3.5", "not_an_object"),
    ],
)
def test_bad_envelopes(payload: bytes, reason: str) -> None:
    result = decode_message(TOPIC, payload, RECEIVED)
    assert isinstance(result, Rejection)
    assert result.reason == reason


def test_array_decodes_every_element_in_order() -> None:
    # Booklet tech/http: HTTP mode exchanges JSON arrays of messages.
    raw = (
        b'[{"_type":"location","lat":1.0,"lon":2.0,"tst":1707057500},'
        b'{"_type":"card","name":"Jane"},'
        b'{"_type":"transition","event":"enter","lat":1.1,"lon":2.1,"tst":1707057574},'
        b'{"_type":"location","lat":1.2,"lon":2.2,"tst":1707057600}]'
    )
    result = _decode(raw)
    assert [(p.lat, p.ts) for p in result.pings] == [
        (1.0, _at(1707057500)),
        (1.1, _at(1707057574)),
        (1.2, _at(1707057600)),
    ]
    assert result.event is not None and result.event.kind == "transition"


def test_array_keeps_the_last_event() -> None:
    raw = b'[{"_type":"transition","event":"enter","tst":1707057500},{"_type":"lwt","tst":1707057000}]'
    result = _decode(raw)
    assert result.event is not None and result.event.kind == "lwt"


def test_array_with_one_bad_element_is_rejected_whole() -> None:
    raw = b'[{"_type":"location","lat":1.0,"lon":2.0},{"_type":"location","lat":"north","lon":2.0}]'
    result = decode_message(TOPIC, raw, RECEIVED)
    assert isinstance(result, Rejection)
    assert result.reason == "wrong_type"
    assert result.detail.startswith("array element [1]:")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"[]", Ignored("owntracks_empty_array")),
        (b'[{"_type":"card"},{"_type":"cmd"}]', Ignored("owntracks_card")),
    ],
)
def test_arrays_with_nothing_to_store_are_ignored(raw: bytes, expected: Ignored) -> None:
    assert decode_message(TOPIC, raw, RECEIVED) == expected


@pytest.mark.parametrize("raw", [b"[1]", b"[[]]", b'["location"]'])
def test_array_of_non_objects_is_rejected(raw: bytes) -> None:
    result = decode_message(TOPIC, raw, RECEIVED)
    assert isinstance(result, Rejection)
    assert result.reason == "not_an_object"


def test_device_ref_and_derived_unit_id() -> None:
    result = decode_message("owntracks/josé/iPhone 12", b'{"_type":"location","lat":1.5,"lon":2.5}', RECEIVED)
    assert isinstance(result, Decoded)
    assert result.ref == DeviceRef(Source.OWNTRACKS, "owntracks/josé/iPhone 12")
    assert result.ref.derived_unit_id() == "ot.jos..iPhone.12"
