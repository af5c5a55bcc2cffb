"""Console latency: from a ping's publish to the unit's marker moving in Chromium, at 200 units.

Setup: our own Mosquitto and PostgreSQL (temporary, 127.0.0.1), ``--units`` registered patrol
cars, the real service (``serenazgo up --no-demo`` as a subprocess: bridge, LiveFleet, live feed,
API and console in one process, as deployed), and Debian's Chromium (``/usr/bin/chromium``,
headless, driven by Playwright) on the console. Every unit first reports once (the markers
appear), then the load generator (:mod:`benchmarks.loadgen`) publishes one fix per unit every
``--interval`` seconds (200 units every 5 s = 40 pings/s) for ``--seconds``, paced one QoS 1
PUBLISH at a time and stamped with ``time.time()`` as it is written to the socket.

Each fix has its own latitude, so each arrival is matched to its publish:

The console is used as an operator would: the page logs in through its login form as a user the
benchmark adds to its database (a viewer: it only watches), and the feed client below presents the
same session cookie (the live feed refuses a handshake without one).

``feed``     a bare WebSocket client (``websockets``, its own thread) on ``/api/v1/ws`` stamps
             each ``position`` frame as it arrives: publish → stored → LiveFleet → feed, the
             floor the browser cannot beat;
``browser``  the page wraps Leaflet's ``Marker.setLatLng`` and stamps the next animation frame
             after the console moved a marker (``performance.timeOrigin + performance.now()``,
             the same wall clock): publish → … → feed → parsed → marker moved → frame.

Printed: p50/p90/p99/max of both, and browser ÷ feed (the console's own share). Results:
``benchmarks/results/console.json``.

Run: ``.venv/bin/python -m benchmarks.bench_console [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import websockets

from api.auth import SESSION_COOKIE
from benchmarks import loadgen
from benchmarks.bench_dispatch_http import free_port, process, wait_http
from benchmarks.bench_latency import PERCENTILES, latency_figures
from benchmarks.fleet_stream import register_units
from benchmarks.ingest_rig import temp_broker
from benchmarks.pg_server import fresh_database, temp_postgres
from benchmarks.report import add_run_options, say, table, write_results
from tracker.model import Unit, UnitKind
from tracker.store.users import add_user_sync

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
CENTRE = (-12.1211, -77.0297)  # Miraflores
STEP_DEG = 0.00002  # ~2 m: each fix of a unit gets its own latitude
USER = "bench-console"  # the benchmark's own user in its own, fresh database
PASSWORD = "bench-console-password"  # of a throwaway database

# Stamps the frame after the console moves a unit's marker: [unit_id, lat, wall-clock ms].
INSTRUMENT = """() => {
    window.__moves = [];
    const original = L.Marker.prototype.setLatLng;
    L.Marker.prototype.setLatLng = function (latlng) {
        const result = original.call(this, latlng);
        const node = this.getElement && this.getElement();
        const id = node && node.dataset.unitId;
        if (id) {
            const lat = L.latLng(latlng).lat;
            const stamp = () => window.__moves.push([id, lat, performance.timeOrigin + performance.now()]);
            requestAnimationFrame(stamp);
        }
        return result;
    };
}"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--quick``: a short smoke run)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=200, help="registered units, all on the map")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between two fixes of one unit")
    ap.add_argument("--seconds", type=float, default=60.0, help="duration of the measured load")
    add_run_options(ap, argv, {"seconds": 5.0})
    return ap.parse_args(argv)


