"""Writer throughput: PositionWriter beside a bare binary COPY, the physical floor, in the same run.

Our writer stores each batch in one transaction: binary COPY into a staging
table, INSERT … ON CONFLICT into ``positions`` (unique (unit_id, ts), day
partitions), the ``unit_latest`` upsert, commit. The floor is the same rows,
in the same batches, by binary COPY into an UNLOGGED table with no index and
no constraint, one commit per batch: what Python + psycopg + PostgreSQL cost
with nothing asked of the data. Same server (fsync and synchronous_commit on),
same process, fixed seed. A middle reference shows what durability and the
unique index alone cost: binary COPY straight into the real ``positions``
(logged, indexed, one commit per batch), which gives no idempotence (a replay
fails) and no ``unit_latest``. Target: well over 50,000 pings/s for batches of
2,000-5,000 on a 2-core box (the whole pipeline must do 30,000/s).

Run: ``.venv/bin/python -m benchmarks.bench_writer [--n 300000] [--batch 2000 5000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg

from benchmarks.pg_server import fresh_database, temp_postgres
from benchmarks.report import add_run_options, write_results
from tracker.batch import IngestBatch
from tracker.model import Ping, PingFlag, Source
from tracker.store.writer import PositionWriter

SOURCES = [Source.OWNTRACKS, Source.OSMAND, Source.NATIVE, Source.DJI]


def make_pings(n: int, units: int, rng: random.Random) -> list[Ping]:
    """``n`` fixes round-robin over ``units`` units, one per unit every 5 s, ending 10 minutes ago.

    About 1 in 10 is JITTER (units standing still) and 1 in 200 is LATE, as the filters flag them.
    """
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    rounds = n // units + 1
    start = end - timedelta(seconds=5 * rounds)
    kinds = ["ser", "mov", "moto"]
    ids = [f"mira-{kinds[i % 3]}-{i:04d}" for i in range(units)]
    pos = [(-12.12 + rng.uniform(-0.02, 0.02), -77.03 + rng.uniform(-0.02, 0.02)) for _ in range(units)]
    out = []
    for i in range(n):
        u = i % units
        ts = start + timedelta(seconds=5 * (i // units), milliseconds=rng.randrange(1000))
        lat, lon = pos[u]
        lat += rng.uniform(-1e-4, 1e-4)
        lon += rng.uniform(-1e-4, 1e-4)
        pos[u] = (lat, lon)
        r = rng.random()
        flags = PingFlag.JITTER if r < 0.1 else PingFlag.LATE if r < 0.105 else PingFlag.NONE
        out.append(
            Ping(
                ids[u], ts, lat, lon,
                alt=79.0 + rng.uniform(-3, 3), speed=rng.uniform(0, 15), heading=rng.uniform(0, 360),
                accuracy=rng.uniform(3, 20), battery=rng.uniform(20, 100), flags=flags,
                source=SOURCES[u % len(SOURCES)],
                received_at=ts + timedelta(milliseconds=rng.randrange(50, 900)),
            )
        )  # fmt: skip
    return out


def batches(pings: list[Ping], size: int) -> list[IngestBatch]:
    """Cut ``pings`` into ingest batches of ``size``."""
    return [IngestBatch(pings=pings[i : i + size]) for i in range(0, len(pings), size)]


def run_writer(url: str, work: list[IngestBatch]) -> float:
    """Seconds for PositionWriter to store every batch (connection and partitions made beforehand)."""
    with PositionWriter(url) as writer:
        writer.connect()
        t = time.perf_counter()
        stored = sum(writer.write(b).stored for b in work)
        elapsed = time.perf_counter() - t
    assert stored == sum(len(b.pings) for b in work), "the writer lost or merged rows"
    return elapsed


FLOOR_TABLE = """
CREATE UNLOGGED TABLE floor_positions (
    ts timestamptz, lat float8, lon float8, alt real, speed real, heading real, accuracy real, battery real,
    received_at timestamptz, flags smallint, source smallint, unit_id text
)
"""
FLOOR_COPY = (
    "COPY floor_positions (ts, lat, lon, alt, speed, heading, accuracy, battery, received_at, flags, source,"
    " unit_id) FROM STDIN (FORMAT BINARY)"
)
FLOOR_TYPES = [
    "timestamptz", "float8", "float8", "float4", "float4", "float4", "float4", "float4",
    "timestamptz", "int2", "int2", "text",
]  # fmt: skip


def run_floor(url: str, work: list[IngestBatch]) -> float:
    """Seconds for a bare binary COPY of the same rows into an unlogged, index-free table."""
    codes = {s: i for i, s in enumerate(Source)}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS floor_positions")
        conn.execute(FLOOR_TABLE)
        t = time.perf_counter()
        for b in work:
            with conn.transaction(), conn.cursor() as cur, cur.copy(FLOOR_COPY) as copy:
                copy.set_types(FLOOR_TYPES)
                for p in b.pings:
                    copy.write_row(
                        (
                            p.ts, p.lat, p.lon, p.alt, p.speed, p.heading, p.accuracy, p.battery,
                            p.received_at, int(p.flags), codes[p.source], p.unit_id,
                        )
                    )  # fmt: skip
        return time.perf_counter() - t


def run_durable_copy(url: str, work: list[IngestBatch]) -> float:
    """Seconds for a binary COPY of the same rows straight into ``positions`` (no ON CONFLICT, no latest)."""
    codes = {s: i for i, s in enumerate(Source)}
    sql = (
        "COPY positions (ts, lat, lon, alt, speed, heading, accuracy, battery, flags, source, unit_id)"
        " FROM STDIN (FORMAT BINARY)"
    )
    types = [t for i, t in enumerate(FLOOR_TYPES) if i != 8]  # positions keeps a lag, not received_at
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE positions")
        t = time.perf_counter()
        for b in work:
            with conn.transaction(), conn.cursor() as cur, cur.copy(sql) as copy:
                copy.set_types(types)
                for p in b.pings:
                    copy.write_row(
                        (
                            p.ts, p.lat, p.lon, p.alt, p.speed, p.heading, p.accuracy, p.battery,
                            int(p.flags), codes[p.source], p.unit_id,
                        )
                    )  # fmt: skip
        return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one line per batch size, then a JSON summary."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300_000, help="pings per run")
    parser.add_argument("--batch", type=int, nargs="+", default=[2000, 5000], help="batch sizes")
    parser.add_argument("--units", type=int, default=2000, help="distinct units")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median reported)")
    parser.add_argument("--seed", type=int, default=7)
    add_run_options(parser, argv, {"n": 20_000, "batch": [2000], "repeat": 1})
    args = parser.parse_args(argv)

    pings = make_pings(args.n, args.units, random.Random(args.seed))
    summary = []
    with temp_postgres() as server:
        print(f"PostgreSQL {server.bin_dir}, port {server.port}; {args.n:,} pings, {args.units:,} units")
        for size in args.batch:
            work = batches(pings, size)
            ours, durable, floor = [], [], []
            for _ in range(args.repeat):
                url = fresh_database(server, "bench_writer")  # same starting state every run
                ours.append(run_writer(url, work))
                durable.append(run_durable_copy(url, work))
                floor.append(run_floor(url, work))
            ours_rate = args.n / statistics.median(ours)
            durable_rate = args.n / statistics.median(durable)
            floor_rate = args.n / statistics.median(floor)
            print(
                f"batch {size:>5}: writer {ours_rate:>9,.0f}/s   durable COPY into positions"
                f" {durable_rate:>9,.0f}/s   bare COPY (floor) {floor_rate:>9,.0f}/s"
                f"   writer/floor {ours_rate / floor_rate:.2f}"
            )
            summary.append(
                {"batch": size, "writer_pings_per_s": round(ours_rate),
                 "durable_copy_pings_per_s": round(durable_rate), "floor_pings_per_s": round(floor_rate),
                 "ratio": round(ours_rate / floor_rate, 3)}
            )  # fmt: skip
    print(json.dumps({"benchmark": "writer", "n": args.n, "units": args.units, "results": summary}))
    body = {"n": args.n, "units": args.units, "results": summary}
    path = write_results("writer", body, args.results_dir, args.quick)
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
