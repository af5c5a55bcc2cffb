"""The database schema as versioned migrations, with a TimescaleDB and a plain PostgreSQL path.

Tables (see DESIGN.md, Storage):

- ``units``: one row per field unit. ``external_ids`` (jsonb, protocol -> id) is
  what the application writes; a trigger mirrors it into ``unit_external_ids``
  whose primary key (protocol, external_id) makes every external id map to one
  unit only. A clash raises unique_violation, which the unit registry turns
  into :class:`~tracker.errors.DuplicateUnitError`.
- ``positions``: every stored fix, unique on (unit_id, ts) so a replayed ping is
  stored once. It is the one big table, so its row is kept lean: columns are
  ordered 8-byte first so no alignment padding is wasted, ``source`` is a
  smallint code (``ping_sources`` names them), ``flags`` a smallint bit mask,
  and the receive time is ``recv_lag_ms`` (int4 milliseconds after ``ts``)
  instead of a second timestamptz: the lag is what one asks of it, and it saves
  4-8 bytes a row. Every ``unit_id`` column uses the "C" collation: ids are
  ASCII by contract, and byte comparison keeps the (unit_id, ts) index fast on
  servers whose default collation is a linguistic one. No foreign key to
  ``units``: a per-row RI check would cost more than the whole insert, and the
  writer only stores resolved units.
  TimescaleDB: a hypertable with 1-day chunks, compressed after 7 days
  (segmented by unit_id, ordered by ts DESC), dropped after 400 days.
  Plain: native range partitions by UTC day (``positions_pYYYYMMDD``) created
  on demand by the writer, a BRIN index on ts, and a function that drops
  partitions past retention.
- ``unit_latest``: one row per unit, moved only forwards in time by the writer.
- ``dead_letters``: rejected messages with (truncated) payload, original size and reason.
- ``positions_hourly``: per-unit hourly stats, a continuous aggregate on
  TimescaleDB and an ordinary view on plain PostgreSQL (same columns).
- ``incidents``, ``assignments`` (at most one open per unit, by a partial unique
  index), ``audit_log`` (who changed what, when, from where), ``geofences``
  (GeoJSON polygons) and ``events`` (geofence, freshness, battery, arrival).
- ``coverage_samples``: the coverage ratio per layer and target time, every minute.
- ``airspace_zones``: restricted airspace (GeoJSON footprint, floor and ceiling in metres).
- ``device_credentials``: device tokens of units (HTTP ingest, broker password file).
- ``users``, ``user_tokens``: console users, roles, sessions and API tokens.

Migrations are frozen once released: to change the schema, append a migration.
The migrator (:mod:`tracker.store.migrations`) records each applied version
with a checksum of the SQL it ran.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tracker.model import Source

# Stable codes of Source in positions.source / unit_latest.source (mirrored in ping_sources).
SOURCE_CODES: dict[Source, int] = {
    Source.NATIVE: 0,
    Source.OWNTRACKS: 1,
    Source.OSMAND: 2,
    Source.DJI: 3,
    Source.MAVLINK: 4,
}
SOURCE_BY_CODE: dict[int, Source] = {code: source for source, code in SOURCE_CODES.items()}

RETENTION_DAYS_DEFAULT = 400
COMPRESS_AFTER_DAYS = 7
# Dead-letter payloads are kept up to this many bytes (the original size is kept beside them).
DEAD_LETTER_PAYLOAD_MAX = 4096
# Name prefix of the plain path's day partitions: positions_p20240131.
PARTITION_PREFIX = "positions_p"


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: SQL common to both paths, then the TimescaleDB or plain part."""

    version: int
    name: str
    common: str = ""
    timescale: str = ""
    plain: str = ""

    def sql(self, timescale: bool) -> str:
        """The SQL this migration runs on the TimescaleDB path or the plain path."""
        part = self.timescale if timescale else self.plain
        return "\n".join(s.strip("\n") for s in (self.common, part) if s.strip()) + "\n"

    def checksum(self, timescale: bool) -> str:
        """SHA-256 of :meth:`sql`, recorded when applied to detect a released migration edited later."""
        return hashlib.sha256(self.sql(timescale).encode()).hexdigest()


SCHEMA_MIGRATIONS_DDL = """\
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    checksum   text        NOT NULL
);
"""

