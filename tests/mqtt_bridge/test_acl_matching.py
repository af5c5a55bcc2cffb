"""The grants as a broker without Mosquitto enforces them: topic matching, filter containment, logins.

No server: :mod:`mqtt_bridge.broker_acl`'s pure functions, checked against paho's own
matcher (an independent implementation of MQTT 3.1.1 section 4.7) and by brute force.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from mqtt_bridge.broker_acl import (
    AccessRules,
    Account,
    Grant,
    bridge_grants,
    device_grants,
    filter_within,
    may_read,
    may_subscribe,
    may_write,
    render_access,
    simulator_grants,
    topic_matches,
    valid_filter,
)
from tracker.mosquitto_hash import mosquitto_hash
from tracker.store.credentials import BrokerCredential

OWN = "serenazgo/units/car-1/#"


@pytest.mark.parametrize(
    ("grant", "topic", "expected"),
    [
        (OWN, "serenazgo/units/car-1/position", True),
        (OWN, "serenazgo/units/car-1", True),  # '#' matches its parent level
        (OWN, "serenazgo/units/car-1/a/b/c", True),
        (OWN, "serenazgo/units/car-1/", True),  # an empty last level is a level
        (OWN, "serenazgo/units/car-10/position", False),
        (OWN, "serenazgo/units/car-/position", False),
        (OWN, "serenazgo/units/car-2/position", False),
        (OWN, "serenazgo/units//car-1/position", False),
        (OWN, "Serenazgo/units/car-1/position", False),  # case matters
        (OWN, "serenazgo/units/car-1/+", False),  # a topic name with a wildcard matches nothing
        (OWN, "serenazgo/units/car-1/#", False),
        (OWN, "serenazgo/units/car-1\0/x", False),
        ("serenazgo/units/+/position", "serenazgo/units/x/position", True),
        ("serenazgo/units/+/position", "serenazgo/units//position", True),
        ("serenazgo/units/+/position", "serenazgo/units/x/y/position", False),
        ("serenazgo/units/+/position", "serenazgo/units/x", False),
        ("#", "anything/at/all", True),
        ("#", "$SYS/broker/uptime", False),  # a leading wildcard never matches a $ topic
        ("+/broker/uptime", "$SYS/broker/uptime", False),
        ("$SYS/#", "$SYS/broker/uptime", True),
        ("a/#/b", "a/x/b", False),  # malformed filters match nothing
        ("a/b#", "a/b#", False),
        ("a/+b", "a/+b", False),
        ("", "", False),
        ("a", "", False),
    ],
)
def test_topic_matches(grant: str, topic: str, expected: bool) -> None:
    assert topic_matches(grant, topic) is expected


@pytest.mark.parametrize(
    ("inner", "outer", "expected"),
    [
        ("serenazgo/units/car-1/position", OWN, True),
        ("serenazgo/units/car-1/+", OWN, True),
        ("serenazgo/units/car-1/#", OWN, True),
        ("serenazgo/units/car-1", OWN, True),
        ("serenazgo/units/car-1/+/+/#", OWN, True),
        ("serenazgo/units/+/position", OWN, False),  # every unit's positions
        ("serenazgo/units/#", OWN, False),
        ("serenazgo/#", OWN, False),
        ("#", OWN, False),
        ("+/units/car-1/position", OWN, False),  # '+' at the top also matches other trees
        ("serenazgo/units/car-1/position", "serenazgo/units/+/position", True),
        ("serenazgo/units/+/position", "serenazgo/units/+/position", True),
        ("serenazgo/units/+/position", "serenazgo/units/+/#", True),
        ("serenazgo/units/#", "serenazgo/units/+/#", False),  # 'serenazgo/units' itself
        ("serenazgo/units/+", "serenazgo/units/+/position", False),
        ("serenazgo/units/+/position/x", "serenazgo/units/+/position", False),
        ("owntracks/+/+/#", "owntracks/+/+", False),
        ("a/b", "a/b/#", True),
        ("a", "a/b/#", False),
        ("$SYS/x", "#", False),
        ("$SYS/x", "$SYS/#", True),
        ("a/#/b", "#", False),  # malformed on either side: never within
        ("a/b", "a/b#", False),
        ("", "#", False),
    ],
)
def test_filter_within(inner: str, outer: str, expected: bool) -> None:
    assert filter_within(inner, outer) is expected


LEVELS = ["a", "b", "", "+", "#"]
filters = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=4).map("/".join).filter(valid_filter)
# Every topic name of up to 6 levels over a small alphabet (a topic name is never empty).
TOPICS = [
    topic
    for n in range(1, 7)
    for levels in itertools.product(["a", "b", "x", ""], repeat=n)
    if (topic := "/".join(levels))
]


@settings(max_examples=300, deadline=None)
@given(filters)
def test_topic_matches_agrees_with_paho(topic_filter: str) -> None:
    for topic in TOPICS:
        assert topic_matches(topic_filter, topic) == topic_matches_sub(topic_filter, topic), topic


@settings(max_examples=300, deadline=None)
@given(filters, filters)
def test_filter_within_is_set_inclusion(inner: str, outer: str) -> None:
    """Within means: no topic (up to more levels than either filter has) matches inner but not outer."""
    brute = all(topic_matches_sub(outer, t) for t in TOPICS if topic_matches_sub(inner, t))
    assert filter_within(inner, outer) == brute


def test_valid_filter() -> None:
    assert all(valid_filter(f) for f in ["#", "+", "a/+/b", "a/#", "/", "a//b", "+/+/#"])
    assert not any(valid_filter(f) for f in ["", "a#", "#/a", "a/#/b", "a+", "+a/b", "a/b\0", "##"])


def test_device_grants_read_and_write_its_own_topics_only() -> None:
    grants, _ = device_grants(BrokerCredential("car-1", "", {"owntracks": "owntracks/jane/phone"}))
    assert may_write(grants, "serenazgo/units/car-1/position")
    assert may_write(grants, "owntracks/jane/phone")
    assert not may_write(grants, "owntracks/jane/tablet")
    assert not may_write(grants, "serenazgo/units/car-2/position")
    assert not may_write(grants, "serenazgo/events/geofence")
    assert may_read(grants, "serenazgo/units/car-1/status")
    assert not may_read(grants, "serenazgo/units/car-2/status")
    assert may_subscribe(grants, "serenazgo/units/car-1/#")
    assert may_subscribe(grants, "owntracks/jane/phone")
    for hostile in [
        "#",
        "+/#",
        "serenazgo/#",
        "serenazgo/units/+/position",
        "owntracks/+/+",
        "owntracks/jane/+",
    ]:
        assert not may_subscribe(grants, hostile), hostile


def test_service_grants() -> None:
    assert may_subscribe(bridge_grants(), "owntracks/+/+")
    assert may_write(bridge_grants(), "serenazgo/events/geofence")
    assert not may_write(bridge_grants(), "serenazgo/units/x/position")
    assert may_write(simulator_grants(), "thing/product/SN/osd")
    assert not may_read(simulator_grants(), "thing/product/SN/osd")
    assert not may_subscribe(simulator_grants(), "#")


def test_access_rules_login_and_revocation() -> None:
    car = Account("car-1", mosquitto_hash("tok-1"), (Grant("readwrite", OWN),))
    files = render_access([car], [])
    assert files.accounts == (car,)
    rules = AccessRules.from_files(files)
    assert rules.login("car-1", "tok-1") == car
    assert rules.login("car-1", "tok-2") is None
    assert rules.login("car-1", None) is None
    assert rules.login("car-1", "") is None
    assert rules.login("nobody", "tok-1") is None
    assert rules.login("", "tok-1") is None
    assert rules.login(None, None) is None  # anonymous off
    assert rules.current(car) == car
    # The token replaced: the old login is no longer current, the new one is.
    replaced = Account("car-1", mosquitto_hash("tok-2"), car.grants)
    rotated = AccessRules.from_files(render_access([replaced], []))
    assert rotated.current(car) is None
    assert rotated.login("car-1", "tok-2") == replaced
    assert AccessRules.from_files(render_access([], [])).current(car) is None
    # The lab setting: no login means every topic; a wrong password is still refused.
    lab = AccessRules.from_files(render_access([car], [], allow_anonymous=True))
    anonymous = lab.login(None, None)
    assert (
        anonymous is not None
        and may_write(anonymous.grants, "any/topic")
        and may_subscribe(anonymous.grants, "#")
    )
    assert lab.login("car-1", "wrong") is None
    assert rules.current(anonymous) is None  # anonymous access turned off
