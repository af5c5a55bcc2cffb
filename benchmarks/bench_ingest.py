"""Sustained ingest through the whole pipeline, beside bare MQTT subscribers, in the same run.

The issue's figures (2-core box): pre-encoded PUBLISH packets written to a raw
socket push ~160,000 QoS 1 msg/s through Mosquitto; a bare subscriber that only
counts receives ~33,000/s with paho and ~128,000/s with gmqtt; a 60-line probe
(paho manual ack → staging COPY → INSERT … ON CONFLICT → ack) stored ~33,000
pings/s; Traccar's maintainer quotes 2,000 requests/s for a well-configured
database. Goal: **≥ 30,000 pings/s** through the full pipeline and **≥ 90 %** of a
bare paho subscriber's rate measured in the same run.

One Mosquitto (the product's generated configuration, queue limit lifted) and one
PostgreSQL (fsync and synchronous_commit on), both ours, on free 127.0.0.1 ports
in temporary folders, on the same machine as everything else. ``--units`` units
are registered (patrol cars on native JSON, a share of serenos on OwnTracks) and
``--n`` seeded messages generated (:mod:`benchmarks.fleet_stream`). Rounds, each
publishing the same messages at full speed with the raw-socket load generator
(:mod:`benchmarks.loadgen`) while one consumer, in its own process, takes them:

``broker``  no subscriber: what Mosquitto accepts from the publisher (its ingest ceiling);
``paho``    a bare paho subscriber that only counts (MQTT 5, QoS 1, automatic acks);
``paho311`` the same over MQTT 3.1.1 (paho builds no MQTT 5 Properties per message);
``gmqtt``   a bare gmqtt subscriber that only counts;
``bridge``  our bridge (:mod:`benchmarks._bridge_runner`): decode, resolve, filter, store
            (one transaction per batch), PUBACK after commit, LiveFleet updated; a
            ping counts once it is visible in the LiveFleet. Afterwards ``positions``
            must hold exactly ``--n`` rows.

A consumer's rate is messages / (last − first receipt); for the bridge, from the
first message received to the last ping visible in the LiveFleet. The
publisher's acknowledged rate stands beside each. Results: a table on stdout and
``benchmarks/results/ingest.json``.

Run: ``.venv/bin/python -m benchmarks.bench_ingest [--n 300000] [--units 2000] [--repeat 1]
[--rounds broker paho paho311 gmqtt bridge] [--profile DIR] [--quick]``
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import loadgen, profile_stages
from benchmarks.fleet_stream import make_stream, register_units, write_keys
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
from benchmarks.report import add_run_options, say, table, write_results
from mqtt_bridge.broker import EmbeddedBroker
from mqtt_bridge.topics import subscription_filters

GOAL_PINGS_PER_S = 30_000
GOAL_RATIO_TO_PAHO = 0.90
ROUNDS = ("broker", "paho", "paho311", "gmqtt", "bridge")
BRIDGE_CLIENT_ID = "bench-bridge"
PY_SPY_RATE_HZ = 200
LABELS = {
    "broker": "publisher alone (no subscriber)",
    "paho": "bare paho subscriber (MQTT 5)",
    "paho311": "bare paho subscriber (MQTT 3.1.1)",
    "gmqtt": "bare gmqtt subscriber",
    "bridge": "serenazgo bridge (full pipeline)",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--quick``: a short smoke run)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300_000, help="messages per round")
    ap.add_argument("--units", type=int, default=2000, help="registered units")
    ap.add_argument("--owntracks-share", type=float, default=0.1, help="share of units on OwnTracks")
    ap.add_argument("--seed", type=int, default=20240520)
    ap.add_argument("--rounds", nargs="+", choices=ROUNDS, default=list(ROUNDS))
    ap.add_argument("--repeat", type=int, default=1, help="passes over the rounds (median reported)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds a consumer may take per round")
    ap.add_argument(
        "--profile", type=Path, help="record the bridge with py-spy into this folder; print where time goes"
    )
    add_run_options(ap, argv, {"n": 20_000, "units": 500})
    args = ap.parse_args(argv)
    args.units = min(args.units, args.n)
    if args.timeout is None:
        args.timeout = max(120.0, args.n / 1000)
    return args


def publish_all(broker: EmbeddedBroker, messages: list[tuple[str, bytes]], timeout: float) -> dict[str, Any]:
    """Publish every message at full speed; the publisher's figures."""
    say(f"  publishing {len(messages):,} QoS 1 messages (pre-encoded, raw socket)")
    report = loadgen.publish("127.0.0.1", broker.port, messages, timeout=timeout)
    say(f"  publisher: {report.acked:,}/{report.sent:,} acknowledged in {report.seconds:.2f} s"
        f" = {report.rate:,.0f} msg/s")  # fmt: skip
    return {"sent": report.sent, "acked": report.acked, "seconds": report.seconds, "rate": report.rate}