_CORE = """\
CREATE TABLE units (
    unit_id      text        COLLATE "C" PRIMARY KEY CHECK (unit_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    kind         text        NOT NULL
                 CHECK (kind IN ('patrol_car', 'motorcycle', 'bicycle', 'foot', 'drone')),
    callsign     text        NOT NULL DEFAULT '',
    sector       text        NOT NULL DEFAULT '',
    capabilities text[]      NOT NULL DEFAULT '{}',
    external_ids jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(external_ids) = 'object'),
    status       text        NOT NULL DEFAULT 'available'
                 CHECK (status IN ('available', 'dispatched', 'en_route', 'on_scene', 'out_of_service')),
    status_ts    timestamptz,
    active       boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One unit per (protocol, external id); kept in step with units.external_ids by a trigger.
CREATE TABLE unit_external_ids (
    protocol    text NOT NULL,
    external_id text NOT NULL,
    unit_id     text COLLATE "C" NOT NULL REFERENCES units (unit_id) ON DELETE CASCADE,
    PRIMARY KEY (protocol, external_id)
);
CREATE INDEX unit_external_ids_unit ON unit_external_ids (unit_id);

CREATE FUNCTION serenazgo_sync_external_ids() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.external_ids IS NOT DISTINCT FROM OLD.external_ids THEN
            RETURN NEW;
        END IF;
        DELETE FROM unit_external_ids WHERE unit_id = NEW.unit_id;
    END IF;
    INSERT INTO unit_external_ids (protocol, external_id, unit_id)
    SELECT key, value, NEW.unit_id FROM jsonb_each_text(NEW.external_ids);
    RETURN NEW;
END
$$;
CREATE TRIGGER units_sync_external_ids
    AFTER INSERT OR UPDATE OF external_ids ON units
    FOR EACH ROW EXECUTE FUNCTION serenazgo_sync_external_ids();

-- Names of the smallint codes in positions.source (for people reading the tables).
CREATE TABLE ping_sources (
    code smallint PRIMARY KEY,
    name text     NOT NULL UNIQUE
);
INSERT INTO ping_sources (code, name) VALUES
    (0, 'native'), (1, 'owntracks'), (2, 'osmand'), (3, 'dji'), (4, 'mavlink');

-- Updated in place on every fix: room on each page keeps those updates HOT (no index churn).
CREATE TABLE unit_latest (
    unit_id     text        COLLATE "C" PRIMARY KEY,
    ts          timestamptz NOT NULL,
    lat         float8      NOT NULL,
    lon         float8      NOT NULL,
    alt         real,
    speed       real,
    heading     real,
    accuracy    real,
    battery     real,
    flags       smallint    NOT NULL DEFAULT 0,
    source      smallint    NOT NULL DEFAULT 0,
    received_at timestamptz
) WITH (fillfactor = 50);

CREATE TABLE dead_letters (
    id           bigserial   PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text        NOT NULL,
    payload      bytea       NOT NULL,
    payload_size integer     NOT NULL,
    reason       text        NOT NULL,
    detail       text        NOT NULL DEFAULT ''
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at);
"""

# Column order: 8-byte types first, then 4, then 2, then the varlena unit_id, so that
# no alignment padding is wasted (see the module docstring).
_POSITIONS_COLUMNS = """\
    ts          timestamptz NOT NULL,
    lat         float8      NOT NULL,
    lon         float8      NOT NULL,
    alt         real,
    speed       real,
    heading     real,
    accuracy    real,
    battery     real,
    recv_lag_ms integer,
    flags       smallint    NOT NULL DEFAULT 0,
    source      smallint    NOT NULL DEFAULT 0,
    unit_id     text        COLLATE "C" NOT NULL,
    CONSTRAINT positions_unit_ts UNIQUE (unit_id, ts)"""

_POSITIONS_TIMESCALE = f"""\
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE positions (
{_POSITIONS_COLUMNS}
);
-- No default ts index: chunk exclusion answers time windows, (unit_id, ts) answers tracks.
SELECT create_hypertable('positions', by_range('ts', INTERVAL '1 day'), create_default_indexes => false);
ALTER TABLE positions SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'unit_id',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('positions', compress_after => INTERVAL '{COMPRESS_AFTER_DAYS} days');
SELECT add_retention_policy('positions', drop_after => INTERVAL '{RETENTION_DAYS_DEFAULT} days');
"""

