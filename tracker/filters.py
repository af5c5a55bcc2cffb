"""GPS quality filters: an ordered list of small named steps, then a kinematic check per unit.

Structural steps (:data:`STRUCTURAL_STEPS`, also run alone by :func:`check_fix`)
reject what cannot be a position (non-finite, out of range, ``(0, 0)`` "null
island", before 1999, too far in the future, older than ``max_age_s``) and clean
the optional fields in place: a speed, heading, accuracy, battery or altitude out
of range is set to None and the ping flagged ``FIELD_DROPPED`` (a position is too
valuable to lose over a bad battery value); heading 360 becomes 0; an accuracy
worse than ``poor_accuracy_m`` flags ``POOR_ACCURACY``. Most pings need none of
this: :func:`all_clear` recognises them in one expression and the steps are skipped.

Kinematic rules (:class:`KinematicFilter`, state kept per unit, last few fixes only):

* **LATE**: a fix not newer than the unit's newest seen fix is flagged LATE and
  skips the kinematics. An exact duplicate (same time and position as a fix still
  remembered) gets the flags that fix got the first time instead.
* **Implied speed** between fixes A and B is
  ``max(0, distance - acc_A - acc_B) / max(dt, 1 s)`` (haversine distance; an
  unknown accuracy counts as 0). It is *implausible* above
  ``settings.max_speed_mps[kind]``.
* **SUSPECT / OUTLIER** (never anchor on one accepted fix): a new fix N whose speed
  from the previous fix P is implausible is SUSPECT (held back from "latest").
  When the next fix arrives and P was SUSPECT: if P→N is implausible too while
  P2→N is plausible (P2 = the fix before P), P was a spike: a retroactive
  ``FlagUpdate(P, OUTLIER)`` is returned, P leaves the state, and N is judged
  against P2. Otherwise P stands (its SUSPECT stays as history) and N is judged
  against P. Two mutually consistent fixes therefore always win: a bad first fix
  cannot make every later good fix look impossible, and a real fast jump is
  accepted once the next fix confirms it. Limits: the very first fix of a unit
  has no predecessor, so it is never called an outlier; two spikes in a row are
  left SUSPECT rather than OUTLIER.
* **JITTER**: a plausible fix closer to the last anchor (the last fix that was
  neither JITTER, SUSPECT nor OUTLIER) than the sum of both accuracies (both known
  and > 0), with a reported speed (if any) under 1 m/s, is JITTER: a stationary
  unit whose position wanders inside its error circle.

:class:`FilterPipeline` runs both and returns, per ping, a :class:`Rejection` or a
:class:`Filtered` (the flagged ping, retroactive flag updates, and the names of
the steps that fired, as in Traccar's FilterHandler).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from geo.distance import EARTH_RADIUS_M, haversine_m
from tracker.batch import FlagUpdate
from tracker.config import FilterSettings
from tracker.model import Ping, PingFlag, Rejection, UnitKind

EARLIEST_FIX = datetime(1999, 1, 1, tzinfo=UTC)  # before: unset clock or GPS week rollover
MAX_FIELD_SPEED_MPS = 350.0  # above any ground vehicle or police drone
MAX_FIELD_ACCURACY_M = 100_000.0
MIN_ALTITUDE_M, MAX_ALTITUDE_M = -500.0, 20_000.0
JITTER_MAX_REPORTED_SPEED_MPS = 1.0
_NULL_ISLAND_DEG = 1e-7  # about a centimetre: receivers without a fix report exactly 0, 0

HISTORY = 4  # accepted fixes kept per unit (the rules look two back)
RECENT = 8  # fixes remembered per unit to recognise exact duplicates

# Kinematic state keeps flags as plain ints: IntFlag's operators run Python-level enum
# code (about a microsecond each), too slow for every ping.
_SUSPECT = int(PingFlag.SUSPECT)
_OUTLIER = int(PingFlag.OUTLIER)
_JITTER = int(PingFlag.JITTER)


# ---------------------------------------------------------------------------
# Structural steps


@dataclass(slots=True)
class FilterContext:
    """What a step may look at besides the ping: the time now and the settings."""

    now: datetime
    settings: FilterSettings
    newest_allowed: datetime = field(init=False)
    oldest_allowed: datetime = field(init=False)
    # For the all-clear fast path: the earliest acceptable time, the worst unflagged accuracy.
    earliest_clear: datetime = field(init=False)
    accuracy_clear: float = field(init=False)

    def __post_init__(self) -> None:
        self.newest_allowed = _shift(self.now, self.settings.future_tolerance_s, later=True)
        self.oldest_allowed = _shift(self.now, self.settings.max_age_s, later=False)
        self.earliest_clear = max(self.oldest_allowed, EARLIEST_FIX)
        self.accuracy_clear = min(self.settings.poor_accuracy_m, MAX_FIELD_ACCURACY_M)


def _shift(now: datetime, seconds: float, later: bool) -> datetime:
    """``now`` ± ``seconds``, saturating at the ends of the calendar (a huge or NaN limit means "none")."""
    try:
        return now + timedelta(seconds=seconds if later else -seconds)
    except (OverflowError, ValueError):
        return datetime.max.replace(tzinfo=UTC) if later else datetime.min.replace(tzinfo=UTC)


StepResult = Rejection | bool
"""A step returns a Rejection to stop, True when it fired (flagged or changed the ping), else False."""

Step = Callable[[Ping, FilterContext], StepResult]


def _finite_position(p: Ping, ctx: FilterContext) -> StepResult:
    if math.isfinite(p.lat) and math.isfinite(p.lon):
        return False
    return Rejection("non_finite_position", f"lat/lon must be finite numbers, got {p.lat!r}, {p.lon!r}")


def _lat_range(p: Ping, ctx: FilterContext) -> StepResult:
    if -90.0 <= p.lat <= 90.0:
        return False
    return Rejection("lat_out_of_range", f"latitude {p.lat!r} is outside [-90, 90] (lat/lon swapped?)")


def _lon_range(p: Ping, ctx: FilterContext) -> StepResult:
    if -180.0 <= p.lon <= 180.0:
        return False
    return Rejection("lon_out_of_range", f"longitude {p.lon!r} is outside [-180, 180]")


def _null_island(p: Ping, ctx: FilterContext) -> StepResult:
    if abs(p.lat) < _NULL_ISLAND_DEG and abs(p.lon) < _NULL_ISLAND_DEG:
        return Rejection("null_island", "position is (0, 0): the receiver had no fix")
    return False


def _aware_ts(p: Ping, ctx: FilterContext) -> StepResult:
    if p.ts.tzinfo is not None and p.ts.utcoffset() is not None:
        return False
    return Rejection("naive_timestamp", f"fix time {p.ts.isoformat()} has no time zone (codec bug)")


def _before_1999(p: Ping, ctx: FilterContext) -> StepResult:
    if p.ts >= EARLIEST_FIX:
        return False
    return Rejection(
        "fix_before_1999",
        f"fix time {p.ts.isoformat()} is before 1999: device clock unset or GPS week rollover",
    )


def _in_future(p: Ping, ctx: FilterContext) -> StepResult:
    if p.ts <= ctx.newest_allowed:
        return False
    ahead = (p.ts - ctx.now).total_seconds()
    return Rejection(
        "fix_in_future",
        f"fix time {p.ts.isoformat()} is {ahead:.0f} s ahead of the server clock "
        f"(tolerance {ctx.settings.future_tolerance_s:.0f} s): check the device clock",
    )


def _too_old(p: Ping, ctx: FilterContext) -> StepResult:
    if p.ts >= ctx.oldest_allowed:
        return False
    age = (ctx.now - p.ts).total_seconds()
    return Rejection(
        "fix_too_old",
        f"fix time {p.ts.isoformat()} is {age:.0f} s old, over the {ctx.settings.max_age_s:.0f} s limit",
    )


# Optional-field hygiene. Comparisons are written "not (low <= x <= high)" so a NaN
# or an infinity (from a codec that let one through) is dropped too.


def _speed_range(p: Ping, ctx: FilterContext) -> StepResult:
    if p.speed is None or 0.0 <= p.speed <= MAX_FIELD_SPEED_MPS:
        return False
    p.speed = None
    p.flags |= PingFlag.FIELD_DROPPED
    return True


def _heading_range(p: Ping, ctx: FilterContext) -> StepResult:
    h = p.heading
    if h is None or 0.0 <= h < 360.0:
        return False
    if h == 360.0:
        p.heading = 0.0  # same direction; keeps the stored range [0, 360)
        return False
    p.heading = None
    p.flags |= PingFlag.FIELD_DROPPED
    return True


def _poor_accuracy(p: Ping, ctx: FilterContext) -> StepResult:
    # Before the accuracy range check: a device reporting a 150 km error circle is
    # a poor fix, whether or not the number itself is kept.
    if p.accuracy is not None and p.accuracy > ctx.settings.poor_accuracy_m:
        p.flags |= PingFlag.POOR_ACCURACY
        return True
    return False


def _accuracy_range(p: Ping, ctx: FilterContext) -> StepResult:
    if p.accuracy is None or 0.0 <= p.accuracy <= MAX_FIELD_ACCURACY_M:
        return False
    p.accuracy = None
    p.flags |= PingFlag.FIELD_DROPPED
    return True


def _battery_range(p: Ping, ctx: FilterContext) -> StepResult:
    if p.battery is None or 0.0 <= p.battery <= 100.0:
        return False
    p.battery = None
    p.flags |= PingFlag.FIELD_DROPPED
    return True


def _altitude_range(p: Ping, ctx: FilterContext) -> StepResult:
    if p.alt is None or MIN_ALTITUDE_M <= p.alt <= MAX_ALTITUDE_M:
        return False
    p.alt = None
    p.flags |= PingFlag.FIELD_DROPPED
    return True


STRUCTURAL_STEPS: tuple[tuple[str, Step], ...] = (
    ("finite_position", _finite_position),
    ("lat_range", _lat_range),
    ("lon_range", _lon_range),
    ("null_island", _null_island),
    ("aware_ts", _aware_ts),
    ("before_1999", _before_1999),
    ("in_future", _in_future),
    ("too_old", _too_old),
    ("speed_range", _speed_range),
    ("heading_range", _heading_range),
    ("poor_accuracy", _poor_accuracy),
    ("accuracy_range", _accuracy_range),
    ("battery_range", _battery_range),
    ("altitude_range", _altitude_range),
)
"""Structural checks in the order they run: (name, step)."""


def all_clear(p: Ping, ctx: FilterContext) -> bool:
    """True when no structural step would reject, flag or change ``p`` (the common case).

    A fast path only: it may say False for a fine ping (the steps then run and
    decide), but True must mean the steps would do nothing; a property test holds
    it to that. One expression instead of fourteen calls saves a few µs per ping.
    """
    lat = p.lat
    lon = p.lon
    return (
        -90.0 <= lat <= 90.0
        and -180.0 <= lon <= 180.0
        and (
            lat >= _NULL_ISLAND_DEG
            or lat <= -_NULL_ISLAND_DEG
            or lon >= _NULL_ISLAND_DEG
            or lon <= -_NULL_ISLAND_DEG
        )
        and p.ts.tzinfo is UTC
        and ctx.earliest_clear <= p.ts <= ctx.newest_allowed
        and (p.speed is None or 0.0 <= p.speed <= MAX_FIELD_SPEED_MPS)
        and (p.heading is None or 0.0 <= p.heading < 360.0)
        and (p.accuracy is None or 0.0 <= p.accuracy <= ctx.accuracy_clear)
        and (p.battery is None or 0.0 <= p.battery <= 100.0)
        and (p.alt is None or MIN_ALTITUDE_M <= p.alt <= MAX_ALTITUDE_M)
    )


def check_fix(ping: Ping, now: datetime, settings: FilterSettings) -> Rejection | None:
    """Run the structural steps on ``ping`` (cleaning its fields in place); the Rejection, if any."""
    ctx = FilterContext(now, settings)
    if all_clear(ping, ctx):
        return None
    for _, step in STRUCTURAL_STEPS:
        result = step(ping, ctx)
        if result is not False and result is not True:
            return result
    return None


# ---------------------------------------------------------------------------
# Kinematics


class _Fix:
    """What the kinematic filter remembers of one fix (a plain class: built for every ping)."""

    __slots__ = ("accuracy", "flags", "lat", "lon", "t", "ts")

    def __init__(
        self, t: float, ts: datetime, lat: float, lon: float, accuracy: float | None, flags: int
    ) -> None:
        self.t = t  # epoch seconds
        self.ts = ts
        self.lat = lat
        self.lon = lon
        self.accuracy = accuracy
        self.flags = flags  # PingFlag bits this filter gave it, as a plain int (IntFlag operators are slow)


class _Track:
    """Per-unit state: bounded recent history."""

    __slots__ = ("anchor", "fixes", "newest_t", "recent")

    def __init__(self, first: _Fix) -> None:
        self.newest_t = first.t
        self.fixes: deque[_Fix] = deque((first,), maxlen=HISTORY)  # accepted, oldest first
        self.recent: deque[_Fix] = deque((first,), maxlen=RECENT)  # incl. outliers
        self.anchor: _Fix = first  # jitter reference


def implied_speed_mps(
    lat1: float,
    lon1: float,
    acc1: float | None,
    t1: float,
    lat2: float,
    lon2: float,
    acc2: float | None,
    t2: float,
) -> float:
    """Speed needed to get from fix 1 to fix 2, giving both accuracies the benefit of the doubt.

    ``max(0, distance - acc1 - acc2) / max(|t2 - t1|, 1 s)``; unknown accuracy counts as 0.
    """
    gap = haversine_m(lat1, lon1, lat2, lon2) - (acc1 or 0.0) - (acc2 or 0.0)
    if gap <= 0.0:
        return 0.0
    return gap / max(abs(t2 - t1), 1.0)


# Distance bounds that decide the usual case without trigonometry (consecutive fixes are
# metres apart, the thresholds tens or hundreds of metres); a close call is decided by
# haversine_m itself, so every outcome is the one haversine_m gives. The margins cover
# float rounding in the bounds and in haversine_m (whose error peaks, at ~0.1 m, for
# near-antipodal points, where the relative margin alone is 20 m).
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0
_RAD_PER_DEG = math.pi / 180.0
_UPPER_M_PER_DEG = _M_PER_DEG * (1.0 + 1e-6)
_LOWER_M_PER_DEG_SQ = (_M_PER_DEG * (1.0 - 1e-5)) ** 2
_MARGIN_M = 1e-3
_SHORT_DEG = 0.5  # the lower bound takes sin x = x, true within 1e-5 on legs this short


def _implausible(a: _Fix, lat: float, lon: float, acc: float | None, t: float, limit: float) -> bool:
    """``implied_speed_mps(a → new fix) > limit``, without the haversine when a bound settles it."""
    # The great circle is no longer than the meridian arc plus a parallel's arc, and no
    # parallel is longer than the equator: distance <= R * (|dlat| + |dlon|) (radians).
    upper = (abs(lat - a.lat) + abs(lon - a.lon)) * _UPPER_M_PER_DEG + _MARGIN_M
    gap = upper - (a.accuracy or 0.0) - (acc or 0.0)  # >= the real gap (rounding is monotonic)
    if gap <= 0.0:
        return limit < 0.0  # the real gap is <= 0 too: implied speed 0
    if gap / max(abs(t - a.t), 1.0) <= limit:
        return False
    return implied_speed_mps(a.lat, a.lon, a.accuracy, a.t, lat, lon, acc, t) > limit


def _closer_than(a: _Fix, lat: float, lon: float, circle: float) -> bool:
    """``haversine_m(a → (lat, lon)) < circle``, without the haversine when a bound settles it."""
    dlat = abs(lat - a.lat)
    dlon = abs(lon - a.lon)
    if (dlat + dlon) * _UPPER_M_PER_DEG + _MARGIN_M < circle:  # upper bound, as in _implausible
        return True
    if dlat < _SHORT_DEG and dlon < _SHORT_DEG:
        # Lower bound: distance >= R * sqrt(dlat² + (cos(phi) * dlon)²) (radians) on a short
        # leg, phi the larger |latitude|; cos(phi) >= 1 - phi²/2.
        phi = max(abs(lat), abs(a.lat)) * _RAD_PER_DEG
        c = 1.0 - 0.5 * phi * phi
        if c > 0.0:
            reach = circle + _MARGIN_M
            if (dlat * dlat + c * c * dlon * dlon) * _LOWER_M_PER_DEG_SQ >= reach * reach:
                return False
    return haversine_m(a.lat, a.lon, lat, lon) < circle


# PingFlag for every value of the low byte: PingFlag(v) and "|" on IntFlag run Python-level
# enum code (about a microsecond each); a tuple index does not.
_FLAG_OF: tuple[PingFlag, ...] = tuple(PingFlag(v) for v in range(256))
_LATE = int(PingFlag.LATE)


def _add_flags(flags: PingFlag, bits: int) -> PingFlag:
    """``flags | bits`` as a PingFlag, without IntFlag's slow operator."""
    value = int(flags) | bits
    return _FLAG_OF[value] if value < 256 else PingFlag(value)


