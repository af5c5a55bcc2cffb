"""Where the bridge's Python time goes, per pipeline stage, from a py-spy ``--gil --format raw`` profile.

The bridge is one process whose threads share one GIL, so the time that holds
the GIL is the budget: at 30,000 pings/s it is 33 µs per message, everything
included. Each sampled stack is charged to the stage of its innermost frame
that belongs to one (a ``dataclasses.replace`` called by the LiveFleet is the
LiveFleet's), and stages are shown as a share of the GIL time and as µs per
message.

Run alone: ``.venv/bin/python -m benchmarks.profile_stages PROFILE.txt --messages N [--rate 200]``
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from benchmarks.report import table

# (stage, substrings of a frame), in the order they are tried on each frame.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("benchmark's fleet subscriber", ("benchmarks/_bridge_runner.py",)),
    ("PUBACK (ack after commit)", ("ack_many", "AckClient.ack ")),
    ("socket read + MQTT decode", ("mqtt_bridge/ackclient.py", "paho/")),
    ("JSON decode (codecs)", ("mqtt_bridge/codecs/",)),
    ("unit lookup (registry)", ("tracker/registry.py",)),
    ("GPS filters", ("tracker/filters.py",)),
    ("pipeline loop", ("mqtt_bridge/pipeline.py",)),
    ("store: rows, COPY, commit", ("tracker/store/", "psycopg")),
    ("LiveFleet update", ("tracker/fleet.py",)),
    ("metrics", ("tracker/metrics.py", "prometheus_client")),
    ("bridge queues and threads", ("mqtt_bridge/bridge.py",)),
]
OTHER = "other"


def stage_of(frames: list[str]) -> str:
    """The stage of a stack (root first): that of its innermost frame belonging to one."""
    for frame in reversed(frames):
        for stage, marks in STAGES:
            if any(m in frame for m in marks):
                return stage
    return OTHER


def stage_samples(path: Path) -> Counter[str]:
    """Samples per stage in a py-spy raw (collapsed stacks) file."""
    counts: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        counts[stage_of(stack.split(";"))] += int(n)
    return counts


def breakdown(path: Path, messages: int, rate_hz: int) -> list[dict[str, float | str]]:
    """Per stage: samples, share of the GIL time and µs of GIL time per message."""
    counts = stage_samples(path)
    total = sum(counts.values())
    out: list[dict[str, float | str]] = []
    for stage, n in counts.most_common():
        out.append(
            {
                "stage": stage,
                "samples": n,
                "share": n / total if total else 0.0,
                "us_per_message": n / rate_hz / messages * 1e6 if messages else 0.0,
            }
        )
    return out


def show(rows: list[dict[str, float | str]]) -> str:
    """The breakdown as a table, with the total."""
    body = [
        [r["stage"], f"{100 * float(r['share']):.1f} %", f"{float(r['us_per_message']):.1f}"] for r in rows
    ]
    total = sum(float(r["us_per_message"]) for r in rows)
    body.append(["total (GIL held)", "100.0 %", f"{total:.1f}"])
    return table(["stage", "share of GIL time", "µs/message"], body)


def main(argv: list[str] | None = None) -> int:
    """Print the stage breakdown of one profile."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile", type=Path)
    ap.add_argument("--messages", type=int, required=True, help="messages the profiled run handled")
    ap.add_argument("--rate", type=int, default=200, help="py-spy sampling rate (Hz)")
    args = ap.parse_args(argv)
    print(show(breakdown(args.profile, args.messages, args.rate)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
