"""Nearest-unit answers over HTTP while ingest runs: p99 of ``GET /api/v1/dispatch/nearest``.

A radio operator must know within a second of an incident which unit reaches it
first, whatever ingest is doing. Setup: our own Mosquitto and PostgreSQL
(temporary, 127.0.0.1), ``--units`` registered units, and the real service
(``serenazgo up`` as a subprocess: bridge, LiveFleet, Dispatcher, API in one
process, as deployed). Three rounds with the same open-loop HTTP load
(:mod:`benchmarks._http_load`, its own process: ``--http-rate`` requests/s for
``--seconds``, latency measured from each request's scheduled time):

``floor``        a bare uvicorn + FastAPI server returning a body of the same size
                 (:mod:`benchmarks._http_floor`): what the HTTP stack alone costs here;
``idle``         our nearest endpoint, no ingest;
``ingest``       our nearest endpoint while the load generator publishes QoS 1 pings
                 at ``--rate``/s (default 2,000) through the broker into the same
                 process; every one of them must be stored.

Printed: p50/p90/p99/max of each round, ours ÷ floor, and the ingest check.
Results: ``benchmarks/results/dispatch_http.json``.

Run: ``.venv/bin/python -m benchmarks.bench_dispatch_http [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from benchmarks import loadgen
from benchmarks._http_load import TOKEN_ENV
from benchmarks.fleet_stream import make_stream, register_units
from benchmarks.ingest_rig import stored_counts, temp_broker
from benchmarks.pg_server import fresh_database, temp_postgres
from benchmarks.report import add_run_options, percentile, say, table, write_results
from tracker.store.users import add_user_sync, issue_api_token_sync
from tracker.users import Role

GOAL_P99_MS = 1000.0  # "within a second of an incident arriving"
PERCENTILES = (50, 90, 99)
REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--quick``: a short smoke run)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=2000.0, help="offered pings/s during the ingest round")
    ap.add_argument("--http-rate", type=float, default=200.0, help="nearest-unit requests/s")
    ap.add_argument("--seconds", type=float, default=30.0, help="duration of each round")
    ap.add_argument("--units", type=int, default=2000, help="registered units")
    ap.add_argument("--seed", type=int, default=20240521)
    add_run_options(ap, argv, {"seconds": 5.0, "units": 500})
    return ap.parse_args(argv)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180.0) -> None:
    """Wait until ``url`` answers 200; fail with the log if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