_POSITIONS_PLAIN = f"""\
CREATE TABLE positions (
{_POSITIONS_COLUMNS}
) PARTITION BY RANGE (ts);
-- Fixes arrive in time order, so a BRIN index answers time windows at a few pages per partition.
CREATE INDEX positions_ts_brin ON positions USING brin (ts);

-- Creates the UTC-day partition holding `day`; returns false when it already exists.
-- Safe under concurrency: creators queue on an advisory lock and re-check.
CREATE FUNCTION serenazgo_ensure_position_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := '{PARTITION_PREFIX}' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('serenazgo.positions.partition'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF positions FOR VALUES FROM (%L) TO (%L)',
        part, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    RETURN true;
END
$$;

-- Drops the partitions whose whole day is older than now() - keep; returns their names.
CREATE FUNCTION serenazgo_drop_position_partitions(keep interval) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    upper_bound timestamptz;
BEGIN
    FOR part IN
        SELECT c.oid::regclass::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'positions'::regclass
    LOOP
        upper_bound := substring(part.bound FROM 'TO \\(''([^'']+)''\\)')::timestamptz;
        IF upper_bound IS NOT NULL AND upper_bound <= now() - keep THEN
            EXECUTE format('DROP TABLE %s', part.name);
            RETURN NEXT part.name;
        END IF;
    END LOOP;
END
$$;
"""

_HOURLY_SELECT = """\
    count(*)      AS fixes,
    avg(speed)    AS avg_speed,
    max(speed)    AS max_speed,
    avg(accuracy) AS avg_accuracy,
    min(battery)  AS min_battery
FROM positions
GROUP BY bucket, unit_id"""

_HOURLY_TIMESCALE = f"""\
CREATE MATERIALIZED VIEW positions_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, unit_id,
{_HOURLY_SELECT}
WITH NO DATA;
-- Late fixes are accepted up to 7 days old: refresh 8 days back so they are counted.
SELECT add_continuous_aggregate_policy('positions_hourly',
    start_offset => INTERVAL '8 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '1 hour');
"""

_HOURLY_PLAIN = f"""\
CREATE VIEW positions_hourly AS
SELECT date_trunc('hour', ts, 'UTC') AS bucket, unit_id,
{_HOURLY_SELECT};
"""

_DISPATCH = """\
-- Incidents: one row per reported incident, with the milestones response-time statistics need.
CREATE TABLE incidents (
    incident_id       bigserial   PRIMARY KEY,
    lat               float8      NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon               float8      NOT NULL CHECK (lon BETWEEN -180 AND 180),
    category          text        NOT NULL CHECK (category IN ('fiscalizacion', 'seguridad_ciudadana',
                          'obras_servicios', 'defensa_civil', 'seguridad_vial', 'apoyo_turista', 'otro')),
    channel           text        NOT NULL
                      CHECK (channel IN ('patrol', 'camera', 'whatsapp', 'phone', 'social', 'other')),
    priority          smallint    NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5),
    description       text        NOT NULL DEFAULT '',
    address           text        NOT NULL DEFAULT '',
    status            text        NOT NULL DEFAULT 'open' CHECK (status IN
                          ('open', 'assigned', 'en_route', 'on_scene', 'closed', 'cancelled')),
    reported_by       text        NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    first_assigned_at timestamptz,
    first_arrival_at  timestamptz,
    closed_at         timestamptz,
    resolution        text        NOT NULL DEFAULT ''
);
CREATE INDEX incidents_open ON incidents (created_at) WHERE status NOT IN ('closed', 'cancelled');
CREATE INDEX incidents_created_at ON incidents (created_at);

-- A unit sent to an incident; at most one open (not released) assignment per unit.
CREATE TABLE assignments (
    assignment_id  bigserial   PRIMARY KEY,
    incident_id    bigint      NOT NULL REFERENCES incidents (incident_id),
    unit_id        text        COLLATE "C" NOT NULL REFERENCES units (unit_id),
    assigned_at    timestamptz NOT NULL,
    assigned_by    text        NOT NULL,
    eta_s          real,       -- predicted at assignment, to compare with the real arrival
    distance_m     real,
    arrived_at     timestamptz,
    released_at    timestamptz,
    release_reason text        NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX assignments_one_open_per_unit ON assignments (unit_id) WHERE released_at IS NULL;
CREATE INDEX assignments_incident ON assignments (incident_id);

-- Who changed what, when and from where (every state change made through the API or by the system).
CREATE TABLE audit_log (
    audit_id bigserial   PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text        NOT NULL,
    origin   text        NOT NULL DEFAULT '',
    action   text        NOT NULL,
    subject  text        NOT NULL,
    detail   jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_subject ON audit_log (subject, at);

-- Sectors, beats and restricted zones; geometry is GeoJSON (RFC 7946) Polygon or MultiPolygon.
CREATE TABLE geofences (
    geofence_id text        COLLATE "C" PRIMARY KEY
                CHECK (geofence_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    name        text        NOT NULL,
    kind        text        NOT NULL DEFAULT 'sector' CHECK (kind IN ('sector', 'restricted', 'other')),
    geometry    jsonb       NOT NULL CHECK (geometry->>'type' IN ('Polygon', 'MultiPolygon')),
    properties  jsonb       NOT NULL DEFAULT '{}',
    active      boolean     NOT NULL DEFAULT true,
    created_by  text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Things that happened to units (geofence enter/exit, freshness changes, low battery, arrivals).
CREATE TABLE events (
    event_id    bigserial   PRIMARY KEY,
    ts          timestamptz NOT NULL,
    type        text        NOT NULL,
    unit_id     text        COLLATE "C",
    geofence_id text        COLLATE "C",
    incident_id bigint,
    detail      jsonb       NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_ts ON events (ts);
CREATE INDEX events_unit ON events (unit_id, ts);
"""

