"""The hot path: one :class:`IngestBatch` stored in one transaction, as fast as PostgreSQL allows.

Positions go in by binary COPY, straight into ``positions``: COPY inserts rows
in bulk, several times faster than ``INSERT … SELECT`` row by row. A replayed
batch (the broker redelivers what was never acknowledged) or a batch holding
the same fix twice makes that COPY fail on the unique (unit_id, ts) index; the
writer then rolls back to a savepoint and takes the idempotent path: COPY into
a per-connection TEMP staging table, then ``INSERT … SELECT … ON CONFLICT
(unit_id, ts) DO NOTHING``, which stores only the new rows and counts them.

``unit_latest`` gets one candidate row per unit, chosen in Python while the
rows are built (the newest fix without a NOT_LATEST flag), copied into a small
staging table and upserted with ``WHERE unit_latest.ts < EXCLUDED.ts``, so a
late fix never moves it backwards. Flag updates, status changes, drone telemetry, field
incident reports, new units and dead letters ride in the same transaction: the batch is
acknowledged upstream only once all of it is durable.

A field report becomes an ``incidents`` row (channel ``patrol``) with its ``audit_log``
row, located where the report says or else at the unit's ``unit_latest`` position (this
batch's pings included: they are stored first); ``ON CONFLICT (reported_by, report_ts)
DO NOTHING`` stores a redelivered report once. A report with no location at all
becomes a dead letter ``no_location``.

The writer owns one synchronous connection (it runs in the bridge's writer
thread). On any database error it raises :class:`StorageError`; if the
connection broke it is dropped and the next :meth:`PositionWriter.write`
reconnects, so the caller just retries the batch later.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg.types.json import Jsonb

from tracker.batch import NOT_LATEST, BatchResult, DeadLetter, FlagUpdate, IngestBatch
from tracker.errors import StorageDataError, StorageError
from tracker.model import DroneTelemetry, FieldReport, Ping, PingFlag, StatusUpdate, Unit
from tracker.store.partitions import drop_old_partitions, ensure_partitions, partition_days, utc_today
from tracker.store.schema import DEAD_LETTER_PAYLOAD_MAX, RETENTION_DAYS_DEFAULT, SOURCE_CODES
from tracker.store.units import unit_params

_NOT_LATEST = int(NOT_LATEST)
_JITTER = int(PingFlag.JITTER)
_INT4_MIN, _INT4_MAX = -(2**31), 2**31 - 1
_MS = timedelta(milliseconds=1)

# A positions row as COPY sends it: the table's own column order (see schema.py).
POSITION_COLUMNS = "ts, lat, lon, alt, speed, heading, accuracy, battery, recv_lag_ms, flags, source, unit_id"
_POSITION_TYPES = [
    "timestamptz", "float8", "float8", "float4", "float4", "float4", "float4", "float4",
    "int4", "int2", "int2", "text",
]  # fmt: skip
PositionRow = tuple[
    datetime, float, float, float | None, float | None, float | None, float | None, float | None,
    int | None, int, int, str,
]  # fmt: skip

COPY_POSITIONS_SQL = f"COPY positions ({POSITION_COLUMNS}) FROM STDIN (FORMAT BINARY)"

CREATE_STAGING_SQL = """
CREATE TEMP TABLE IF NOT EXISTS positions_staging (
    ts timestamptz NOT NULL, lat float8 NOT NULL, lon float8 NOT NULL,
    alt real, speed real, heading real, accuracy real, battery real,
    recv_lag_ms integer, flags smallint NOT NULL, source smallint NOT NULL,
    unit_id text COLLATE "C" NOT NULL
) ON COMMIT DELETE ROWS
"""

COPY_STAGING_SQL = f"COPY positions_staging ({POSITION_COLUMNS}) FROM STDIN (FORMAT BINARY)"

# The idempotent path. ORDER BY keeps each unit's new rows together in the heap and the index.
INSERT_POSITIONS_SQL = f"""
INSERT INTO positions ({POSITION_COLUMNS})
SELECT {POSITION_COLUMNS} FROM positions_staging
ORDER BY unit_id, ts
ON CONFLICT (unit_id, ts) DO NOTHING
"""

_LATEST_COLUMNS = "unit_id, ts, lat, lon, alt, speed, heading, accuracy, battery, flags, source, received_at"
_LATEST_TYPES = [
    "int2", "text", "timestamptz", "float8", "float8", "float4", "float4", "float4", "float4", "float4",
    "int2", "int2", "timestamptz",
]  # fmt: skip

# pass 1: anchors (see _latest_candidates), pass 2: each unit's newest eligible fix.
CREATE_LATEST_STAGING_SQL = """
CREATE TEMP TABLE IF NOT EXISTS latest_staging (
    pass smallint NOT NULL, unit_id text COLLATE "C" NOT NULL, ts timestamptz NOT NULL,
    lat float8 NOT NULL, lon float8 NOT NULL, alt real, speed real, heading real, accuracy real, battery real,
    flags smallint NOT NULL, source smallint NOT NULL, received_at timestamptz
) ON COMMIT DELETE ROWS
"""

COPY_LATEST_STAGING_SQL = f"COPY latest_staging (pass, {_LATEST_COLUMNS}) FROM STDIN (FORMAT BINARY)"

# For a JITTER fix the unit is standing still: take its time, speed and battery, keep the
# previous position (lat, lon, alt, heading and the accuracy that describes that position).
_UPSERT_LATEST_SET = f"""
ON CONFLICT (unit_id) DO UPDATE SET
    ts = EXCLUDED.ts,
    lat = CASE WHEN EXCLUDED.flags & {_JITTER} <> 0 THEN l.lat ELSE EXCLUDED.lat END,
    lon = CASE WHEN EXCLUDED.flags & {_JITTER} <> 0 THEN l.lon ELSE EXCLUDED.lon END,
    alt = CASE WHEN EXCLUDED.flags & {_JITTER} <> 0 THEN l.alt ELSE EXCLUDED.alt END,
    heading = CASE WHEN EXCLUDED.flags & {_JITTER} <> 0 THEN l.heading ELSE EXCLUDED.heading END,
    accuracy = CASE WHEN EXCLUDED.flags & {_JITTER} <> 0 THEN l.accuracy ELSE EXCLUDED.accuracy END,
    speed = EXCLUDED.speed,
    battery = EXCLUDED.battery,
    flags = EXCLUDED.flags,
    source = EXCLUDED.source,
    received_at = EXCLUDED.received_at