def fleet(n: int) -> tuple[list[Unit], list[tuple[float, float]]]:
    """``n`` patrol cars on a grid over Miraflores (about 50 m apart)."""
    side = math.ceil(math.sqrt(n))
    units = [Unit(f"bench-car-{i:04d}", UnitKind.PATROL_CAR, callsign=f"B-{i:04d}") for i in range(n)]
    places = [(CENTRE[0] + (i // side - side / 2) * 0.00045, CENTRE[1] + (i % side - side / 2) * 0.00045)
              for i in range(n)]  # fmt: skip
    return units, places


def messages(
    units: list[Unit], places: list[tuple[float, float]], rounds: int, start_ms: int, interval_s: float
) -> tuple[list[tuple[str, bytes]], list[tuple[str, float]]]:
    """``rounds`` fixes per unit, round-robin, timestamped at their planned send time; (unit, lat) each."""
    out: list[tuple[str, bytes]] = []
    keys: list[tuple[str, float]] = []
    step_ms = interval_s * 1000.0 / len(units)
    for k in range(rounds):
        for i, unit in enumerate(units):
            lat = round(places[i][0] + STEP_DEG * (k + 1), 7)
            ts = int(start_ms + (k * len(units) + i) * step_ms)
            body = {"ts": ts, "lat": lat, "lon": places[i][1], "accuracy": 5.0, "speed": 3.0}
            out.append((f"serenazgo/units/{unit.unit_id}/position", orjson.dumps(body)))
            keys.append((unit.unit_id, lat))
    return out, keys


class FeedClock:
    """A bare WebSocket client on the live feed (own thread and loop): (unit, lat) → first arrival."""

    def __init__(self, url: str, session: str) -> None:
        self.url = url
        self.headers = {"Cookie": f"{SESSION_COOKIE}={session}"}
        self.arrivals: dict[tuple[str, float], float] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="feed-clock", daemon=True
        )

    async def _run(self) -> None:
        async with websockets.connect(self.url, max_size=None, additional_headers=self.headers) as ws:
            while not self.stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                now = time.time()
                msg = orjson.loads(raw)
                if msg.get("type") == "snapshot":
                    self.ready.set()
                elif msg.get("type") == "position":
                    feature = msg["data"]
                    key = (feature["properties"]["unit_id"], round(feature["geometry"]["coordinates"][1], 7))
                    self.arrivals.setdefault(key, now)

    def __enter__(self) -> FeedClock:
        self.thread.start()
        if not self.ready.wait(60):
            raise SystemExit("the live feed sent no snapshot in 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, publish, match arrivals to publishes; return the results (also printed)."""
    from playwright.sync_api import sync_playwright  # a test dependency: imported only when run

    if not CHROMIUM.exists():
        raise SystemExit("install Debian's chromium package (apt-get install chromium)")
    units, places = fleet(args.units)
    rounds = max(1, round(args.seconds / args.interval))
    rate = args.units / args.interval
    work = Path(tempfile.mkdtemp(prefix="serenazgo-bench-console-"))
    try:
        with temp_postgres() as pg, temp_broker() as broker:
            say(f"PostgreSQL on port {pg.port}; Mosquitto on port {broker.port}")
            url = fresh_database(pg, "bench_console")
            register_units(url, units)
            add_user_sync(url, USER, "viewer", PASSWORD, created_by="bench_console")
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("SERENAZGO_")}
            env.update(
                SERENAZGO_DATABASE_URL=url,
                SERENAZGO_MQTT_URL=broker.url,
                SERENAZGO_DATA_DIR=str(work / "data"),
                SERENAZGO_MQTT_CLIENT_ID="bench-console",
            )
            serenazgo = shutil.which("serenazgo", path=str(Path(sys.executable).parent)) or "serenazgo"
            up = [serenazgo, "up", "--no-demo", "--host", "127.0.0.1", "--port", str(port)]
            with process(up, work / "serenazgo.log", env) as service, sync_playwright() as p:
                wait_http(f"{base}/healthz", service, work / "serenazgo.log")
                # Every unit reports once: its marker appears.
                first, _ = messages(units, places, 1, int(time.time() * 1000), 0.001)
                loadgen.publish("127.0.0.1", broker.port, first, chunk=50, timeout=60)
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1366, "height": 768})
                page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base) else r.abort())
                page.goto(base + "/")
                page.locator("#login-user").fill(USER)
                page.locator("#login-password").fill(PASSWORD)
                page.locator("#login-submit").click()
                page.wait_for_function(
                    f"document.querySelectorAll('.unit-icon').length === {args.units}", timeout=120_000
                )
                page.evaluate(INSTRUMENT)
                say(f"{args.units} markers shown; publishing {rounds * args.units:,} fixes, {rate:.0f}/s")
                start_ms = int(time.time() * 1000)
                load, keys = messages(units, places, rounds, start_ms, args.interval)
                session = next(c["value"] for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
                with FeedClock(f"ws://127.0.0.1:{port}/api/v1/ws", session) as feed:
                    report = loadgen.publish("127.0.0.1", broker.port, load, rate=rate, chunk=1,
                                             clock=time.time, timeout=args.seconds * 3 + 60)  # fmt: skip
                    # Until the last fix moved its marker (or 30 s more).
                    deadline = time.monotonic() + 30
                    last = [keys[-1][0], keys[-1][1]]
                    while time.monotonic() < deadline and not page.evaluate(
                        "(k) => window.__moves.some((m) => m[0] === k[0] && Math.abs(m[1] - k[1]) < 1e-9)",
                        last,
                    ):
                        time.sleep(0.2)
                    time.sleep(0.5)
                moves: list[list[Any]] = page.evaluate("window.__moves")
                browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shown: dict[tuple[str, float], float] = {}
    for unit_id, lat, ms in moves:
        shown.setdefault((unit_id, round(lat, 7)), ms / 1000.0)
    n = len(keys)
    sent = dict(zip(keys, report.send_times, strict=True))
    feed_s = [feed.arrivals.get(k, math.nan) - t for k, t in sent.items()]
    browser_s = [shown.get(k, math.nan) - t for k, t in sent.items()]
    return summarise(args, n, rate, latency_figures(feed_s, n), latency_figures(browser_s, n), report.rate)


def summarise(
    args: argparse.Namespace,
    n: int,
    rate: float,
    feed: dict[str, Any],
    browser: dict[str, Any],
    achieved: float,
) -> dict[str, Any]:
    """Print the table and the ratio; return the JSON body."""
    cols = [f"p{q}_ms" for q in PERCENTILES] + ["max_ms", "mean_ms"]
    rows = [
        ["feed: publish → WebSocket frame (floor)", *(f"{feed[c]:.1f}" for c in cols), feed["missing"]],
        ["browser: publish → marker moved (frame)", *(f"{browser[c]:.1f}" for c in cols), browser["missing"]],
        ["browser ÷ feed", *(f"{browser[c] / feed[c]:.2f}" if feed[c] else "" for c in cols), ""],
    ]
    print()
    print(f"console: {n:,} fixes from {args.units} units at {rate:.0f}/s (publisher {achieved:.0f}/s), ms")
    print(table(["path", "p50", "p90", "p99", "max", "mean", "missing"], rows))
    return {"units": args.units, "interval_s": args.interval, "seconds": args.seconds, "n": n, "rate": rate,
            "feed": feed, "browser": browser,
            "ratio_p50": browser["p50_ms"] / feed["p50_ms"] if feed["p50_ms"] else math.nan,
            "ratio_p99": browser["p99_ms"] / feed["p99_ms"] if feed["p99_ms"] else math.nan}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write benchmarks/results/console.json."""
    args = parse_args(argv)
    data = run(args)
    path = write_results("console", data, args.results_dir, args.quick)
    say(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
