"""Freshness of a unit's last fix: live, stale or lost, from its age and kind.

Thresholds differ per kind because reporting intervals do: a drone streams
telemetry every few seconds, while a phone on foot in OwnTracks' significant-
change mode may stay silent for a minute while standing still.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracker.model import Freshness, UnitKind


@dataclass(slots=True, frozen=True)
class FreshnessThresholds:
    """Fix age (seconds) after which a unit becomes stale, and then lost."""

    stale_after_s: float
    lost_after_s: float

    def __post_init__(self) -> None:
        if not 0 < self.stale_after_s < self.lost_after_s:
            raise ValueError(
                f"freshness thresholds need 0 < stale ({self.stale_after_s}) < lost ({self.lost_after_s})"
            )


DEFAULT_THRESHOLDS: dict[UnitKind, FreshnessThresholds] = {
    UnitKind.FOOT: FreshnessThresholds(120.0, 600.0),
    UnitKind.BICYCLE: FreshnessThresholds(90.0, 480.0),
    UnitKind.MOTORCYCLE: FreshnessThresholds(60.0, 300.0),
    UnitKind.PATROL_CAR: FreshnessThresholds(60.0, 300.0),
    UnitKind.DRONE: FreshnessThresholds(15.0, 60.0),
}


def classify_freshness(
    age_s: float,
    kind: UnitKind,
    thresholds: dict[UnitKind, FreshnessThresholds] | None = None,
) -> Freshness:
    """Return the freshness of a fix that is ``age_s`` seconds old for a unit of ``kind``.

    >>> classify_freshness(10, UnitKind.FOOT)
    <Freshness.LIVE: 'live'>
    >>> classify_freshness(3600, UnitKind.DRONE)
    <Freshness.LOST: 'lost'>
    """
    t = (thresholds or DEFAULT_THRESHOLDS)[kind]
    # A fix from slightly in the future (clock skew) is as fresh as one from now.
    if age_s < t.stale_after_s:
        return Freshness.LIVE
    if age_s < t.lost_after_s:
        return Freshness.STALE
    return Freshness.LOST