WHERE l.ts < EXCLUDED.ts
"""
UPSERT_LATEST_SQL = f"""
INSERT INTO unit_latest AS l ({_LATEST_COLUMNS})
SELECT {_LATEST_COLUMNS} FROM latest_staging WHERE pass = %s
{_UPSERT_LATEST_SET}"""

# Few units in a batch (HTTP ingest's batches of phones): the candidates as binary arrays in one
# statement. It spares the staging table's COPY and its truncation at commit: in bench_http_ingest
# (batches of ~50 phones) PostgreSQL's CPU per fix fell from 28.5 to 19-22 µs (2026-11-26). Past
# LATEST_ARRAYS_MAX units the arrays cost more Python than the COPY.
UPSERT_LATEST_ARRAYS_SQL = f"""
INSERT INTO unit_latest AS l ({_LATEST_COLUMNS})
SELECT * FROM unnest(%b::text[], %b::timestamptz[], %b::float8[], %b::float8[], %b::float4[], %b::float4[],
    %b::float4[], %b::float4[], %b::float4[], %b::int2[], %b::int2[], %b::timestamptz[])
{_UPSERT_LATEST_SET}"""
LATEST_ARRAYS_MAX = 128

FLAG_UPDATE_SQL = "UPDATE positions SET flags = flags | %s WHERE unit_id = %s AND ts = %s"

STATUS_UPDATE_SQL = """
UPDATE units u
SET status = s.status, status_ts = s.ts, updated_at = now()
FROM (
    SELECT DISTINCT ON (unit_id) unit_id, status, ts
    FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS t(unit_id, status, ts)
    ORDER BY unit_id, ts DESC
) s
WHERE u.unit_id = s.unit_id AND (u.status_ts IS NULL OR u.status_ts < s.ts)
"""

# An auto-registered unit whose external id meanwhile went to another unit is skipped, not an
# error: a batch that can never commit would be retried forever.
INSERT_NEW_UNIT_SQL = """
INSERT INTO units (unit_id, kind, callsign, sector, capabilities, external_ids, status, active)
SELECT %(unit_id)s, %(kind)s, %(callsign)s, %(sector)s, %(capabilities)s, %(external_ids)s,
       %(status)s, %(active)s
