"""Smoke runs of the ingest benchmarks: they run end to end and count exactly (no timing asserted).

Each runs as the documented command (``python -m benchmarks.bench_…``), starts
its own PostgreSQL and Mosquitto on free ports, as the benchmarks always do,
and writes its JSON into the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
N = 3000
UNITS = 300


def run_benchmark(module: str, *args: str) -> None:
    """Run ``python -m <module> <args>`` from the repository; fail with its output if it fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"{module} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )


def results(folder: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / f"{name}.quick.json").read_text())
    return data


def test_bench_ingest_quick_counts_every_message(tmp_path: Path) -> None:
    run_benchmark(
        "benchmarks.bench_ingest",
        "--quick",
        "--n",
        str(N),
        "--units",
        str(UNITS),
        "--results-dir",
        str(tmp_path),
    )
    data = results(tmp_path, "ingest")
    assert data["n"] == N
    (rounds,) = data["passes"]
    assert set(rounds) == {"broker", "paho", "paho311", "gmqtt", "bridge"}
    for name, r in rounds.items():
        assert r["publisher"]["sent"] == N, name
        assert r["publisher"]["acked"] == N, name  # the broker acknowledged every publish
    for name in ("paho", "paho311", "gmqtt", "bridge"):
        assert rounds[name]["consumer"]["count"] == N, name  # nobody lost or double-counted one
        assert rounds[name]["consumer"]["complete"] is True, name
    bridge = rounds["bridge"]["consumer"]
    assert bridge["stored"] == N
    assert bridge["dead_letters"] == 0
    assert bridge["stored_rows"]["positions"] == N  # counted in the database itself
    assert bridge["stored_rows"]["unit_latest"] == UNITS
    assert bridge["stored_rows"]["dead_letters"] == 0
    assert sum(bridge["stored_rows"]["positions_by_flags"].values()) == N
    assert bridge["rows_exact"] is True
    # The stream's standing units make the jitter filter fire: the filters did real work.
    assert bridge["stored_rows"]["positions_by_flags"].get("32", 0) > 0
    assert set(data["summary"]) >= {"bridge_pings_per_s", "paho_msgs_per_s", "bridge_over_paho"}


def test_bench_latency_quick_measures_every_message(tmp_path: Path) -> None:
    run_benchmark(
        "benchmarks.bench_latency", "--quick", "--rate", "1000", "--seconds", "3", "--units", str(UNITS),
        "--results-dir", str(tmp_path),
    )  # fmt: skip
    data = results(tmp_path, "latency")
    n = data["n"]
    assert n == 3000
    paho, bridge = data["rounds"]["paho"], data["rounds"]["bridge"]
    for r in (paho, bridge):
        assert r["measured"] == n
        assert r["missing"] == 0
        # Received after sent: a wrong message-to-send-time match would give negative latencies.
        assert 0 <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert bridge["visible"] == n
    assert bridge["stored_rows"]["positions"] == n
    assert bridge["rows_exact"] is True


def test_bench_http_ingest_quick_stores_every_200(tmp_path: Path) -> None:
    run_benchmark(
        "benchmarks.bench_http_ingest",
        "--quick",
        "--seconds",
        "1",
        "--devices",
        "20",
        "--results-dir",
        str(tmp_path),
    )
    data = results(tmp_path, "http_ingest")
    bare, ingest = data["rounds"]["bare"], data["rounds"]["ingest"]
    assert set(bare["statuses"]) == {"200"} and set(ingest["statuses"]) == {"200"}  # tokens accepted
    assert ingest["answered"] > 0 and not ingest["failures"]
    assert ingest["warm_up_200"] == 20  # each device's first fix, before the rounds
    # Each 200 is a stored row:
    assert ingest["stored_positions"] == ingest["statuses"]["200"] + ingest["warm_up_200"]
    assert ingest["rows_exact"] is True
    assert data["ratio_vs_bare"] == ingest["rate"] / bare["rate"]
