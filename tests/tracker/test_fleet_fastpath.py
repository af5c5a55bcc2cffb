"""LiveFleet.apply's fast path gives exactly what the plain version gave.

:func:`reference_apply` is LiveFleet.apply's position rule as it was before it was
tuned (IntFlag operators, ``dataclasses.replace``), kept verbatim as the slow
reference; random batches (several pings per unit, every flag mix, late and
out-of-order times) must leave identical states and report identical changes.
"""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.batch import NOT_LATEST
from tracker.fleet import FleetChange, LiveFleet, UnitState, _placed_at
from tracker.model import Ping, PingFlag, Source, Unit, UnitKind

T0 = datetime(2024, 5, 20, 15, 0, 0, tzinfo=UTC)
UNITS = [Unit(f"u{i}", UnitKind.PATROL_CAR) for i in range(3)]


def reference_apply(states: dict[str, UnitState], pings: list[Ping]) -> list[FleetChange]:
    """The position part of LiveFleet.apply before the fast path, verbatim."""
    newest: dict[str, Ping] = {}
    moved: dict[str, Ping] = {}
    get_new, get_moved = newest.get, moved.get
    for ping in pings:
        flags = ping.flags
        if flags & NOT_LATEST:
            continue
        uid = ping.unit_id
        seen = get_new(uid)
        if seen is None or ping.ts > seen.ts:
            newest[uid] = ping
        if not flags & PingFlag.JITTER:
            seen = get_moved(uid)
            if seen is None or ping.ts > seen.ts:
                moved[uid] = ping
    changes: list[FleetChange] = []
    for unit_id, ping in newest.items():
        state = states.get(unit_id)
        if state is None:
            continue
        old = state.fix
        if old is not None and old.ts >= ping.ts:
            continue
        if ping.flags & PingFlag.JITTER:
            anchor = get_moved(unit_id)
            if anchor is None or (old is not None and anchor.ts <= old.ts):
                anchor = old
            if anchor is not None:
                ping = replace(ping, lat=anchor.lat, lon=anchor.lon, alt=anchor.alt)
        state = states[unit_id] = replace(state, fix=ping, connected=True)
        changes.append(FleetChange("position", unit_id, state))
    return changes


_flags = st.sampled_from(
    [PingFlag.NONE, PingFlag.JITTER, PingFlag.SUSPECT, PingFlag.LATE, PingFlag.OUTLIER,
     PingFlag.JITTER | PingFlag.POOR_ACCURACY, PingFlag.TS_DEFAULTED, PingFlag.JITTER | PingFlag.LATE]
)  # fmt: skip
_maybe = st.one_of(st.none(), st.floats(0.0, 100.0))


@st.composite
def pings(draw: st.DrawFn) -> Ping:
    """A ping of one of three units (or an unknown one), every field set."""
    return Ping(
        draw(st.sampled_from(["u0", "u1", "u2", "nobody"])),
        T0 + timedelta(seconds=draw(st.integers(0, 20))),
        draw(st.floats(-13.0, -12.0)),
        draw(st.floats(-78.0, -77.0)),
        draw(_maybe), draw(_maybe), draw(_maybe), draw(_maybe), draw(_maybe),
        draw(_flags),
        draw(st.sampled_from(list(Source))),
        draw(st.one_of(st.none(), st.just(T0))),
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(st.lists(pings(), max_size=12), max_size=4), disconnected=st.booleans())
def test_apply_equals_the_reference(batches: list[list[Ping]], disconnected: bool) -> None:
    fleet = LiveFleet()
    fleet.load(UNITS, [])
    if disconnected:
        fleet.apply(disconnected=["u0"])
    states = {s.unit.unit_id: s for s in fleet.snapshot()}
    for batch in batches:
        assert fleet.apply(batch) == reference_apply(states, batch)
        assert {s.unit.unit_id: s for s in fleet.snapshot()} == states


@settings(max_examples=200, deadline=None)
@given(ping=pings(), anchor=pings())
def test_placed_at_is_replace(ping: Ping, anchor: Ping) -> None:
    assert _placed_at(ping, anchor) == replace(ping, lat=anchor.lat, lon=anchor.lon, alt=anchor.alt)


def test_fast_constructors_know_every_field() -> None:
    # _placed_at and LiveFleet.apply build Ping and UnitState positionally: a new field
    # must be added there too.
    assert [f.name for f in fields(Ping)] == [
        "unit_id", "ts", "lat", "lon", "alt", "speed", "heading", "accuracy", "battery",
        "flags", "source", "received_at",
    ]  # fmt: skip
    assert [f.name for f in fields(UnitState)] == ["unit", "fix", "status", "status_ts", "connected", "drone"]
