"""Smoke run of benchmarks.bench_nearest: runs end to end, every answer exact (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_nearest_quick_is_exact_and_reports_every_engine(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_nearest", "--quick", "--no-postgis", "--sizes", "3000",
         "--queries", "150", "--results-dir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads((tmp_path / "nearest.quick.json").read_text())
    (run,) = data["runs"]
    assert run["units"] == 3000 and run["queries"] == 150
    assert run["mismatches_vs_brute_force"] == 0
    assert set(run["latency"]) == {"ours", "engine", "numpy"}
    assert run["index_bytes_per_unit"] <= 200
    assert run["updates"]["raw_index_batched_pings_per_s"] > 0
