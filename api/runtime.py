"""``serenazgo up``: the whole service in one process, starting whatever is not configured.

Order of start: (embedded) PostgreSQL → migrations → (demo: simulated units
registered) → registry and LiveFleet loaded → (embedded) broker → ingest bridge
→ HTTP API → (demo: simulator). Stop is the reverse: simulator, API, bridge
(flushes and acknowledges what it holds), broker, database. SIGINT and SIGTERM
both stop it cleanly; a failure at start stops what had been started and says
what to change.

The embedded servers are started and stopped on one dedicated thread that lives
until everything is stopped: they get their parent-death signal when the thread
that started them exits (:mod:`tracker.server_process`), so a ``kill -9`` of
``serenazgo up`` takes them down too (PostgreSQL fast, Mosquitto saving its state),
while a worker thread of asyncio's pool could end, and stop them, at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import uvicorn
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from api.app import served_app
from api.context import ApiContext
from api.demo_dispatch import DemoDispatch
from api.feed import LiveFeedHub
from api.routes.ingest import osmand_app
from drones.airspace import AirspaceZone
from drones.airspace_file import DEMO_AIRSPACE_FILE, load_airspace_file, store_airspace_file
from drones.alerts import DroneAlerts, squadron_model
from drones.endurance import SquadronModel
from drones.first_response import DroneTiming
from drones.mavlink_sim import SimAircraft, SimConfig, fly_through_gateway
from geo.area import Area, normalize_name
from geo.docks import Dock
from geo.viewsheds import Viewsheds
from mqtt_bridge.bridge import Bridge, load_state
from mqtt_bridge.broker import EmbeddedBroker
from mqtt_bridge.broker_acl import (
    BRIDGE_USER,
    GATEWAY_USER,
    HEALTH_USER,
    SERVICE_USERS,
    SIMULATOR_USER,
    AccessRefresher,
    load_service_accounts,
)
from mqtt_bridge.simulator import PublishStats, SimClock, publish_fleet, register_units
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE, MqttTarget, Settings, parse_mqtt_url
from tracker.coverage import CoverageService
from tracker.coverage_files import DEMO_CAMERAS_FILE, DEMO_DOCKS_FILE, load_docks, load_viewsheds
from tracker.coverage_history import CoverageSampler
from tracker.demand import incident_demand
from tracker.dispatch import Dispatcher
from tracker.errors import ConfigError, SerenazgoError
from tracker.events import EventEngine
from tracker.feed import FeedListener, no_feed
from tracker.fleet import LiveFleet
from tracker.incidents import IncidentService
from tracker.model import Source, UnitKind
from tracker.registry import UnitRegistry
from tracker.server_process import EmbeddedServer
from tracker.simulation import CAPABILITIES, FleetMix, FleetSimulation, SimUnit
from tracker.store.embedded import EmbeddedPostgres
from tracker.store.migrations import migrate
from tracker.store.pool import open_pool
from tracker.store.users import DEMO_PASSWORD, FIRST_ADMIN, ensure_demo_users_sync, ensure_first_admin_sync
from tracker.users import Role

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_DEMO_DISTRICT = "Miraflores"
DEMO_DJI_DOCKS = 2  # demo drones whose aircraft speak the DJI Cloud API from their dock
DEMO_MAVLINK_UNIT = "dron-mav1"  # the demo aircraft streaming MAVLink through the gateway (sysid 1)
MQTT_DEFAULT_PORT = 1883
SHUTDOWN_BRIDGE_TIMEOUT_S = 15.0


class ApiPortInUseError(ConfigError):
    """The API's host:port is taken."""


@dataclass(slots=True)
class UpOptions:
    """What ``serenazgo up`` was asked for on the command line."""

    host: str = "127.0.0.1"
    port: int = 8000
    demo: bool = False
    broker_port: int | None = None  # embedded broker only; None: its default
    seed: int = 1
    district: str | None = None


