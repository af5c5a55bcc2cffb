"""What the API needs from the running service: configuration, storage, registry, fleet, bridge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from psycopg_pool import AsyncConnectionPool

from tracker.config import MqttTarget, Settings
from tracker.fleet import LiveFleet
from tracker.registry import UnitRegistry
from tracker.users import Principal

if TYPE_CHECKING:
    from api.auth import LoginLimiter
    from api.feed import LiveFeedHub
    from drones.airspace import LiveAirspace
    from drones.endurance import SquadronModel
    from mqtt_bridge.http_ingest import HttpIngest
    from tracker.coverage import CoverageService
    from tracker.coverage_history import CoverageSampler
    from tracker.dispatch import Dispatcher
    from tracker.events import EventEngine
    from tracker.incidents import IncidentService


class BridgeHandle(Protocol):
    """The part of the ingest bridge the API looks at (for /healthz)."""

    def stats(self) -> Any:
        """Counters and state of the bridge."""


@dataclass(slots=True)
class ApiContext:
    """Shared state of one API process; ``pool`` is opened and closed by the app's lifespan.

    ``bridge`` is None when the bridge runs in another process (scale-out), in
    which case /healthz does not judge it.
    """

    settings: Settings
    conninfo: str
    registry: UnitRegistry
    fleet: LiveFleet
    mqtt: MqttTarget | None = None
    bridge: BridgeHandle | None = None
    pool: AsyncConnectionPool[Any] | None = field(default=None)
    pool_max_size: int = 10
    # Dispatch, incidents, events and the live feed; None until the runtime (or a test) sets them.
    dispatcher: Dispatcher | None = None
    incidents: IncidentService | None = None
    events: EventEngine | None = None
    feed: LiveFeedHub | None = None
    coverage: CoverageService | None = None
    coverage_history: CoverageSampler | None = None
    # Restricted airspace in memory (the sortie planner reads it); the app's lifespan loads it.
    airspace: LiveAirspace | None = None
    # The drones' endurance model (GET /api/v1/drones); None: built from the settings and coverage docks.
    squadron: SquadronModel | None = None
    # HTTP ingest (OsmAnd, OwnTracks HTTP): started by the app's lifespan when None.
    http_ingest: HttpIngest | None = None
    # Device tokens already checked: SHA-256 -> (unit id, monotonic time until which it is trusted).
    ingest_tokens: dict[bytes, tuple[str, float]] = field(default_factory=dict)
    # Sessions and API tokens already checked: SHA-256 -> (who, monotonic time until trusted).
    auth_cache: dict[bytes, tuple[Principal, float]] = field(default_factory=dict)
    # Failed-login counts (created by the app from the settings).
    login_limiter: LoginLimiter | None = None
