"""Bytes per stored ping: ``positions`` on disk (heap + indexes, all partitions) per row.

A simulated Miraflores fleet (tracker.simulation: 104 units, their own
report intervals, GPS noise, phones with battery, vehicles without) sends
``--n`` fixes through the PositionWriter. Beside the result stand, in the
same run:

- the floor: the bytes of the values themselves (``pg_column_size`` of each
  column, NULLs free), i.e. what any row store must keep;
- the tuple as PostgreSQL lays it out (24-byte header, null bitmap, alignment)
  plus its 4-byte line pointer;
- a straightforward schema of the same data (float8 everywhere, source as
  text, received_at as timestamptz, flags int4), to show what the lean column
  choices save.

Plain-path figures (no compression); on TimescaleDB, chunks older than 7 days
are compressed, which this benchmark does not measure.

Run: ``.venv/bin/python -m benchmarks.bench_storage_size [--n 1000000] [--batch 5000]``
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime, timedelta

import psycopg

from benchmarks.pg_server import fresh_database, temp_postgres
from benchmarks.report import add_run_options, write_results
from tracker.area_file import load_area
from tracker.batch import IngestBatch
from tracker.config import Settings
from tracker.model import Ping
from tracker.simulation import FleetSimulation
from tracker.store.writer import PositionWriter

NAIVE_TABLE = """
CREATE TABLE positions_naive (
    unit_id text NOT NULL, ts timestamptz NOT NULL, lat float8 NOT NULL, lon float8 NOT NULL,
    alt float8, speed float8, heading float8, accuracy float8, battery float8,
    flags integer NOT NULL, source text NOT NULL, received_at timestamptz,
    UNIQUE (unit_id, ts)
)
"""
NAIVE_FILL = """
INSERT INTO positions_naive
SELECT p.unit_id, p.ts, p.lat, p.lon, p.alt, p.speed, p.heading, p.accuracy, p.battery, p.flags, s.name,
       p.ts + p.recv_lag_ms * interval '1 millisecond'
FROM positions p JOIN ping_sources s ON s.code = p.source
ORDER BY p.ts  -- arrival order, as a live system inserts: indexes grow (and split) the same way
"""
COLUMNS = ["ts", "lat", "lon", "alt", "speed", "heading", "accuracy", "battery", "recv_lag_ms", "flags",
           "source", "unit_id"]  # fmt: skip


def simulated_pings(n: int, seed: int) -> list[Ping]:
    """``n`` fixes of the default Miraflores fleet, ending about now, received 0.1-2 s after the fix."""
    area = load_area(Settings().area_file(), "Miraflores")
    hours = n / 57_000 + 1  # the default fleet reports about 57,000 fixes an hour
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=hours)
    sim = FleetSimulation(area, seed=seed, start=start, bad_fix_rate=0.0)
    rng = random.Random(seed)
    pings: list[Ping] = []
    t = start
    while len(pings) < n:
        t += timedelta(hours=1)
        for f in sim.advance_to(t):
            ts = f.ts or f.true_ts
            pings.append(
                Ping(
                    f.unit.unit_id, ts, f.lat, f.lon, alt=f.alt, speed=f.speed, heading=f.heading,
                    accuracy=f.accuracy, battery=f.battery, source=f.unit.source,
                    received_at=ts + timedelta(milliseconds=rng.randrange(100, 2000)),
                )
            )  # fmt: skip
    return pings[:n]


def table_bytes(conn: psycopg.Connection[tuple[int, ...]], table: str) -> tuple[int, int, int]:
    """(total, heap main fork, indexes) bytes of ``table`` and all its partitions."""
    row = conn.execute(
        "WITH rels AS (SELECT relid FROM pg_partition_tree(%s::regclass) UNION SELECT %s::regclass)"
        " SELECT sum(pg_total_relation_size(relid)), sum(pg_relation_size(relid)),"
        " sum(pg_indexes_size(relid)) FROM rels",
        [table, table],
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def main(argv: list[str] | None = None) -> None:
    """Store the fixes, measure, print a table and a JSON summary."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="fixes to store")
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=3)
    add_run_options(parser, argv, {"n": 20_000})
    args = parser.parse_args(argv)

    t = time.perf_counter()
    pings = simulated_pings(args.n, args.seed)
    units = len({p.unit_id for p in pings})
    print(f"simulated {len(pings):,} fixes of {units} units in {time.perf_counter() - t:.0f}s")
    with temp_postgres() as server:
        url = fresh_database(server, "bench_size")
        t = time.perf_counter()
        stored = 0
        with PositionWriter(url) as writer:
            for i in range(0, len(pings), args.batch):
                stored += writer.write(IngestBatch(pings=pings[i : i + args.batch])).stored
        print(f"stored {stored:,} through the writer in {time.perf_counter() - t:.0f}s")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) positions")
            rows = int(conn.execute("SELECT count(*) FROM positions").fetchone()[0])  # type: ignore[index]
            values_sql = " + ".join(f"coalesce(pg_column_size({c}), 0)" for c in COLUMNS)
            values, tuple_ = conn.execute(
                f"SELECT avg({values_sql})::float8, avg(pg_column_size(positions.*))::float8 FROM positions"
            ).fetchone()  # type: ignore[misc]
            total, heap, indexes = table_bytes(conn, "positions")
            conn.execute(NAIVE_TABLE)
            conn.execute(NAIVE_FILL)
            conn.execute("VACUUM (ANALYZE) positions_naive")
            n_total, n_heap, n_indexes = table_bytes(conn, "positions_naive")

    per = {
        "values_floor": values,
        "tuple_with_line_pointer": tuple_ + 4,
        "heap": heap / rows,
        "indexes": indexes / rows,
        "total": total / rows,
        "naive_total": n_total / rows,
        "naive_heap": n_heap / rows,
        "naive_indexes": n_indexes / rows,
    }
    print(f"\n{rows:,} rows; bytes per stored ping")
    print(f"  values alone (floor)              {per['values_floor']:7.1f}")
    print(f"  tuple + line pointer              {per['tuple_with_line_pointer']:7.1f}")
    print(f"  positions heap                    {per['heap']:7.1f}")
    print(f"  positions indexes (unique + BRIN) {per['indexes']:7.1f}")
    print(
        f"  positions total                   {per['total']:7.1f}   ({per['total'] / values:.2f}x the floor)"
    )
    print(
        f"  straightforward schema total      {per['naive_total']:7.1f}"
        f"   (heap {per['naive_heap']:.1f}, indexes {per['naive_indexes']:.1f})"
    )
    body = {"rows": rows, "bytes_per_ping": {k: round(v, 1) for k, v in per.items()}}
    print(json.dumps({"benchmark": "storage_size", **body}))
    print(f"results written to {write_results('storage_size', body, args.results_dir, args.quick)}")


if __name__ == "__main__":
    main()
