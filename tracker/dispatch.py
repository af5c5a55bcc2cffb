"""Nearest-unit dispatch: the LiveFleet mirrored into geo's LiveIndex, queried by ETA.

CONTRACT (filled in by the dispatch work; other modules code against it):

- ``Candidate``: one ranked unit (below).
- ``Dispatcher(fleet, eta=EtaSettings(), thresholds=None)``: subscribes to the
  fleet's changes and keeps a :class:`geo.live_index.LiveIndex` in step;
  ``nearest(...)`` answers "which available units reach (lat, lon) first";
  ``close()`` unsubscribes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tracker.model import Freshness, UnitKind, UnitStatus


@dataclass(slots=True, frozen=True)
class Candidate:
    """One unit ranked for an incident: where it is, how far, how soon it can be there."""

    unit_id: str
    kind: UnitKind
    callsign: str
    status: UnitStatus
    lat: float
    lon: float
    distance_m: float  # great-circle distance to the point
    eta_s: float  # from the ETA model (geo.eta)
    fix_age_s: float
    freshness: Freshness  # LIVE or STALE (lost units are never candidates)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form, as the API and the live feed send it."""
        return {
            "unit_id": self.unit_id,
            "kind": str(self.kind),
            "callsign": self.callsign,
            "status": str(self.status),
            "lat": self.lat,
            "lon": self.lon,
            "distance_m": round(self.distance_m, 1),
            "eta_s": round(self.eta_s, 1),
            "fix_age_s": round(self.fix_age_s, 1),
            "freshness": str(self.freshness),
        }


class Dispatcher:
    """Placeholder: the dispatch work replaces this with the LiveIndex-backed implementation."""
