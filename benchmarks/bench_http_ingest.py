"""OsmAnd HTTP ingest, committed before the 200: requests/s against a bare endpoint of the same stack.

A phone (Traccar Client) sends one request per fix and waits for the answer; the
service answers 200 only once the fix is committed. Setup: our own PostgreSQL and
Mosquitto (temporary, 127.0.0.1), ``--devices`` registered units each with a
device token, and the real service (``serenazgo up`` as a subprocess, device
tokens required). Two rounds of the same closed-loop load
(:mod:`benchmarks._http_load` ``--closed``, its own process: ``--connections``
keep-alive connections, by default one per device as phones have, each sending
its next request when the previous one is answered, for ``--seconds``):

``bare``    ``GET /api/v1/ingest/osmand`` on a bare server of the same stack (uvicorn, the
            same :class:`api.app.FastPaths` dispatch in front of a FastAPI app) that answers
            200 without any work (:mod:`benchmarks._http_floor`): the limit;
``ingest``  the same requests to serenazgo: token check, decode, filters, group commit
            (``synchronous_commit`` on), LiveFleet, then the 200.

Checked: every 200 of the ingest round is a stored row (positions = answered 200s).

Why one connection per device matters: each commit waits for its WAL flush, so the
rate is about (requests waiting when a batch starts) ÷ (flush + round trips).
A closed loop of few connections keeps batches small and measures the flush
latency; a fleet of phones, each with one request in flight, is many connections.
Printed: both rates and ingest ÷ bare (goal ≥ 70 %), and where each round's CPU went
(µs per request: the server process, its HTTP ingest worker, PostgreSQL, the load
generator, the rest; :mod:`benchmarks.cpu_account`), which says what limits it.
Results: ``benchmarks/results/http_ingest.json``.

Run: ``.venv/bin/python -m benchmarks.bench_http_ingest [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.bench_dispatch_http import served_beside_floor
from benchmarks.cpu_account import CpuAccount
from benchmarks.ingest_rig import stored_counts, temp_broker
from benchmarks.pg_server import fresh_database, temp_postgres
from benchmarks.report import add_run_options, say, table, write_results
from tracker.model import Unit, UnitKind
from tracker.store.credentials import issue_token_sync
from tracker.store.units import create_unit_sync

GOAL_RATIO = 0.70
SERVER = "server process"
REPO = Path(__file__).resolve().parent.parent
PATH = "/api/v1/ingest/osmand"
MAX_RATE = 30_000  # requests/s the request list is sized for (no request is sent twice)
FIRST_DEVICE_ID = 4_800_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--quick``: a short smoke run)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each round")
    ap.add_argument("--devices", type=int, default=200, help="registered units sending")
    ap.add_argument(
        "--connections", type=int, default=None, help="keep-alive connections (default: one per device)"
    )
    add_run_options(ap, argv, {"seconds": 4.0, "devices": 100})
    args = ap.parse_args(argv)
    if args.connections is None:
        args.connections = args.devices
    return args


def osmand_paths(tokens: list[str], n: int) -> list[str]:
    """``n`` Traccar Client requests, round-robin over the devices, each device's fixes a second apart."""
    devices = len(tokens)
    steps = n // devices + 1
    start = int(time.time()) - steps - 120  # all in the past (the filters refuse future fixes)
    out = []
    for i in range(n):
        d, k = i % devices, i // devices
        lat = -12.12 + d * 1e-3 + k * 1e-5  # ~1 m/s: a walking sereno
        out.append(
            f"{PATH}?id={FIRST_DEVICE_ID + d}&lat={lat:.6f}&lon=-77.030000&timestamp={start + k}"
            f"&speed=2.0&bearing=0&altitude=80&accuracy=8&batt=77&token={tokens[d]}"
        )
    return out


def setup_units(url: str, devices: int) -> list[str]:
    """Register the devices' units and issue each its token."""
    with psycopg.connect(url) as conn:
        for d in range(devices):
            unit = Unit(f"osm-{d:04d}", UnitKind.FOOT, external_ids={"osmand": str(FIRST_DEVICE_ID + d)})
            create_unit_sync(conn, unit)
        conn.commit()
    return [issue_token_sync(url, f"osm-{d:04d}") for d in range(devices)]


