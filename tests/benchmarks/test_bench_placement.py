"""Smoke run of benchmarks.bench_placement: runs end to end; HiGHS proves its optimum (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_placement_quick_reports_gap_to_the_proven_optimum(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_placement", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads((tmp_path / "placement.quick.json").read_text())
    (run,) = data["runs"]
    assert run["cells"] == run["sites"] > 50  # Miraflores at H3 resolution 9
    assert run["highs"]["proven_optimal"] is True
    assert 0.0 <= run["greedy_interchange"]["gap"] <= run["greedy"]["gap"] + 1e-12
    (mu,) = data["move_up"]
    assert mu["before"] <= mu["greedy_interchange"]["after"] <= mu["highs"]["after"] + 1e-12
    assert mu["highs"]["proven_optimal"] is True
    city = data["city"]
    assert city["cells"] > 1000 and city["covering_pairs"] > 0
    for r in city["runs"]:
        # Interchange never loses what greedy found; the bound and (when run) HiGHS are never beaten.
        assert r["covered_ratio"] >= 1.0 - 1e-12
        assert r["greedy_interchange"]["coverage"] <= r["bound"]["coverage"] + 1e-9
        if "highs" in r:
            assert (
                r["greedy_interchange"]["coverage"]
                <= r["highs"]["coverage"] + 1e-9
                <= r["bound"]["coverage"] + 2e-9
            )
    assert city["move_up"]["before"] <= city["move_up"]["after"]
