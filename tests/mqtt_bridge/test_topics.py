"""Topic scheme: routing, subscription filters, and the topic-injection defence."""

from __future__ import annotations

import pytest

from mqtt_bridge.topics import (
    OWNTRACKS_IGNORED_SUBTOPICS,
    SUBSCRIPTION_FILTERS,
    UNSHARED_FILTERS,
    Route,
    RouteKind,
    parse_topic,
    shared_subscription,
    subscription_filters,
)
from tracker.errors import ConfigError
from tracker.model import Ignored, Rejection


def _matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 §4.7 filter matching, written out independently of the product code."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


@pytest.mark.parametrize(
    ("topic", "kind", "ids"),
    [
        ("serenazgo/units/car-7/position", RouteKind.NATIVE_POSITION, ("car-7",)),
        ("serenazgo/units/SER.104:a_b/status", RouteKind.NATIVE_STATUS, ("SER.104:a_b",)),
        ("serenazgo/units/car-7/incident", RouteKind.NATIVE_INCIDENT, ("car-7",)),
        ("owntracks/jane/phone", RouteKind.OWNTRACKS, ("jane", "phone")),
        ("owntracks/jane/phone/event", RouteKind.OWNTRACKS_EVENT, ("jane", "phone")),
        # OwnTracks device names are free text chosen on the phone.
        ("owntracks/josé/iPhone de José", RouteKind.OWNTRACKS, ("josé", "iPhone de José")),
        # DJI Cloud API: keyed by the device's own serial.
        ("thing/product/1581F5BKD225D00BP891/osd", RouteKind.DJI_OSD, ("1581F5BKD225D00BP891",)),
        ("thing/product/6QCDL820020093/state", RouteKind.DJI_STATE, ("6QCDL820020093",)),
        ("sys/product/6QCDL820020093/status", RouteKind.DJI_STATUS, ("6QCDL820020093",)),
    ],
)
def test_routes(topic: str, kind: RouteKind, ids: tuple[str, ...]) -> None:
    assert parse_topic(topic) == Route(kind, ids)


def test_every_routed_topic_is_covered_by_a_subscription_filter() -> None:
    routed = [
        "serenazgo/units/car-7/position",
        "serenazgo/units/car-7/status",
        "owntracks/jane/phone",
        "owntracks/jane/phone/event",
        "thing/product/1581F5BKD225D00BP891/osd",
        "thing/product/6QCDL820020093/state",
        "sys/product/6QCDL820020093/status",
    ]
    for topic in routed:
        assert isinstance(parse_topic(topic), Route)
        assert any(_matches(f, topic) for f in SUBSCRIPTION_FILTERS), topic
    # ... and the filters do not pull in subtopics we would only ignore.
    assert not any(_matches(f, "owntracks/jane/phone/cmd") for f in SUBSCRIPTION_FILTERS)
    assert not any(_matches(f, "serenazgo/deadletter") for f in SUBSCRIPTION_FILTERS)
    # DJI: not the command topics, nor what the cloud itself publishes to devices.
    for sub in ("events", "services", "services_reply", "requests", "property/set", "drc/down"):
        assert not any(_matches(f, f"thing/product/6QCDL820020093/{sub}") for f in SUBSCRIPTION_FILTERS)
    assert not any(_matches(f, "sys/product/6QCDL820020093/status_reply") for f in SUBSCRIPTION_FILTERS)


def test_shared_subscription_form() -> None:
    assert (
        shared_subscription("serenazgo/units/+/position", "bridges")
        == "$share/bridges/serenazgo/units/+/position"
    )
    shared = subscription_filters("bridges")
    dji = ("thing/", "sys/")
    assert shared == [f if f.startswith(dji) else f"$share/bridges/{f}" for f in SUBSCRIPTION_FILTERS]
    # DJI state (topology, merged dock OSD) needs every message of a dock: never split over a group.
    assert {f for f in shared if not f.startswith("$share/")} == UNSHARED_FILTERS
    assert subscription_filters(None) == list(SUBSCRIPTION_FILTERS)


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#", "tab\tgroup"])
def test_bad_share_group_is_a_config_error(group: str) -> None:
    with pytest.raises(ConfigError, match="share group"):
        shared_subscription("owntracks/+/+", group)


@pytest.mark.parametrize("sub", sorted(OWNTRACKS_IGNORED_SUBTOPICS))
def test_owntracks_subtopics_are_ignored_with_a_reason(sub: str) -> None:
    result = parse_topic(f"owntracks/jane/phone/{sub}")
    assert result == Ignored(f"owntracks_subtopic_{sub}")


@pytest.mark.parametrize(
    "topic",
    [
        "serenazgo/units/+/position",  # wildcard as unit id
        "serenazgo/units/#/position",
        "serenazgo/units//position",  # empty level
        "serenazgo/units/a/b/position",  # '/' smuggled into the id
        "serenazgo/units/../position",
        "serenazgo/units/ünïcode/position",
        "serenazgo/units/car 7/position",
        "serenazgo/units/-car/position",  # must start with a letter or digit
        "serenazgo/units/car\n/position",
        "serenazgo/units/" + "x" * 65 + "/position",
    ],
)
def test_native_unit_id_injection_is_rejected(topic: str) -> None:
    result = parse_topic(topic)
    assert isinstance(result, Rejection)
    assert result.reason == "invalid_unit_id"
    assert "unit id" in result.detail


def test_longest_valid_native_unit_id_is_accepted() -> None:
    unit_id = "x" * 64
    assert parse_topic(f"serenazgo/units/{unit_id}/position") == Route(RouteKind.NATIVE_POSITION, (unit_id,))


@pytest.mark.parametrize(
    "topic",
    [
        "owntracks/+/phone",
        "owntracks/jane/#",
        "owntracks//phone",
        "owntracks/jane/",
        "owntracks/jane/ph\x00one",
        "owntracks/" + "u" * 129 + "/phone",
    ],
)
def test_owntracks_bad_levels_are_rejected(topic: str) -> None:
    result = parse_topic(topic)
    assert isinstance(result, Rejection)
    assert result.reason == "invalid_device_id"


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "/",
        "serenazgo",
        "serenazgo/units/car-7",
        "serenazgo/units/car-7/velocity",
        "serenazgo/events/geofence",
        "owntracks",
        "owntracks/jane",
        "owntracks/jane/phone/event/extra",
        "owntracks/jane/phone/unknownsub",
        "$SYS/broker/uptime",
        "OwnTracks/jane/phone",  # topics are case-sensitive
    ],
)
def test_unknown_topics_are_rejected(topic: str) -> None:
    result = parse_topic(topic)
    assert isinstance(result, Rejection)
    assert result.reason == "unknown_topic"
