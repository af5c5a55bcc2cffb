"""Configuration: every setting from the environment as ``SERENAZGO_*``.

With neither ``SERENAZGO_DATABASE_URL`` nor ``SERENAZGO_MQTT_URL`` set,
``serenazgo up`` starts a private PostgreSQL and broker under ``data_dir``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from geo.docks import (
    DEFAULT_DERATING,
    DEFAULT_PROFILE,
    DEFAULT_RESERVE,
    DEFAULT_TAKEOFF_S,
    PROFILES,
    AircraftProfile,
)
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


class AircraftSettings(BaseModel):
    """A dock aircraft's figures (see :mod:`geo.docks` for the published ones and the derating)."""

    name: str
    cruise_mps: float = Field(gt=0)
    max_flight_s: float = Field(gt=0)  # the manufacturer's maximum flight time
    max_radius_m: float = Field(default=float("inf"), gt=0)  # the dock's published operating radius
    derating: float | None = Field(default=None, gt=0, le=1)  # None: CoverageSettings.derating
    reserve: float | None = Field(default=None, ge=0, lt=1)  # None: CoverageSettings.reserve


def _default_aircraft() -> dict[str, AircraftSettings]:
    return {
        key: AircraftSettings(
            name=p.name, cruise_mps=p.cruise_mps, max_flight_s=p.max_flight_s, max_radius_m=p.max_radius_m
        )
        for key, p in PROFILES.items()
    }


class CoverageSettings(BaseModel):
    """Drone docks and camera viewsheds of the coverage layers (``SERENAZGO_COVERAGE__*``)."""

    docks: Path | None = None  # GeoJSON FeatureCollection of dock Points (see tracker/data/README.md)
    cameras: Path | None = None  # GeoJSON of camera viewshed polygons
    aircraft: dict[str, AircraftSettings] = Field(default_factory=_default_aircraft)  # by profile key
    default_profile: str = DEFAULT_PROFILE  # for docks that do not name one
    takeoff_s: float = Field(default=DEFAULT_TAKEOFF_S, ge=0)  # lid, take-off and climb (and again to land)
    derating: float = Field(default=DEFAULT_DERATING, gt=0, le=1)  # share of the published flight time
    reserve: float = Field(default=DEFAULT_RESERVE, ge=0, lt=1)  # share of the charge kept for landing
    hold_s: float = Field(default=0.0, ge=0)  # time over the incident a dock's mission must afford
    at_dock_m: float = Field(default=60.0, ge=0)  # a drone this close to a dock sits on it

    @field_validator("aircraft", mode="before")
    @classmethod
    def _over_defaults(cls, v: object) -> object:
        """Entries given (e.g. ``SERENAZGO_COVERAGE__AIRCRAFT__M3TD__CRUISE_MPS=12``) amend the defaults."""
        if not isinstance(v, dict):
            return v
        out: dict[str, object] = {k: a.model_dump() for k, a in _default_aircraft().items()}
        for key, given in v.items():
            base = out.get(str(key))
            if isinstance(base, dict) and isinstance(given, dict):
                out[str(key)] = {**base, **given}
            else:
                out[str(key)] = given
        return out

    @model_validator(mode="after")
    def _known_default(self) -> CoverageSettings:
        if self.default_profile not in self.aircraft:
            raise ValueError(
                f"default_profile {self.default_profile!r} is not in the aircraft table "
                f"({', '.join(sorted(self.aircraft))})"
            )
        return self

    def profiles(self) -> dict[str, AircraftProfile]:
        """The aircraft table as geo.docks profiles (derating and reserve filled from these settings)."""
        return {
            key: AircraftProfile(
                a.name,
                a.cruise_mps,
                a.max_flight_s,
                self.derating if a.derating is None else a.derating,
                self.reserve if a.reserve is None else a.reserve,
                a.max_radius_m,
            )
            for key, a in self.aircraft.items()
        }


class DispatchSettings(BaseModel):
    """Incidents, assignments and arrival detection."""

    arrival_radius_m: float = 75.0  # a dispatched unit this close to its incident has arrived
    recommendations: int = 5  # ranked units returned with a new incident
    eta: EtaSettings = Field(default_factory=EtaSettings)


class EventSettings(BaseModel):
    """Unit events: geofences, restricted airspace, freshness, battery."""

    battery_low_pct: float = 15.0  # a unit at or below this raises battery_low once...
    battery_rearm_pct: float = 20.0  # ...and again only after it has charged above this
    geofence_margin_m: float = 15.0  # hysteresis band at a geofence border (GPS jitter)
    # Restricted airspace (drones): the same hysteresis, with a band at the footprint's border and one at
    # the floor and ceiling (drone GPS is better than a phone's; barometric altitude drifts a few metres).
    airspace_margin_m: float = Field(default=10.0, ge=0)
    airspace_vertical_margin_m: float = Field(default=5.0, ge=0)
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


