"""EventDetector (no I/O): battery re-arm, freshness with a controlled clock, geofence events from real
LiveFleet changes, silent seeding and index swaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from geo.geofence import GeofenceIndex
from geo.local_frame import LocalFrame
from tracker.config import EventSettings
from tracker.errors import ConfigError
from tracker.events import EventDetector, EventType, GeofenceInfo
from tracker.fleet import LiveFleet
from tracker.model import Ping, Unit, UnitKind

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
FRAME = LocalFrame(-77.03, -12.12)


def at(x: float, y: float) -> tuple[float, float]:
    """(lat, lon) of a point x m east, y m north of the frame's origin."""
    lon, lat = FRAME.to_lonlat(x, y)
    return float(lat), float(lon)


def rect(x0: float, y0: float, x1: float, y1: float):
    from shapely.geometry import Polygon

    lon, lat = FRAME.to_lonlat([x0, x1, x1, x0], [y0, y0, y1, y1])
    return Polygon(list(zip(lon.tolist(), lat.tolist(), strict=True)))


class Rig:
    """A LiveFleet and a detector fed from its real changes."""

    def __init__(self, *units: Unit, settings: EventSettings | None = None) -> None:
        self.fleet = LiveFleet()
        self.fleet.load(units, [])
        self.detector = EventDetector(settings or EventSettings())
        self.clock = T0

    def fix(self, unit_id: str, x: float, y: float, dt_s: float, battery: float | None = None, now_s=None):
        lat, lon = at(x, y)
        ts = T0 + timedelta(seconds=dt_s)
        changes = self.fleet.apply([Ping(unit_id, ts, lat, lon, battery=battery)])
        now = T0 + timedelta(seconds=dt_s if now_s is None else now_s)
        return self.detector.on_changes(changes, now)

    def sweep(self, now_s: float):
        return self.detector.sweep(self.fleet.snapshot(), T0 + timedelta(seconds=now_s))


def types(events) -> list[str]:
    return [str(e.type) for e in events]


def test_battery_low_fires_once_and_rearms_only_above_the_rearm_level() -> None:
    rig = Rig(Unit("ser-1", UnitKind.FOOT))
    levels = [50, 30, 16, 15, 14, 12, 18, 20, 15, 14, 21, 40, 15, 15, 9]
    fired = []
    for i, pct in enumerate(levels):
        for e in rig.fix("ser-1", i, 0, i, battery=pct):
            assert e.type == EventType.BATTERY_LOW
            fired.append((i, e.detail["battery"]))
    # 15 fires; 18 and 20 (not above 20) do not re-arm; 21 re-arms; the next 15 fires.
    assert fired == [(3, 15), (12, 15)]
    assert rig.detector.battery_armed("ser-1") is False


def test_battery_unknown_leaves_the_state_alone_and_bad_settings_are_refused() -> None:
    rig = Rig(Unit("ser-1", UnitKind.FOOT))
    assert types(rig.fix("ser-1", 0, 0, 0, battery=10)) == ["battery_low"]
    assert rig.fix("ser-1", 1, 0, 1, battery=None) == []
    assert rig.fix("ser-1", 2, 0, 2, battery=10) == []
    with pytest.raises(ConfigError, match="battery_rearm_pct"):
        EventDetector(EventSettings(battery_low_pct=20, battery_rearm_pct=20))


def test_freshness_transitions_with_a_controlled_clock() -> None:
    # Foot: stale after 120 s, lost after 600 s. Drone: 15 s and 60 s.
    rig = Rig(Unit("ser-1", UnitKind.FOOT), Unit("dr-1", UnitKind.DRONE), Unit("nofix", UnitKind.FOOT))
    rig.fix("ser-1", 0, 0, 0)
    rig.fix("dr-1", 0, 0, 0)
    assert rig.sweep(0) == []  # first look: seeded silently (live)
    assert rig.sweep(14) == []
    stale_drone = rig.sweep(20)
    assert [(e.unit_id, e.type) for e in stale_drone] == [("dr-1", "unit_stale")]
    assert stale_drone[0].detail["age_s"] == 20.0
    assert stale_drone[0].ts == T0 + timedelta(seconds=20)
    assert [(e.unit_id, e.type) for e in rig.sweep(61)] == [("dr-1", "unit_lost")]
    assert [(e.unit_id, e.type) for e in rig.sweep(130)] == [("ser-1", "unit_stale")]
    assert rig.sweep(300) == []  # no repeats
    assert [(e.unit_id, e.type) for e in rig.sweep(600)] == [("ser-1", "unit_lost")]
    # A new fix recovers the foot unit at once (on the ingest side), and the sweep does not repeat it.
    recovered = rig.fix("ser-1", 5, 0, 700)
    assert types(recovered) == ["unit_live"]
    assert recovered[0].detail["from"] == "lost"
    assert rig.sweep(701) == []
    # The drone recovers through the sweep when its fix was applied before the detector saw it.
    lat, lon = at(0, 0)
    rig.fleet.apply([Ping("dr-1", T0 + timedelta(seconds=700), lat, lon)])
    assert [(e.unit_id, e.type, e.detail["from"]) for e in rig.sweep(702)] == [("dr-1", "unit_live", "lost")]
    assert rig.detector.freshness_of("nofix") is None


