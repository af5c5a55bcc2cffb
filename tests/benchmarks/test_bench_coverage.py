"""Smoke run of benchmarks.bench_coverage: end to end, incremental equals full, ratios agree (no timing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_coverage_quick_agrees_with_shapely_and_stays_exact(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_coverage", "--quick", "--units", "1500", "--moves", "100",
         "--results-dir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads((tmp_path / "coverage.quick.json").read_text())
    lima, miraflores = data["runs"]
    assert (lima["scenario"], lima["units"], lima["res"]) == ("lima", 1500, 9)
    assert (miraflores["scenario"], miraflores["res"]) == ("miraflores", 10)
    for run in data["runs"]:
        assert run["incremental_equals_full"] is True
        assert 0.05 < run["covered_ratio"] < 0.99
        assert abs(run["ratio_difference"]) <= 0.01
