"""Nearest-unit queries in process, beside PostGIS KNN and a numpy brute force on the same data.

A radio operator asks "which available unit gets there first?". Fleets of
``--sizes`` units (default 10,000 and 100,000) at random places in Lima's
bounding box (lat -12.25..-11.75, lon -77.2..-76.8) with random kinds, statuses
(60 % available), fix ages (some stale, some lost), capabilities and sectors;
``--queries`` random incident points, each with one of three filter sets that
matter (available units of any kind; available cars and motorcycles; available
with a fix younger than 120 s), k = ``--k``. Timed per query:

``ours``        ``Dispatcher.nearest``: the whole in-process call, Candidate objects out;
``engine``      the same search without the Candidate objects (``NearestSearch.query_rows``);
``postgis``     ``ORDER BY geom <-> point LIMIT k`` with a GiST index, same filters (and the
                same lost thresholds), a prepared statement over a local Unix socket, on a
                private PostgreSQL 15 cluster started here from Debian's binaries
                (/usr/lib/postgresql/15/bin, PostGIS from ``postgresql-15-postgis-3``);
``numpy``       a vectorised haversine over every unit, masks, ETA, argpartition.

PostGIS answers a weaker question (nearest by planar degree distance, no ETA per
kind, no live-before-stale); ours is exact by ETA, and every answer is checked
against the brute force (``mismatches`` must be 0). Also measured: how many
pings per second the index absorbs (raw ``LiveIndex.upsert_many`` batches, and
``LiveFleet.apply`` batches through the Dispatcher's subscriber).

Printed: p50/p99 per engine and size, and the ratios (PostGIS p99 ÷ ours p99...).
Results: ``benchmarks/results/nearest.json``.

Run: ``.venv/bin/python -m benchmarks.bench_nearest [--quick] [--sizes 10000 100000] [--queries 2000]``
"""

from __future__ import annotations

import argparse
import gc
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from benchmarks.report import add_run_options, percentile, say, write_results
from geo.codes import KIND_NAMES, STATUS_NAMES
from geo.live_index import LiveIndex
from tracker.dispatch import Dispatcher
from tracker.fleet import LiveFleet
from tracker.freshness import DEFAULT_THRESHOLDS
from tracker.model import Ping, Unit, UnitKind, UnitStatus
from tracker.store.embedded import EmbeddedPostgres

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGIS_CONTROL = Path("/usr/share/postgresql/15/extension/postgis.control")
POSTGIS_HINT = (
    "PostGIS for PostgreSQL 15 is not installed: apt-get install -y postgresql-15 postgresql-15-postgis-3 "
    "(or `make postgis`)"
)
NOW = datetime(2024, 5, 20, 15, 0, tzinfo=UTC)
BBOX = (-12.25, -11.75, -77.2, -76.8)
KIND_P = {"patrol_car": 0.2, "motorcycle": 0.2, "bicycle": 0.15, "foot": 0.4, "drone": 0.05}
STATUS_P = {"available": 0.6, "dispatched": 0.1, "en_route": 0.1, "on_scene": 0.15, "out_of_service": 0.05}
CAPABILITIES = ("first_aid", "k9", "thermal", "spanish_english")
FILTERS: list[dict[str, Any]] = [
    {"name": "available", "kinds": None, "max_age_s": None},
    {"name": "cars+motos", "kinds": [UnitKind.PATROL_CAR, UnitKind.MOTORCYCLE], "max_age_s": None},
    {"name": "fix<120s", "kinds": None, "max_age_s": 120.0},
]
LOST_S = {k.value: DEFAULT_THRESHOLDS[k].lost_after_s for k in UnitKind}


