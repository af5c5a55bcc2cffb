"""Bare MQTT subscribers that only count: the peers our bridge is measured against.

Each runs in its own process (``python -m benchmarks.consumers paho|paho311|gmqtt``) so
that, like the bridge, it has a core's worth of Python to itself. It prints
``READY`` once subscribed, then one JSON line when it has received
``--expect`` messages (or timed out): count, first and last receive times.
With ``--progress`` it also prints ``PROGRESS <count>`` every second; with
``--times-out FILE`` (paho) it writes every message's receive time, topic and
payload there as JSON (the latency benchmark's floor).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable


def _report_progress(count: Callable[[], int], stop: threading.Event) -> None:
    """Print ``PROGRESS <count>`` every second until ``stop`` is set (a daemon thread)."""

    def loop() -> None:
        while not stop.wait(1.0):
            print(f"PROGRESS {count()}", flush=True)

    threading.Thread(target=loop, name="progress", daemon=True).start()


def run_paho(
    host: str,
    port: int,
    topic: str,
    expect: int,
    timeout: float,
    receive_maximum: int,
    progress: bool = False,
    times_out: str | None = None,
    v311: bool = False,
) -> dict[str, float]:
    """Count messages with paho-mqtt (MQTT 5, or 3.1.1 with ``v311``; QoS 1, automatic acknowledgement).

    MQTT 3.1.1 spares paho an MQTT 5 ``Properties`` object per PUBLISH; the broker then
    bounds in-flight messages with its own ``max_inflight_messages`` instead of Receive Maximum.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    got = 0
    first = last = 0.0
    done = threading.Event()
    seen: list[tuple[float, str, str]] = []
    keep = times_out is not None

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        nonlocal got, first, last
        last = time.time()
        if got == 0:
            first = last
        got += 1
        if keep:
            seen.append((last, m.topic, m.payload.decode()))
        if got >= expect:
            done.set()

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: object, _p: object = None) -> None:
        c.subscribe(topic, qos=1)

    def on_subscribe(*_a: object) -> None:
        print("READY", flush=True)

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id="bench-paho311" if v311 else "bench-paho",
        protocol=mqtt.MQTTv311 if v311 else mqtt.MQTTv5,
    )
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    if v311:
        client.connect(host, port)  # clean session: paho's default for 3.1.1
    else:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.ReceiveMaximum = receive_maximum
        client.connect(host, port, clean_start=True, properties=props)
    client.loop_start()
    if progress:
        _report_progress(lambda: got, done)
    done.wait(timeout)
    done.set()
    client.loop_stop()
    if times_out is not None:
        with open(times_out, "w") as f:
            json.dump(seen, f)
    return {"count": got, "first": first, "last": last}


def run_gmqtt(
    host: str,
    port: int,
    topic: str,
    expect: int,
    timeout: float,
    receive_maximum: int,
    progress: bool = False,
    times_out: str | None = None,
) -> dict[str, float]:
    """Count messages with gmqtt (MQTT 5, QoS 1, automatic acknowledgement)."""
    import gmqtt

    if times_out is not None:
        raise SystemExit("--times-out is only implemented for paho")

    async def main() -> dict[str, float]:
        got = 0
        first = last = 0.0
        done = asyncio.Event()

        def on_message(_c: object, _t: str, _p: bytes, _q: int, _pr: object) -> int:
            nonlocal got, first, last
            last = time.time()
            if got == 0:
                first = last
            got += 1
            if got >= expect:
                done.set()
            return 0

        def on_subscribe(*_a: object) -> None:
            print("READY", flush=True)

        client = gmqtt.Client("bench-gmqtt", receive_maximum=receive_maximum)
        client.on_message = on_message
        client.on_subscribe = on_subscribe
        await client.connect(host, port)
        client.subscribe(topic, qos=1)
        stop = threading.Event()
        if progress:
            _report_progress(lambda: got, stop)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
        stop.set()
        await client.disconnect()
        return {"count": got, "first": first, "last": last}

    return asyncio.run(main())


def main() -> None:
    """Command line: run one bare subscriber and print its JSON result."""
    ap = argparse.ArgumentParser()
    ap.add_argument("client", choices=["paho", "paho311", "gmqtt"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topic", default="serenazgo/units/+/position")
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--receive-maximum", type=int, default=20000)
    ap.add_argument("--progress", action="store_true", help="print PROGRESS <count> every second")
    ap.add_argument("--times-out", help="paho: write [receive time, topic, payload] per message here")
    a = ap.parse_args()
    if a.client == "gmqtt":
        result = run_gmqtt(a.host, a.port, a.topic, a.expect, a.timeout, a.receive_maximum, a.progress)
    else:
        result = run_paho(a.host, a.port, a.topic, a.expect, a.timeout, a.receive_maximum, a.progress,
                          a.times_out, v311=a.client == "paho311")  # fmt: skip
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
