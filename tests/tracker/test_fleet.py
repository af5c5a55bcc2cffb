"""LiveFleet: latest state per unit, never backwards, jitter holds position, notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tracker.fleet import FleetChange, LiveFleet
from tracker.model import Freshness, Ping, PingFlag, StatusUpdate, Unit, UnitKind, UnitStatus

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _fleet() -> LiveFleet:
    fleet = LiveFleet()
    fleet.load([Unit("SER-001", UnitKind.FOOT), Unit("MOV-01", UnitKind.PATROL_CAR)], [])
    return fleet


def _ping(s: float, lat: float = -12.12, lon: float = -77.03, flags: PingFlag = PingFlag.NONE) -> Ping:
    return Ping("SER-001", T0 + timedelta(seconds=s), lat, lon, flags=flags)


def test_newer_ping_moves_unit_and_notifies_once_per_batch() -> None:
    fleet = _fleet()
    seen: list[list[FleetChange]] = []
    fleet.subscribe(seen.append)
    fleet.apply([_ping(0), _ping(10, lat=-12.13)])
    state = fleet.get("SER-001")
    assert state is not None and state.fix is not None
    assert state.fix.lat == -12.13
    assert len(seen) == 1
    assert [(c.kind, c.unit_id) for c in seen[0]] == [("position", "SER-001")]


def test_late_and_untrusted_pings_never_move_latest() -> None:
    fleet = _fleet()
    fleet.apply([_ping(10, lat=-12.10)])
    fleet.apply([_ping(5, lat=-12.20)])  # older fix arriving late
    fleet.apply([_ping(20, lat=-11.0, flags=PingFlag.SUSPECT)])
    fleet.apply([_ping(30, lat=-11.0, flags=PingFlag.OUTLIER)])
    fleet.apply([_ping(40, lat=-11.0, flags=PingFlag.LATE)])
    state = fleet.get("SER-001")
    assert state is not None and state.fix is not None
    assert (state.fix.lat, state.fix.ts) == (-12.10, T0 + timedelta(seconds=10))


def test_jitter_refreshes_time_but_keeps_position() -> None:
    fleet = _fleet()
    fleet.apply([_ping(0, lat=-12.1200)])
    fleet.apply([_ping(30, lat=-12.1201, flags=PingFlag.JITTER)])
    state = fleet.get("SER-001")
    assert state is not None and state.fix is not None
    assert state.fix.lat == -12.1200
    assert state.fix.ts == T0 + timedelta(seconds=30)


def test_status_applies_only_when_newer() -> None:
    fleet = _fleet()
    fleet.apply(statuses=[("MOV-01", StatusUpdate(UnitStatus.DISPATCHED, T0))])
    fleet.apply(statuses=[("MOV-01", StatusUpdate(UnitStatus.AVAILABLE, T0 - timedelta(seconds=1)))])
    state = fleet.get("MOV-01")
    assert state is not None
    assert state.status is UnitStatus.DISPATCHED


def test_unknown_units_are_ignored_and_broken_subscriber_does_not_stop_apply() -> None:
    fleet = _fleet()

    def broken(_changes: list[FleetChange]) -> None:
        raise RuntimeError("subscriber bug")

    fleet.subscribe(broken)
    changes = fleet.apply([Ping("NOPE", T0, 0.5, 0.5), _ping(0)])
    assert [c.unit_id for c in changes] == ["SER-001"]


def test_freshness_follows_fix_age_per_kind() -> None:
    fleet = _fleet()
    fleet.apply([_ping(0)])
    state = fleet.get("SER-001")
    assert state is not None
    assert fleet.freshness(state, T0 + timedelta(seconds=30)) is Freshness.LIVE
    assert fleet.freshness(state, T0 + timedelta(seconds=300)) is Freshness.STALE
    assert fleet.freshness(state, T0 + timedelta(hours=1)) is Freshness.LOST
    car = fleet.get("MOV-01")
    assert car is not None
    assert fleet.freshness(car, T0) is Freshness.LOST  # never reported


def test_unsubscribe_stops_notifications() -> None:
    fleet = _fleet()
    seen: list[list[FleetChange]] = []
    unsubscribe = fleet.subscribe(seen.append)
    unsubscribe()
    fleet.apply([_ping(0)])
    assert seen == []


def test_jitter_after_a_real_move_in_the_same_batch_stays_at_the_move() -> None:
    fleet = _fleet()
    fleet.apply([_ping(0, lat=-12.1000)])
    fleet.apply([_ping(10, lat=-12.1100), _ping(20, lat=-12.1101, flags=PingFlag.JITTER)])
    state = fleet.get("SER-001")
    assert state is not None
    assert state.fix is not None
    assert state.fix.lat == -12.1100
    assert state.fix.ts == T0 + timedelta(seconds=20)


def test_states_are_immutable_snapshots() -> None:
    fleet = _fleet()
    fleet.apply([_ping(0, lat=-12.10)])
    before = fleet.get("SER-001")
    fleet.apply([_ping(10, lat=-12.20)])
    assert before is not None
    assert before.fix is not None
    assert before.fix.lat == -12.10  # a reader's state never changes under it