@contextlib.contextmanager
def process(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process logging to ``log``; terminated (then killed) on exit."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO, env=env)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Served(NamedTuple):
    """The two servers of :func:`served_beside_floor`: base URLs and process ids."""

    base: str
    floor: str
    pid: int
    floor_pid: int


@contextlib.contextmanager
def served_beside_floor(work: Path, **settings: str) -> Iterator[Served]:
    """``serenazgo up --no-demo`` (with these ``SERENAZGO_*`` settings) and the bare floor server.

    Both run as child processes on free ports, logging under ``work``; yields them
    once both answer ``/healthz``, stops both on exit.
    """
    port, floor_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    env.update(SERENAZGO_DATA_DIR=str(work / "data"), **settings)
    serenazgo = shutil.which("serenazgo", path=str(Path(sys.executable).parent)) or "serenazgo"
    up = [serenazgo, "up", "--no-demo", "--host", "127.0.0.1", "--port", str(port)]
    floor = [sys.executable, "-m", "benchmarks._http_floor", "--port", str(floor_port)]
    with process(up, work / "serenazgo.log", env) as service, \
            process(floor, work / "floor.log") as floor_proc:  # fmt: skip
        base, floor_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{floor_port}"
        wait_http(f"{base}/healthz", service, work / "serenazgo.log")
        wait_http(f"{floor_base}/healthz", floor_proc, work / "floor.log")
        yield Served(base, floor_base, service.pid, floor_proc.pid)


def http_round(url: str, args: argparse.Namespace, seed: int, token: str = "") -> dict[str, Any]:
    """Run the open-loop load against ``url`` as ``token``'s user; return its latency figures (ms)."""
    load = ["-m", "benchmarks._http_load", url, str(args.http_rate), str(args.seconds), str(seed)]
    env = {**os.environ, TOKEN_ENV: token}
    out = subprocess.run(
        [sys.executable, *load], capture_output=True, check=True, cwd=REPO, timeout=args.seconds * 4 + 120,
        env=env,
    )  # fmt: skip
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    ms = sorted(x * 1000.0 for x in result["latencies_s"] if not math.isnan(x))
    figures: dict[str, Any] = {f"p{q}_ms": percentile(ms, q) for q in PERCENTILES}
    figures.update(
        max_ms=ms[-1] if ms else math.nan,
        sent=result["sent"],
        answered=len(ms),
        failures=result["failures"],
        answered_with_units=result["answered_with_units"],
    )
    return figures


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The three rounds; return the results (also printed)."""
    work = Path(tempfile.mkdtemp(prefix="serenazgo-bench-http-"))
    work.chmod(0o755)
    ingest_n = int(args.rate * args.seconds)
    stream = make_stream(args.units + ingest_n, args.units, args.seed)
    warm, paced = stream.messages[: args.units], stream.messages[args.units :]
    rounds: dict[str, Any] = {}
    try:
        with temp_postgres() as pg, temp_broker() as broker:
            url = fresh_database(pg, "dispatch_http")
            register_units(url, stream.units)
            say(f"registered {len(stream.units):,} units")
            # Dispatch needs a user: a viewer's API token, checked like any console's requests.
            add_user_sync(url, "bench-viewer", Role.VIEWER, None)
            token = issue_api_token_sync(url, "bench-viewer", "bench_dispatch_http")
            with served_beside_floor(
                work,
                SERENAZGO_DATABASE_URL=url,
                SERENAZGO_MQTT_URL=broker.url,
                SERENAZGO_MQTT_CLIENT_ID="bench-dispatch-http",
            ) as (base, floor_base, _, _):
                say(f"service at {base}; publishing one fix per unit")
                loadgen.publish("127.0.0.1", broker.port, warm, rate=None, timeout=120)
                _wait_rows(url, len(warm))
                nearest = "/api/v1/dispatch/nearest"
                say(f"round floor: {args.http_rate:.0f} req/s for {args.seconds:.0f} s")
                rounds["floor"] = http_round(floor_base + nearest, args, args.seed, token)
                say(f"round idle: {args.http_rate:.0f} req/s, no ingest")
                rounds["idle"] = http_round(base + nearest, args, args.seed, token)
                say(f"round ingest: {args.http_rate:.0f} req/s while {args.rate:,.0f} pings/s are published")
                report: dict[str, Any] = {}

                def publish_paced() -> None:
                    timeout = args.seconds * 3 + 60
                    report["r"] = loadgen.publish(
                        "127.0.0.1", broker.port, paced, rate=args.rate, chunk=1, timeout=timeout
                    )

                publisher = threading.Thread(target=publish_paced)
                publisher.start()
                rounds["ingest"] = http_round(base + nearest, args, args.seed, token)
                publisher.join()
                rounds["ingest"]["publisher_rate"] = report["r"].rate
                _wait_rows(url, len(warm) + len(paced))
                stored = stored_counts(url)
                rounds["ingest"]["stored_positions"] = stored["positions"]
                rounds["ingest"]["rows_exact"] = stored["positions"] == len(warm) + len(paced)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summarise(args, rounds)


def _wait_rows(url: str, n: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while stored_counts(url)["positions"] < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {stored_counts(url)['positions']:,} of {n:,} positions stored")
        time.sleep(0.2)


def summarise(args: argparse.Namespace, rounds: dict[str, Any]) -> dict[str, Any]:
    """Print the table and ratios; return what goes in the results file."""
    rows = [
        [name, r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"], r["answered"], sum(r["failures"].values())]
        for name, r in rounds.items()
    ]
    print()
    print(table(["round", "p50 ms", "p90 ms", "p99 ms", "max ms", "answered", "failed"], rows))
    ours, floor = rounds["ingest"]["p99_ms"], rounds["floor"]["p99_ms"]
    ratio = ours / floor if floor else math.nan
    print()
    print(f"nearest p99 under ingest: {ours:.2f} ms = {ratio:.2f}× the bare HTTP floor ({floor:.2f} ms); "
          f"goal < {GOAL_P99_MS:.0f} ms: {'met' if ours < GOAL_P99_MS else 'NOT met'}")  # fmt: skip
    ing = rounds["ingest"]
    print(f"ingest during the round: {ing['publisher_rate']:,.0f} pings/s offered, "
          f"rows exact: {ing['rows_exact']} ({ing['stored_positions']:,} stored)")  # fmt: skip
    return {
        "params": vars(args) | {"results_dir": str(args.results_dir) if args.results_dir else None},
        "rounds": rounds,
        "ratio_p99_vs_floor": ratio,
        "goal_p99_ms": GOAL_P99_MS,
        "goal_met": ours < GOAL_P99_MS,
    }


def main(argv: list[str] | None = None) -> int:
    """Run, print, write ``dispatch_http.json``."""
    args = parse_args(argv)
    results = run(args)
    path = write_results("dispatch_http", results, args.results_dir, args.quick)
    say(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