class DroneSettings(BaseModel):
    """The drone squadron: endurance and return-home alerts, altitude limit, restricted airspace.

    Aircraft profiles (cruise speed, published endurance, derating, reserve) are
    ``coverage.aircraft`` (:class:`AircraftSettings`): one table for dock coverage,
    endurance and sortie planning.
    """

    # unit id -> aircraft profile key (a key of coverage.aircraft); others use coverage.default_profile
    profiles: dict[str, str] = Field(default_factory=dict)
    altitude_limit_m: float = Field(default=120.0, gt=0)  # above take-off; Peru's DGAC and most rules: 120 m
    # drone_altitude_exceeded fires once above altitude_limit_m, again only after the aircraft came
    # this far below it (GPS/baro altitude jitters by metres around a ceiling it is flying at).
    altitude_rearm_m: float = Field(default=10.0, gt=0)
    # drone_return_required fires once when the return-home margin (drones.endurance) is at or below
    # this: the aircraft must turn back now to land with its reserve intact...
    return_margin_s: float = Field(default=60.0, ge=0)
    # ...and again only after the margin climbed this far above it (recharged, or a better estimate),
    # or after the aircraft landed.
    return_rearm_s: float = Field(default=60.0, gt=0)
    # drone_below_reserve (battery under the profile's reserve, in flight) re-arms this far above it.
    reserve_rearm_pct: float = Field(default=5.0, gt=0)
    # drone_telemetry_lost: an airborne aircraft whose telemetry or position is older than this
    # (DJI sends OSD every 2 s, MAVLink several times a second: 30 s is many missed reports).
    telemetry_lost_s: float = Field(default=30.0, gt=0)
    # Dispatch offers a drone only when it can fly to the incident, hold over it this long and come
    # back with its reserve (drones.first_response); two minutes of overwatch for the first unit.
    dispatch_hold_s: float = Field(default=120.0, ge=0)
    airspace: Path | None = None  # GeoJSON of restricted zones (floor/ceiling) loaded at start (optional)


class EvidenceSettings(BaseModel):
    """Signed evidence exports (``SERENAZGO_EVIDENCE__*``), see :mod:`tracker.evidence`."""

    # The installation's Ed25519 private key (PEM, unencrypted PKCS#8). None: ``evidence/ed25519.key``
    # under data_dir, generated on first use (mode 0600) with its public key beside it.
    key_file: Path | None = None
    # Named in every manifest so a verifier knows which security centre signed it. An empty id is
    # derived from the key's fingerprint (stable for as long as the key is).
    installation_id: str = Field(default="", max_length=128)
    installation_name: str = Field(default="serenazgo", max_length=200)


class AuthSettings(BaseModel):
    """Console users, sessions and API tokens (``SERENAZGO_AUTH__*``), see :mod:`api.auth`."""

    # A console session lasts one shift and then asks for the password again.
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # Secure cookies travel only over HTTPS (browsers also accept them on http://localhost). Turn off
    # only on a closed network without TLS, where the cookie would otherwise never come back.
    cookie_secure: bool = True
    # How long a checked session or API token is trusted in memory before it is looked up again:
    # a revocation made by another process (the CLI) takes at most this long to bite.
    cache_s: float = Field(default=5.0, ge=0)
    # Failed logins: at most this many per user name, and 4x this many per client address, within
    # the window; further attempts get 429 until the window has passed.
    login_max_failures: int = Field(default=5, ge=1)
    login_window_s: float = Field(default=300.0, gt=0)
    min_password_length: int = Field(default=10, ge=8)


class BrokerSecuritySettings(BaseModel):
    """The embedded Mosquitto's password file and ACL (``SERENAZGO_BROKER__*``)."""

    # Anonymous clients may connect (and publish as any unit): only for a closed lab network.
    allow_anonymous: bool = False
    # How often the service looks for new or revoked device credentials (issued by the CLI in
    # another process) and, on a change, rewrites the password file and ACL and reloads the broker.
    refresh_s: float = Field(default=5.0, gt=0)


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
    # HTTP ingest (api/routes/ingest.py): device tokens checked on every request (off in the demo),
    # how long a checked token is trusted before it is looked up again (a revocation takes that long),
    # and the conventional OsmAnd/Traccar Client port served beside the API (0: off).
    ingest_auth: bool = True
    ingest_auth_cache_s: float = Field(default=10.0, ge=0)
    osmand_port: int = Field(default=5055, ge=0, le=65535)
    freshness: dict[UnitKind, FreshnessThresholds] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    geofences: Path | None = None  # GeoJSON FeatureCollection of geofences loaded at start (optional)
    placement: PlacementSettings = Field(default_factory=PlacementSettings)
    coverage_history: CoverageHistorySettings = Field(default_factory=CoverageHistorySettings)
    coverage: CoverageSettings = Field(default_factory=CoverageSettings)
    drones: DroneSettings = Field(default_factory=DroneSettings)
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    broker: BrokerSecuritySettings = Field(default_factory=BrokerSecuritySettings)

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
