"""The filters' fast paths give exactly what the plain formulas give.

:class:`ReferenceKinematicFilter` is the kinematic filter as it was before it was
tuned for speed (every distance by ``haversine_m``, every flag by IntFlag
operators), kept verbatim as the slow reference. Random tracks (jumps near the
speed limit, wandering near the jitter circle, late fixes, exact duplicates,
unknown accuracies, poles, the antimeridian) go through both; flags, flag updates
and the names of the steps that fired must be identical. The distance bounds that
spare the haversine are also checked on their own, right at their thresholds.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from geo.distance import haversine_m
from tracker.batch import FlagUpdate
from tracker.config import FilterSettings
from tracker.filters import (
    JITTER_MAX_REPORTED_SPEED_MPS,
    STRUCTURAL_STEPS,
    FilterContext,
    Filtered,
    FilterPipeline,
    KinematicFilter,
    _closer_than,
    _Fix,
    _implausible,
    all_clear,
    implied_speed_mps,
)
from tracker.model import Ping, PingFlag, Rejection, UnitKind

NOW = datetime(2024, 5, 20, 15, 0, 0, tzinfo=UTC)
T0 = NOW - timedelta(hours=3)
SETTINGS = FilterSettings()
M_PER_DEG = 111_195.0

# -- the reference: the kinematic filter before the fast paths, verbatim ----------------

HISTORY = 4
RECENT = 8
_SUSPECT = int(PingFlag.SUSPECT)
_OUTLIER = int(PingFlag.OUTLIER)
_JITTER = int(PingFlag.JITTER)


@dataclass(slots=True)
class _RefFix:
    t: float
    ts: datetime
    lat: float
    lon: float
    accuracy: float | None
    flags: int


@dataclass(slots=True)
class _RefTrack:
    newest_t: float
    fixes: deque[_RefFix] = field(default_factory=lambda: deque(maxlen=HISTORY))
    recent: deque[_RefFix] = field(default_factory=lambda: deque(maxlen=RECENT))
    anchor: _RefFix | None = None


def _ref_speed(a: _RefFix, b: _RefFix) -> float:
    return implied_speed_mps(a.lat, a.lon, a.accuracy, a.t, b.lat, b.lon, b.accuracy, b.t)


class ReferenceKinematicFilter:
    """The slow, plain kinematic filter."""

    def __init__(self, settings: FilterSettings) -> None:
        fallback = max(settings.max_speed_mps.values(), default=60.0)
        self._limits = {k: settings.max_speed_mps.get(k, fallback) for k in UnitKind}
        self._tracks: dict[str, _RefTrack] = {}

    def apply(self, ping: Ping, kind: UnitKind) -> list[FlagUpdate]:
        t = ping.ts.timestamp()
        track = self._tracks.get(ping.unit_id)
        new = _RefFix(t, ping.ts, ping.lat, ping.lon, ping.accuracy, 0)
        if track is None:
            track = self._tracks[ping.unit_id] = _RefTrack(newest_t=t)
            track.fixes.append(new)
            track.recent.append(new)
            track.anchor = new
            return []
        if t <= track.newest_t:
            for old in track.recent:
                if old.t == t and old.lat == ping.lat and old.lon == ping.lon:
                    if old.flags:
                        ping.flags |= PingFlag(old.flags)
                    return []
            ping.flags |= PingFlag.LATE
            return []
        track.newest_t = t
        limit = self._limits[kind]
        updates: list[FlagUpdate] = []
        prev = track.fixes[-1]
        speed = _ref_speed(prev, new)
        if speed > limit and prev.flags & _SUSPECT and len(track.fixes) >= 2:
            before = track.fixes[-2]
            speed_from_before = _ref_speed(before, new)
            if speed_from_before <= limit:
                prev.flags |= _OUTLIER
                updates.append(FlagUpdate(ping.unit_id, prev.ts, PingFlag.OUTLIER))
                track.fixes.pop()
                speed = speed_from_before
        if speed > limit:
            new.flags = _SUSPECT
        else:
            anchor = track.anchor
            circle = 0.0
            a_acc = anchor.accuracy if anchor is not None else None
            n_acc = new.accuracy
            if a_acc is not None and n_acc is not None and a_acc > 0.0 and n_acc > 0.0:
                circle = a_acc + n_acc
            if (
                anchor is not None
                and circle > 0.0
                and (ping.speed is None or ping.speed < JITTER_MAX_REPORTED_SPEED_MPS)
                and haversine_m(anchor.lat, anchor.lon, new.lat, new.lon) < circle
            ):
                new.flags = _JITTER
            else:
                track.anchor = new
        if new.flags:
            ping.flags |= PingFlag(new.flags)
        track.fixes.append(new)
        track.recent.append(new)
        return updates


_KINEMATIC_NAMES = (
    (int(PingFlag.LATE), "late"),
    (_SUSPECT, "suspect"),
    (_JITTER, "jitter"),
    (_OUTLIER, "outlier"),
)


def reference_process(
    kf: ReferenceKinematicFilter, ping: Ping, kind: UnitKind, ctx: FilterContext
) -> Filtered | Rejection:
    """FilterPipeline.process as it was, over the reference kinematic filter."""
    fired: list[str] = []
    for name, step in STRUCTURAL_STEPS:
        result = step(ping, ctx)
        if result is False:
            continue
        if result is True:
            fired.append(name)
            continue
        return result
    before = ping.flags
    updates = kf.apply(ping, kind)
    if ping.flags != before:
        added = int(ping.flags) & ~int(before)
        fired.extend(name for flag, name in _KINEMATIC_NAMES if added & flag)
    if updates:
        fired.append("outlier")
    return Filtered(ping, updates, fired)


# -- random tracks ----------------------------------------------------------------------


def _offset(lat: float, lon: float, metres: float, bearing_deg: float) -> tuple[float, float]:
    """A point about ``metres`` away (flat-earth step; exactness is not needed to make inputs)."""
    b = math.radians(bearing_deg)
    dlat = metres * math.cos(b) / M_PER_DEG
    coslat = max(math.cos(math.radians(lat)), 1e-6)
    dlon = metres * math.sin(b) / (M_PER_DEG * coslat)
    lat2 = max(-90.0, min(90.0, lat + dlat))
    lon2 = (lon + dlon + 180.0) % 360.0 - 180.0
    return lat2, lon2


_accuracy = st.one_of(st.none(), st.just(0.0), st.floats(0.5, 60.0))
_reported_speed = st.one_of(st.none(), st.floats(0.0, 0.99), st.floats(1.0, 40.0))
_start = st.one_of(
    st.tuples(st.floats(-13.0, -11.0), st.floats(-78.0, -76.0)),  # Lima
    st.tuples(st.floats(-89.9, 89.9), st.floats(-180.0, 180.0)),  # anywhere
    st.tuples(st.floats(85.0, 90.0), st.floats(-180.0, 180.0)),  # near a pole
    st.tuples(st.floats(-60.0, 60.0), st.sampled_from([179.9999, -179.9999])),  # on the antimeridian
)


@st.composite
def fleet_tracks(draw: st.DrawFn) -> list[tuple[Ping, UnitKind]]:
    """Pings of 1-3 units, with steps sized around the thresholds the filter compares to."""
    units = draw(st.integers(1, 3))
    kinds = [draw(st.sampled_from(list(UnitKind))) for _ in range(units)]
    state = [(*draw(_start), 0.0, draw(_accuracy)) for _ in range(units)]
    sent: list[list[Ping]] = [[] for _ in range(units)]
    out: list[tuple[Ping, UnitKind]] = []
    for _ in range(draw(st.integers(1, 25))):
        u = draw(st.integers(0, units - 1))
        lat, lon, t, prev_acc = state[u]
        limit = SETTINGS.max_speed_mps[kinds[u]]
        action = draw(st.sampled_from(["move", "move", "move", "jump", "late", "duplicate"]))
        acc = draw(_accuracy)
        if action == "duplicate" and sent[u]:
            out.append((replace(draw(st.sampled_from(sent[u])), flags=PingFlag.NONE), kinds[u]))
            continue
        if action == "late" and sent[u]:
            back = draw(st.floats(0.0, 30.0))
            plat, plon = _offset(lat, lon, draw(st.floats(0.0, 100.0)), draw(st.floats(0.0, 360.0)))
            ping = Ping(f"u{u}", T0 + timedelta(seconds=t - back), plat, plon, accuracy=acc)
            out.append((ping, kinds[u]))
            continue
        dt = draw(st.sampled_from([0.25, 1.0, 2.0, 5.0, 10.0, 60.0]))
        # Distances right around the speed limit's reach and around the jitter circle.
        reach = limit * max(dt, 1.0) + (prev_acc or 0.0) + (acc or 0.0)
        circle = (prev_acc or 0.0) + (acc or 0.0)
        target = draw(st.sampled_from([reach, circle, 0.0, 3.0]))
        metres = max(0.0, target * draw(st.floats(0.9, 1.1)))
        if action == "jump":
            metres = draw(st.floats(1_000.0, 20_000_000.0))
        lat2, lon2 = _offset(lat, lon, metres, draw(st.floats(0.0, 360.0)))
        t += dt
        ping = Ping(f"u{u}", T0 + timedelta(seconds=t), lat2, lon2, accuracy=acc, speed=draw(_reported_speed))
        sent[u].append(ping)
        state[u] = (lat2, lon2, t, acc)
        out.append((ping, kinds[u]))
    return out


@settings(max_examples=200, deadline=None)
@given(track=fleet_tracks())
def test_kinematic_filter_equals_the_reference(track: list[tuple[Ping, UnitKind]]) -> None:
    fast, slow = KinematicFilter(SETTINGS), ReferenceKinematicFilter(SETTINGS)
    for ping, kind in track:
        a, b = replace(ping), replace(ping)
        assert fast.apply(a, kind) == slow.apply(b, kind)
        assert a.flags == b.flags and type(a.flags) is PingFlag


@settings(max_examples=150, deadline=None)
@given(track=fleet_tracks(), heading=st.one_of(st.none(), st.floats(-10.0, 400.0)))
def test_filter_pipeline_equals_the_reference(
    track: list[tuple[Ping, UnitKind]], heading: float | None
) -> None:
    pipeline, reference = FilterPipeline(SETTINGS), ReferenceKinematicFilter(SETTINGS)
    ctx = FilterContext(NOW, SETTINGS)
    for ping, kind in track:
        a, b = replace(ping, heading=heading), replace(ping, heading=heading)
        got, want = pipeline.process(a, kind, ctx), reference_process(reference, b, kind, ctx)
        if isinstance(want, Filtered):
            assert isinstance(got, Filtered)
            assert (got.ping, got.updates, got.fired) == (a, want.updates, want.fired)
            assert a == b
        else:
            assert got == want


@settings(max_examples=200, deadline=None)
@given(track=fleet_tracks())
def test_check_reports_what_process_reports(track: list[tuple[Ping, UnitKind]]) -> None:
    by_process, by_check = FilterPipeline(SETTINGS), FilterPipeline(SETTINGS)
    ctx = FilterContext(NOW, SETTINGS)
    fired: list[str] = []
    for ping, kind in track:
        a, b = replace(ping), replace(ping)
        want = by_process.process(a, kind, ctx)
        got = by_check.check(b, kind, ctx, fired)
        if isinstance(want, Filtered):
            assert got == (want.updates[0] if want.updates else None)
        else:
            assert got == want
        assert a == b
    expected = []
    replay = FilterPipeline(SETTINGS)
    for ping, kind in track:
        out = replay.process(replace(ping), kind, ctx)
        if isinstance(out, Filtered):
            expected.extend(out.fired)
    assert fired == expected


def test_a_rejected_ping_adds_no_fired_names() -> None:
    ping = Ping("u1", NOW + timedelta(days=1), -12.1, -77.0, speed=999.0)  # fires speed_range, then rejected
    assert not all_clear(ping, FilterContext(NOW, SETTINGS))
    fired = ["earlier"]
    got = FilterPipeline(SETTINGS).check(ping, UnitKind.FOOT, FilterContext(NOW, SETTINGS), fired)
    assert isinstance(got, Rejection) and got.reason == "fix_in_future"
    assert fired == ["earlier"]


# -- the distance bounds on their own, at their thresholds --------------------------------

_points = st.tuples(st.floats(-90.0, 90.0), st.floats(-180.0, 180.0))


@st.composite
def point_pairs(draw: st.DrawFn) -> tuple[float, float, float, float]:
    """Two points: anywhere, or a short hop (the usual case), or straddling the antimeridian."""
    lat1, lon1 = draw(_points)
    kind = draw(st.sampled_from(["far", "near", "tiny"]))
    if kind == "far":
        lat2, lon2 = draw(_points)
    else:
        scale = 0.01 if kind == "near" else 1e-6
        lat2 = max(-90.0, min(90.0, lat1 + draw(st.floats(-scale, scale))))
        lon2 = (lon1 + draw(st.floats(-scale, scale)) + 180.0) % 360.0 - 180.0
    return lat1, lon1, lat2, lon2


@settings(max_examples=600, deadline=None)
@given(
    pair=point_pairs(),
    acc1=_accuracy,
    acc2=_accuracy,
    dt=st.floats(-100.0, 100.0),
    nudge=st.floats(-1e-3, 1e-3),
    limit=st.one_of(st.sampled_from([0.0, -1.0, 12.0, 60.0]), st.floats(0.0, 400.0)),
)
def test_implausible_equals_the_implied_speed_test(
    pair: tuple[float, float, float, float],
    acc1: float | None,
    acc2: float | None,
    dt: float,
    nudge: float,
    limit: float,
) -> None:
    lat1, lon1, lat2, lon2 = pair
    a = _Fix(1000.0, T0, lat1, lon1, acc1, 0)
    exact = implied_speed_mps(lat1, lon1, acc1, 1000.0, lat2, lon2, acc2, 1000.0 + dt)
    for lim in (
        limit,
        exact * (1.0 + nudge),
        exact,
        math.nextafter(exact, 0.0),
        math.nextafter(exact, math.inf),
    ):
        assert _implausible(a, lat2, lon2, acc2, 1000.0 + dt, lim) == (exact > lim)


@settings(max_examples=600, deadline=None)
@given(pair=point_pairs(), circle=st.floats(0.0, 100.0), nudge=st.floats(-1e-3, 1e-3))
def test_closer_than_equals_the_haversine_test(
    pair: tuple[float, float, float, float], circle: float, nudge: float
) -> None:
    lat1, lon1, lat2, lon2 = pair
    a = _Fix(0.0, T0, lat1, lon1, None, 0)
    d = haversine_m(lat1, lon1, lat2, lon2)
    for c in (circle, d * (1.0 + nudge), d, math.nextafter(d, 0.0), math.nextafter(d, math.inf)):
        assert _closer_than(a, lat2, lon2, c) == (d < c)
