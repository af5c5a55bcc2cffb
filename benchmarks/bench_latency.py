"""End-to-end latency at a steady offered load: publish → row committed → visible in the LiveFleet.

Goal: **p99 < 100 ms** at 2,000 pings/s offered (a metropolis' fleet is ~10,000
units at one fix every 5 s; a district's is 200 units). The load generator
(:mod:`benchmarks.loadgen`) paces pre-encoded QoS 1 PUBLISH packets one at a
time at ``--rate`` for ``--seconds`` and stamps each with ``time.time()`` as it
is written to the socket. Two rounds on the same Mosquitto and PostgreSQL (both
ours, temporary, 127.0.0.1), same messages:

``paho``    a bare paho subscriber stamps each message as it arrives: the floor the
            broker and one Python MQTT client impose (publish → received);
``bridge``  our bridge (:mod:`benchmarks._bridge_runner`) stamps each ping when it
            becomes visible in the LiveFleet, which happens only after its batch
            committed (publish → stored → acknowledged → LiveFleet). ``positions``
            must then hold exactly one row per message.

Both stamps use the wall clock of the same machine, so the latencies are
directly comparable. Printed: p50/p90/p99/max per round and the bridge's excess
over the floor. Results: a table on stdout and ``benchmarks/results/latency.json``.

Run: ``.venv/bin/python -m benchmarks.bench_latency [--rate 2000] [--seconds 30] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

from benchmarks import loadgen
from benchmarks.fleet_stream import Stream, make_stream, register_units, write_keys
from benchmarks.ingest_rig import (
    ConsumerProcess,
    bare_consumer,
    create_session,
    drop_session,
    reset_ingest_tables,
    stored_counts,
    temp_broker,
)
from benchmarks.pg_server import fresh_database, temp_postgres
from benchmarks.report import add_run_options, percentile, say, table, write_results
from mqtt_bridge.broker import EmbeddedBroker
from mqtt_bridge.topics import subscription_filters

GOAL_P99_MS = 100.0
BRIDGE_CLIENT_ID = "bench-latency-bridge"
PERCENTILES = (50, 90, 99)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--quick``: a short smoke run)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=2000.0, help="offered pings/s")
    ap.add_argument("--seconds", type=float, default=30.0, help="duration of each round")
    ap.add_argument("--units", type=int, default=2000, help="registered units")
    ap.add_argument("--owntracks-share", type=float, default=0.1, help="share of units on OwnTracks")
    ap.add_argument("--seed", type=int, default=20240521)
    add_run_options(ap, argv, {"seconds": 5.0, "units": 500})
    return ap.parse_args(argv)


def paced_publish(
    broker: EmbeddedBroker, stream: Stream, rate: float, seconds: float
) -> loadgen.PublishReport:
    """Publish the stream one packet at a time at ``rate``/s, stamping each with time.time()."""
    say(f"  publishing {len(stream.messages):,} messages at {rate:,.0f}/s for {seconds:.0f} s")
    report = loadgen.publish(
        "127.0.0.1",
        broker.port,
        stream.messages,
        rate=rate,
        chunk=1,
        clock=time.time,
        timeout=seconds * 3 + 60,
    )
    say(f"  publisher: {report.acked:,}/{report.sent:,} acknowledged in {report.seconds:.2f} s "
        f"= {report.rate:,.0f} msg/s")  # fmt: skip
    return report


def latency_figures(latencies_s: list[float], expect: int) -> dict[str, Any]:
    """Percentiles (ms) of the measured latencies; how many messages never arrived."""
    ms = sorted(x * 1000.0 for x in latencies_s if not math.isnan(x))
    out: dict[str, Any] = {f"p{q}_ms": percentile(ms, q) for q in PERCENTILES}
    out["max_ms"] = ms[-1] if ms else math.nan
    out["mean_ms"] = statistics.fmean(ms) if ms else math.nan
    out["measured"] = len(ms)
    out["missing"] = expect - len(ms)
    return out


def round_paho(
    broker: EmbeddedBroker, stream: Stream, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Publish → received by a bare paho subscriber, per message."""
    times_file = work / "paho_times.json"
    n = len(stream.messages)
    consumer = bare_consumer("paho", broker, n, work, args.seconds * 3 + 60, times_out=times_file)
    try:
        report = paced_publish(broker, stream, args.rate, args.seconds)
        consumer.wait_result(args.seconds + 60)
    finally:
        consumer.close()
    index = {(t, p): i for i, (t, p) in enumerate(stream.messages)}
    latencies = [math.nan] * n
    for received, topic, payload in json.loads(times_file.read_text()):
        i = index.get((topic, payload.encode()))
        if i is not None and math.isnan(latencies[i]):
            latencies[i] = received - report.send_times[i]
    return {"publisher_rate": report.rate, **latency_figures(latencies, n)}


