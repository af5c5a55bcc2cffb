"""What the API needs from the running service: configuration, storage, registry, fleet, bridge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool

from tracker.config import MqttTarget, Settings
from tracker.fleet import LiveFleet
from tracker.registry import UnitRegistry


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