WHERE NOT EXISTS (
    SELECT 1 FROM unit_external_ids e JOIN jsonb_each_text(%(external_ids)s) j
        ON e.protocol = j.key AND e.external_id = j.value
)
ON CONFLICT (unit_id) DO NOTHING
"""

# Drone telemetry, columns in DroneTelemetry's field order. Few rows (about one per aircraft
# per second), so always the idempotent path.
TELEMETRY_COLUMNS = (
    "unit_id, ts, alt_takeoff_m, alt_msl_m, alt_ellipsoid_m, vertical_speed_mps, battery_pct, "
    "remaining_flight_s, return_home_pct, flight_mode, mode_code, gps_fix, satellites, wind_speed_mps, "
    "height_limit_m, home_lat, home_lon, docked, dock_id, source"
)
_TELEMETRY_TYPES = [
    "text", "timestamptz", "float4", "float4", "float4", "float4", "float4", "float4", "float4", "text",
    "int4", "int2", "int2", "float4", "float4", "float8", "float8", "bool", "text", "int2",
]  # fmt: skip

CREATE_TELEMETRY_STAGING_SQL = """
CREATE TEMP TABLE IF NOT EXISTS drone_telemetry_staging
    (LIKE drone_telemetry INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
"""
COPY_TELEMETRY_STAGING_SQL = f"COPY drone_telemetry_staging ({TELEMETRY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
INSERT_TELEMETRY_SQL = f"""
INSERT INTO drone_telemetry ({TELEMETRY_COLUMNS})
SELECT {TELEMETRY_COLUMNS} FROM drone_telemetry_staging
ORDER BY unit_id, ts
ON CONFLICT (unit_id, ts) DO NOTHING
"""

COPY_DEAD_LETTERS_SQL = (
    "COPY dead_letters (received_at, topic, payload, payload_size, reason, detail) FROM STDIN (FORMAT BINARY)"
)
_DEAD_LETTER_TYPES = ["timestamptz", "text", "bytea", "int4", "text", "text"]


# Field incident reports (few: one statement each). created_at is the report's time, but never
# later than its arrival (a device clock running ahead must not date an incident in the future).
REPORT_LOCATION_SQL = "SELECT lat, lon FROM unit_latest WHERE unit_id = %s"
INSERT_REPORT_SQL = """\
INSERT INTO incidents (lat, lon, category, channel, priority, description, reported_by, created_at,
                       updated_at, report_ts)
VALUES (%s, %s, %s, 'patrol', %s, %s, %s, %s, %s, %s)
ON CONFLICT (reported_by, report_ts) WHERE report_ts IS NOT NULL DO NOTHING
RETURNING incident_id"""
INSERT_REPORT_AUDIT_SQL = (
    "INSERT INTO audit_log (at, actor, origin, action, subject, detail)"
    " VALUES (%s, %s, 'mqtt', 'create', %s, %s)"
)
NO_LOCATION = "no_location"


def clean_text(text: str) -> str:
    """Text PostgreSQL accepts: no NUL characters, no lone surrogates (from undecodable bytes)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\0")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def batch_days(pings: list[Ping]) -> set[date]:
    """The UTC days a list of pings falls on (the day partitions it needs)."""
    if not pings:
        return set()
    stamps = [p.ts for p in pings]
    lo = min(stamps).astimezone(UTC).date()
    hi = max(stamps).astimezone(UTC).date()
    if (hi - lo).days <= 3:
        # Usual case (now, plus a few buffered fixes): the span, with no per-ping work.
        return {lo + timedelta(days=i) for i in range((hi - lo).days + 1)}
    return {t.astimezone(UTC).date() for t in stamps}


def position_rows(pings: list[Ping]) -> tuple[list[PositionRow], dict[str, Ping], dict[str, Ping]]:
    """Rows for ``positions``, and the ``unit_latest`` candidates: (rows, newest, anchors).

    ``newest`` is each unit's newest fix without a NOT_LATEST flag. When that fix
    is JITTER and the batch also holds an older eligible fix that is not, that
    fix moved the unit and is its *anchor*: it is applied first, so the JITTER
    fix then keeps the anchor's position rather than the one stored before.
    """
    codes = SOURCE_CODES
    rows: list[PositionRow] = []
    append = rows.append
    newest: dict[str, Ping] = {}
    jitter_seen = False
    for p in pings:
        flags = int(p.flags)
        received = p.received_at
        lag: int | None = None
        if received is not None:
            lag = (received - p.ts) // _MS  # whole milliseconds
            if not _INT4_MIN <= lag <= _INT4_MAX:  # ±24 days: clamp rather than fail the batch
                lag = _INT4_MAX if lag > 0 else _INT4_MIN
        append(
            (
                p.ts, p.lat, p.lon, p.alt, p.speed, p.heading, p.accuracy, p.battery,
                lag, flags, codes[p.source], p.unit_id,
            )
        )  # fmt: skip
        if not flags & _NOT_LATEST:
            best = newest.get(p.unit_id)
            if best is None or p.ts > best.ts:
                newest[p.unit_id] = p
            jitter_seen = jitter_seen or bool(flags & _JITTER)
    anchors: dict[str, Ping] = {}
    if jitter_seen:
        still = {u for u, p in newest.items() if int(p.flags) & _JITTER}
        for p in pings:
            if p.unit_id in still and not int(p.flags) & (_NOT_LATEST | _JITTER):
                best = anchors.get(p.unit_id)
                if best is None or p.ts > best.ts:
                    anchors[p.unit_id] = p
    return rows, newest, anchors


def _latest_arrays(ps: list[Ping]) -> tuple[list[Any], ...]:
    """``unit_latest`` candidates as one array per column (UPSERT_LATEST_ARRAYS_SQL's parameters)."""
    codes = SOURCE_CODES
    return (
        [p.unit_id for p in ps], [p.ts for p in ps], [p.lat for p in ps], [p.lon for p in ps],
        [p.alt for p in ps], [p.speed for p in ps], [p.heading for p in ps], [p.accuracy for p in ps],
        [p.battery for p in ps], [int(p.flags) for p in ps], [codes[p.source] for p in ps],
        [p.received_at for p in ps],
    )  # fmt: skip


class PositionWriter:
    """Stores ingest batches through one synchronous connection; reconnects after failures.

    ``retention_days`` (plain path only): when the writer creates a new day
    partition it also drops partitions older than this; None keeps everything.
    On TimescaleDB retention is the extension's background job instead.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        retention_days: int | None = RETENTION_DAYS_DEFAULT,
        connect_timeout: float = 5.0,
        statement_timeout_ms: int = 60_000,
        partitions_ahead: int = 1,
    ) -> None:
        self.conninfo = conninfo
        self.retention_days = retention_days
        self.connect_timeout = connect_timeout
        self.statement_timeout_ms = statement_timeout_ms
        self.partitions_ahead = partitions_ahead
        self._conn: psycopg.Connection[Any] | None = None
        self._partitioned = False
        self._known_days: set[date] = set()

    # -- connection ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the writer holds an open connection."""
        return self._conn is not None and not self._conn.closed

    def connect(self) -> None:
        """Open the connection now (write() also does it on demand); raise StorageError on failure."""
        try:
            self._connection()
        except psycopg.Error as exc:
            self._drop()
            raise StorageError(f"cannot connect the position writer: {exc}") from exc

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = psycopg.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=max(1, int(self.connect_timeout)),
            application_name="serenazgo-writer",
            # Notice a dead server or network within seconds rather than hours.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            conn.execute(f"SET statement_timeout = {int(self.statement_timeout_ms)}")
            conn.execute(CREATE_STAGING_SQL)
            conn.execute(CREATE_LATEST_STAGING_SQL)
            conn.execute(CREATE_TELEMETRY_STAGING_SQL)
            row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass('positions')").fetchone()
            if row is None:
                raise StorageError("table 'positions' does not exist: run `serenazgo db migrate` first")
            self._partitioned = row[0] == "p"
            if self._partitioned:
                self._known_days = partition_days(conn)
                ahead = [utc_today() + timedelta(days=i) for i in range(self.partitions_ahead + 1)]
                self._ensure_days(conn, set(ahead))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop(self) -> None:
        """Forget the connection (and what it cached) after a failure."""
        conn, self._conn = self._conn, None
        self._known_days = set()
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        """Close the connection."""
        self._drop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- partitions (plain path) ----------------------------------------------------------

    def _ensure_days(self, conn: psycopg.Connection[Any], days: Iterable[date]) -> None:
        missing = [d for d in days if d not in self._known_days]
        if not missing:
            return
        # A new day began (or an old fix arrived): the natural moment to enforce retention,
        # before creating, so that a partition this batch needs is never dropped under it.
        if self.retention_days is not None and drop_old_partitions(conn, self.retention_days):
            self._known_days = partition_days(conn)
        ensure_partitions(conn, missing)
        self._known_days.update(missing)

    # -- the hot path ----------------------------------------------------------------------

    def write(self, batch: IngestBatch) -> BatchResult:
        """Store ``batch`` in one transaction; raise StorageError (nothing stored) on failure.

        StorageDataError means the server refused the data itself: the same batch
        will fail again, so the caller must isolate and dead-letter the culprit.
        """
        try:
            conn = self._connection()
            if self._partitioned and batch.pings:
                self._ensure_days(conn, batch_days(batch.pings))
            stored = 0
            with conn.transaction(), conn.cursor() as cur:
                if batch.new_units:
                    self._insert_units(cur, batch.new_units)
                if batch.pings:
                    stored = self._store_pings(cur, batch.pings)
                if batch.flag_updates:
                    self._apply_flags(cur, batch.flag_updates)
                if batch.statuses:
                    self._apply_statuses(cur, batch.statuses)
                if batch.telemetry:
                    self._store_telemetry(cur, batch.telemetry)
                letters = batch.dead_letters
                incidents: list[int] = []
                if batch.reports:
                    unplaced = self._store_reports(cur, batch.reports, incidents)
                    letters = letters + unplaced
                if letters:
                    self._store_dead_letters(cur, letters)
        except psycopg.Error as exc:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._drop()
            else:
                # The transaction rolled back; the cached partition days may be stale (a partition
                # dropped by retention elsewhere), so re-read them before the retry.
                self._refresh_days()
            message = f"cannot store batch of {len(batch.pings)} pings: {exc}"
            if isinstance(exc, psycopg.errors.DataError | psycopg.errors.IntegrityError):
                raise StorageDataError(message) from exc
            raise StorageError(message) from exc
        return BatchResult(
            stored=stored, duplicates=len(batch.pings) - stored, dead_letters=len(letters),
            incidents=tuple(incidents),
        )  # fmt: skip

    def _refresh_days(self) -> None:
        if self._conn is None or not self._partitioned:
            return
        try:
            self._known_days = partition_days(self._conn)
        except psycopg.Error:
            self._drop()

    def _store_pings(self, cur: psycopg.Cursor[Any], pings: list[Ping]) -> int:
        rows, newest, anchors = position_rows(pings)
        stored = self._insert_positions(cur, rows)
        if len(newest) + len(anchors) <= LATEST_ARRAYS_MAX:
            for candidates in (anchors, newest):  # anchors first (see position_rows)
                if candidates:
                    cur.execute(UPSERT_LATEST_ARRAYS_SQL, _latest_arrays(list(candidates.values())))
            return stored
        with cur.copy(COPY_LATEST_STAGING_SQL) as copy:
            copy.set_types(_LATEST_TYPES)
            for pass_no, candidates in ((1, anchors), (2, newest)):
                for p in candidates.values():
                    copy.write_row(
                        (
                            pass_no, p.unit_id, p.ts, p.lat, p.lon, p.alt, p.speed, p.heading, p.accuracy,
                            p.battery, int(p.flags), SOURCE_CODES[p.source], p.received_at,
                        )
                    )  # fmt: skip
        if anchors:
            cur.execute(UPSERT_LATEST_SQL, [1])
        cur.execute(UPSERT_LATEST_SQL, [2])
        return stored

    @staticmethod
    def _insert_positions(cur: psycopg.Cursor[Any], rows: list[PositionRow]) -> int:
        """Store the rows not stored yet; return how many were new."""
        try:
            # Fast path: a fresh batch (the usual case) is one bulk COPY.
            with cur.connection.transaction(), cur.copy(COPY_POSITIONS_SQL) as copy:
                copy.set_types(_POSITION_TYPES)
                for row in rows:
                    copy.write_row(row)
            return len(rows)
        except psycopg.errors.UniqueViolation:
            pass  # rolled back to the savepoint: some rows are stored already, or repeat in the batch
        with cur.copy(COPY_STAGING_SQL) as copy:
            copy.set_types(_POSITION_TYPES)
            for row in rows:
                copy.write_row(row)
        cur.execute(INSERT_POSITIONS_SQL)
        return max(cur.rowcount, 0)

    @staticmethod
    def _insert_units(cur: psycopg.Cursor[Any], units: list[Unit]) -> None:
        cur.executemany(INSERT_NEW_UNIT_SQL, [unit_params(u) for u in units])

    @staticmethod
    def _apply_flags(cur: psycopg.Cursor[Any], updates: list[FlagUpdate]) -> None:
        # Merge updates of the same fix so that no bit is lost to a double match.
        merged: dict[tuple[str, Any], int] = {}
        for u in updates:
            key = (u.unit_id, u.ts)
            merged[key] = merged.get(key, 0) | int(u.add)
        cur.executemany(FLAG_UPDATE_SQL, [(add, unit_id, ts) for (unit_id, ts), add in merged.items()])

    @staticmethod
    def _apply_statuses(cur: psycopg.Cursor[Any], statuses: list[tuple[str, StatusUpdate]]) -> None:
        cur.execute(
            STATUS_UPDATE_SQL,
            [[u for u, _ in statuses], [str(s.status) for _, s in statuses], [s.ts for _, s in statuses]],
        )

    @staticmethod
    def _store_telemetry(cur: psycopg.Cursor[Any], rows: list[DroneTelemetry]) -> None:
        codes = SOURCE_CODES
        with cur.copy(COPY_TELEMETRY_STAGING_SQL) as copy:
            copy.set_types(_TELEMETRY_TYPES)
            for t in rows:
                copy.write_row(
                    (
                        t.unit_id, t.ts, t.alt_takeoff_m, t.alt_msl_m, t.alt_ellipsoid_m,
                        t.vertical_speed_mps, t.battery_pct, t.remaining_flight_s, t.return_home_pct,
                        None if t.flight_mode is None else clean_text(t.flight_mode), t.mode_code, t.gps_fix,
                        t.satellites, t.wind_speed_mps, t.height_limit_m, t.home_lat, t.home_lon, t.docked,
                        None if t.dock_id is None else clean_text(t.dock_id), codes[t.source],
                    )
                )  # fmt: skip
        cur.execute(INSERT_TELEMETRY_SQL)

    @staticmethod
    def _store_reports(
        cur: psycopg.Cursor[Any], reports: list[FieldReport], created: list[int]
    ) -> list[DeadLetter]:
        """Insert each report once (new incident ids into ``created``); return unplaceable ones."""
        letters: list[DeadLetter] = []
        for r in reports:
            lat, lon = r.lat, r.lon
            if lat is None or lon is None:
                row = cur.execute(REPORT_LOCATION_SQL, [r.unit_id]).fetchone()
                if row is None:
                    letters.append(
                        DeadLetter(
                            f"serenazgo/units/{r.unit_id}/incident", r.payload, NO_LOCATION,
                            f"unit {r.unit_id} has no stored position yet: send lat and lon with the report",
                            r.received_at,
                        )
                    )  # fmt: skip
                    continue
                lat, lon = row
            created_at = min(r.ts, r.received_at)
            description = clean_text(r.description)
            cur.execute(
                INSERT_REPORT_SQL,
                [lat, lon, r.category, r.priority, description, r.unit_id, created_at, created_at, r.ts],
            )
            new = cur.fetchone()
            if new is None:
                continue  # redelivered: stored already
            created.append(new[0])
            detail = {
                "lat": lat, "lon": lon, "category": r.category, "channel": "patrol", "priority": r.priority
            }  # fmt: skip
            cur.execute(INSERT_REPORT_AUDIT_SQL, [created_at, r.unit_id, f"incident:{new[0]}", Jsonb(detail)])
        return letters

    @staticmethod
    def _store_dead_letters(cur: psycopg.Cursor[Any], letters: list[DeadLetter]) -> None:
        with cur.copy(COPY_DEAD_LETTERS_SQL) as copy:
            copy.set_types(_DEAD_LETTER_TYPES)
            for d in letters:
                payload = bytes(d.payload)
                copy.write_row(
                    (
                        d.received_at,
                        clean_text(d.topic),
                        payload[:DEAD_LETTER_PAYLOAD_MAX],
                        len(payload),
                        clean_text(d.reason),
                        clean_text(d.detail),
                    )
                )
