"""Open-loop HTTP load for bench_dispatch_http, in its own process (so the publisher does not share its GIL).

Requests are sent on a fixed schedule (``rate`` per second) whatever the
server's speed, and each latency is measured from the request's *scheduled*
time: a slow answer delays nobody's start, and queueing shows in the figures
(no coordinated omission). Query points are random in a box around a centre;
every third query filters by kind.

The client is a minimal HTTP/1.1 keep-alive client on asyncio streams (request
bytes prepared before the clock starts, responses read by Content-Length):
the benchmark shares two cores with the server, the broker, the database and
the MQTT load generator, and a general-purpose client (httpx: ~2 ms of CPU per
request here) became the bottleneck it was meant to measure. Prints one JSON
line: latencies (s) and error counts.

Run by the benchmark: ``python -m benchmarks._http_load URL RATE SECONDS SEED``.

Closed loop (bench_http_ingest: how many requests/s a server takes): ``python -m
benchmarks._http_load --closed URL PATHS_FILE CONNECTIONS SECONDS`` sends the
file's request paths (one a line, each used once, in order) over CONNECTIONS
keep-alive connections, each sending its next request as soon as the previous
one is answered, for SECONDS; prints the rate and the answers' status codes.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import sys
import time
from urllib.parse import urlencode, urlsplit

from benchmarks.fleet_stream import CENTRE, SPREAD_DEG

KIND_FILTERS = (None, "patrol_car", "patrol_car,foot")
# The API token the requests carry (a viewer's: reading the nearest units needs a user), sent to the
# floor server too so both rounds parse the same bytes.
TOKEN_ENV = "SERENAZGO_BENCH_TOKEN"
CONNECTIONS = 32


def requests_for(url: str, n: int, seed: int) -> list[bytes]:
    """``n`` GET requests (raw bytes) for random points around the centre."""
    parts = urlsplit(url)
    rng = random.Random(seed)
    token = os.environ.get(TOKEN_ENV)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    out = []
    for i in range(n):
        query: dict[str, str] = {
            "lat": f"{CENTRE[0] + rng.uniform(-SPREAD_DEG, SPREAD_DEG):.6f}",
            "lon": f"{CENTRE[1] + rng.uniform(-SPREAD_DEG, SPREAD_DEG):.6f}",
            "k": "5",
            "max_age_s": "900",
        }
        kinds = KIND_FILTERS[i % 3]
        if kinds:
            query["kinds"] = kinds
        out.append(
            f"GET {parts.path}?{urlencode(query)} HTTP/1.1\r\nHost: {parts.netloc}\r\n{auth}\r\n".encode(
                "ascii"
            )
        )
    return out


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status code and body of one response (Content-Length framing, as uvicorn sends JSON)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


class _Connection:
    """A keep-alive connection that reopens itself after a failed exchange."""

    def __init__(
        self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.host, self.port, self.reader, self.writer = host, port, reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        """Connect to ``host:port``."""
        return cls(host, port, *await asyncio.open_connection(host, port))

    async def exchange(self, request: bytes, failures: dict[str, int]) -> tuple[int, bytes] | None:
        """Send ``request``; its status and body, or None after a failure (counted in ``failures``)."""
        try:
            self.writer.write(request)
            return await _read_response(self.reader)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            return None

    def close(self) -> None:
        """Close the connection."""
        self.writer.close()


async def run(url: str, rate: float, seconds: float, seed: int) -> dict[str, object]:
    """Send ``rate × seconds`` GETs to ``url`` on schedule; return latencies and failures."""
    n = int(rate * seconds)
    requests = requests_for(url, n, seed)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = [float("nan")] * n
    failures: dict[str, int] = {}
    found = 0
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    async def worker() -> None:
        nonlocal found
        conn = await _Connection.open(host, port)
        try:
            while (item := await queue.get()) is not None:
                i, scheduled = item
                answer = await conn.exchange(requests[i], failures)
                if answer is None:
                    continue
                status, body = answer
                latencies[i] = time.perf_counter() - scheduled
                if status != 200:
                    failures[str(status)] = failures.get(str(status), 0) + 1
                elif b'"unit_id"' in body:
                    found += 1
        finally:
            conn.close()

    workers = [asyncio.create_task(worker()) for _ in range(CONNECTIONS)]
    await asyncio.sleep(0.2)  # connections open before the clock starts
    t0 = time.perf_counter()
    for i in range(n):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, scheduled))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return {"latencies_s": latencies, "failures": failures, "answered_with_units": found, "sent": n}


async def run_closed(url: str, paths: list[str], connections: int, seconds: float) -> dict[str, object]:
    """Send ``paths`` (once each, in order) over ``connections`` keep-alive connections for ``seconds``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = [f"GET {p} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode("ascii") for p in paths]
    statuses: dict[str, int] = {}
    failures: dict[str, int] = {}
    next_index = [0]
    stop_at = [math.inf]

    async def worker() -> None:
        conn = await _Connection.open(host, port)
        await started.wait()
        try:
            while time.perf_counter() < stop_at[0] and next_index[0] < len(requests):
                i = next_index[0]
                next_index[0] = i + 1
                answer = await conn.exchange(requests[i], failures)
                if answer is not None:
                    statuses[str(answer[0])] = statuses.get(str(answer[0]), 0) + 1
        finally:
            conn.close()

    started = asyncio.Event()
    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(0.2)  # connections open before the clock starts
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    started.set()
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - t0
    answered = sum(statuses.values())
    return {
        "answered": answered,
        "seconds": elapsed,
        "rate": answered / elapsed,
        "statuses": statuses,
        "failures": failures,
        "exhausted": next_index[0] >= len(requests),
    }


def main() -> None:
    """Run the load and print the result as one JSON line."""
    if sys.argv[1] == "--closed":
        url, paths_file, connections, seconds = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
        with open(paths_file) as f:
            paths = f.read().split()
        print(json.dumps(asyncio.run(run_closed(url, paths, connections, seconds))), flush=True)
        return
    url, rate, seconds, seed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(run(url, rate, seconds, seed))), flush=True)


if __name__ == "__main__":
    main()