def test_a_late_old_fix_does_not_recover_and_lost_to_stale_is_silent() -> None:
    rig = Rig(Unit("ser-1", UnitKind.FOOT))
    rig.fix("ser-1", 0, 0, 0)
    assert types(rig.sweep(1000)) == ["unit_lost"]
    # A fix buffered on the phone, 200 s old when it arrives: stale, not live.
    assert rig.fix("ser-1", 1, 0, 800, now_s=1000) == []
    assert rig.sweep(1001) == []
    assert types(rig.sweep(1500)) == ["unit_lost"]


def square_index(margin: float = 15.0) -> tuple[GeofenceIndex, dict[str, GeofenceInfo]]:
    index = GeofenceIndex([("S1", rect(0, 0, 400, 400)), ("K", rect(1000, 0, 1010, 10))], margin)
    return index, {"S1": GeofenceInfo("Sector 1", "sector"), "K": GeofenceInfo("Kiosk", "restricted")}


def test_geofence_enter_and_exit_from_real_fleet_changes() -> None:
    rig = Rig(Unit("mov-1", UnitKind.PATROL_CAR))
    index, info = square_index()
    rig.detector.set_index(index, info, rig.fleet.snapshot())
    events = []
    for i, x in enumerate(np.arange(-200.0, 700.0, 10.0)):
        events += rig.fix("mov-1", float(x), 200, i)
    assert types(events) == ["geofence_enter", "geofence_exit"]
    enter, exit_ = events
    assert (enter.geofence_id, enter.detail["name"], enter.detail["kind"], enter.detail["rule"]) == (
        "S1",
        "Sector 1",
        "sector",
        "margin",
    )
    assert enter.detail["lat"] == pytest.approx(at(20, 200)[0])
    assert exit_.ts > enter.ts
    assert rig.detector.inside("mov-1") == []


def test_seed_is_silent_and_membership_survives_until_a_real_exit() -> None:
    rig = Rig(Unit("a", UnitKind.FOOT), Unit("b", UnitKind.FOOT))
    lat, lon = at(200, 200)
    rig.fleet.apply([Ping("a", T0, lat, lon, battery=5.0)])
    lat, lon = at(-500, 0)
    rig.fleet.apply([Ping("b", T0, lat, lon)])
    index, info = square_index()
    rig.detector.set_index(index, info, ())
    rig.detector.seed(rig.fleet.snapshot(), T0)
    assert rig.detector.inside("a") == ["S1"]
    assert rig.detector.battery_armed("a") is False  # already low at start: no event, not armed
    assert rig.fix("a", 210, 200, 1, battery=4.0) == []
    assert types(rig.fix("a", 500, 200, 2)) == ["geofence_exit"]


def test_index_swap_seeds_new_geofences_silently_and_drops_deleted_ones() -> None:
    rig = Rig(Unit("a", UnitKind.FOOT))
    rig.fix("a", 200, 200, 0)
    index, info = square_index()
    rig.detector.set_index(index, info, rig.fleet.snapshot())
    assert rig.detector.inside("a") == ["S1"]  # a new geofence: members at once, no event
    smaller = GeofenceIndex([("K", rect(1000, 0, 1010, 10))])
    rig.detector.set_index(smaller, {"K": info["K"]}, rig.fleet.snapshot())
    assert rig.detector.inside("a") == []
    assert rig.fix("a", 900, 200, 1) == []  # no exit for a deleted geofence
    # The kiosk is smaller than twice the margin: walking through its middle still enters and exits.
    events = []
    for i, x in enumerate(np.arange(960.0, 1050.0, 1.0)):
        events += rig.fix("a", float(x), 5, 2 + i)
    assert types(events) == ["geofence_enter", "geofence_exit"]
    assert {e.geofence_id for e in events} == {"K"}
