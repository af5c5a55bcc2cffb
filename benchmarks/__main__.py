"""``python -m benchmarks``: every benchmark in sequence, each in its own process.

Order: codecs, nearest, writer, storage size, ingest, latency, dispatch_http, http_ingest, placement,
coverage, mavlink, sorties, console. Each module also runs alone (``python -m benchmarks.bench_ingest``);
its results land in ``benchmarks/results/<name>.json`` (``<name>.quick.json`` with ``--quick``).
A failing benchmark does not stop the others; the exit status says whether all
of them ran.

Run: ``.venv/bin/python -m benchmarks [--quick] [--only ingest latency] [--results-dir DIR]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = {
    "codecs": "benchmarks.bench_codecs",
    "nearest": "benchmarks.bench_nearest",
    "writer": "benchmarks.bench_writer",
    "storage_size": "benchmarks.bench_storage_size",
    "ingest": "benchmarks.bench_ingest",
    "latency": "benchmarks.bench_latency",
    "dispatch_http": "benchmarks.bench_dispatch_http",
    "http_ingest": "benchmarks.bench_http_ingest",
    "placement": "benchmarks.bench_placement",
    "coverage": "benchmarks.bench_coverage",
    "mavlink": "benchmarks.bench_mavlink",
    "sorties": "benchmarks.bench_sorties",
    "console": "benchmarks.bench_console",
}
REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks one after the other; 0 when every one of them finished."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke run of each benchmark")
    ap.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    ap.add_argument("--results-dir", type=Path, default=None, help="default benchmarks/results")
    args = ap.parse_args(argv)
    extra = (["--quick"] if args.quick else []) + (
        ["--results-dir", str(args.results_dir)] if args.results_dir else []
    )
    outcome: list[tuple[str, int, float]] = []
    for name in args.only:
        print(f"\n=== {name} ({BENCHMARKS[name]}{' --quick' if args.quick else ''}) ===", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", BENCHMARKS[name], *extra], cwd=REPO)
        outcome.append((name, code, time.monotonic() - started))
    print("\n=== summary ===")
    for name, code, seconds in outcome:
        print(f"{name:14} {'ok' if code == 0 else f'FAILED (exit {code})':18} {seconds:6.0f} s")
    return 0 if all(code == 0 for _, code, _ in outcome) else 1


if __name__ == "__main__":
    sys.exit(main())