class KinematicFilter:
    """Per-unit plausibility of movement (rules in the module docstring); in memory, bounded."""

    def __init__(self, settings: FilterSettings | None = None) -> None:
        settings = settings or FilterSettings()
        fallback = max(settings.max_speed_mps.values(), default=60.0)
        # Resolved once for every kind, so a settings file that forgets one cannot raise here.
        self._limits: dict[UnitKind, float] = {k: settings.max_speed_mps.get(k, fallback) for k in UnitKind}
        self._tracks: dict[str, _Track] = {}

    def __len__(self) -> int:
        return len(self._tracks)

    def forget(self, unit_id: str) -> None:
        """Drop a unit's state (e.g. when it is deleted or its device replaced)."""
        self._tracks.pop(unit_id, None)

    def apply(self, ping: Ping, kind: UnitKind) -> list[FlagUpdate]:
        """Flag ``ping`` (LATE, SUSPECT, JITTER) and return flag updates for earlier fixes.

        State is keyed by ``ping.unit_id``, so resolve the unit first; one entry per
        unit, each holding at most :data:`HISTORY` + :data:`RECENT` fixes.
        """
        update = self.flag(ping, kind)
        return [] if update is None else [update]

    def flag(self, ping: Ping, kind: UnitKind) -> FlagUpdate | None:
        """:meth:`apply` for the hot path: the one flag update it can produce, or None."""
        ts = ping.ts
        t = ts.timestamp()
        lat = ping.lat
        lon = ping.lon
        acc = ping.accuracy
        new = _Fix(t, ts, lat, lon, acc, 0)
        track = self._tracks.get(ping.unit_id)
        if track is None:
            self._tracks[ping.unit_id] = _Track(new)
            return None
        if t <= track.newest_t:
            for old in track.recent:
                if old.t == t and old.lat == lat and old.lon == lon:
                    if old.flags:
                        ping.flags = _add_flags(ping.flags, old.flags)
                    return None
            ping.flags = _add_flags(ping.flags, _LATE)
            return None
        track.newest_t = t
        limit = self._limits[kind]
        fixes = track.fixes
        prev = fixes[-1]
        update: FlagUpdate | None = None
        implausible = _implausible(prev, lat, lon, acc, t, limit)
        if (
            implausible
            and prev.flags & _SUSPECT
            and len(fixes) >= 2
            and not _implausible(fixes[-2], lat, lon, acc, t, limit)
        ):
            # prev was a spike: out of line with both its neighbours.
            prev.flags |= _OUTLIER
            update = FlagUpdate(ping.unit_id, prev.ts, PingFlag.OUTLIER)
            fixes.pop()
            implausible = False
        if implausible:
            new.flags = _SUSPECT
            ping.flags = _add_flags(ping.flags, _SUSPECT)
        else:
            anchor = track.anchor
            # Unknown or zero accuracy (0 means "unknown" to some devices): no jitter test.
            a_acc = anchor.accuracy
            if (
                a_acc is not None
                and acc is not None
                and a_acc > 0.0
                and acc > 0.0
                and (ping.speed is None or ping.speed < JITTER_MAX_REPORTED_SPEED_MPS)
                and _closer_than(anchor, lat, lon, a_acc + acc)
            ):
                new.flags = _JITTER
                ping.flags = _add_flags(ping.flags, _JITTER)
            else:
                track.anchor = new
        fixes.append(new)
        track.recent.append(new)
        return update