def bind_api_socket(host: str, port: int) -> socket.socket:
    """Bind the API's listening socket now, so a taken port is reported before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP,
    # and accepted sockets inherit 0 from a listener made without it: every answer then waited
    # ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ApiPortInUseError(
                f"port {port} on {host} is already in use (another serenazgo?): choose another with --port"
            ) from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"cannot listen on {host}: no such local address; change --host") from exc
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}; change --host or --port") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def bind_osmand_socket(host: str, port: int) -> tuple[socket.socket | None, str]:
    """The OsmAnd listener's socket (``SERENAZGO_OSMAND_PORT``), or None and why: never fatal.

    Phones are configured with ``host:5055`` once, so the conventional port is worth
    serving; when it is taken (a Traccar server on the same machine) the API's own
    ``/api/v1/ingest/osmand`` still takes the same requests.
    """
    if port == 0:
        return None, "off (SERENAZGO_OSMAND_PORT=0)"
    fix = (
        "set SERENAZGO_OSMAND_PORT to a free port (0 = off); "
        "OsmAnd devices can use /api/v1/ingest/osmand on the API port meanwhile"
    )
    try:
        return bind_api_socket(host, port), ""
    except ApiPortInUseError:
        return None, f"not served: port {port} on {host} is in use (a Traccar server?); {fix}"
    except ConfigError as exc:
        return None, f"not served: {exc}; {fix}"


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def embedded_pg_dir(data_dir: Path) -> Path:
    """The folder asked of the embedded PostgreSQL: ``<data_dir>/postgres``.

    As root, PostgreSQL runs as an unprivileged user that cannot enter a closed
    home (``/root`` is mode 700); the launcher then keeps the cluster under
    ``/var/lib/serenazgo`` instead (its ``state_dir``, printed at start).
    """
    return data_dir / "postgres"


def embedded_broker_dir(data_dir: Path) -> Path:
    """The folder asked of the embedded broker: ``<data_dir>/broker`` (relocated like PostgreSQL's)."""
    return data_dir / "broker"


def _redact(url: str) -> str:
    """``url`` without its password, for printing."""
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
    return url


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the runtime decides when the API stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signals to the runtime (uvicorn would re-raise them after shutdown)."""
        yield


@dataclass(slots=True)
class Runtime:
    """One ``serenazgo up`` run: what was started, in order, so it can be stopped in reverse."""

    settings: Settings
    options: UpOptions
    console: Console = field(default_factory=Console)
    conninfo: str = ""
    mqtt: MqttTarget | None = None
    # Their own broker logins when the broker is embedded: the demo fleet, its MAVLink gateway, /healthz.
    sim_mqtt: MqttTarget | None = None
    gateway_mqtt: MqttTarget | None = None
    health_mqtt: MqttTarget | None = None
    registry: UnitRegistry = field(default_factory=UnitRegistry)
    fleet: LiveFleet = field(default_factory=LiveFleet)
    api_url: str = ""
    pg_dir: Path | None = None
    broker_dir: Path | None = None
    broker_url: str = ""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    # One long-lived thread starts and stops the embedded servers (see the module docstring).
    _servers_thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="embedded-servers")
    )
    _signals: int = 0
    _stack: list[tuple[str, Callable[[], Awaitable[None]]]] = field(default_factory=list)
    sim_stats: PublishStats | None = None
    _bridge: Bridge | None = None
    _hub: LiveFeedHub | None = None
    _dispatcher: Dispatcher | None = None
    _events: EventEngine | None = None
    _incidents: IncidentService | None = None
    _demo: DemoDispatch | None = None
    _area: Area | None = None  # the service area (the demo's district, else SERENAZGO_AREA whole)
    _simulation: FleetSimulation | None = None
    _api_task: asyncio.Task[None] | None = None
    _mavlink_aircraft: SimAircraft | None = None
    _docks: tuple[Dock, ...] = ()  # drone docks and camera viewsheds of the coverage layers
    _viewsheds: Viewsheds | None = None
    _airspace: list[AirspaceZone] = field(default_factory=list)  # zones of the airspace file, stored at start
    _squadron: SquadronModel | None = None  # the drones' endurance model (profiles, docks as homes)
    _sim_task: asyncio.Task[Any] | None = None
    _osmand_sock: socket.socket | None = None  # the OsmAnd port's listener (None: off or taken)
    osmand_url: str = ""
    osmand_note: str = ""
    # How to log in, printed with the summary: the demo's users, or the first start's admin password.
    _login_rows: list[tuple[str, str]] = field(default_factory=list)

    # ----- signals -----------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            self.console.print(f"\n[bold]{signal.Signals(signum).name}[/bold]: stopping serenazgo…")
        else:
            self.console.print("[yellow]already stopping: waiting for the bridge to flush[/yellow]")
        self._stop.set()

    # ----- steps -------------------------------------------------------------------------

    async def _step(self, what: str, fn: Callable[[], T], executor: Executor | None = None) -> T:
        """Run a blocking start step in a thread with a spinner; signals still work meanwhile.

        ``executor``: where it runs (default: asyncio's thread pool).
        """
        with self.console.status(f"{what}…"):
            started = time.monotonic()
            result = await asyncio.get_running_loop().run_in_executor(executor, fn)
        self.console.print(f"[green]✓[/green] {what} [dim]({time.monotonic() - started:.1f} s)[/dim]")
        return result

    async def _start_embedded(self, name: str, server: EmbeddedServer) -> None:
        """Start an embedded server on the servers' own thread; its stop (same thread) joins the stack."""
        await self._step(f"starting {name}", server.start, self._servers_thread)

        async def stop() -> None:
            await asyncio.get_running_loop().run_in_executor(self._servers_thread, server.stop)

        self._push(name, stop)

    def _push(self, name: str, stop: Callable[[], Awaitable[None]]) -> None:
        self._stack.append((name, stop))

    async def _start_database(self) -> None:
        if self.settings.database_url:
            self.conninfo = self.settings.database_url
            await self._step("checking the database", lambda: _ping_database(self.conninfo))
            return
        server = EmbeddedPostgres(embedded_pg_dir(self.settings.data_dir))
        await self._start_embedded("PostgreSQL", server)
        self.pg_dir = server.state_dir
        self.conninfo = server.url

    async def _start_broker(self) -> None:
        if self.settings.mqtt is not None:
            self.mqtt = self.settings.mqtt
            self.broker_url = _redact(self.settings.mqtt_url or "")
            return
        port = self.options.broker_port
        if port is not None and not port_free(port):
            raise ConfigError(
                f"port {port} for the embedded MQTT broker is in use: choose another with --broker-port, "
                "or set SERENAZGO_MQTT_URL to use the broker that is already running there"
            )
        if port is None and port_free(MQTT_DEFAULT_PORT):
            # Devices are configured with host:port once: keep the standard port when it is free.
            port = MQTT_DEFAULT_PORT
        # Devices log in with their credentials, the bridge and the demo with service accounts.
        services = load_service_accounts(self.settings.data_dir)
        access = AccessRefresher(
            self.conninfo, services.accounts(), allow_anonymous=self.settings.broker.allow_anonymous
        )
        files = await asyncio.to_thread(access.render)
        broker = EmbeddedBroker(
            embedded_broker_dir(self.settings.data_dir), port=port, access=files, host=self.options.host
        )
        await self._start_embedded("MQTT broker", broker)
        self.broker_url = broker.url
        self.broker_dir = broker.state_dir
        target = parse_mqtt_url(broker.url)
        logins = {}
        for user in SERVICE_USERS:
            name, password = services.login(user)
            logins[user] = target.model_copy(update={"username": name, "password": password})
        # One login per connection: the broker makes the client id the username (see broker_acl).
        self.mqtt, self.sim_mqtt = logins[BRIDGE_USER], logins[SIMULATOR_USER]
        self.gateway_mqtt, self.health_mqtt = logins[GATEWAY_USER], logins[HEALTH_USER]
        self._watch_access(access, broker)

    def _watch_access(self, access: AccessRefresher, broker: EmbeddedBroker) -> None:
        """Every ``broker.refresh_s``, bring the broker's password file and ACL in line with the database."""

        async def watch() -> None:
            while True:
                try:
                    await asyncio.to_thread(access.check, broker.set_access)
                except (SerenazgoError, OSError) as exc:
                    log.warning("cannot refresh the broker's device credentials (retrying): %s", exc)
                await asyncio.sleep(self.settings.broker.refresh_s)

        task = asyncio.create_task(watch(), name="broker access")

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._push("broker credentials refresh", stop)

    def _load_fleet(self) -> int:
        self.registry, self.fleet = load_state(self.conninfo, self.settings)
        return len(self.registry)

    async def _start_bridge(self) -> None:
        """The live feed, the dispatcher and the event engine, then the bridge that feeds them all.

        Everything that follows the fleet subscribes before ingest starts, so it
        misses no change; the event engine stops after the bridge's last flush.
        """
        assert self.mqtt is not None
        bridge = Bridge(self.settings, self.mqtt, self.conninfo, self.registry, self.fleet)
        # Started on this loop, which is also the API's: the WebSocket clients are served here.
        self._hub = LiveFeedHub(self.fleet, thresholds=self.settings.freshness)
        self._hub.start()
        # The first start on a machine compiles the index's numba kernels (cached on disk after).
        self._dispatcher = await self._step(
            "building the dispatch index",
            lambda: Dispatcher(
                self.fleet,
                self.settings.dispatch.eta,
                self.settings.freshness,
                drone_timing=self._drone_timing(),
            ),
        )
        airspace_file = self.airspace_file()
        if airspace_file is not None:

            async def store_zones() -> int:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    return await store_airspace_file(conn, airspace_file, self._airspace)

            n_zones = await store_zones()
            self.console.print(
                f"[green]✓[/green] restricted airspace: {n_zones} zone(s) from {airspace_file}"
            )
        events = EventEngine(
            self.conninfo,
            self.fleet,
            self.settings.events,
            self.settings.freshness,
            publish=bridge.mqtt.publish if self.settings.events.publish_mqtt else None,
            feed=self._hub,
            geofences_file=self.settings.geofences,
            drones=DroneAlerts(self.settings.drones, self._squadron or squadron_model(self.settings)),
        )
        with self.console.status("starting the event engine…"):
            await events.start()
        self.console.print("[green]✓[/green] event engine (geofences, airspace, freshness, battery, drones)")
        self._push("event engine (draining)", events.stop)
        self._events = events
        await self._step("starting the ingest bridge", bridge.start)

        async def stop() -> None:
            await asyncio.to_thread(bridge.stop, SHUTDOWN_BRIDGE_TIMEOUT_S)

        self._push("ingest bridge (flushing)", stop)
        self._bridge = bridge

    async def _start_incidents(self) -> None:
        """Incidents and arrival detection (after the bridge: arrivals come from its positions)."""
        assert self._bridge is not None
        dispatcher = self._dispatcher
        feed: FeedListener = self._hub if self._hub is not None else no_feed
        if self._simulation is not None and dispatcher is not None:
            # The demo's units follow real assignments (see api/demo_dispatch.py).
            self._demo = DemoDispatch(self._simulation, feed, dispatcher.nearest, seed=self.options.seed)
            feed = self._demo.feed
        incidents = IncidentService(
            self.conninfo,
            self.fleet,
            self.settings.dispatch,
            recommend=dispatcher.nearest if dispatcher is not None else None,
            feed=feed,
            publish=self._bridge.mqtt.publish if self.settings.events.publish_mqtt else None,
        )
        with self.console.status("starting incidents…"):
            await incidents.start()
        self.console.print("[green]✓[/green] incidents and arrival detection")
        # Field reports the bridge commits reach the consoles through the service (stopped first).
        bridge = self._bridge
        bridge.on_incidents = incidents.learn

        async def stop_incidents() -> None:
            bridge.on_incidents = None
            await incidents.stop()

        self._push("incidents", stop_incidents)
        self._incidents = incidents
        if self._demo is not None:
            self._demo.incidents = incidents

    async def _start_api(self, sock: socket.socket) -> None:
        ctx = ApiContext(
            settings=self.settings,
            conninfo=self.conninfo,
            registry=self.registry,
            fleet=self.fleet,
            mqtt=self.health_mqtt or self.mqtt,
            bridge=self._bridge,
            dispatcher=self._dispatcher,
            incidents=self._incidents,
            events=self._events,
            feed=self._hub,
            squadron=self._squadron,
            coverage=CoverageService(
                self._area or load_area(self.settings.area_file()),
                self.fleet,
                self.settings.dispatch.eta,
                docks=self._docks,
                viewsheds=self._viewsheds,
                takeoff_s=self.settings.coverage.takeoff_s,
                at_dock_m=self.settings.coverage.at_dock_m,
            ),
        )
        # Coverage sampled every minute for the history (its own small pool: ctx.pool only lives
        # inside the app's lifespan); stored demand ratios are weighted by past incidents.
        assert ctx.coverage is not None
        sampler_pool = await open_pool(self.conninfo, max_size=2)
        service = ctx.coverage
        keep = self.settings.coverage_history
        ctx.coverage_history = CoverageSampler(
            sampler_pool, service, demand=lambda grid: incident_demand(sampler_pool, grid),
            retention_days=keep.days, prune_every_s=keep.prune_every_s,
        )  # fmt: skip
        app = served_app(ctx)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5
        )
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="api")
        with self.console.status("starting the HTTP API…"):
            while not server.started:
                if task.done():
                    exc = task.exception() if not task.cancelled() else None
                    raise ConfigError(f"the HTTP API did not start: {exc!r}")
                await asyncio.sleep(0.05)
        self.console.print("[green]✓[/green] HTTP API")
        self._api_task = task
        if self._osmand_sock is not None:
            await self._start_osmand(ctx, self._osmand_sock)

        async def stop() -> None:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await task

        self._push("HTTP API", stop)
        sampler = ctx.coverage_history
        await sampler.start()

        async def stop_sampler() -> None:
            await sampler.stop()
            await sampler_pool.close()

        self._push("coverage history", stop_sampler)
        hub = self._hub
        if hub is not None:
            # Stopped before the API, so open WebSockets are closed (1001) instead of holding it up.
            self._push("live feed", hub.stop)

    async def _start_osmand(self, ctx: ApiContext, sock: socket.socket) -> None:
        """The OsmAnd endpoint at ``/`` on its conventional port (the API's lifespan runs ingest)."""
        config = uvicorn.Config(
            osmand_app(ctx), log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=5,
        )  # fmt: skip
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="OsmAnd listener")
        while not server.started:
            if task.done():
                exc = task.exception() if not task.cancelled() else None
                raise ConfigError(f"the OsmAnd listener did not start: {exc!r}")
            await asyncio.sleep(0.05)
        self.osmand_url = f"http://{_url_host(self.options.host)}:{sock.getsockname()[1]}/"
        self.console.print("[green]✓[/green] OsmAnd / Traccar Client listener")

        async def stop() -> None:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await task

        self._push("OsmAnd listener", stop)

    async def _start_simulator(self) -> None:
        sim = self._simulation
        assert sim is not None
        assert self.mqtt is not None
        stats = PublishStats()
        stop = asyncio.Event()
        clock = SimClock(wall_start=sim.start)
        task = asyncio.create_task(
            publish_fleet(
                sim, self.sim_mqtt or self.mqtt, clock, stats, stop, client_id="serenazgo-demo-fleet"
            ),
            name="simulator",
        )
        self.sim_stats = stats
        self._sim_task = task

        async def stop_sim() -> None:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._push(f"simulator ({len(sim.units)} units)", stop_sim)
        aircraft = self._mavlink_aircraft
        if aircraft is not None:
            flight = fly_through_gateway(aircraft, self.gateway_mqtt or self.mqtt, DEMO_MAVLINK_UNIT, stop)
            mav_task = asyncio.create_task(flight, name="demo MAVLink aircraft")

            async def stop_mavlink() -> None:
                stop.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await mav_task

            self._push("demo MAVLink aircraft and gateway", stop_mavlink)
        demo = self._demo
        if demo is not None:
            demo_task = asyncio.create_task(demo.run(stop), name="demo dispatch")

            async def stop_demo() -> None:
                stop.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await demo_task

            self._push("demo dispatch", stop_demo)
        self.console.print(f"[green]✓[/green] simulated fleet: {_mix_line(sim)}")

    def _prepare_demo(self) -> int:
        district = self.options.district
        if district is None and self.settings.area_file() == DEFAULT_DISTRICTS_FILE:
            district = DEFAULT_DEMO_DISTRICT
        area = load_area(self.settings.area_file(), district)
        self._area = area
        # The demo squadron speaks the real protocols from the coverage docks: the first dock's
        # aircraft is an ArduPilot-like autopilot streaming MAVLink through the gateway, the next
        # two are DJI docks whose aircraft speak the DJI Cloud API, and one more drone patrols on
        # the native topics. Each dock follows its drone in the coverage layers.
        sites = [(d.lat, d.lon) for d in self._docks]
        extra: list[SimUnit] = []
        mix = FleetMix()
        if sites:
            lat, lon = sites[0]
            config = SimConfig(sysid=1, home_lat=lat, home_lon=lon)
            self._mavlink_aircraft = SimAircraft(config, datetime.now(UTC))
            gear = frozenset(CAPABILITIES[UnitKind.DRONE])
            mavlink_id = {Source.MAVLINK.value: "1"}
            extra.append(
                SimUnit(DEMO_MAVLINK_UNIT, UnitKind.DRONE, "DRON-MAV1", "", gear, Source.MAVLINK, mavlink_id)
            )
            mix = replace(mix, drones=mix.drones - 1)
        self._simulation = FleetSimulation(
            area,
            mix=mix,
            seed=self.options.seed,
            start=datetime.now(UTC),
            external_dispatch=True,
            dji_docks=min(DEMO_DJI_DOCKS, len(sites[1:])),
            drone_docks=sites[1:],
        )
        drones = [u.unit_id for u in extra]
        drones += [u.unit_id for u in self._simulation.units if u.kind is UnitKind.DRONE]
        self._docks = tuple(
            replace(dock, aircraft_id=drones[i]) if i < len(drones) and dock.aircraft_id is None else dock
            for i, dock in enumerate(self._docks)
        )
        self._squadron = squadron_model(self.settings, self._docks)  # the docks are their drones' homes
        created, _existing = register_units(self.conninfo, [*self._simulation.units, *extra])
        return len(created)

    def coverage_files(self) -> tuple[Path | None, Path | None]:
        """Docks and camera files: the settings', else (demo over Miraflores) the shipped demo data."""
        cs = self.settings.coverage
        docks, cameras = cs.docks, cs.cameras
        if self._demo_over_miraflores():
            docks = docks or DEMO_DOCKS_FILE
            cameras = cameras or DEMO_CAMERAS_FILE
        return docks, cameras

    def _demo_over_miraflores(self) -> bool:
        district = self.options.district or DEFAULT_DEMO_DISTRICT
        return (
            self.options.demo
            and self.settings.area_file() == DEFAULT_DISTRICTS_FILE
            and normalize_name(district) == normalize_name(DEFAULT_DEMO_DISTRICT)
        )

    def airspace_file(self) -> Path | None:
        """The restricted airspace file: the settings', else (demo over Miraflores) the shipped demo zones."""
        path = self.settings.drones.airspace
        if path is None and self._demo_over_miraflores():
            path = DEMO_AIRSPACE_FILE
        return path

    def _drone_timing(self) -> DroneTiming:
        """How dispatch times drones: launch delay when docked, battery for out, hold and back."""
        model = self._squadron or squadron_model(self.settings, self._docks)
        return DroneTiming(
            model, self.fleet, self.settings.drones.dispatch_hold_s, self.settings.coverage.at_dock_m
        )

    def _load_coverage_files(self) -> None:
        """Read the docks, viewsheds and airspace zones before anything starts: a bad file stops nothing."""
        airspace = self.airspace_file()
        self._airspace = load_airspace_file(airspace) if airspace is not None else []
        docks, cameras = self.coverage_files()
        self._docks = tuple(load_docks(docks, self.settings.coverage)) if docks is not None else ()
        self._squadron = squadron_model(self.settings, self._docks)
        self._viewsheds = load_viewsheds(cameras) if cameras is not None else None
        if docks is not None or cameras is not None:
            n_cameras = 0 if self._viewsheds is None else self._viewsheds.size
            self.console.print(
                f"[green]✓[/green] coverage: {len(self._docks)} drone docks, {n_cameras} camera viewsheds"
            )

    # ----- the run -----------------------------------------------------------------------

    async def run(self) -> int:
        """Start everything, serve until a signal, stop everything; return the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        code = 0
        try:
            await self._start_all()
            if not self._stop.is_set():
                self._print_summary()
                await self._serve()
        except SerenazgoError as exc:
            self.console.print(f"[bold red]error:[/bold red] {exc}")
            code = 1
        finally:
            await self._stop_all()
            # The servers are stopped: their thread may end (anything left gets its death signal).
            self._servers_thread.shutdown(wait=True)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if code == 0:
            self.console.print("[bold green]serenazgo stopped cleanly.[/bold green]")
        return code

    async def _start_all(self) -> None:
        opts = self.options
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._load_coverage_files()
        sock = bind_api_socket(opts.host, opts.port)
        self._osmand_sock, self.osmand_note = bind_osmand_socket(opts.host, self.settings.osmand_port)
        if self._osmand_sock is None and self.settings.osmand_port:
            self.console.print(f"[yellow]OsmAnd port {self.settings.osmand_port}[/yellow] {self.osmand_note}")
        try:
            await self._start_database()
            if self._stop.is_set():
                return
            applied = await self._step("applying database migrations", lambda: migrate(self.conninfo))
            if applied:
                self.console.print(f"  [dim]applied {len(applied)} migration(s)[/dim]")
            await self._step("checking console users", self._ensure_users)
            if opts.demo:
                created = await self._step("registering the simulated fleet", self._prepare_demo)
                if created:
                    self.console.print(f"  [dim]registered {created} new units[/dim]")
            n_units = await self._step("loading units and latest positions", self._load_fleet)
            self.console.print(f"  [dim]{n_units} units known[/dim]")
            if self._stop.is_set():
                return
            await self._start_broker()
            if self._stop.is_set():
                return
            await self._start_bridge()
            if self._stop.is_set():
                return
            await self._start_incidents()
            if self._stop.is_set():
                return
            await self._start_api(sock)
        except BaseException:
            sock.close()
            if self._osmand_sock is not None:
                self._osmand_sock.close()
            raise
        self.api_url = f"http://{_url_host(opts.host)}:{sock.getsockname()[1]}"
        if opts.demo and not self._stop.is_set():
            await self._start_simulator()

    async def _serve(self) -> None:
        """Wait for a stop signal, or for a part that should run forever to end by itself."""
        watched: list[asyncio.Task[Any]] = [t for t in (self._api_task, self._sim_task) if t is not None]
        stop_wait = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([stop_wait, *watched], return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        for task in watched:
            if task in done and not self._stop.is_set():
                exc = None if task.cancelled() else task.exception()
                raise SerenazgoError(f"{task.get_name()} stopped unexpectedly: {exc!r}")

    async def _stop_all(self) -> None:
        while self._stack:
            name, stop = self._stack.pop()
            with self.console.status(f"stopping {name}…"):
                try:
                    await stop()
                except Exception as exc:
                    self.console.print(f"[red]✗[/red] stopping {name} failed: {exc}")
                    continue
            self.console.print(f"[green]✓[/green] stopped {name}")
        if self.sim_stats is not None:
            self.console.print(f"  [dim]simulator sent {self.sim_stats.sent} pings[/dim]")

    def _ensure_users(self) -> None:
        """The demo's one user per role; otherwise, on a first start, an admin with a random password."""
        if self.options.demo:
            ensure_demo_users_sync(self.conninfo)
            roles = ", ".join(r.value for r in Role if r is not Role.INTEGRATION)
            self._login_rows.append(("log in", f"as {roles}  (password: {DEMO_PASSWORD})"))
            self._login_rows.append(("API token", "serenazgo user token integration"))
            return
        password = ensure_first_admin_sync(self.conninfo)
        if password is not None:
            self._login_rows.append(
                ("log in", f"as [bold]{FIRST_ADMIN}[/bold], password [bold]{password}[/bold]  (shown once)")
            )
            self._login_rows.append(("then", "add users: serenazgo user add NAME --role operator"))

    def _print_summary(self) -> None:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("operator console", f"{self.api_url}/")
        for what, how in self._login_rows:
            table.add_row(what, how)
        table.add_row("API", self.api_url)
        table.add_row("docs", f"{self.api_url}/docs")
        table.add_row("live map data", f"{self.api_url}/api/v1/live")
        table.add_row("OsmAnd / Traccar", self.osmand_url or self.osmand_note)
        table.add_row("HTTP ingest", f"{self.api_url}/api/v1/ingest/osmand · /api/v1/ingest/owntracks")
        auth = "required" if self.settings.ingest_auth else "off (SERENAZGO_INGEST_AUTH)"
        table.add_row("device tokens", auth)
        table.add_row("broker", self.broker_url + ("" if self.settings.mqtt else "  (embedded)"))
        table.add_row(
            "database", _redact(self.conninfo) + ("" if self.settings.database_url else "  (embedded)")
        )
        table.add_row("data folder", str(self.settings.data_dir))
        for what, where in (("database files", self.pg_dir), ("broker files", self.broker_dir)):
            if where is not None and not where.is_relative_to(self.settings.data_dir):
                table.add_row(what, f"{where}  (the data folder is closed to the server's OS user)")
        table.add_row("auto-register", "on" if self.settings.auto_register else "off")
        self.console.print()
        self.console.print("[bold]serenazgo is running[/bold]  (Ctrl-C to stop)")
        self.console.print(table)
        self.console.print()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):  # noqa: S104
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _ping_database(conninfo: str) -> None:
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot reach the database at {_redact(conninfo)}: {exc}. Fix SERENAZGO_DATABASE_URL, "
            "or unset it to use the embedded PostgreSQL"
        ) from exc


def _mix_line(sim: FleetSimulation) -> str:
    counts: dict[str, int] = {}
    for unit in sim.units:
        counts[str(unit.kind)] = counts.get(str(unit.kind), 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


def run_up(settings: Settings, options: UpOptions, console: Console | None = None) -> int:
    """Run ``serenazgo up`` to completion; return the process exit code."""
    console = console or Console()
    # Warnings of the parts (bridge reconnecting, database retries) show up between the progress lines.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=True, markup=False)],
        force=True,
    )
    if options.demo:
        # Phones and trackers the demo did not register (someone's own OwnTracks) join on their own.
        # Device tokens are off too: the demo is for trying a phone without issuing credentials.
        settings = settings.model_copy(update={"auto_register": True, "ingest_auth": False})
    runtime = Runtime(settings, options, console=console)
    return asyncio.run(runtime.run())