class Fleet:
    """A random fleet over Lima, as columns and as domain objects."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n = n
        self.ids = [f"u{i:06d}" for i in range(n)]
        self.lat = rng.uniform(BBOX[0], BBOX[1], n)
        self.lon = rng.uniform(BBOX[2], BBOX[3], n)
        self.kind = rng.choice(len(KIND_NAMES), n, p=[KIND_P[k] for k in KIND_NAMES])
        self.status = rng.choice(len(STATUS_NAMES), n, p=[STATUS_P[s] for s in STATUS_NAMES])
        self.age = rng.exponential(90.0, n)  # many live, some stale, a few lost
        self.caps = rng.integers(0, 1 << len(CAPABILITIES), n)
        self.sector = rng.integers(1, 43, n)  # Lima's 42 districts

    def live_fleet(self) -> LiveFleet:
        fleet = LiveFleet()
        rows = zip(self.ids, self.kind, self.sector, self.caps, self.status, strict=True)
        units = [
            Unit(
                uid, UnitKind(KIND_NAMES[k]), f"C{uid}", f"district-{s}",
                frozenset(c for b, c in enumerate(CAPABILITIES) if caps >> b & 1),
                status=UnitStatus(STATUS_NAMES[st]),
            )
            for uid, k, s, caps, st in rows
        ]  # fmt: skip
        fixes = [
            Ping(uid, NOW - timedelta(seconds=float(a)), float(la), float(lo))
            for uid, a, la, lo in zip(self.ids, self.age, self.lat, self.lon, strict=True)
        ]
        fleet.load(units, fixes)
        return fleet


def time_each(n: int, call: Callable[[int], Any]) -> tuple[list[float], list[Any]]:
    """Microseconds of ``call(i)`` for i in 0..n-1, and what each call returned."""
    times: list[float] = []
    results: list[Any] = []
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        result = call(i)
        times.append((clock() - t0) / 1000.0)
        results.append(result)
    return times, results


def summary(us: list[float]) -> dict[str, float]:
    s = sorted(us)
    return {
        "p50_us": percentile(s, 50),
        "p99_us": percentile(s, 99),
        "mean_us": statistics.fmean(s),
        "n": len(s),
    }


# -- the engines -------------------------------------------------------------------------------


def numpy_brute_force(
    f: Fleet, pace: NDArray[np.float64], stale: NDArray[np.float64], lost: NDArray[np.float64]
) -> Callable[[float, float, int, int, float], NDArray[np.int64]]:
    """A vectorised exact answer: every unit, masks, haversine, ETA, top k by (stale, eta, dist, slot)."""
    lat_r = np.radians(f.lat)
    lon_r = np.radians(f.lon)
    cos_lat = np.cos(lat_r)
    age = f.age
    kind = f.kind
    available = f.status == 0
    not_lost = age < lost[kind]
    tier = (age >= stale[kind]).astype(np.float64)
    pace_u = pace[kind]
    r2 = 2.0 * 6_371_008.8

    def query(lat: float, lon: float, k: int, kmask: int, max_age: float) -> NDArray[np.int64]:
        ok = available & not_lost & (((kmask >> kind) & 1) == 1) & (age <= max_age)
        idx = np.nonzero(ok)[0]
        p1 = math.radians(lat)
        s_dlat = np.sin((lat_r[idx] - p1) * 0.5)
        s_dlon = np.sin((lon_r[idx] - math.radians(lon)) * 0.5)
        h = s_dlat * s_dlat + math.cos(p1) * cos_lat[idx] * s_dlon * s_dlon
        d = r2 * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
        eta = d * pace_u[idx]
        t = tier[idx]
        if len(idx) > k + 8:
            # Shortlist by (tier, ETA), with room for ties at the k-th, then rank exactly.
            part = np.argpartition(t * 1e12 + eta, k + 8)[: k + 8]
            idx, d, eta, t = idx[part], d[part], eta[part], t[part]
        order = np.lexsort((idx, d, eta, t))[:k]
        return idx[order]

    return query


@contextmanager
def postgis_server() -> Iterator[EmbeddedPostgres | None]:
    """A private PostgreSQL 15 with PostGIS in a temp folder; None (and why) when it cannot run."""
    if not (PG15_BIN / "postgres").exists() or not POSTGIS_CONTROL.exists():
        say(POSTGIS_HINT)
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="serenazgo-bench-postgis-"))
    server = EmbeddedPostgres(
        folder, bin_dir=PG15_BIN, settings={"fsync": "off", "synchronous_commit": "off"}
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def postgis_engine(
    server: EmbeddedPostgres, f: Fleet, name: str
) -> tuple[psycopg.Connection[Any], Callable[[float, float, int, list[str], float], list[Any]]]:
    """Load the fleet into a table with a GiST index; return the connection and a prepared KNN query."""
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    # Over the Unix socket in the server's folder (no TCP), as a co-located database would be.
    conn = psycopg.connect(host=str(server.state_dir), port=server.port, user="postgres", dbname=name,
                           autocommit=True)  # fmt: skip
    conn.execute("CREATE EXTENSION postgis")
    conn.execute(
        "CREATE TABLE units (unit_id text PRIMARY KEY, kind text NOT NULL, status text NOT NULL, "
        "fix_ts timestamptz NOT NULL, lost_at timestamptz NOT NULL, caps int NOT NULL, sector int NOT NULL, "
        "geom geometry(Point, 4326) NOT NULL)"
    )
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY units (unit_id, kind, status, fix_ts, lost_at, caps, sector, geom) FROM STDIN"
        ) as copy,
    ):
        for i in range(f.n):
            fix = NOW - timedelta(seconds=float(f.age[i]))
            kind = KIND_NAMES[f.kind[i]]
            copy.write_row((
                f.ids[i], kind, STATUS_NAMES[f.status[i]], fix, fix + timedelta(seconds=LOST_S[kind]),
                int(f.caps[i]), int(f.sector[i]), f"SRID=4326;POINT({float(f.lon[i])!r} {float(f.lat[i])!r})",
            ))  # fmt: skip
    conn.execute("CREATE INDEX units_geom ON units USING gist (geom)")
    conn.execute("ANALYZE units")
    sql = (
        "SELECT unit_id, kind, geom <-> ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) AS d FROM units "
        "WHERE status = 'available' AND kind = ANY(%(kinds)s) AND lost_at > %(now)s AND fix_ts >= %(oldest)s "
        "ORDER BY geom <-> ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) LIMIT %(k)s"
    )
    cur = conn.cursor()

    def query(lat: float, lon: float, k: int, kinds: list[str], max_age: float) -> list[Any]:
        oldest = NOW - timedelta(seconds=min(max_age, 1e8))
        params = {"lat": lat, "lon": lon, "kinds": kinds, "now": NOW, "oldest": oldest, "k": k}
        cur.execute(sql, params, prepare=True)
        return cur.fetchall()

    return conn, query


# -- the runs ----------------------------------------------------------------------------------


def run_size(
    n: int, queries: int, k: int, server: EmbeddedPostgres | None, rng: np.random.Generator
) -> dict[str, Any]:
    say(f"{n:,} units: building the fleet")
    f = Fleet(n, rng)
    fleet = f.live_fleet()
    t0 = time.perf_counter()
    dispatcher = Dispatcher(fleet)
    load_s = time.perf_counter() - t0
    now_s = NOW.timestamp()
    mem = dispatcher._index.memory_bytes()
    say(f"{n:,} units: Dispatcher loaded in {load_s:.2f} s (incl. compiling), {mem['total'] / n:.0f} B/unit")
    model = dispatcher._model
    stale = np.array([DEFAULT_THRESHOLDS[UnitKind(x)].stale_after_s for x in KIND_NAMES])
    lost = np.array([DEFAULT_THRESHOLDS[UnitKind(x)].lost_after_s for x in KIND_NAMES])
    brute = numpy_brute_force(f, model.pace, stale, lost)
    qlat = rng.uniform(BBOX[0], BBOX[1], queries)
    qlon = rng.uniform(BBOX[2], BBOX[3], queries)
    plan = [FILTERS[i % len(FILTERS)] for i in range(queries)]

    def kmask(flt: dict[str, Any]) -> int:
        return sum(1 << KIND_NAMES.index(x.value) for x in flt["kinds"]) if flt["kinds"] else 31

    def max_age(flt: dict[str, Any]) -> float:
        return math.inf if flt["max_age_s"] is None else float(flt["max_age_s"])

    # Warm every path once, then time each engine over the same queries (one engine at a time).
    search = dispatcher._search
    for i in range(min(queries, 50)):
        dispatcher.nearest(float(qlat[i]), float(qlon[i]), k, now=NOW)
    qs = [(float(a), float(b)) for a, b in zip(qlat, qlon, strict=True)]
    kmasks = [kmask(flt) for flt in plan]
    ages = [max_age(flt) for flt in plan]
    times: dict[str, list[float]] = {}
    gc.disable()  # every engine alike: a collection inside one timed call is noise here
    try:
        times["ours"], got = time_each(queries, lambda i: dispatcher.nearest(
            qs[i][0], qs[i][1], k, kinds=plan[i]["kinds"], max_age_s=plan[i]["max_age_s"], now=NOW,
        ))  # fmt: skip
        times["engine"], _ = time_each(queries, lambda i: search.query_rows(
            qs[i][0], qs[i][1], k, now_s, kmasks[i], 1, 0, -1, ages[i]))  # fmt: skip
        times["numpy"], want = time_each(queries, lambda i: brute(qs[i][0], qs[i][1], k, kmasks[i], ages[i]))
        mismatches = sum(
            [c.unit_id for c in g] != [f.ids[s] for s in w] for g, w in zip(got, want, strict=True)
        )  # fmt: skip
        if server is not None:
            say(f"{n:,} units: loading PostGIS")
            conn, pg_query = postgis_engine(server, f, f"knn_{n}")
            with conn:
                kinds = [
                    [x.value for x in flt["kinds"]] if flt["kinds"] else list(KIND_NAMES) for flt in plan
                ]
                for i in range(min(queries, 50)):
                    pg_query(qs[i][0], qs[i][1], k, kinds[i], ages[i])
                times["postgis"], _ = time_each(
                    queries, lambda i: pg_query(qs[i][0], qs[i][1], k, kinds[i], ages[i])
                )
    finally:
        gc.enable()
    stats = search.stats
    updates = update_rates(f, fleet, dispatcher, rng)
    dispatcher.close()
    result: dict[str, Any] = {
        "units": n,
        "queries": queries,
        "k": k,
        "mismatches_vs_brute_force": mismatches,
        "index_bytes_per_unit": mem["total"] / n,
        "index_memory": mem,
        "dispatcher_load_s": load_s,
        "visits_per_query": stats["visits"] / max(1, stats["queries"]),
        "probes_per_query": stats["probes"] / max(1, stats["queries"]),
        "full_scans": stats["full_scans"],
        "latency": {name: summary(v) for name, v in times.items() if v},
        "updates": updates,
    }
    return result


def update_rates(
    f: Fleet, fleet: LiveFleet, dispatcher: Dispatcher, rng: np.random.Generator
) -> dict[str, float]:
    """Pings per second absorbed: raw index batches, and fleet batches through the Dispatcher."""
    n = f.n
    batch = 1000
    rounds = max(5, min(50, 200_000 // batch))
    # Raw LiveIndex: batches of small moves (a few metres: most stay in their cell) of random units.
    index = LiveIndex(capacity=n + n // 8 + 64)
    index.upsert_many(f.ids, f.lat, f.lon, f.kind, f.status, NOW.timestamp() - f.age)
    picks = [rng.integers(0, n, batch) for _ in range(rounds)]
    ids = [[f.ids[j] for j in p] for p in picks]
    steps = [rng.normal(0.0, 5e-5, (2, batch)) for _ in range(rounds)]
    t0 = time.perf_counter()
    for p, uid, st in zip(picks, ids, steps, strict=True):
        index.upsert_many(uid, f.lat[p] + st[0], f.lon[p] + st[1], f.kind[p], f.status[p],
                          np.full(batch, NOW.timestamp()))  # fmt: skip
    raw = rounds * batch / (time.perf_counter() - t0)
    # Single-ping calls (the worst case: one numba call per ping); the first call compiles.
    now_s = NOW.timestamp()
    index.upsert(f.ids[0], float(f.lat[0]), float(f.lon[0]), int(f.kind[0]), int(f.status[0]), now_s)
    t0 = time.perf_counter()
    single = 5000
    for j in range(single):
        s = int(picks[0][j % batch])
        index.upsert(
            f.ids[s], float(f.lat[s]), float(f.lon[s]), int(f.kind[s]), int(f.status[s]), NOW.timestamp()
        )
    raw_single = single / (time.perf_counter() - t0)
    # Through the Dispatcher: LiveFleet.apply batches of moving units; time spent in our subscriber.
    spent = [0.0]
    on_changes = dispatcher._on_changes

    def timed_subscriber(changes: list[Any]) -> None:
        t = time.perf_counter()
        on_changes(changes)
        spent[0] += time.perf_counter() - t

    dispatcher._unsubscribe()
    dispatcher._unsubscribe = fleet.subscribe(timed_subscriber)
    applied = 0
    t0 = time.perf_counter()
    for r, p in enumerate(picks):
        ts = NOW + timedelta(seconds=r + 1)
        pings = [Ping(f.ids[j], ts, float(f.lat[j] + 1e-5), float(f.lon[j])) for j in p]
        applied += len(fleet.apply(pings=pings))
    total = time.perf_counter() - t0
    return {
        "raw_index_batched_pings_per_s": raw,
        "raw_index_single_pings_per_s": raw_single,
        "dispatcher_subscriber_pings_per_s": applied / spent[0] if spent[0] else math.nan,
        "fleet_apply_with_dispatcher_pings_per_s": applied / total,
        "batch": batch,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print p50/p99 per engine and the ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--no-postgis", action="store_true", help="skip the PostGIS peer")
    add_run_options(parser, argv, {"sizes": [2000], "queries": 200})
    args = parser.parse_args(argv)
    rng = np.random.default_rng(20240520)
    runs = []
    with postgis_server() if not args.no_postgis else _no_server() as server:
        for n in args.sizes:
            runs.append(run_size(n, args.queries, args.k, server, rng))
    console = Console(width=200)
    table = Table(title=f"nearest k={args.k}: in-process p50 / p99 (µs) and ratios")
    columns = ("units", "ours p50", "ours p99", "engine p50", "engine p99", "PostGIS p50", "PostGIS p99",
               "numpy p50", "numpy p99", "PostGIS p99 ÷ ours", "numpy p99 ÷ ours", "exact")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")
    for r in runs:
        lat = r["latency"]
        pg = lat.get("postgis", {"p50_us": math.nan, "p99_us": math.nan})
        o, e, npy = lat["ours"], lat["engine"], lat["numpy"]
        diff = r["mismatches_vs_brute_force"]
        table.add_row(
            f"{r['units']:,}", f"{o['p50_us']:.1f}", f"{o['p99_us']:.1f}", f"{e['p50_us']:.1f}",
            f"{e['p99_us']:.1f}", f"{pg['p50_us']:.0f}", f"{pg['p99_us']:.0f}", f"{npy['p50_us']:.0f}",
            f"{npy['p99_us']:.0f}", f"{pg['p99_us'] / o['p99_us']:.1f}×",
            f"{npy['p99_us'] / o['p99_us']:.0f}×",
            "yes" if diff == 0 else f"{diff} differ",
        )  # fmt: skip
    console.print(table)
    upd = Table(title="index updates absorbed (pings/s)")
    columns = ("units", "LiveIndex batches", "LiveIndex one by one", "Dispatcher subscriber",
               "fleet.apply + Dispatcher", "B/unit", "units visited/query")  # fmt: skip
    for col in columns:
        upd.add_column(col, justify="right")
    for r in runs:
        u = r["updates"]
        upd.add_row(
            f"{r['units']:,}", f"{u['raw_index_batched_pings_per_s']:,.0f}",
            f"{u['raw_index_single_pings_per_s']:,.0f}", f"{u['dispatcher_subscriber_pings_per_s']:,.0f}",
            f"{u['fleet_apply_with_dispatcher_pings_per_s']:,.0f}", f"{r['index_bytes_per_unit']:.0f}",
            f"{r['visits_per_query']:.0f}",
        )  # fmt: skip
    console.print(upd)
    path = write_results("nearest", {"runs": runs, "k": args.k, "filters": [f["name"] for f in FILTERS]},
                         args.results_dir, args.quick)  # fmt: skip
    say(f"results in {path}")


@contextmanager
def _no_server() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