def consumer_figures(result: dict[str, Any], expect: int) -> dict[str, Any]:
    """Rate = count / (last − first), plus whether every message arrived."""
    count = int(result.get("count", 0))
    span = float(result.get("last", 0.0)) - float(result.get("first", 0.0))
    rate = count / span if count > 1 and span > 0 else 0.0
    return {**result, "rate": rate, "seconds": span, "complete": count == expect}


def round_bare(kind: str, broker: EmbeddedBroker, messages: list[tuple[str, bytes]], work: Path,
               timeout: float) -> dict[str, Any]:  # fmt: skip
    """One bare subscriber round."""
    consumer = bare_consumer(kind, broker, len(messages), work, timeout)
    try:
        pub = publish_all(broker, messages, timeout)
        result = consumer_figures(consumer.wait_result(timeout), len(messages))
    finally:
        consumer.close()
    _say_consumer(kind, result, len(messages))
    return {"consumer": result, "publisher": pub}


def round_bridge(broker: EmbeddedBroker, url: str, messages: list[tuple[str, bytes]], keys_file: Path,
                 work: Path, timeout: float, profile: Path | None, index: int) -> dict[str, Any]:  # fmt: skip
    """One bridge round: fresh tables, fresh session, the bridge process, then the stored rows checked."""
    reset_ingest_tables(url)
    create_session(broker, BRIDGE_CLIENT_ID, subscription_filters(None))
    env = {
        "SERENAZGO_DATABASE_URL": url,
        "SERENAZGO_MQTT_URL": broker.url,
        "SERENAZGO_MQTT_CLIENT_ID": BRIDGE_CLIENT_ID,
    }
    argv = ["-m", "benchmarks._bridge_runner", "--keys", str(keys_file), "--timeout", str(timeout)]
    runner = ConsumerProcess("bridge", argv, work / "bridge.log", len(messages), env)
    spy: subprocess.Popen[bytes] | None = None
    try:
        runner.start()
        runner.wait_ready(120.0)
        if profile is not None:
            spy = start_py_spy(runner, profile / f"bridge-{index}.txt")
        pub = publish_all(broker, messages, timeout)
        result = consumer_figures(runner.wait_result(timeout + 30), len(messages))
    finally:
        runner.close()
        if spy is not None:
            spy.wait(60)
        drop_session(broker, BRIDGE_CLIENT_ID)
    if spy is not None and profile is not None:
        stages = profile_stages.breakdown(profile / f"bridge-{index}.txt", len(messages), PY_SPY_RATE_HZ)
        result["profile"] = {"file": str(profile / f"bridge-{index}.txt"), "stages": stages}
        say("  where the bridge's Python time went (py-spy --gil):\n" + profile_stages.show(stages))
    stored = stored_counts(url)
    result["stored_rows"] = stored
    result["rows_exact"] = stored["positions"] == len(messages)
    _say_consumer("bridge", result, len(messages))
    say(f"  stored: positions {stored['positions']:,} (expected {len(messages):,}: "
        f"{'exact' if result['rows_exact'] else 'MISMATCH'}), unit_latest {stored['unit_latest']:,}, "
        f"dead letters {stored['dead_letters']:,}; by flags {stored['positions_by_flags']}")  # fmt: skip
    return {"consumer": result, "publisher": pub}