_COVERAGE = """\
-- Coverage ratio over time, sampled every minute per layer and target time (the worst hours).
CREATE TABLE coverage_samples (
    ts                   timestamptz NOT NULL,
    layer                text        NOT NULL CHECK (layer IN ('ground', 'drones', 'combined')),
    target_s             real        NOT NULL CHECK (target_s > 0),
    resolution           smallint    NOT NULL,
    covered_area_ratio   real        NOT NULL CHECK (covered_area_ratio BETWEEN 0 AND 1),
    covered_demand_ratio real        NOT NULL CHECK (covered_demand_ratio BETWEEN 0 AND 1),
    units                integer     NOT NULL,
    PRIMARY KEY (layer, target_s, ts)
);
CREATE INDEX coverage_samples_ts ON coverage_samples (ts);
"""

_DRONE_TELEMETRY_COLUMNS = """\
    ts                 timestamptz NOT NULL,
    unit_id            text        COLLATE "C" NOT NULL,
    alt_takeoff_m      real,
    alt_msl_m          real,
    alt_ellipsoid_m    real,
    vertical_speed_mps real,
    battery_pct        real,
    remaining_flight_s real,
    return_home_pct    real,
    flight_mode        text,
    mode_code          integer,
    gps_fix            smallint,
    satellites         smallint,
    wind_speed_mps     real,
    height_limit_m     real,
    home_lat           float8,
    home_lon           float8,
    docked             boolean,
    dock_id            text,
    source             smallint    NOT NULL DEFAULT 0,
    CONSTRAINT drone_telemetry_unit_ts UNIQUE (unit_id, ts)"""

_DRONE_TELEMETRY_TIMESCALE = f"""\
-- Drone state beside the positions (altitudes, battery, flight mode, GPS quality), one row per report.
CREATE TABLE drone_telemetry (
{_DRONE_TELEMETRY_COLUMNS}
);
SELECT create_hypertable(
    'drone_telemetry', by_range('ts', INTERVAL '1 day'), create_default_indexes => false
);
ALTER TABLE drone_telemetry SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'unit_id',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('drone_telemetry', compress_after => INTERVAL '{COMPRESS_AFTER_DAYS} days');
SELECT add_retention_policy('drone_telemetry', drop_after => INTERVAL '{RETENTION_DAYS_DEFAULT} days');
"""

# A squadron reports about 1 row/s per aircraft in flight: small next to positions, so one table
# with BRIN on time; retention deletes by time when the writer drops old position partitions.
_DRONE_TELEMETRY_PLAIN = f"""\
-- Drone state beside the positions (altitudes, battery, flight mode, GPS quality), one row per report.
CREATE TABLE drone_telemetry (
{_DRONE_TELEMETRY_COLUMNS}
);
CREATE INDEX drone_telemetry_ts_brin ON drone_telemetry USING brin (ts);
"""

_AIRSPACE = """\
-- Restricted airspace: a GeoJSON footprint between a floor and a ceiling (metres above ground / take-off).
CREATE TABLE airspace_zones (
    zone_id    text        COLLATE "C" PRIMARY KEY
               CHECK (zone_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    name       text        NOT NULL,
    kind       text        NOT NULL DEFAULT 'other' CHECK (kind IN
               ('airport', 'heliport', 'hospital', 'embassy', 'military', 'prison', 'event', 'other')),
    floor_m    float8      NOT NULL DEFAULT 0 CHECK (floor_m >= 0),
    ceiling_m  float8      CHECK (ceiling_m IS NULL OR ceiling_m > floor_m),  -- NULL: unlimited
    geometry   jsonb       NOT NULL CHECK (geometry->>'type' IN ('Polygon', 'MultiPolygon')),
    properties jsonb       NOT NULL DEFAULT '{}',
    created_by text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
"""