def round_bridge(
    broker: EmbeddedBroker, url: str, stream: Stream, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Publish → committed → visible in the LiveFleet of the bridge process, per message."""
    n = len(stream.messages)
    keys_file, times_file = work / "keys.txt", work / "bridge_times.bin"
    write_keys(keys_file, stream.keys)
    reset_ingest_tables(url)
    create_session(broker, BRIDGE_CLIENT_ID, subscription_filters(None))
    env = {
        "SERENAZGO_DATABASE_URL": url,
        "SERENAZGO_MQTT_URL": broker.url,
        "SERENAZGO_MQTT_CLIENT_ID": BRIDGE_CLIENT_ID,
    }
    timeout = args.seconds * 3 + 60
    argv = ["-m", "benchmarks._bridge_runner", "--keys", str(keys_file), "--times-out", str(times_file),
            "--timeout", str(timeout)]  # fmt: skip
    runner = ConsumerProcess("bridge", argv, work / "bridge.log", n, env)
    try:
        runner.start()
        runner.wait_ready(120.0)
        report = paced_publish(broker, stream, args.rate, args.seconds)
        result = runner.wait_result(timeout + 30)
    finally:
        runner.close()
        drop_session(broker, BRIDGE_CLIENT_ID)
    visible = array("d")
    visible.frombytes(times_file.read_bytes())
    latencies = [v - s for v, s in zip(visible, report.send_times, strict=True)]
    stored = stored_counts(url)
    say(f"  stored: positions {stored['positions']:,} (expected {n:,}), "
        f"dead letters {stored['dead_letters']:,}")  # fmt: skip
    return {
        "publisher_rate": report.rate,
        **latency_figures(latencies, n),
        "visible": result.get("count", 0),
        "stored_rows": stored,
        "rows_exact": stored["positions"] == n,
        "bridge": result,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both rounds; return the results (also printed)."""
    n = round(args.rate * args.seconds)
    interval = max(1.0, args.units / args.rate)  # each unit's own reporting interval at this load
    say(f"generating {n:,} messages from {args.units:,} units (seed {args.seed}), "
        f"one fix per unit every {interval:.1f} s")  # fmt: skip
    stream = make_stream(n, args.units, args.seed, owntracks_share=args.owntracks_share, interval_s=interval)
    work = Path(tempfile.mkdtemp(prefix="serenazgo-bench-latency-"))
    rounds: dict[str, Any] = {}
    try:
        with temp_postgres() as pg, temp_broker() as broker:
            say(f"PostgreSQL on port {pg.port}; Mosquitto on port {broker.port}")
            url = fresh_database(pg, "bench_latency")
            register_units(url, stream.units)
            say("round paho (floor: publish → received)")
            rounds["paho"] = round_paho(broker, stream, args, work)
            say("round bridge (publish → committed → visible in the LiveFleet)")
            rounds["bridge"] = round_bridge(broker, url, stream, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summarise(args, n, rounds)


def summarise(args: argparse.Namespace, n: int, rounds: dict[str, Any]) -> dict[str, Any]:
    """Print the table and the goal; return the JSON body."""
    cols = [f"p{q}_ms" for q in PERCENTILES] + ["max_ms", "mean_ms"]
    paho, bridge = rounds["paho"], rounds["bridge"]
    rows = [
        ["bare paho: publish → received (floor)", *(f"{paho[c]:.1f}" for c in cols), paho["missing"]],
        ["bridge: publish → stored → LiveFleet", *(f"{bridge[c]:.1f}" for c in cols), bridge["missing"]],
        ["difference (bridge − floor)", *(f"{bridge[c] - paho[c]:+.1f}" for c in cols), ""],
    ]
    meets = bridge["p99_ms"] < GOAL_P99_MS and bridge["missing"] == 0
    print()
    print(f"latency: {n:,} pings offered at {args.rate:,.0f}/s for {args.seconds:.0f} s, "
          f"{args.units:,} units (ms)")  # fmt: skip
    print(table(["path", "p50", "p90", "p99", "max", "mean", "missing"], rows))
    print()
    print(f"publisher achieved {paho['publisher_rate']:,.0f}/s (paho round), "
          f"{bridge['publisher_rate']:,.0f}/s (bridge round)")  # fmt: skip
    print(f"rows stored: {bridge['stored_rows']['positions']:,} of {n:,} "
          f"({'exact' if bridge['rows_exact'] else 'MISMATCH'})")  # fmt: skip
    verdict = "met" if meets else "NOT met"
    print(f"bridge p99 {bridge['p99_ms']:.1f} ms vs goal < {GOAL_P99_MS:.0f} ms: {verdict}")
    return {
        "rate": args.rate,
        "seconds": args.seconds,
        "n": n,
        "units": args.units,
        "seed": args.seed,
        "goal_p99_ms": GOAL_P99_MS,
        "meets_goal": meets,
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write benchmarks/results/latency.json."""
    args = parse_args(argv)
    data = run(args)
    path = write_results("latency", data, args.results_dir, args.quick)
    say(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
