"""Micro-benchmark of MAVLink decoding: drones/mavlink.py beside pymavlink's bare parser on the same bytes.

The stream is what :mod:`drones.mavlink_sim` aircraft send (one datagram per
0.2 s step: GLOBAL_POSITION_INT, and once a second HEARTBEAT, SYSTEM_TIME,
SYS_STATUS, BATTERY_STATUS, GPS_RAW_INT). The peer is ``MAVLink.parse_buffer``
alone, the floor of any decoder built on pymavlink; the figures are per frame.
Run: ``.venv/bin/python -m benchmarks.bench_mavlink [--aircraft 8] [--seconds 600] [--repeat 5]``.
A ground station link carries tens of frames per second per aircraft; one core
decoding tens of thousands per second leaves the gateway idle.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from benchmarks.report import add_run_options, write_results
from drones.mavlink import MavlinkDecoder, MavlinkUpdate
from drones.mavlink_gateway import PublishPlan
from drones.mavlink_sim import STEP_S, SimAircraft, SimConfig

BOOT = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)


def stream(aircraft: int, seconds: float) -> tuple[list[tuple[int, bytes]], int]:
    """Datagrams ``(sysid, bytes)`` of ``aircraft`` aircraft over ``seconds``; and the frame count."""
    sims = [SimAircraft(SimConfig(sysid=i + 1), BOOT) for i in range(aircraft)]
    out: list[tuple[int, bytes]] = []
    frames = 0
    for _ in range(round(seconds / STEP_S)):
        for sim in sims:
            step = sim.step(STEP_S)
            frames += len(step)
            out.append((sim.config.sysid, b"".join(step)))
    return out, frames


def best_of(repeat: int, frames: int, body: Callable[[], None]) -> float:
    """Best wall time per frame over ``repeat`` runs of ``body``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        body()
        best = min(best, (time.perf_counter() - t0) / frames)
    return best


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print µs per frame with the ratio to pymavlink's bare parse."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--aircraft", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--repeat", type=int, default=5)
    add_run_options(parser, argv, {"aircraft": 2, "seconds": 30.0, "repeat": 1})
    args = parser.parse_args(argv)
    datagrams, frames = stream(args.aircraft, args.seconds)
    arrivals = [BOOT + timedelta(seconds=i * STEP_S / args.aircraft) for i in range(len(datagrams))]

    def bare_parse() -> None:
        parser = mavlink2.MAVLink(None)
        parser.robust_parsing = True
        for _, data in datagrams:
            parser.parse_buffer(data)

    def decode() -> None:
        decoder = MavlinkDecoder()
        for (sysid, data), arrival in zip(datagrams, arrivals, strict=True):
            decoder.feed(data, arrival, stream=sysid)

    published = [0]

    def decode_and_plan() -> None:
        decoder = MavlinkDecoder()
        plan = PublishPlan({})
        count = 0
        for (sysid, data), arrival in zip(datagrams, arrivals, strict=True):
            for result in decoder.feed(data, arrival, stream=sysid):
                if isinstance(result, MavlinkUpdate):
                    count += len(plan.messages(result, decoder.systems[result.sysid]))
        published[0] = count

    floor = best_of(args.repeat, frames, bare_parse)
    dec = best_of(args.repeat, frames, decode)
    gateway = best_of(args.repeat, frames, decode_and_plan)
    rows = [
        ("pymavlink parse_buffer (peer)", floor),
        ("MavlinkDecoder.feed", dec),
        ("feed + PublishPlan (JSON out)", gateway),
    ]
    print(f"{args.aircraft} aircraft × {args.seconds:g} s: {len(datagrams)} datagrams, {frames} frames, "
          f"best of {args.repeat}; {published[0]} MQTT messages planned")  # fmt: skip
    print(f"{'step':34} {'µs/frame':>9} {'× peer':>7} {'frames/s':>10}")
    for name, per in rows:
        print(f"{name:34} {per * 1e6:9.2f} {per / floor:7.2f} {1 / per:10,.0f}")
    steps = [
        {"step": name, "us_per_frame": per * 1e6, "x_peer": per / floor, "frames_per_s": 1 / per}
        for name, per in rows
    ]
    path = write_results(
        "mavlink",
        {"aircraft": args.aircraft, "seconds": args.seconds, "frames": frames, "repeat": args.repeat,
         "planned_messages": published[0], "steps": steps},
        args.results_dir, args.quick,
    )  # fmt: skip
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
