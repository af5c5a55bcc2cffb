"""Output shared by the benchmarks: timestamped progress lines, a plain table, the JSON results file."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_T0 = time.monotonic()


def say(text: str) -> None:
    """Print a progress line prefixed with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {text}", flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _cell(v: object) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def machine() -> dict[str, Any]:
    """What the figures were measured on (they mean little without it)."""
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False, cwd=RESULTS_DIR.parent, timeout=10,
        ).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": _cpu_count(),
        "loadavg_at_end": load,
        "commit": commit,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def add_run_options(parser: argparse.ArgumentParser, argv: list[str] | None, quick: dict[str, Any]) -> None:
    """Add ``--quick`` (a short smoke run: ``quick`` become the defaults) and ``--results-dir``."""
    parser.add_argument("--quick", action="store_true", help=f"a short smoke run ({_show(quick)})")
    parser.add_argument("--results-dir", type=Path, default=None, help="default benchmarks/results")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(**quick)  # options given explicitly still win


def _show(values: dict[str, Any]) -> str:
    return ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())


def write_results(
    name: str, data: dict[str, Any], results_dir: Path | None = None, quick: bool = False
) -> Path:
    """Write ``<results_dir>/<name>.json`` (default benchmarks/results/) with the machine details.

    A quick run writes ``<name>.quick.json``, so that it never replaces real figures.
    """
    folder = results_dir or RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{'.quick' if quick else ''}.json"
    body = _finite({"benchmark": name, **data, "machine": machine()})
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path


def _finite(value: Any) -> Any:
    """NaN (a figure that could not be measured) as JSON null: NaN is not JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of already sorted values; nan when empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.0
    >>> percentile([1.0, 2.0, 3.0, 4.0], 100)
    4.0
    """
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]