_DEVICE_CREDENTIALS = """\
-- Device credentials: a random token per unit, stored as its SHA-256 (see tracker/store/credentials.py).
CREATE TABLE device_credentials (
    credential_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    unit_id       text        COLLATE "C" NOT NULL REFERENCES units (unit_id) ON DELETE CASCADE,
    token_sha256  bytea       NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX device_credentials_unit ON device_credentials (unit_id) WHERE revoked_at IS NULL;
"""

_FIELD_REPORTS = """\
-- Field reports: an incident a unit reports (channel 'patrol') keeps the report's own time, and a
-- unit's report is stored once however often MQTT redelivers it: unique per (unit, report time).
ALTER TABLE incidents ADD COLUMN report_ts timestamptz;
CREATE UNIQUE INDEX incidents_field_report ON incidents (reported_by, report_ts) WHERE report_ts IS NOT NULL;
"""

_USERS = """\
-- Console users and their roles; passwords as Argon2id PHC strings (tracker/passwords.py). A NULL
-- password_hash cannot log in (integration accounts act through API tokens only).
CREATE TABLE users (
    user_id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text        COLLATE "C" NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    display_name  text        NOT NULL DEFAULT '',
    role          text        NOT NULL
                  CHECK (role IN ('admin', 'supervisor', 'operator', 'planner', 'viewer', 'integration')),
    password_hash text,
    disabled_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text        NOT NULL DEFAULT ''
);

-- Console sessions and API tokens, stored as the SHA-256 of 256 random bits (tracker/store/users.py).
CREATE TABLE user_tokens (
    token_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint      NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    kind          text        NOT NULL CHECK (kind IN ('session', 'api')),
    name          text        NOT NULL DEFAULT '',
    token_sha256  bytea       NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    origin        text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX user_tokens_user ON user_tokens (user_id) WHERE revoked_at IS NULL;

-- The broker's password file needs each device token hashed the way Mosquitto checks it (PBKDF2,
-- "$7$"), which cannot be derived from token_sha256: it is computed once, when the token is issued.
ALTER TABLE device_credentials ADD COLUMN mqtt_hash text;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "core tables: units, external ids, unit_latest, dead_letters", common=_CORE),
    Migration(2, "positions", timescale=_POSITIONS_TIMESCALE, plain=_POSITIONS_PLAIN),
    Migration(3, "positions_hourly", timescale=_HOURLY_TIMESCALE, plain=_HOURLY_PLAIN),
    Migration(4, "dispatch: incidents, assignments, audit_log, geofences, events", common=_DISPATCH),
    Migration(5, "coverage_samples", common=_COVERAGE),
    Migration(6, "drone_telemetry", timescale=_DRONE_TELEMETRY_TIMESCALE, plain=_DRONE_TELEMETRY_PLAIN),
    Migration(7, "airspace_zones", common=_AIRSPACE),
    Migration(8, "device_credentials", common=_DEVICE_CREDENTIALS),
    Migration(9, "incidents.report_ts: field reports stored once", common=_FIELD_REPORTS),
    Migration(10, "users, user_tokens; device_credentials.mqtt_hash", common=_USERS),
)


def record_sql(migration: Migration, timescale: bool) -> str:
    """The INSERT that records ``migration`` as applied (used by the migrator and :func:`schema_sql`)."""
    name = migration.name.replace("'", "''")
    return (
        "INSERT INTO schema_migrations (version, name, checksum) VALUES "
        f"({migration.version}, '{name}', '{migration.checksum(timescale)}');\n"
    )


def schema_sql(timescale: bool) -> str:
    """The full DDL of one path: every migration in order, each recorded in schema_migrations.

    Running it on an empty database is equivalent to ``serenazgo db migrate``.
    """
    path = "TimescaleDB" if timescale else "plain PostgreSQL"
    parts = [f"-- serenazgo schema, {path} path ({len(MIGRATIONS)} migrations)\n", SCHEMA_MIGRATIONS_DDL]
    for m in MIGRATIONS:
        parts.append(f"\n-- migration {m.version}: {m.name}\n")
        parts.append(m.sql(timescale))
        parts.append(record_sql(m, timescale))
    return "".join(parts)
