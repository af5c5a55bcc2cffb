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
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.context import ApiContext
from api.feed import LiveFeedHub
from mqtt_bridge.bridge import Bridge
from tests.fixtures.auth import bearer, seed_role_tokens
from tests.mqtt_bridge.ingest_rig import IngestRig, Sent

WAIT_S = 30.0
T = TypeVar("T")


class _ThreadServer(uvicorn.Server):
    """uvicorn without signal handlers (it runs in a worker thread); remembers its event loop."""

    loop: asyncio.AbstractEventLoop | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)


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

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's event loop (services bind to the loop they start on)."""
        assert self.server.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.server.loop).result(WAIT_S)

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
    stoppers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        """An administrator's ``Authorization`` header (tests/fixtures/auth.py), for the tests' API calls."""
        return bearer()

    def stop(self) -> None:
        """Stop the services (on the server's loop, last started first), the hub, then the server."""
        for stop in [*reversed(self.stoppers), self.hub.stop]:
            try:
                self.served.run(stop())
            except Exception as exc:  # keep stopping the rest
                print(f"stopping {stop!r} failed: {exc!r}")
        self.served.stop()

    def wait_fleet(self, what: str, check: Callable[[], bool]) -> None:
        self.rig.wait_for(what, check, timeout=WAIT_S)


def start_stack(
    rig: IngestRig,
    *,
    hub_options: dict[str, Any] | None = None,
    send_buffer: int | None = None,
    services: Callable[[LiveStack], Awaitable[None]] | None = None,
) -> LiveStack:
    """Start a bridge on the rig's broker and database, and the app with a hub over its fleet.

    The hub is started on the server's loop, as the runtime does. ``services(stack)``
    runs there too, after it: it may set ``ctx.dispatcher``/``ctx.incidents``, start
    them and append their stop coroutines to ``stack.stoppers``.
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
    served = ServedApp(create_app(ctx), send_buffer=send_buffer)
    served.start()
    seed_role_tokens(ctx)
    stack = LiveStack(rig, bridge, ctx, hub, served)

    async def start_hub() -> None:
        hub.start()

    served.run(start_hub())
    if services is not None:
        try:
            served.run(services(stack))
        except BaseException:
            stack.stop()
            raise
    return stack


def native_ping(unit_id: str, ts: datetime, lat: float, lon: float, **extra: Any) -> Sent:
    """One native position message (accuracy 5 m unless given)."""
    body: dict[str, Any] = {"ts": int(ts.timestamp() * 1000), "lat": lat, "lon": lon, "accuracy": 5.0}
    body.update(extra)
    return Sent(f"serenazgo/units/{unit_id}/position", orjson.dumps(body), unit_id, ts, lat, lon)
