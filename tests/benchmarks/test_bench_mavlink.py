"""Smoke run of benchmarks.bench_mavlink: end to end, with exact counts (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_mavlink_quick_runs_and_counts_exactly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_mavlink", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads((tmp_path / "mavlink.quick.json").read_text())
    # 2 aircraft x 30 s: 150 steps each, a position every step and five 1 Hz messages every fifth,
    # a HOME_POSITION every 10 s (3).
    assert data["frames"] == 2 * (150 + 30 * 5 + 3)
    # Published: positions 0.6 s apart (a 5 Hz stream, a 2 Hz limit) and drone state once a second.
    assert data["planned_messages"] == 2 * (50 + 30)
    assert data["steps"][0]["step"] == "pymavlink parse_buffer (peer)"