# ---------------------------------------------------------------------------
# Pipeline

# Kinematic flag -> the step name reported when the kinematic filter sets it.
_KINEMATIC_NAMES: tuple[tuple[int, str], ...] = (
    (int(PingFlag.LATE), "late"),
    (_SUSPECT, "suspect"),
    (_JITTER, "jitter"),
    (_OUTLIER, "outlier"),
)


@dataclass(slots=True)
class Filtered:
    """A ping that passed the filters: flagged in place, plus what else was learnt."""

    ping: Ping
    updates: list[FlagUpdate] = field(default_factory=list)  # retroactive flags on earlier fixes
    fired: list[str] = field(default_factory=list)  # names of the steps that fired, in order


class FilterPipeline:
    """Structural steps, then the kinematic filter; one call per resolved ping."""

    def __init__(
        self, settings: FilterSettings | None = None, kinematics: KinematicFilter | None = None
    ) -> None:
        self.settings = settings or FilterSettings()
        self.kinematics = kinematics or KinematicFilter(self.settings)
        self._steps = STRUCTURAL_STEPS

    @property
    def step_names(self) -> list[str]:
        """Names of every step in the order they run (the kinematic step last)."""
        return [name for name, _ in self._steps] + ["kinematics"]

    def context(self, now: datetime) -> FilterContext:
        """A context for ``now``; build one per batch and pass it to :meth:`process` to save time."""
        return FilterContext(now, self.settings)

    def process(self, ping: Ping, kind: UnitKind, now: datetime | FilterContext) -> Filtered | Rejection:
        """Filter one ping of a unit of ``kind`` (``ping.unit_id`` must be resolved)."""
        ctx = now if isinstance(now, FilterContext) else FilterContext(now, self.settings)
        fired: list[str] = []
        result = self.check(ping, kind, ctx, fired)
        if result is None:
            return Filtered(ping, [], fired)
        if type(result) is FlagUpdate:
            return Filtered(ping, [result], fired)
        return result  # type: ignore[return-value]  # a Rejection

    def check(
        self, ping: Ping, kind: UnitKind, ctx: FilterContext, fired: list[str]
    ) -> Rejection | FlagUpdate | None:
        """:meth:`process` for the hot path, with no result object per ping.

        Appends the names of the steps that fired to ``fired`` (none for a rejected
        ping) and returns the Rejection, or else the retroactive flag update learnt
        (the kinematic filter makes at most one per ping), or None.
        """
        if not all_clear(ping, ctx):
            mark = len(fired)
            for name, step in self._steps:
                result = step(ping, ctx)
                if result is False:
                    continue
                if result is True:
                    fired.append(name)
                    continue
                del fired[mark:]
                return result
        before = ping.flags
        update = self.kinematics.flag(ping, kind)
        after = ping.flags
        if after != before:  # plain int comparison; IntFlag's & and ~ are slow
            added = int(after) & ~int(before)
            for flag, name in _KINEMATIC_NAMES:
                if added & flag:
                    fired.append(name)
        if update is not None:
            fired.append("outlier")
        return update
