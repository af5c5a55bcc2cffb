"""The TimescaleDB path, run for real on TimescaleDB compiled to WASM (PGlite under Node).

No TimescaleDB server package is installable here, so tests/timescale/run_ddl.mjs
runs ``schema_sql(timescale=True)`` in PGlite with the timescaledb extension and
reports the catalog; we check it against what the schema promises, and run the
writer's own SQL on the hypertable, before and after compressing its chunk.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tracker.store.partitions import ADD_RETENTION_SQL, REMOVE_RETENTION_SQL, RETAINED_HYPERTABLES
from tracker.store.schema import COMPRESS_AFTER_DAYS, MIGRATIONS, RETENTION_DAYS_DEFAULT, schema_sql
from tracker.store.writer import (
    CREATE_LATEST_STAGING_SQL,
    CREATE_STAGING_SQL,
    FLAG_UPDATE_SQL,
    INSERT_POSITIONS_SQL,
    POSITION_COLUMNS,
    UPSERT_LATEST_SQL,
)

CHECKER_DIR = Path(__file__).resolve().parents[1] / "timescale"
PACKAGE = CHECKER_DIR / "node_modules" / "@unni-craftsman" / "pglite"


def run_checker(sql: str, *queries: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: install Node.js 20 to run the TimescaleDB DDL check")
    if not PACKAGE.exists():
        pytest.skip(f"PGlite with TimescaleDB is not installed: run `npm ci` in {CHECKER_DIR}")
    proc = subprocess.run(
        [node, "run_ddl.mjs", *queries],
        input=sql,
        cwd=CHECKER_DIR,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"checker printed nothing (exit {proc.returncode}): {proc.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in report, report["error"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    return report


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    staged = (
        f"INSERT INTO positions_staging ({POSITION_COLUMNS}) VALUES"
        " ('2024-03-01 10:00:00+00', -12.10, -77.03, NULL, 1.0, NULL, NULL, NULL, 1000, 0, 1, 'u1'),"
        " ('2024-03-01 10:00:10+00', -12.11, -77.03, NULL, 1.0, NULL, NULL, NULL, 1000, 0, 1, 'u1'),"
        " ('2024-03-01 10:00:05+00', -12.20, -77.04, NULL, 2.0, NULL, NULL, NULL, NULL, 0, 0, 'u2')"
    )
    latest = (
        "INSERT INTO latest_staging (pass, unit_id, ts, lat, lon, flags, source) VALUES"
        " (2, 'u1', '2024-03-01 10:00:10+00', -12.11, -77.03, 0, 1),"
        " (2, 'u2', '2024-03-01 10:00:05+00', -12.20, -77.04, 0, 0)"
    )
    # What the writer's fast path (a plain COPY) relies on: the unique index holds on compressed chunks.
    duplicate_refused = (
        "DO $$ BEGIN"
        f" INSERT INTO positions ({POSITION_COLUMNS}) VALUES"
        " ('2024-03-01 10:00:00+00', 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 'u1');"
        " RAISE EXCEPTION 'a duplicate (unit_id, ts) was stored in a compressed chunk';"
        " EXCEPTION WHEN unique_violation THEN NULL; END $$"
    )
    flag = (
        FLAG_UPDATE_SQL.replace("%s", "16", 1)
        .replace("%s", "'u2'", 1)
        .replace("%s", "'2024-03-01 10:00:05+00'")
    )
    upsert = UPSERT_LATEST_SQL.replace("%s", "2")
    write = [
        "BEGIN", CREATE_STAGING_SQL, CREATE_LATEST_STAGING_SQL, staged, INSERT_POSITIONS_SQL, latest, upsert,
        "COMMIT",
    ]  # fmt: skip
    named = {
        "count_first": "SELECT count(*)::int AS n FROM positions",
        "compressed": "SELECT count(compress_chunk(c))::int AS n FROM show_chunks('positions') c",
        "count_replayed": "SELECT count(*)::int AS n FROM positions",
        "duplicate_refused": duplicate_refused,
        "rows": "SELECT unit_id, flags, recv_lag_ms FROM positions ORDER BY unit_id, ts",
        "latest": "SELECT unit_id, ts::text AS ts, lat FROM unit_latest ORDER BY unit_id",
        "retention_after": (
            "SELECT config FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
            " ORDER BY hypertable_name"
        ),
    }
    order = [
        *write,
        "count_first",
        "compressed",
        *write,  # the same batch again, now into a compressed chunk
        "count_replayed",
        "duplicate_refused",
        flag,
        "rows",
        "latest",
        *(  # set_retention_policy(conn, 30)
            q
            for table in RETAINED_HYPERTABLES
            for q in (
                REMOVE_RETENTION_SQL.replace("%s", f"'{table}'"),
                ADD_RETENTION_SQL.replace("%s", f"'{table}'", 1).replace("%s", "30"),
            )
        ),
        "retention_after",
    ]
    queries = [named.get(q, q) for q in order]
    result = run_checker(schema_sql(timescale=True), *queries)
    result["named"] = {q: result["queries"][i] for i, q in enumerate(order) if q in named}
    return result


def test_positions_is_a_daily_hypertable_with_compression(report: dict[str, Any]) -> None:
    assert {"hypertable_name": "positions", "num_dimensions": 1, "compression_enabled": True} in report[
        "hypertables"
    ]
    dims = [d for d in report["dimensions"] if d["hypertable_name"] == "positions"]
    assert dims == [{"hypertable_name": "positions", "column_name": "ts", "time_interval": "1 day"}]
    settings = {
        s["attname"]: s for s in report["compression_settings"] if s["hypertable_name"] == "positions"
    }
    assert settings["unit_id"]["segmentby_column_index"] == 1
    assert settings["ts"]["orderby_column_index"] == 1
    assert settings["ts"]["orderby_asc"] is False


def test_drone_telemetry_is_a_compressed_hypertable_with_retention(report: dict[str, Any]) -> None:
    assert {"hypertable_name": "drone_telemetry", "num_dimensions": 1, "compression_enabled": True} in report[
        "hypertables"
    ]
    jobs = {(j["proc_name"], j["hypertable_name"]): j["config"] for j in report["jobs"]}
    assert jobs[("policy_compression", "drone_telemetry")]["compress_after"] == f"{COMPRESS_AFTER_DAYS} days"
    assert jobs[("policy_retention", "drone_telemetry")]["drop_after"] == f"{RETENTION_DAYS_DEFAULT} days"


def test_compression_retention_and_aggregate_jobs(report: dict[str, Any]) -> None:
    jobs = {(j["proc_name"], j["hypertable_name"]): j["config"] for j in report["jobs"]}
    assert jobs[("policy_compression", "positions")]["compress_after"] == f"{COMPRESS_AFTER_DAYS} days"
    assert jobs[("policy_retention", "positions")]["drop_after"] == f"{RETENTION_DAYS_DEFAULT} days"
    assert ("policy_refresh_continuous_aggregate", "positions_hourly") in jobs
    assert [c["view_name"] for c in report["continuous_aggregates"]] == ["positions_hourly"]


def test_retention_can_be_changed(report: dict[str, Any]) -> None:
    assert [r["config"]["drop_after"] for r in report["named"]["retention_after"]] == ["30 days", "30 days"]


def test_printed_ddl_records_the_timescale_migrations(report: dict[str, Any]) -> None:
    assert [(m["version"], m["checksum"]) for m in report["migrations"]] == [
        (m.version, m.checksum(timescale=True)) for m in MIGRATIONS
    ]


def test_writer_sql_is_idempotent_on_the_hypertable_even_compressed(report: dict[str, Any]) -> None:
    q = report["named"]
    assert q["count_first"] == [{"n": 3}]
    assert q["compressed"][0]["n"] >= 1
    assert q["count_replayed"] == [{"n": 3}]  # replaying into the compressed chunk stored nothing twice
    assert q["duplicate_refused"] == []  # ran: the duplicate raised unique_violation
    assert q["rows"] == [
        {"unit_id": "u1", "flags": 0, "recv_lag_ms": 1000},
        {"unit_id": "u1", "flags": 0, "recv_lag_ms": 1000},
        {"unit_id": "u2", "flags": 16, "recv_lag_ms": None},
    ]
    assert [(r["unit_id"], r["lat"]) for r in q["latest"]] == [("u1", -12.11), ("u2", -12.2)]
