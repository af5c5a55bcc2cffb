"""Micro-benchmark of the pure ingest path: decode (native, OwnTracks) and the filter pipeline.

Each figure stands beside ``orjson.loads`` of the same payloads, the physical floor
of any JSON codec here, with the ratio. Fixed seed, Miraflores coordinates, 200
units. Run: ``.venv/bin/python -m benchmarks.bench_codecs [--n 50000] [--repeat 5]``.
The pipeline target is 30,000 msgs/s in one process, i.e. about 33 µs per message
for everything (decode, filter, batching, storage, acknowledgement).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import orjson

from benchmarks.report import add_run_options, write_results
from mqtt_bridge.codecs import decode_message
from tracker.config import FilterSettings
from tracker.filters import Filtered, FilterPipeline
from tracker.model import Decoded, Ping, UnitKind

NOW = datetime(2024, 5, 20, 15, 0, 0, tzinfo=UTC)
UNITS = 200


def _tracks(n: int, rng: random.Random, dt_s: float) -> list[tuple[int, float, float, float]]:
    """``n`` fixes (unit, seconds before NOW, lat, lon) of ``UNITS`` units driving around Miraflores.

    Round-robin over units, one fix per unit every ``dt_s`` seconds, moving 0-15 m/s
    with gentle turns: what the filters see from a real fleet (mostly clean fixes).
    """
    rounds = n // UNITS + 1
    state = [
        [-12.12 + rng.uniform(-0.02, 0.02), -77.03 + rng.uniform(-0.02, 0.02), rng.uniform(0, 2 * math.pi)]
        for _ in range(UNITS)
    ]
    out = []
    for i in range(n):
        unit = i % UNITS
        lat, lon, heading = state[unit]
        step = rng.uniform(0, 15) * dt_s
        heading += rng.uniform(-0.3, 0.3)
        lat += step * math.cos(heading) / 110_574.0
        lon += step * math.sin(heading) / 108_900.0
        state[unit] = [lat, lon, heading]
        out.append((unit, (rounds - i // UNITS) * dt_s, lat, lon))
    return out


def native_messages(n: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """``n`` native position messages (epoch-ms timestamps) from ``UNITS`` moving units."""
    out = []
    now_ms = int(NOW.timestamp() * 1000)
    for unit, ago, lat, lon in _tracks(n, rng, dt_s=5.0):
        payload = {
            "ts": now_ms - int(ago * 1000),
            "lat": lat,
            "lon": lon,
            "alt": round(rng.uniform(60, 100), 1),
            "speed": round(rng.uniform(0, 15), 2),
            "heading": round(rng.uniform(0, 359), 1),
            "accuracy": round(rng.uniform(3, 30), 1),
            "battery": rng.randint(5, 100),
        }
        out.append((f"serenazgo/units/unit-{unit:04d}/position", orjson.dumps(payload)))
    return out


def owntracks_messages(n: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """``n`` OwnTracks location messages shaped like the iOS app's (owntracks/ios#523)."""
    out = []
    now_s = int(NOW.timestamp())
    for unit, ago, lat, lon in _tracks(n, rng, dt_s=5.0):
        payload = {
            "_type": "location",
            "acc": rng.randint(3, 65),
            "alt": rng.randint(60, 100),
            "batt": rng.randint(5, 100),
            "conn": "m",
            "lat": lat,
            "lon": lon,
            "t": "u",
            "tid": "s1",
            "tst": now_s - int(ago),
            "vac": 10,
            "vel": rng.randint(0, 50),
            "cog": rng.randint(0, 359),
        }
        out.append((f"owntracks/sereno{unit}/phone", orjson.dumps(payload)))
    return out


def best_of(repeat: int, body: Callable[[], int]) -> float:
    """Best wall time per item over ``repeat`` runs of ``body`` (which returns the item count)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        count = body()
        elapsed = time.perf_counter() - t0
        best = min(best, elapsed / count)
    return best


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print µs per message with the ratio to orjson.loads."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    add_run_options(parser, argv, {"n": 5000, "repeat": 1})
    args = parser.parse_args(argv)
    rng = random.Random(20240520)
    native = native_messages(args.n, rng)
    owntracks = owntracks_messages(args.n, rng)

    def loads_only(msgs: list[tuple[str, bytes]]) -> Callable[[], int]:
        def body() -> int:
            loads = orjson.loads
            for _, payload in msgs:
                loads(payload)
            return len(msgs)

        return body

    def decode_all(msgs: list[tuple[str, bytes]]) -> Callable[[], int]:
        def body() -> int:
            for topic, payload in msgs:
                decode_message(topic, payload, NOW)
            return len(msgs)

        return body

    # Decoded pings for the filter run; native pings carry their unit id already.
    pings: list[Ping] = []
    for topic, payload in native:
        result = decode_message(topic, payload, NOW)
        assert isinstance(result, Decoded)
        pings.extend(result.pings)

    fired: Counter[str] = Counter()

    def filter_per_ping(repeat: int) -> float:
        best = float("inf")
        for _ in range(repeat):
            pipeline = FilterPipeline(FilterSettings())  # fresh state, or every rerun is LATE
            ctx = pipeline.context(NOW)
            batch = [replace(p) for p in pings]  # the pipeline flags pings in place; not timed
            process = pipeline.process
            t0 = time.perf_counter()
            for p in batch:
                process(p, UnitKind.PATROL_CAR, ctx)
            best = min(best, (time.perf_counter() - t0) / len(batch))
        # What the timed runs went through (outside the timing): mostly clean fixes.
        pipeline = FilterPipeline(FilterSettings())
        for p in [replace(p) for p in pings]:
            out = pipeline.process(p, UnitKind.PATROL_CAR, NOW)
            fired.update(out.fired if isinstance(out, Filtered) else [out.reason])
        return best

    floor_native = best_of(args.repeat, loads_only(native))
    floor_ot = best_of(args.repeat, loads_only(owntracks))
    dec_native = best_of(args.repeat, decode_all(native))
    dec_ot = best_of(args.repeat, decode_all(owntracks))
    filt = filter_per_ping(args.repeat)

    rows = [
        ("orjson.loads, native payloads (floor)", floor_native, floor_native),
        ("decode_message, native", dec_native, floor_native),
        ("orjson.loads, OwnTracks payloads (floor)", floor_ot, floor_ot),
        ("decode_message, OwnTracks", dec_ot, floor_ot),
        ("FilterPipeline.process (patrol car)", filt, floor_native),
        ("native decode + filter", dec_native + filt, floor_native),
    ]
    print(f"{args.n} messages, {UNITS} units, best of {args.repeat}")
    print(f"{'step':44} {'µs/msg':>8} {'× floor':>8} {'msgs/s':>10}")
    for name, per, floor in rows:
        print(f"{name:44} {per * 1e6:8.2f} {per / floor:8.1f} {1 / per:10,.0f}")
    shown = ", ".join(f"{k} {v}" for k, v in fired.most_common()) or "none"
    print(f"filter steps fired over {len(pings)} pings: {shown}")
    steps = [
        {"step": name, "us_per_msg": per * 1e6, "x_floor": per / floor, "msgs_per_s": 1 / per}
        for name, per, floor in rows
    ]
    path = write_results(
        "codecs", {"n": args.n, "units": UNITS, "repeat": args.repeat, "steps": steps, "fired": dict(fired)},
        args.results_dir, args.quick,
    )  # fmt: skip
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
