"""Open-loop HTTP load for bench_dispatch_http, in its own process (so the publisher does not share its GIL).

Requests are sent on a fixed schedule (``rate`` per second) whatever the
server's speed, and each latency is measured from the request's *scheduled*
time: a slow answer delays nobody's start, and queueing shows in the figures
(no coordinated omission). Query points are random in a box around a centre;
every third query filters by kind. Prints one JSON line: latencies (s) and
error counts.

Run by the benchmark: ``python -m benchmarks._http_load URL RATE SECONDS SEED``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import httpx

from benchmarks.fleet_stream import CENTRE, SPREAD_DEG

KIND_FILTERS = (None, "patrol_car", "patrol_car,foot")


async def run(url: str, rate: float, seconds: float, seed: int) -> dict[str, object]:
    """Send ``rate × seconds`` GETs to ``url`` on schedule; return latencies and failures."""
    rng = random.Random(seed)
    n = int(rate * seconds)
    params = []
    for i in range(n):
        p: dict[str, str] = {
            "lat": f"{CENTRE[0] + rng.uniform(-SPREAD_DEG, SPREAD_DEG):.6f}",
            "lon": f"{CENTRE[1] + rng.uniform(-SPREAD_DEG, SPREAD_DEG):.6f}",
            "k": "5",
            "max_age_s": "900",
        }
        kinds = KIND_FILTERS[i % 3]
        if kinds:
            p["kinds"] = kinds
        params.append(p)
    latencies: list[float] = [float("nan")] * n
    failures: dict[str, int] = {}
    found = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def one(i: int, scheduled: float) -> None:
            nonlocal found
            try:
                r = await client.get(url, params=params[i])
            except httpx.HTTPError as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                return
            latencies[i] = time.perf_counter() - scheduled
            if r.status_code != 200:
                failures[str(r.status_code)] = failures.get(str(r.status_code), 0) + 1
            else:
                found += bool(r.json().get("units"))

        tasks = []
        t0 = time.perf_counter() + 0.2
        for i in range(n):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
    return {"latencies_s": latencies, "failures": failures, "answered_with_units": found, "sent": n}


def main() -> None:
    """Run the load and print the result as one JSON line."""
    url, rate, seconds, seed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(run(url, rate, seconds, seed))), flush=True)


if __name__ == "__main__":
    main()
