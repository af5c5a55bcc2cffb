"""The whole live path for WebSocket and browser tests: broker → bridge → LiveFleet → hub → uvicorn.

WebSockets need a real server: the app runs in uvicorn on a free port, in a
thread with its own event loop (the hub binds to that loop on its first
client). The broker and the database are the tests' own (fixtures), the bridge
is the real one (:class:`tests.mqtt_bridge.ingest_rig.IngestRig`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.context import ApiContext
from api.feed import LiveFeedHub
from mqtt_bridge.bridge import Bridge
from tests.mqtt_bridge.ingest_rig import IngestRig, Sent

WAIT_S = 30.0


class _ThreadServer(uvicorn.Server):
    """uvicorn without signal handlers (it runs in a worker thread)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ServedApp:
    """``app`` served by uvicorn on 127.0.0.1 and a free port, in a thread, until :meth:`stop`.

    ``send_buffer``: SO_SNDBUF of the listening socket, which accepted sockets
    inherit; a small one makes a peer that stops reading push back at once.
    """

    def __init__(self, app: FastAPI, send_buffer: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if send_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=2)  # fmt: skip
        self.server = _ThreadServer(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name=f"uvicorn-{self.port}", daemon=True)  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + WAIT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15.0)
        self.sock.close()


@dataclass
class LiveStack:
    """A running bridge, app and hub on the test's broker and database."""

    rig: IngestRig
    bridge: Bridge
    ctx: ApiContext
    hub: LiveFeedHub
    served: ServedApp

    def stop(self) -> None:
        loop = self.hub.loop
        if loop is not None and loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.hub.stop(), loop).result(10.0)
        self.served.stop()

    def wait_fleet(self, what: str, check: Callable[[], bool]) -> None:
        self.rig.wait_for(what, check, timeout=WAIT_S)


def start_stack(
    rig: IngestRig,
    *,
    hub_options: dict[str, Any] | None = None,
    send_buffer: int | None = None,
    setup: Callable[[ApiContext, LiveFeedHub], None] | None = None,
) -> LiveStack:
    """Start a bridge on the rig's broker and database, and the app with a hub over its fleet.

    ``setup(ctx, hub)`` may add services (dispatcher, incidents) before the server starts.
    """
    bridge = rig.bridge()
    settings = rig.settings()
    ctx = ApiContext(
        settings=settings,
        conninfo=rig.conninfo,
        registry=bridge.registry,
        fleet=bridge.fleet,
        bridge=bridge,
        pool_max_size=4,
    )
    hub = LiveFeedHub(bridge.fleet, thresholds=settings.freshness, **(hub_options or {}))
    ctx.feed = hub
    if setup is not None:
        setup(ctx, hub)
    served = ServedApp(create_app(ctx), send_buffer=send_buffer)
    served.start()
    return LiveStack(rig, bridge, ctx, hub, served)


def native_ping(unit_id: str, ts: datetime, lat: float, lon: float, **extra: Any) -> Sent:
    """One native position message (accuracy 5 m unless given)."""
    body: dict[str, Any] = {"ts": int(ts.timestamp() * 1000), "lat": lat, "lon": lon, "accuracy": 5.0}
    body.update(extra)
    return Sent(f"serenazgo/units/{unit_id}/position", orjson.dumps(body), unit_id, ts, lat, lon)
