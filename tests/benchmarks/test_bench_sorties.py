"""Smoke run of benchmarks.bench_sorties: plans are valid and within 10 % of exact (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_sorties_quick_plans_every_gap_and_stays_near_exact(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_sorties", "--quick", "--instances", "2", "--max-n", "7",
         "--results-dir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads((tmp_path / "sorties.quick.json").read_text())
    open_sky, zones = data["runs"]
    assert open_sky["valid"] and zones["valid"]
    assert open_sky["covered"] == open_sky["gap_cells"] > 100 and open_sky["unreachable"] == 0
    assert zones["covered"] + zones["unreachable"] == zones["gap_cells"] and zones["vias"] > 0
    for row in data["quality"]:
        assert 0.995 <= row["one_sortie_ratio_max"] <= 1.10
        assert 0.995 <= row["multi_sortie_ratio_max"] <= 1.10