def closed_round(
    url: str, paths_file: Path, args: argparse.Namespace, cpu: CpuAccount | None = None
) -> dict[str, Any]:
    """One closed-loop round against ``url``; the load client's JSON result (+ ``cpu_us_per_request``)."""
    load = [
        "-m",
        "benchmarks._http_load",
        "--closed",
        url,
        str(paths_file),
        str(args.connections),
        str(args.seconds),
    ]
    if cpu is not None:
        cpu.start()
    out = subprocess.run(
        [sys.executable, *load], capture_output=True, check=True, cwd=REPO, timeout=args.seconds * 4 + 120
    )
    result: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    if cpu is not None:
        cpu.stop()
        result["cpu_us_per_request"] = cpu.per_request(result["answered"])
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both rounds; return the results (also printed)."""
    work = Path(tempfile.mkdtemp(prefix="serenazgo-bench-http-ingest-"))
    work.chmod(0o755)
    rounds: dict[str, Any] = {}
    try:
        with temp_postgres() as pg, temp_broker() as broker:
            url = fresh_database(pg, "http_ingest")
            tokens = setup_units(url, args.devices)
            say(f"registered {args.devices} units with device tokens")
            # Each device's first fix warms both servers up (the worker started, the tokens checked
            # once), so that the rounds measure the steady state; the rest are the rounds' requests.
            paths = osmand_paths(tokens, args.devices + int(MAX_RATE * args.seconds))
            warm_file, paths_file = work / "warm.txt", work / "paths.txt"
            warm_file.write_text("\n".join(paths[: args.devices]))
            paths_file.write_text("\n".join(paths[args.devices :]))
            with served_beside_floor(
                work,
                SERENAZGO_DATABASE_URL=url,
                SERENAZGO_MQTT_URL=broker.url,
                SERENAZGO_MQTT_CLIENT_ID="bench-http-ingest",
                SERENAZGO_OSMAND_PORT="0",
                SERENAZGO_INGEST_AUTH="true",
            ) as (base, floor_base, pid, floor_pid):
                closed_round(floor_base + PATH, warm_file, args)  # each ends once its list is used up
                warm = closed_round(base + PATH, warm_file, args)
                say(f"round bare: {args.connections} connections for {args.seconds:.0f} s")
                rounds["bare"] = closed_round(
                    floor_base + PATH, paths_file, args, _account(floor_pid, pg.pid)
                )
                say(f"round ingest: {args.connections} connections for {args.seconds:.0f} s")
                rounds["ingest"] = closed_round(base + PATH, paths_file, args, _account(pid, pg.pid))
            stored = stored_counts(url)
            rounds["ingest"]["warm_up_200"] = warm["statuses"].get("200", 0)
            ok = rounds["ingest"]["statuses"].get("200", 0) + rounds["ingest"]["warm_up_200"]
            rounds["ingest"]["stored_positions"] = stored["positions"]
            rounds["ingest"]["rows_exact"] = stored["positions"] == ok
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summarise(args, rounds)


def _account(server: int, postgres: int | None) -> CpuAccount | None:
    """CPU per process of a round: the server (its worker apart) and PostgreSQL; None if unknown."""
    if postgres is None:
        return None
    return CpuAccount({SERVER: server, "PostgreSQL": postgres}, split=frozenset({SERVER}))


def summarise(args: argparse.Namespace, rounds: dict[str, Any]) -> dict[str, Any]:
    """Print the table and the ratio; return what goes in the results file."""
    rows = [
        [
            name,
            r["rate"],
            r["answered"],
            json.dumps(r["statuses"]),
            sum(r["failures"].values()),
            r["exhausted"],
        ]
        for name, r in rounds.items()
    ]
    print()
    print(table(["round", "requests/s", "answered", "statuses", "failed", "list exhausted"], rows))
    ratio = rounds["ingest"]["rate"] / rounds["bare"]["rate"]
    ing = rounds["ingest"]
    print()
    print(f"OsmAnd ingest, committed before the 200: {ing['rate']:,.0f} requests/s = {ratio:.0%} of the bare "
          f"endpoint ({rounds['bare']['rate']:,.0f}/s); goal ≥ {GOAL_RATIO:.0%}: "
          f"{'met' if ratio >= GOAL_RATIO else 'NOT met'}")  # fmt: skip
    print(f"every 200 stored: {ing['rows_exact']} ({ing['stored_positions']:,} rows, "
          f"{ing['statuses'].get('200', 0):,} answers 200 + {ing['warm_up_200']} warming up)")  # fmt: skip
    print_cpu(rounds)
    return {
        "params": vars(args) | {"results_dir": str(args.results_dir) if args.results_dir else None},
        "when": datetime.now(UTC).isoformat(),
        "rounds": rounds,
        "ratio_vs_bare": ratio,
        "goal_ratio": GOAL_RATIO,
        "goal_met": ratio >= GOAL_RATIO,
    }


def print_cpu(rounds: dict[str, Any]) -> None:
    """µs of CPU per request by process in each round, and the rate the machine's cores allow."""
    cpu = {name: r.get("cpu_us_per_request") for name, r in rounds.items()}
    if not all(cpu.values()):
        return
    names = [k for k in cpu["ingest"] if k not in ("machine busy", "machine idle")]
    rows = [
        [k, *(round(cpu[r].get(k, 0.0), 1) for r in rounds)] for k in [*names, "machine busy", "machine idle"]
    ]
    print()
    print("CPU per request, µs (user + system; 'other': the broker, the kernel, the rest of the machine)")
    print(table(["process", *rounds], rows))
    cores = os.cpu_count() or 1
    for name in rounds:
        busy = cpu[name]["machine busy"]
        idle = cpu[name]["machine idle"]
        print(f"{name}: {busy:.0f} µs of CPU per request on {cores} cores: at most "
              f"{cores * 1e6 / busy:,.0f} requests/s if every core were busy "
              f"({idle:.0f} µs/request idle)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run, print, write ``http_ingest.json``."""
    args = parse_args(argv)
    results = run(args)
    path = write_results("http_ingest", results, args.results_dir, args.quick)
    say(f"results: {path}")
    return 0 if results["rounds"]["ingest"]["rows_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
