"""The MQTT topic scheme: what the bridge subscribes to and what each topic means.

Routes (see ``DESIGN.md``, wire contracts):

* ``serenazgo/units/{unit_id}/position``, ``.../status``, ``.../drone`` and
  ``.../incident`` (field incident reports): native clients; the
  unit id must satisfy :func:`tracker.model.is_valid_unit_id`.
* ``owntracks/{user}/{device}``: OwnTracks ``location`` and ``lwt`` messages;
  ``owntracks/{user}/{device}/event``: ``transition`` messages. Other OwnTracks
  subtopics (``cmd``, ``info``, ``waypoint``, ``dump``…) are :class:`Ignored`.
* DJI Cloud API: ``thing/product/{device_sn}/osd`` and ``.../state`` (aircraft and
  docks, keyed by the device's own serial), ``sys/product/{gateway_sn}/status``
  (topology); the serial must satisfy :func:`drones.dji.is_valid_serial`. The
  other Cloud API topics (``events``, ``services_reply``, ``requests``,
  ``property/set_reply``, ``drc/up``…) are :class:`Ignored` (not subscribed to).

Everything else is a :class:`Rejection` with a stable reason. Topic levels are
checked here because a topic is attacker-controlled text that ends up in unit ids,
URLs, file names and our own outgoing topics ("topic injection").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from drones.dji import MAX_SERIAL, is_valid_serial
from tracker.errors import ConfigError
from tracker.model import Ignored, Rejection, is_valid_unit_id

NATIVE_PREFIX = "serenazgo/units/"
OWNTRACKS_PREFIX = "owntracks/"
DJI_THING_PREFIX = "thing/product/"
DJI_SYS_PREFIX = "sys/product/"

NATIVE_POSITION_FILTER = "serenazgo/units/+/position"
NATIVE_STATUS_FILTER = "serenazgo/units/+/status"
NATIVE_DRONE_FILTER = "serenazgo/units/+/drone"
NATIVE_INCIDENT_FILTER = "serenazgo/units/+/incident"
OWNTRACKS_FILTER = "owntracks/+/+"
OWNTRACKS_EVENT_FILTER = "owntracks/+/+/event"
DJI_OSD_FILTER = "thing/product/+/osd"
DJI_STATE_FILTER = "thing/product/+/state"
DJI_STATUS_FILTER = "sys/product/+/status"

SUBSCRIPTION_FILTERS: tuple[str, ...] = (
    NATIVE_POSITION_FILTER,
    NATIVE_STATUS_FILTER,
    NATIVE_DRONE_FILTER,
    NATIVE_INCIDENT_FILTER,
    OWNTRACKS_FILTER,
    OWNTRACKS_EVENT_FILTER,
    DJI_OSD_FILTER,
    DJI_STATE_FILTER,
    DJI_STATUS_FILTER,
)
"""Every topic filter the bridge subscribes to (only what it can decode)."""
UNSHARED_FILTERS = frozenset({DJI_OSD_FILTER, DJI_STATE_FILTER, DJI_STATUS_FILTER})

# OwnTracks subtopics that carry nothing we store (booklet, tech/json "Topics").
OWNTRACKS_IGNORED_SUBTOPICS = frozenset(
    {"cmd", "info", "waypoint", "waypoints", "dump", "status", "card", "step", "beacon", "request"}
)

# An OwnTracks user or device name is free text chosen on the phone ("Jane's iPhone");
# we accept it as long as it cannot act as a wildcard, hide control characters, or
# blow up the 64-character derived unit id and the external-id column.
MAX_OWNTRACKS_LEVEL = 128


class RouteKind(StrEnum):
    """What a topic carries, hence which codec decodes it."""

    NATIVE_POSITION = "native_position"
    NATIVE_STATUS = "native_status"
    NATIVE_DRONE = "native_drone"  # drone telemetry beside the position (altitudes, battery, mode)
    NATIVE_INCIDENT = "native_incident"  # an incident the unit reports from the field
    OWNTRACKS = "owntracks"  # base topic: location, lwt (and any _type the app sends there)
    OWNTRACKS_EVENT = "owntracks_event"  # /event subtopic: transition
    DJI_OSD = "dji_osd"  # thing/product/{sn}/osd: aircraft or dock OSD
    DJI_STATE = "dji_state"  # thing/product/{sn}/state: home point, limits, thresholds
    DJI_STATUS = "dji_status"  # sys/product/{gateway_sn}/status: update_topo


@dataclass(slots=True, frozen=True)
class Route:
    """A parsed topic: its kind and identifiers (``(unit_id,)``, ``(user, device)`` or ``(serial,)``)."""

    kind: RouteKind
    ids: tuple[str, ...]


def shared_subscription(topic_filter: str, group: str) -> str:
    """Return the MQTT 5 shared-subscription form ``$share/{group}/{filter}`` of ``topic_filter``.

    >>> shared_subscription("owntracks/+/+", "serenazgo")
    '$share/serenazgo/owntracks/+/+'
    """
    if not group or any(c in group for c in "/+#") or not group.isprintable():
        raise ConfigError(
            f"share group {group!r} is not usable: use a non-empty name without '/', '+' or '#' "
            "(SERENAZGO_SHARE_GROUP)"
        )
    return f"$share/{group}/{topic_filter}"


def subscription_filters(share_group: str | None = None) -> list[str]:
    """Return the filters to subscribe to, in shared form when ``share_group`` is set.

    The DJI filters are never shared: a dock's and its aircraft's messages build one
    state (topology, merged dock OSD, home point) that must see all of them, so every
    bridge of a group takes the (small) DJI traffic whole. Storage is idempotent per
    (unit, time), so the copies the other bridges store change nothing.
    """
    if share_group is None:
        return list(SUBSCRIPTION_FILTERS)
    return [f if f in UNSHARED_FILTERS else shared_subscription(f, share_group) for f in SUBSCRIPTION_FILTERS]


def _bad_level_reason(level: str) -> str | None:
    """Say why an OwnTracks topic level is unusable, or return None when it is fine."""
    if not level:
        return "is empty"
    if len(level) > MAX_OWNTRACKS_LEVEL:
        return f"is longer than {MAX_OWNTRACKS_LEVEL} characters"
    if "+" in level or "#" in level:
        return "contains an MQTT wildcard ('+' or '#')"
    if not level.isprintable():
        return "contains control or non-printable characters"
    return None


def _native(levels: list[str], topic: str) -> Route | Rejection:
    """Parse ``serenazgo/units/{unit_id}/{position|status|drone|incident}`` (``levels``: 4 or more)."""
    last = levels[-1]
    if last == "position":
        kind = RouteKind.NATIVE_POSITION
    elif last == "status":
        kind = RouteKind.NATIVE_STATUS
    elif last == "drone":
        kind = RouteKind.NATIVE_DRONE
    elif last == "incident":
        kind = RouteKind.NATIVE_INCIDENT
    else:
        return Rejection(
            "unknown_topic",
            f"topic {topic[:200]!r}: native topics are serenazgo/units/{{unit_id}}/"
            "position, /status, /drone or /incident",
        )
    # Everything between the prefix and the last level is the claimed unit id, so a
    # '/' smuggled into it shows up here rather than as an unknown topic.
    unit_id = "/".join(levels[2:-1])
    if not is_valid_unit_id(unit_id):
        return Rejection(
            "invalid_unit_id",
            f"unit id {unit_id[:80]!r} in topic {topic[:200]!r} breaks the contract: 1-64 characters "
            "from A-Z a-z 0-9 _ . : -, starting with a letter or digit (no '/', '+', '#', spaces)",
        )
    return Route(kind, (unit_id,))


def _owntracks(levels: list[str], topic: str) -> Route | Ignored | Rejection:
    """Parse ``owntracks/{user}/{device}[/{subtopic}]``."""
    n = len(levels)
    if n < 3:
        return Rejection(
            "unknown_topic", f"topic {topic[:200]!r}: OwnTracks topics are owntracks/{{user}}/{{device}}"
        )
    user, device = levels[1], levels[2]
    for name, level in (("user", user), ("device", device)):
        why = _bad_level_reason(level)
        if why is not None:
            return Rejection(
                "invalid_device_id", f"OwnTracks {name} {level[:80]!r} in topic {topic[:200]!r} {why}"
            )
    if n == 3:
        return Route(RouteKind.OWNTRACKS, (user, device))
    if n == 4:
        sub = levels[3]
        if sub == "event":
            return Route(RouteKind.OWNTRACKS_EVENT, (user, device))
        if sub in OWNTRACKS_IGNORED_SUBTOPICS:
            return Ignored(f"owntracks_subtopic_{sub}")
    return Rejection(
        "unknown_topic",
        f"topic {topic[:200]!r}: not an OwnTracks topic we decode (owntracks/{{user}}/{{device}}[/event])",
    )


# Cloud API subtopics of thing/product/{sn}/ that carry nothing we store (we do not subscribe to them).
DJI_IGNORED_SUBTOPICS = frozenset(
    {"events", "events_reply", "services", "services_reply", "requests", "requests_reply", "property",
     "drc", "status_reply"}
)  # fmt: skip


def _dji(levels: list[str], topic: str) -> Route | Ignored | Rejection:
    """Parse ``thing/product/{sn}/osd|state[...]`` and ``sys/product/{sn}/status``."""
    if len(levels) < 4:
        return Rejection(
            "unknown_topic",
            f"topic {topic[:200]!r}: DJI topics are thing/product/{{sn}}/osd|state, "
            "sys/product/{sn}/status",
        )
    sn, sub = levels[2], levels[3]
    if not is_valid_serial(sn):
        return Rejection(
            "invalid_device_id",
            f"DJI serial {sn[:80]!r} in topic {topic[:200]!r} is not usable: 1-{MAX_SERIAL} characters "
            "from A-Z a-z 0-9 _ . : -, starting with a letter or digit",
        )
    if levels[0] == "thing" and len(levels) == 4 and sub in ("osd", "state"):
        return Route(RouteKind.DJI_OSD if sub == "osd" else RouteKind.DJI_STATE, (sn,))
    if levels[0] == "sys" and len(levels) == 4 and sub == "status":
        return Route(RouteKind.DJI_STATUS, (sn,))
    if sub in DJI_IGNORED_SUBTOPICS:
        return Ignored("dji_subtopic_not_decoded")
    return Rejection(
        "unknown_topic",
        f"topic {topic[:200]!r}: DJI topics decoded are thing/product/{{sn}}/osd|state and "
        "sys/product/{sn}/status",
    )


def parse_topic(topic: str) -> Route | Ignored | Rejection:
    """Map a topic to its route and identifiers; never raises.

    >>> parse_topic("serenazgo/units/car-7/position")
    Route(kind=<RouteKind.NATIVE_POSITION: 'native_position'>, ids=('car-7',))
    >>> parse_topic("serenazgo/units/+/position").reason
    'invalid_unit_id'
    """
    if topic.startswith(NATIVE_PREFIX):
        levels = topic.split("/")
        if len(levels) >= 4:
            return _native(levels, topic)
    elif topic.startswith(OWNTRACKS_PREFIX):
        return _owntracks(topic.split("/"), topic)
    elif topic.startswith((DJI_THING_PREFIX, DJI_SYS_PREFIX)):
        return _dji(topic.split("/"), topic)
    return Rejection(
        "unknown_topic",
        f"topic {topic[:200]!r} is not one the bridge decodes "
        "(serenazgo/units/{id}/position|status|drone|incident, owntracks/{user}/{device}[/event], "
        "thing/product/{sn}/osd|state, sys/product/{sn}/status)",
    )
