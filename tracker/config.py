"""Configuration: every setting from the environment as ``SERENAZGO_*``.

With neither ``SERENAZGO_DATABASE_URL`` nor ``SERENAZGO_MQTT_URL`` set,
``serenazgo up`` starts a private PostgreSQL and broker under ``data_dir``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from geo.eta import DEFAULT_CIRCUITY, DEFAULT_SPEED_MPS, StraightLineEta
from tracker.errors import ConfigError
from tracker.freshness import DEFAULT_THRESHOLDS, FreshnessThresholds
from tracker.model import UnitKind

# Lima's districts ship inside the package (tracker/data) for the demo and tests;
# a deployment sets SERENAZGO_AREA to its own boundary file.
DEFAULT_DISTRICTS_FILE = Path(__file__).resolve().parent / "data" / "lima_districts.geojson"


class MqttTarget(BaseModel):
    """A broker address parsed from ``mqtt://user:pass@host:port``."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_mqtt_url(url: str) -> MqttTarget:
    """Parse an ``mqtt://`` or ``mqtts://`` URL; raise :class:`ConfigError` with a fix on error."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ConfigError(
            f"SERENAZGO_MQTT_URL {url!r}: scheme must be mqtt:// or mqtts:// "
            "(e.g. mqtt://user:pass@broker.example:1883)"
        )
    if not parts.hostname:
        raise ConfigError(f"SERENAZGO_MQTT_URL {url!r} has no host name")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ConfigError(f"SERENAZGO_MQTT_URL {url!r}: bad port ({exc})") from exc
    return MqttTarget(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


class FilterSettings(BaseModel):
    """Limits of the GPS quality filters (see :mod:`tracker.filters`)."""

    future_tolerance_s: float = 300.0  # device clocks drift; beyond this a fix is rejected
    max_age_s: float = 7 * 86400.0  # an offline phone may upload a week of buffered fixes
    poor_accuracy_m: float = 100.0  # flag, do not reject: a poor fix beats no fix
    # Top plausible ground speed per kind (m/s), with headroom for GPS error.
    max_speed_mps: dict[UnitKind, float] = Field(
        default_factory=lambda: {
            UnitKind.FOOT: 12.0,
            UnitKind.BICYCLE: 20.0,
            UnitKind.MOTORCYCLE: 60.0,
            UnitKind.PATROL_CAR: 60.0,
            UnitKind.DRONE: 40.0,
        }
    )


class EtaSettings(BaseModel):
    """Travel-time model of dispatch and coverage (see :mod:`geo.eta` for the sources of the defaults)."""

    # Average door-to-door speed per kind on Lima's streets (m/s); drones: cruise speed.
    speed_mps: dict[UnitKind, float] = Field(
        default_factory=lambda: {UnitKind(k): v for k, v in DEFAULT_SPEED_MPS.items()}
    )
    # Street distance / great-circle distance; 1.0 for drones, which fly straight.
    circuity: dict[UnitKind, float] = Field(
        default_factory=lambda: {UnitKind(k): v for k, v in DEFAULT_CIRCUITY.items()}
    )

    def model(self) -> StraightLineEta:
        """The ETA model these settings describe (kinds left out keep geo.eta's defaults)."""
        return StraightLineEta.from_names(
            {str(k): v for k, v in self.speed_mps.items()}, {str(k): v for k, v in self.circuity.items()}
        )


class DispatchSettings(BaseModel):
    """Incidents, assignments and arrival detection."""

    arrival_radius_m: float = 75.0  # a dispatched unit this close to its incident has arrived
    recommendations: int = 5  # ranked units returned with a new incident
    eta: EtaSettings = Field(default_factory=EtaSettings)


class EventSettings(BaseModel):
    """Unit events: geofences, freshness, battery."""

    battery_low_pct: float = 15.0  # a unit at or below this raises battery_low once...
    battery_rearm_pct: float = 20.0  # ...and again only after it has charged above this
    geofence_margin_m: float = 15.0  # hysteresis band at a geofence border (GPS jitter)
    freshness_sweep_s: float = 2.0  # how often live -> stale -> lost transitions are checked
    publish_mqtt: bool = True  # also publish each event on serenazgo/events/{type}


class PlacementSettings(BaseModel):
    """Limits of the placement and move-up recommendations (``POST /api/v1/coverage/recommendations``)."""

    # The exact (HiGHS MILP) solve is refused above this many nonzeros in its coverage matrix (covering
    # pairs). Miraflores at res 10 (729 cells): 38k at a 2-minute car reach, where HiGHS took 9 s to prove
    # p = 10; 372k at 8 minutes (there greedy covers every coverable cell: proven without HiGHS or guard).
    exact_max_nonzeros: int = Field(default=200_000, ge=0)
    exact_time_limit_s: float = Field(
        default=30.0, gt=0
    )  # the best found by then is returned, marked not proven
    # The greedy answer's gap is measured against the LP relaxation when it is this small (a fraction of a
    # second on Miraflores); beyond, against the cheaper marginal-gains bound only.
    lp_bound_max_nonzeros: int = Field(default=100_000, ge=0)
    lp_bound_time_limit_s: float = Field(default=2.0, gt=0)
    # Greedy + interchange: no further start begins after this (the first run always completes).
    greedy_time_budget_s: float = Field(default=2.0, gt=0)


class CoverageHistorySettings(BaseModel):
    """The stored coverage samples (``coverage_samples``): how long they are kept."""

    days: float = Field(default=90.0, gt=0)  # older samples are deleted by the sampler...
    prune_every_s: float = Field(default=3600.0, gt=0)  # ...at most this often


class Settings(BaseSettings):
    """All settings; each field is ``SERENAZGO_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SERENAZGO_", env_nested_delimiter="__", extra="ignore")

    database_url: str | None = None
    mqtt_url: str | None = None
    data_dir: Path = Path.home() / ".serenazgo"
    area: Path | None = None
    auto_register: bool = False

    host: str = "127.0.0.1"
    port: int = 8000

    # Ingest
    mqtt_client_id: str = "serenazgo-bridge"
    share_group: str | None = None  # set to split the load over N bridges ($share/<group>/...)
    batch_max: int = 5000
    batch_interval_ms: int = 20
    max_payload_bytes: int = 65536
    # In-flight window: unacknowledged messages the broker may send us (MQTT 5 Receive
    # Maximum). It bounds memory when the database stalls.
    receive_maximum: int = 20000
    filters: FilterSettings = Field(default_factory=FilterSettings)
    freshness: dict[UnitKind, FreshnessThresholds] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    geofences: Path | None = None  # GeoJSON FeatureCollection of geofences loaded at start (optional)
    placement: PlacementSettings = Field(default_factory=PlacementSettings)
    coverage_history: CoverageHistorySettings = Field(default_factory=CoverageHistorySettings)

    @field_validator("batch_max", "receive_maximum")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be positive")
        return v

    @property
    def mqtt(self) -> MqttTarget | None:
        """The external broker, or None when the embedded one is to be started."""
        return parse_mqtt_url(self.mqtt_url) if self.mqtt_url else None

    def area_file(self) -> Path:
        """The boundary GeoJSON: ``SERENAZGO_AREA`` or Lima's districts shipped in tracker/data."""
        path = self.area or DEFAULT_DISTRICTS_FILE
        if not path.exists():
            raise ConfigError(f"area file {path} not found: set SERENAZGO_AREA to a boundary GeoJSON")
        return path