def start_py_spy(runner: ConsumerProcess, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy on the bridge process until it exits; None if not installed.

    ``--gil``: only the thread holding the GIL is sampled, i.e. where the process's one
    core of Python goes (time waiting for PostgreSQL or the socket is not in it).
    """
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if runner.proc is None or not Path(exe).exists():
        say("  (py-spy not found: pip install py-spy; no profile)")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    say(f"  py-spy recording the bridge into {out}")
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(runner.proc.pid),
            "--rate",
            "200",
            "--threads",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _say_consumer(name: str, r: dict[str, Any], expect: int) -> None:
    missing = "" if r["complete"] else f"  INCOMPLETE: {expect - int(r['count']):,} missing"
    say(f"  {name}: {int(r['count']):,}/{expect:,} in {r['seconds']:.2f} s = {r['rate']:,.0f}/s{missing}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every round ``args.repeat`` times; return the results (also printed)."""
    say(f"generating {args.n:,} messages from {args.units:,} units (seed {args.seed}, "
        f"{args.owntracks_share:.0%} on OwnTracks)")  # fmt: skip
    stream = make_stream(args.n, args.units, args.seed, owntracks_share=args.owntracks_share)
    say(f"  {len(stream.messages):,} messages, {stream.payload_bytes / len(stream.messages):.0f} B average "
        f"payload, {stream.interval_s:.0f} s between a unit's fixes")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="serenazgo-bench-ingest-"))
    keys_file = work / "keys.txt"
    write_keys(keys_file, stream.keys)
    passes: list[dict[str, Any]] = []
    try:
        with temp_postgres() as pg, temp_broker() as broker:
            say(f"PostgreSQL {pg.bin_dir} on port {pg.port}; Mosquitto on port {broker.port}")
            url = fresh_database(pg, "bench_ingest")
            register_units(url, stream.units)
            say(f"registered {len(stream.units):,} units")
            for p in range(args.repeat):
                rounds: dict[str, Any] = {}
                for name in args.rounds:
                    say(f"pass {p + 1}/{args.repeat}, round {name}")
                    if name == "broker":
                        rounds[name] = {"publisher": publish_all(broker, stream.messages, args.timeout)}
                    elif name == "bridge":
                        rounds[name] = round_bridge(broker, url, stream.messages, keys_file, work,
                                                    args.timeout, args.profile, p)  # fmt: skip
                    else:
                        rounds[name] = round_bare(name, broker, stream.messages, work, args.timeout)
                passes.append(rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summarise(args, passes)


def _median(passes: list[dict[str, Any]], name: str, part: str) -> float:
    values = [p[name][part]["rate"] for p in passes if name in p and part in p[name]]
    return statistics.median(values) if values else float("nan")


def summarise(args: argparse.Namespace, passes: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over passes, ratios and goals; print the table."""
    n = args.n
    rows = []
    medians: dict[str, dict[str, float]] = {}
    for name in args.rounds:
        consumer = _median(passes, name, "consumer")
        publisher = _median(passes, name, "publisher")
        medians[name] = {"consumer": consumer, "publisher": publisher}
        notes = []
        if not all(p[name].get("consumer", {}).get("complete", True) for p in passes):
            notes.append("INCOMPLETE")
        if name == "bridge":
            exact = all(p[name]["consumer"]["rows_exact"] for p in passes)
            notes.append("rows exact" if exact else "ROWS MISMATCH")
            if args.profile is not None:
                notes.append("under py-spy")
        if consumer >= 0.95 * publisher:
            # It took messages as fast as they came: its own ceiling is higher than shown.
            notes.append("kept up with the publisher")
        rows.append([LABELS[name], consumer, publisher, ", ".join(notes)])
    rate = {name: medians.get(name, {}).get("consumer", math.nan) for name in ROUNDS}
    bridge = rate["bridge"]
    pahos = [r for r in (rate["paho"], rate["paho311"]) if not math.isnan(r)]
    best_paho = max(pahos) if pahos else math.nan  # the stricter bar of the two paho variants
    summary = {
        "bridge_pings_per_s": bridge,
        "paho_msgs_per_s": rate["paho"],
        "paho311_msgs_per_s": rate["paho311"],
        "gmqtt_msgs_per_s": rate["gmqtt"],
        "bridge_over_paho": _ratio(bridge, rate["paho"]),
        "bridge_over_paho311": _ratio(bridge, rate["paho311"]),
        "bridge_over_best_paho": _ratio(bridge, best_paho),
        "bridge_over_gmqtt": _ratio(bridge, rate["gmqtt"]),
        "bridge_over_goal": _ratio(bridge, GOAL_PINGS_PER_S),
        "meets_goal_30000": bridge >= GOAL_PINGS_PER_S,
        "meets_goal_90pct_paho": _ratio(bridge, best_paho) >= GOAL_RATIO_TO_PAHO,
    }
    print()
    print(f"ingest: {n:,} QoS 1 messages, {args.units:,} units, {args.repeat} pass(es), median rates")
    print(table(["round", "consumer msg/s", "publisher msg/s", "note"], rows))
    print()
    print(f"bridge / bare paho (MQTT 5)      {_show(summary['bridge_over_paho'])}")
    print(f"bridge / bare paho (MQTT 3.1.1)  {_show(summary['bridge_over_paho311'])}")
    met_ratio = "met" if summary["meets_goal_90pct_paho"] else "NOT met"
    met_rate = "met" if summary["meets_goal_30000"] else "NOT met"
    print(f"bridge / faster bare paho        {_show(summary['bridge_over_best_paho'])}   "
          f"(goal ≥ {GOAL_RATIO_TO_PAHO:.2f}: {met_ratio})")  # fmt: skip
    print(f"bridge / bare gmqtt              {_show(summary['bridge_over_gmqtt'])}")
    print(f"bridge vs goal                   {bridge:,.0f} / {GOAL_PINGS_PER_S:,} pings/s = "
          f"{_show(summary['bridge_over_goal'])}   ({met_rate})")  # fmt: skip
    return {
        "n": n,
        "units": args.units,
        "owntracks_share": args.owntracks_share,
        "seed": args.seed,
        "repeat": args.repeat,
        "medians": medians,
        "summary": summary,
        "passes": passes,
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def _show(ratio: float) -> str:
    return "-" if math.isnan(ratio) else f"{ratio:.2f}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write benchmarks/results/ingest.json."""
    args = parse_args(argv)
    data = run(args)
    path = write_results("ingest", data, args.results_dir, args.quick)
    say(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
