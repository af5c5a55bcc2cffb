"""The bridge as the ingest benchmarks run it: one process, built exactly as ``run_bridge`` builds it.

``python -m benchmarks._bridge_runner --keys FILE [--times-out FILE]`` with
``SERENAZGO_DATABASE_URL``, ``SERENAZGO_MQTT_URL`` (and any other ``SERENAZGO_*``)
in the environment: migrations, ``load_state``, ``Bridge(settings, …)``, as in
:func:`mqtt_bridge.bridge.run_bridge`. A LiveFleet subscriber (like the API's
WebSocket feed) counts the benchmark's pings as they become visible there:
``--keys`` lists every message's ``(unit_id, ts ms)`` in publish order, and a
ping is visible once its unit's fix in the fleet is at least that recent (a
batch may carry several pings of one unit; the fleet shows the newest).

Speaks the consumer protocol of :mod:`benchmarks.ingest_rig`: ``READY`` once
connected (the benchmark created the persistent session beforehand, so nothing
published after that can miss the bridge), ``PROGRESS <visible> …`` every second,
then one JSON line: ``count`` (pings visible), ``first`` (time.time() when the first
message was received), ``last`` (when the last ping became visible), and the
bridge's counters. ``--times-out`` writes, per message in publish order, the
time.time() at which it became visible (float64 array; nan if never).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
import time
from array import array
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.fleet_stream import Key, read_keys
from mqtt_bridge.bridge import Bridge, load_state
from tracker.config import Settings
from tracker.fleet import FleetChange
from tracker.store.migrations import migrate

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
HALF_MS = timedelta(microseconds=500)


class VisibleCounter:
    """Counts the expected pings visible in the LiveFleet (a fleet subscriber; runs on the writer thread)."""

    def __init__(self, keys: list[Key], record_times: bool) -> None:
        self.expect = len(keys)
        by_unit: dict[str, tuple[list[int], list[int]]] = {}
        for index, (unit, ts) in enumerate(keys):
            stamps, indices = by_unit.setdefault(unit, ([], []))
            stamps.append(ts)
            indices.append(index)
        self._by_unit = by_unit
        self._next = dict.fromkeys(by_unit, 0)
        self.count = 0
        self.last = 0.0
        self.done = threading.Event()
        self.times = array("d", [math.nan]) * len(keys) if record_times else None

    def on_changes(self, changes: list[FleetChange]) -> None:
        """Advance each changed unit's pointer up to the ts of the fix the fleet now shows."""
        now = time.time()
        times = self.times
        for change in changes:
            if change.kind != "position" or change.state.fix is None:
                continue
            entry = self._by_unit.get(change.unit_id)
            if entry is None:
                continue
            stamps, indices = entry
            shown = (change.state.fix.ts - EPOCH + HALF_MS) // ONE_MS
            i = start = self._next[change.unit_id]
            while i < len(stamps) and stamps[i] <= shown:
                if times is not None:
                    times[indices[i]] = now
                i += 1
            if i != start:
                self._next[change.unit_id] = i
                self.count += i - start
        if self.count >= self.expect and not self.done.is_set():
            self.last = now
            self.done.set()


def main(argv: list[str] | None = None) -> int:
    """Run the bridge until every expected ping is visible (or the timeout), print the JSON result."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=Path, required=True, help="expected (unit_id, ts ms) per message")
    ap.add_argument("--times-out", type=Path, help="write per-message visible times here (float64)")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # As run_bridge does it (mqtt_bridge/bridge.py).
    settings = Settings()
    conninfo, target = settings.database_url, settings.mqtt
    if not conninfo or target is None:
        print("SERENAZGO_DATABASE_URL and SERENAZGO_MQTT_URL are needed", file=sys.stderr)
        return 2
    migrate(conninfo)
    registry, fleet = load_state(conninfo, settings)
    counter = VisibleCounter(read_keys(args.keys), args.times_out is not None)
    fleet.subscribe(counter.on_changes)
    bridge = Bridge(settings, target, conninfo, registry, fleet)
    bridge.start()
    if not bridge.wait_connected(60.0):
        print(f"not connected: {bridge.stats().last_error}", file=sys.stderr)
        bridge.stop()
        return 1
    print("READY", flush=True)

    deadline = time.monotonic() + args.timeout
    first = 0.0
    # The first receipt, to the millisecond, from the bridge's own counter (no hook into it).
    while bridge.stats().received == 0 and time.monotonic() < deadline:
        time.sleep(0.0005)
    first = time.time()
    next_progress = time.monotonic() + 1.0
    while not counter.done.wait(max(0.0, min(next_progress, deadline) - time.monotonic())):
        if time.monotonic() >= deadline:
            break
        s = bridge.stats()
        print(f"PROGRESS {counter.count} received={s.received:,} stored={s.stored:,} "
              f"queued={s.queued:,} batches={s.batches:,}", flush=True)  # fmt: skip
        next_progress += 1.0
    flushed = bridge.stop()
    stats = bridge.stats()
    if counter.times is not None and args.times_out is not None:
        args.times_out.write_bytes(counter.times.tobytes())
    result = {
        "count": counter.count,
        "first": first,
        "last": counter.last,
        "received": stats.received,
        "stored": stats.stored,
        "duplicates": stats.duplicates,
        "dead_letters": stats.dead_letters,
        "ignored": stats.ignored,
        "batches": stats.batches,
        "acked": stats.acked,
        "flushed": flushed,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
