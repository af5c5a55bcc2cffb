"""The ``serenazgo`` command line: ``up``, ``simulate``, ``bridge``, ``mavlink-*``, ``db``, ``evidence``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from tracker.config import DEFAULT_DISTRICTS_FILE, Settings, parse_mqtt_url
from tracker.errors import SerenazgoError

if TYPE_CHECKING:
    from drones.mavlink_gateway import GatewayStats
    from geo.area import Area
    from mqtt_bridge.simulator import PublishStats
    from tracker.evidence import EvidencePackage
    from tracker.simulation import FleetSimulation

T = TypeVar("T")

app = typer.Typer(
    name="serenazgo",
    help="Real-time tracking for municipal security centres (model: Miraflores' Central Alerta).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(
    help="Database schema: apply migrations, show their status, print the DDL.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
evidence_app = typer.Typer(
    help="Signed evidence exports: show the signing key, export a unit's track, verify a package.",
    no_args_is_help=True,
)
app.add_typer(evidence_app, name="evidence")
unit_app = typer.Typer(help="Field units: device credentials.", no_args_is_help=True)
app.add_typer(unit_app, name="unit")
user_app = typer.Typer(help="Console users, roles and API tokens.", no_args_is_help=True)
app.add_typer(user_app, name="user")
broker_app = typer.Typer(
    help="MQTT broker: device logins and ACL for an external Mosquitto.", no_args_is_help=True
)
app.add_typer(broker_app, name="broker")

console = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    """Settings from the environment, or exit 2 naming the bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = [
            f"  SERENAZGO_{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        ]
        err_console.print(
            "[bold red]error:[/bold red] bad configuration in the environment:\n" + "\n".join(lines)
        )
        raise typer.Exit(2) from exc


@contextlib.contextmanager
def _friendly_errors() -> Iterator[None]:
    """Print serenazgo's own errors (they say what to do) without a traceback; exit 1."""
    try:
        yield
    except SerenazgoError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def up(
    host: Annotated[
        str | None, typer.Option(help="address the API listens on [default: SERENAZGO_HOST or 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="API port [default: SERENAZGO_PORT or 8000]")] = None,
    demo: Annotated[
        bool, typer.Option("--demo/--no-demo", help="also run a simulated Miraflores fleet")
    ] = False,
    broker_port: Annotated[
        int | None, typer.Option(help="port of the embedded MQTT broker [default: 1883 or the next free one]")
    ] = None,
    seed: Annotated[int, typer.Option(help="random seed of the simulated fleet (--demo)")] = 1,
    district: Annotated[
        str | None, typer.Option(help="district the demo fleet patrols [default: Miraflores]")
    ] = None,
) -> None:
    """Run the whole service in one process: API, ingest bridge, and what is not configured.

    Without SERENAZGO_DATABASE_URL a private PostgreSQL starts under
    SERENAZGO_DATA_DIR (default ~/.serenazgo); without SERENAZGO_MQTT_URL a
    private MQTT broker does. Ctrl-C stops everything cleanly.
    """
    from api.runtime import UpOptions, run_up

    settings = _settings()
    options = UpOptions(
        host=host or settings.host,
        port=port if port is not None else settings.port,
        demo=demo,
        broker_port=broker_port,
        seed=seed,
        district=district,
    )
    raise typer.Exit(run_up(settings, options, console))


def _sim_area(settings: Settings, district: str | None) -> Area:
    from tracker.area_file import load_area

    path = settings.area_file()
    if district is None and path == DEFAULT_DISTRICTS_FILE:
        district = "Miraflores"
    return load_area(path, district)


@app.command()
def simulate(
    mqtt_url: Annotated[
        str | None,
        typer.Option(help="broker to publish to [default: SERENAZGO_MQTT_URL or mqtt://127.0.0.1:1883]"),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="register the units in this database [default: SERENAZGO_DATABASE_URL]")
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option(
            help="register the units through a running API instead (its bridge learns them at once)"
        ),
    ] = None,
    api_token: Annotated[
        str | None,
        typer.Option(
            envvar="SERENAZGO_API_TOKEN",
            help="API token for --api-url: an admin, supervisor or integration user's (serenazgo user token)",
        ),
    ] = None,
    foot: Annotated[int, typer.Option(min=0, help="serenos on foot")] = 60,
    cars: Annotated[int, typer.Option(min=0, help="patrol cars")] = 25,
    motorcycles: Annotated[int, typer.Option(min=0, help="motorcycles")] = 15,
    drones: Annotated[int, typer.Option(min=0, help="drones")] = 4,
    speedup: Annotated[
        float,
        typer.Option(
            min=1.0, help="run S times faster, replaying the recent past until it meets the present"
        ),
    ] = 1.0,
    duration: Annotated[
        float | None, typer.Option(min=0.0, help="stop after this many seconds [default: never]")
    ] = None,
    seed: Annotated[int, typer.Option(help="random seed: the same seed gives the same fleet and moves")] = 1,
    district: Annotated[str | None, typer.Option(help="district to patrol [default: Miraflores]")] = None,
    bad_fix_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of deliberately bad fixes")
    ] = 0.01,
    incidents_per_hour: Annotated[
        float, typer.Option(min=0.0, help="incidents that dispatch a unit (status changes) per hour")
    ] = 30.0,
) -> None:
    """Publish a realistic simulated fleet (OwnTracks and native JSON, QoS 1) to a broker."""
    from mqtt_bridge.simulator import DEFAULT_CATCH_UP_S, PublishStats, SimClock, publish_fleet
    from tracker.simulation import FleetMix, FleetSimulation

    settings = _settings()
    with _friendly_errors():
        target = parse_mqtt_url(mqtt_url or settings.mqtt_url or "mqtt://127.0.0.1:1883")
        mix = FleetMix(foot, cars, motorcycles, drones)
        if mix.total == 0:
            raise typer.BadParameter("the fleet is empty: give at least one unit")
        catch_up = duration if duration is not None and speedup > 1 else DEFAULT_CATCH_UP_S
        clock = SimClock(speedup=speedup, catch_up_s=catch_up)
        sim = FleetSimulation(
            _sim_area(settings, district),
            mix,
            seed=seed,
            start=clock.sim_start,
            bad_fix_rate=bad_fix_rate,
            incidents_per_hour=incidents_per_hour,
        )
        _register_for_simulation(sim, api_url, api_token, database_url or settings.database_url)
        stats = PublishStats()
        console.print(
            f"publishing {mix.total} units to mqtt://{target.host}:{target.port}"
            + (f" at {speedup:g}× until it meets the present" if speedup > 1 else "")
            + "  (Ctrl-C to stop)"
        )

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            task = asyncio.create_task(publish_fleet(sim, target, clock, stats, stop, duration_s=duration))
            with Live(
                _status_line(stats, mix.total), console=console, refresh_per_second=4, transient=False
            ) as live:
                while not task.done():
                    await asyncio.wait([task], timeout=0.5)
                    live.update(_status_line(stats, mix.total, task.done()))
            await task

        asyncio.run(main())
        console.print()
        console.print(
            f"done: {stats.sent} pings ({stats.bad} deliberately bad) and {stats.statuses} status changes "
            f"sent, {stats.failed} failed"
        )


def _register_for_simulation(
    sim: FleetSimulation, api_url: str | None, api_token: str | None, database_url: str | None
) -> None:
    from mqtt_bridge.simulator import register_units

    if api_url:
        created, existing = _register_via_api(api_url, api_token, sim)
    elif database_url:
        made, existing = register_units(database_url, sim.units)
        created = len(made)
    else:
        err_console.print(
            "[yellow]warning:[/yellow] units not registered (no --api-url, --database-url or "
            "SERENAZGO_DATABASE_URL): the bridge dead-letters them unless SERENAZGO_AUTO_REGISTER is on"
        )
        return
    console.print(f"registered {created} new units ({existing} already known)")


def _register_via_api(api_url: str, api_token: str | None, sim: FleetSimulation) -> tuple[int, int]:
    """POST every simulated unit to a running API; return (created, already known)."""
    import urllib.error
    import urllib.request

    import orjson

    from mqtt_bridge.simulator import as_unit

    created = existing = 0
    headers = {"Content-Type": "application/json"}
    if api_token:
        headers["Authorization"] = f"Bearer {api_token}"
    endpoint = api_url.rstrip("/") + "/api/v1/units"
    if not endpoint.startswith(("http://", "https://")):
        raise SerenazgoError(f"--api-url {api_url!r} must start with http:// or https://")
    for sim_unit in sim.units:
        unit = as_unit(sim_unit)
        body = {
            "unit_id": unit.unit_id,
            "kind": str(unit.kind),
            "callsign": unit.callsign,
            "sector": unit.sector,
            "capabilities": sorted(unit.capabilities),
            "external_ids": unit.external_ids,
        }
        request = urllib.request.Request(  # noqa: S310  # scheme checked above
            endpoint, data=orjson.dumps(body), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                created += resp.status == 201
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise SerenazgoError(
                    f"the API refused to register units ({exc.code}): give --api-token (or "
                    "SERENAZGO_API_TOKEN) of an admin, supervisor or integration user; "
                    "`serenazgo user token NAME` issues one"
                ) from exc
            if exc.code != 409:
                detail = exc.read()[:300].decode(errors="replace")
                raise SerenazgoError(f"the API refused unit {unit.unit_id}: {exc.code} {detail}") from exc
            existing += 1
        except (urllib.error.URLError, OSError) as exc:
            raise SerenazgoError(f"cannot reach the API at {api_url}: {exc}; check --api-url") from exc
    return created, existing


def _status_line(stats: PublishStats, units: int, done: bool = False) -> Table:
    """The one-line live status of ``serenazgo simulate``."""
    grid = Table.grid(padding=(0, 2))
    state = (
        "[green]connected[/green]" if stats.connected else f"[yellow]connecting[/yellow] {stats.last_error}"
    )
    sim_now = stats.sim_now.astimezone(UTC).strftime("%H:%M:%S UTC") if stats.sim_now else "-"
    grid.add_row(
        f"[bold]{units}[/bold] units",
        f"sent [bold]{stats.sent}[/bold] pings ({stats.bad} bad), {stats.statuses} status changes",
        f"[bold]{stats.rate():.1f}[/bold]/s",
        f"sim time {sim_now}",
        state,
        f"failed {stats.failed}" if stats.failed else "",
    )
    return grid


@app.command("mavlink-gateway")
def mavlink_gateway(
    listen: Annotated[
        str,
        typer.Option(
            help="MAVLink link: udp:HOST:PORT listens (a ground station's or router's output), "
            "udpout:HOST:PORT heartbeats to an autopilot and reads its stream, tcp:HOST:PORT connects"
        ),
    ] = "udp:0.0.0.0:14550",
    unit: Annotated[
        list[str] | None,
        typer.Option(
            "--unit",
            help="SYSID=UNIT_ID, repeatable (default: the unit registered with that mavlink external id, "
            "else mav.<sysid>)",
        ),
    ] = None,
    mqtt_url: Annotated[
        str | None,
        typer.Option(help="broker to publish to (default: SERENAZGO_MQTT_URL or mqtt://127.0.0.1:1883)"),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="read the units' mavlink external ids here at start (default: SERENAZGO_DATABASE_URL)"
        ),
    ] = None,
    position_hz: Annotated[
        float, typer.Option(min=0.01, help="at most this many positions per second per aircraft")
    ] = 2.0,
    drone_hz: Annotated[
        float, typer.Option(min=0.01, help="at most this many drone-state messages per second per aircraft")
    ] = 1.0,
    client_id: Annotated[
        str, typer.Option(help="MQTT client id (one per gateway)")
    ] = "serenazgo-mavlink-gateway",
) -> None:
    """Turn a MAVLink stream into the native MQTT topics (serenazgo/units/{id}/position and /drone, QoS 1).

    Ctrl-C or SIGTERM stops it after publishing what it holds (a few seconds at most).
    """
    from drones.mavlink_gateway import GatewayOptions, GatewayStats, parse_link, parse_unit_map, run_gateway

    settings = _settings()
    with _friendly_errors():
        target = parse_mqtt_url(mqtt_url or settings.mqtt_url or "mqtt://127.0.0.1:1883")
        options = GatewayOptions(
            link=parse_link(listen),
            units={**_mavlink_units(database_url or settings.database_url), **parse_unit_map(unit or [])},
            position_hz=position_hz,
            drone_hz=drone_hz,
            client_id=client_id,
        )
        stats = GatewayStats()
        console.print(
            f"MAVLink {options.link} → mqtt://{target.host}:{target.port}, positions ≤ {position_hz:g}/s and "
            f"drone state ≤ {drone_hz:g}/s per aircraft  (Ctrl-C to stop)"
        )

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            task = asyncio.create_task(run_gateway(options, target, stop, stats))
            with Live(_gateway_status(stats), console=console, refresh_per_second=2, transient=False) as live:
                while not task.done():
                    await asyncio.wait([task], timeout=0.5)
                    live.update(_gateway_status(stats))
            await task

        try:
            asyncio.run(main())
        except OSError as exc:
            raise SerenazgoError(f"cannot open {options.link}: {exc}") from exc
        console.print(f"stopped: {stats.summary()}")


@app.command("mavlink-sim")
def mavlink_sim(
    to: Annotated[
        str, typer.Option(help="where to stream: udp:HOST:PORT (a mavlink-gateway's --listen address)")
    ] = "udp:127.0.0.1:14550",
    sysid: Annotated[int, typer.Option(min=1, max=254, help="the aircraft's MAVLink system id")] = 1,
    endurance: Annotated[
        float, typer.Option(min=60.0, help="seconds from a full battery to empty while flying")
    ] = 1200.0,
    duration: Annotated[
        float | None, typer.Option(min=0.0, help="stop after this many seconds (default: never)")
    ] = None,
) -> None:
    """Stream one simulated aircraft (ArduCopter-like, patrolling Miraflores from its dock) as MAVLink 2."""
    from datetime import datetime

    from drones.mavlink_gateway import parse_link
    from drones.mavlink_sim import SimAircraft, SimConfig, stream_to

    with _friendly_errors():
        link = parse_link(to)
        if link.kind == "tcp" or link.port == 0:
            raise SerenazgoError(f"--to {to!r}: give the gateway's UDP address, e.g. udp:127.0.0.1:14550")
    sim = SimAircraft(SimConfig(sysid=sysid, endurance_s=endurance), datetime.now(UTC))
    console.print(f"MAVLink 2 aircraft sysid {sysid} → udp:{link.host}:{link.port}  (Ctrl-C to stop)")

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(stream_to(sim, link.host, link.port, stop, duration))
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while not task.done():
                await asyncio.wait([task], timeout=0.5)
                lat, lon = sim.lat_lon()
                live.update(
                    f"{sim.phase:<10} battery {sim.battery:5.1f} %  {sim.up:5.1f} m above home  "
                    f"{lat:.5f}, {lon:.5f}"
                )
        return await task

    sent = asyncio.run(main())
    console.print(f"stopped: {sent} datagrams sent")


def _mavlink_units(database_url: str | None) -> dict[int, str]:
    """``{sysid: unit_id}`` of units registered with a mavlink external id, or {} without a database."""
    if not database_url:
        return {}
    from drones.mavlink_gateway import registered_units
    from tracker.store.units import load_all_units_sync

    try:
        return registered_units(load_all_units_sync(database_url))
    except Exception as exc:  # the gateway still runs, with --unit and derived ids
        err_console.print(f"[yellow]warning:[/yellow] cannot read the registered units ({exc}); using --unit")
        return {}


def _gateway_status(stats: GatewayStats) -> Table:
    """The live status of ``serenazgo mavlink-gateway``: the link, the broker, then one row per aircraft."""
    grid = Table.grid(padding=(0, 2))
    link = stats.listening or "opening…"
    broker = (
        "[green]broker connected[/green]"
        if stats.connected
        else f"[yellow]broker…[/yellow] {stats.last_error}"
    )
    rejected = sum(stats.rejected.values())
    grid.add_row(
        link,
        broker,
        f"[bold]{stats.positions}[/bold] positions, {stats.drone} drone states published",
        f"{stats.updates} messages used, [bold]{rejected}[/bold] rejected"
        + (f" ({', '.join(f'{r} {n}' for r, n in stats.rejected.most_common(2))})" if rejected else ""),
        f"[red]{stats.dropped} dropped[/red]" if stats.dropped else "",
    )
    for sysid, state in sorted(stats.systems.items()):
        unit_id = stats.units.get(sysid, f"mav.{sysid}")
        battery = f"{state.battery_pct:.0f} %" if state.battery_pct is not None else "battery ?"
        height = f"{state.alt_takeoff_m:.0f} m AGL" if state.alt_takeoff_m is not None else "height ?"
        grid.add_row(f"  sysid {sysid} → {unit_id}", state.flight_mode or "mode ?", battery, height,
                     f"fix {state.gps_fix}" if state.gps_fix is not None else "no GPS report")  # fmt: skip
    return grid


@app.command()
def bridge() -> None:
    """Run the ingest bridge alone (scale-out: N bridges share the load; set SERENAZGO_SHARE_GROUP).

    Needs SERENAZGO_DATABASE_URL and SERENAZGO_MQTT_URL; applies migrations first.
    Stops cleanly (stores and acknowledges what it holds) on SIGINT or SIGTERM.
    """
    from mqtt_bridge.__main__ import main as bridge_main

    _settings()  # report a bad environment the same way as the other commands
    raise typer.Exit(bridge_main())


def _with_database(database_url: str | None, what: str, fn: Callable[[str], T]) -> T:
    """Run ``fn(conninfo)`` on ``database_url`` (default: SERENAZGO_DATABASE_URL), else on the embedded
    database: the running service's, or one started for the occasion."""
    settings = _settings()
    url = database_url or settings.database_url
    if url:
        return fn(url)
    from api.runtime import embedded_pg_dir
    from tracker.store.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(embedded_pg_dir(settings.data_dir))
    if server.attach():  # `serenazgo up` is running on this data folder: use its server
        return fn(server.url)
    with console.status(f"starting the embedded PostgreSQL to {what}…"):
        server.start()
    try:
        return fn(server.url)
    finally:
        server.stop()


DatabaseUrlOption = Annotated[
    str | None, typer.Option(help="[default: SERENAZGO_DATABASE_URL, else the embedded database]")
]


@db_app.command("migrate")
def db_migrate(database_url: DatabaseUrlOption = None) -> None:
    """Apply pending migrations (safe to run from several processes at once)."""
    from tracker.store.migrations import migrate

    with _friendly_errors():
        applied = _with_database(database_url, "migrate", migrate)
    if applied:
        for m in applied:
            console.print(f"applied {m.version}: {m.name}")
    else:
        console.print("the schema is up to date")


@db_app.command("status")
def db_status(database_url: DatabaseUrlOption = None) -> None:
    """List the migrations and when each was applied."""
    from tracker.store.migrations import migration_status

    with _friendly_errors():
        rows = _with_database(database_url, "read its status", migration_status)
    table = Table("version", "name", "applied at")
    pending = 0
    for row in rows:
        applied = (
            row.applied_at.astimezone(UTC).isoformat(timespec="seconds") if row.applied_at else "pending"
        )
        pending += row.applied_at is None
        table.add_row(str(row.version), row.name, applied)
    console.print(table)
    console.print(f"{pending} pending" if pending else "up to date")


@db_app.command("schema")
def db_schema(
    timescale: Annotated[
        bool, typer.Option("--timescale/--plain", help="TimescaleDB hypertable path or plain partitions")
    ] = False,
) -> None:
    """Print the full DDL (every migration) for review or for a DBA to apply by hand."""
    from tracker.store.schema import schema_sql

    sys.stdout.write(schema_sql(timescale))


@evidence_app.command("key")
def evidence_key() -> None:
    """Print the signing key's fingerprint and public key (creating the key under the data folder if absent).

    Publish the fingerprint (SHA-256 of the raw Ed25519 public key) so that whoever
    receives a package can check it was signed by this installation.
    """
    from tracker.evidence import public_key_pem
    from tracker.evidence_key import installation_id, load_signing_key

    settings = _settings()
    with _friendly_errors():
        key = load_signing_key(settings)
    if key.created:
        err_console.print(f"generated a new signing key: {key.path} (mode 0600; keep a backup of it)")
    console.print(f"installation: {installation_id(settings, key)} ({settings.evidence.installation_name})")
    console.print(f"private key:  {key.path}")
    if key.public_path is not None:
        console.print(f"public key:   {key.public_path}")
    console.print(f"fingerprint:  [bold]{key.fingerprint}[/bold]")
    sys.stdout.write(public_key_pem(key.key.public_key()))


def _parse_time(value: str, option: str) -> datetime:
    """An ISO-8601 time from the command line; exit 2 saying what to give.

    A time without an offset is taken as UTC by ``resolve_window``, as for the HTTP route.
    """
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        err_console.print(
            f"[bold red]error:[/bold red] {option} {value!r} is not an ISO-8601 time (2024-05-06T09:30Z)"
        )
        raise typer.Exit(2) from None


@evidence_app.command("export")
def evidence_export(
    unit: Annotated[str, typer.Argument(help="the unit's id")],
    start: Annotated[str, typer.Option(help="ISO-8601 start of the window (UTC if no offset)")],
    end: Annotated[
        str, typer.Option(help="ISO-8601 end of the window, exclusive (at most 7 days after start)")
    ],
    out: Annotated[Path, typer.Option(help="where to write the ZIP package")],
    by: Annotated[str, typer.Option(help="who exports (name or badge): in the manifest and the audit log")],
    outliers: Annotated[
        bool, typer.Option("--outliers/--no-outliers", help="include fixes the filters judged OUTLIER")
    ] = True,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Export a unit's track and attended incidents over a window as a signed package (audited)."""
    from fastapi import HTTPException

    from api.routes.tracks import MAX_POINTS, resolve_window
    from tracker.evidence_key import load_signing_key
    from tracker.store.evidence import ExportRequest, export_signed

    settings = _settings()
    if not by.strip():
        err_console.print("[bold red]error:[/bold red] --by must name who exports")
        raise typer.Exit(2)
    now = datetime.now(UTC)
    try:
        window = resolve_window(_parse_time(start, "--start"), _parse_time(end, "--end"), now)
    except HTTPException as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc.detail}")
        raise typer.Exit(2) from exc
    with _friendly_errors():
        key = load_signing_key(settings)
        request = ExportRequest(
            unit_id=unit,
            start=window[0],
            end=window[1],
            include_outliers=outliers,
            exported_by=by.strip(),
            origin="cli",
            max_points=MAX_POINTS,
        )

        def run(url: str) -> EvidencePackage:
            async def main() -> EvidencePackage:
                import psycopg

                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    return await export_signed(conn, request, settings, key, now)

            return asyncio.run(main())

        package = _with_database(database_url, "export", run)
    out.write_bytes(package.data)
    counts = package.manifest["counts"]
    console.print(
        f"wrote {out} ({len(package.data)} bytes): {counts['track_points']} fixes, "
        f"{counts['incidents']} incident assignments, signed by {key.fingerprint}"
    )


@evidence_app.command("verify")
def evidence_verify(
    file: Annotated[Path, typer.Argument(help="the evidence package (ZIP)")],
    public_key: Annotated[
        Path | None,
        typer.Option(help="the municipality's published public key (PEM); default: the one in the manifest"),
    ] = None,
) -> None:
    """Check a package: its signature, every file's size and SHA-256, nothing missing or added.

    Exit 0 and VALID when all holds; 1 and INVALID with each failure otherwise;
    2 when the file or the key cannot be read.
    """
    from tracker.evidence import EvidenceError, load_public_key, verify_package

    try:
        data = file.read_bytes()
        given = load_public_key(public_key.read_bytes()) if public_key is not None else None
    except (OSError, EvidenceError) as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(2) from exc
    result = verify_package(data, given)
    m = result.manifest or {}
    table = Table(show_header=False, box=None)
    table.add_row("package", str(file))
    if result.fingerprint:
        table.add_row(f"key ({result.key_source})", result.fingerprint)
    if result.embedded_fingerprint and result.embedded_fingerprint != result.fingerprint:
        table.add_row("key in the manifest", result.embedded_fingerprint)
    if m:
        inst, unit, window = m.get("installation", {}), m.get("unit", {}), m.get("window", {})
        table.add_row("installation", f"{inst.get('id', '?')} ({inst.get('name', '?')})")
        table.add_row("unit", f"{unit.get('unit_id', '?')} {unit.get('callsign', '')}".strip())
        table.add_row("window", f"{window.get('start', '?')} .. {window.get('end', '?')} (end exclusive)")
        table.add_row("exported", f"{m.get('exported_at', '?')} by {m.get('exported_by', '?')}")
        table.add_row(
            "software",
            f"{m.get('software', {}).get('name', '?')} {m.get('software', {}).get('version', '?')}",
        )
    console.print(table)
    for name, size, digest in result.files:
        console.print(f"  [green]ok[/green] {name}  {size} bytes  sha256 {digest}")
    if result.valid:
        console.print(
            f"[bold green]VALID[/bold green]: the signature verifies and all {len(result.files)} files match "
            "the manifest. Compare the key fingerprint above with the one the municipality publishes."
        )
        return
    for problem in result.problems:
        console.print(f"  [bold red]FAIL[/bold red] {problem}")
    console.print(
        f"[bold red]INVALID[/bold red]: {len(result.problems)} problem(s); do not rely on this package."
    )
    raise typer.Exit(1)


@unit_app.command("credentials")
def unit_credentials(
    unit: Annotated[str, typer.Argument(help="the unit id")],
    revoke: Annotated[
        bool, typer.Option("--revoke", help="revoke the unit's token without a new one")
    ] = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Issue a new device token for UNIT (printed once; its previous token stops working).

    Devices send it on HTTP ingest as ``Authorization: Bearer <token>``, as the password
    of HTTP Basic auth (OwnTracks), or as ``?token=<token>`` in the server URL (Traccar Client).
    """
    from tracker.store.credentials import issue_token_sync, revoke_tokens_sync

    with _friendly_errors():
        if revoke:
            n = _with_database(database_url, "revoke the token", lambda c: revoke_tokens_sync(c, unit))
            console.print(f"revoked {n} token(s) of unit {unit}")
            return
        token = _with_database(database_url, "issue a token", lambda c: issue_token_sync(c, unit))
    err_console.print(f"new device token of unit {unit} (shown once; any previous one is revoked):")
    sys.stdout.write(token + "\n")


def _new_password(prompt: str) -> str:
    """A password typed twice (hidden), or read from stdin when it is not a terminal (scripts)."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    password: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=True)
    return password


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="login name: a-z 0-9 _ . -")],
    role: Annotated[
        str, typer.Option(help="admin, supervisor, operator, planner, viewer or integration")
    ] = "operator",
    display_name: Annotated[str, typer.Option(help="name shown in the console and the audit trail")] = "",
    password: Annotated[
        bool,
        typer.Option(
            "--password/--no-password",
            help="ask for a password (typed twice; from stdin in scripts); --no-password: API tokens only "
            "[default: --no-password for integration, else --password]",
        ),
    ] = True,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Add a user with ROLE; integrations get no password (issue them a token with `user token`)."""
    from tracker.store.users import add_user_sync
    from tracker.users import Role, parse_role

    settings = _settings()
    with _friendly_errors():
        parsed = parse_role(role)
        secret = (
            _new_password(f"password for {username}") if password and parsed is not Role.INTEGRATION else None
        )
        _with_database(
            database_url, "add the user",
            lambda c: add_user_sync(
                c, username, parsed, secret, display_name=display_name, created_by="cli",
                min_password_length=settings.auth.min_password_length,
            ),
        )  # fmt: skip
    how = (
        "can log in to the console" if secret else "acts through API tokens: serenazgo user token " + username
    )
    console.print(f"added {username} ({parsed.value}); {how}")


@user_app.command("list")
def user_list(database_url: DatabaseUrlOption = None) -> None:
    """Every user: role, state, and how many live sessions and tokens."""
    from tracker.store.users import list_users_sync

    with _friendly_errors():
        rows = _with_database(database_url, "list users", list_users_sync)
    table = Table()
    # Names and roles never wrap or shorten (they are what an admin types next); the rest may.
    for header in ("user", "role"):
        table.add_column(header, no_wrap=True, min_width=len("integration"))
    for header in ("name", "state", "login", "live tokens", "created", "by"):
        table.add_column(header)
    for r in rows:
        table.add_row(
            r.username, r.role.value, r.display_name, "[red]disabled[/red]" if r.disabled else "active",
            "password" if r.can_log_in else "tokens only", str(r.live_tokens),
            r.created_at.strftime("%Y-%m-%d %H:%M"), r.created_by,
        )  # fmt: skip
    console.print(table)


@user_app.command("disable")
def user_disable(
    username: Annotated[str, typer.Argument(help="the user")],
    enable: Annotated[bool, typer.Option("--enable", help="enable the user again")] = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Disable a user: its sessions and API tokens stop working (within SERENAZGO_AUTH__CACHE_S)."""
    from tracker.store.users import set_disabled_sync

    with _friendly_errors():
        _with_database(
            database_url, "change the user",
            lambda c: set_disabled_sync(c, username, not enable),
        )  # fmt: skip
    console.print(f"{username} {'enabled' if enable else 'disabled'}")


@user_app.command("password")
def user_password(
    username: Annotated[str, typer.Argument(help="the user")], database_url: DatabaseUrlOption = None
) -> None:
    """Set a user's password (typed twice; from stdin in scripts); its console sessions end."""
    from tracker.store.users import set_password_sync

    settings = _settings()
    with _friendly_errors():
        secret = _new_password(f"new password for {username}")
        minimum = settings.auth.min_password_length
        _with_database(
            database_url, "change the password",
            lambda c: set_password_sync(c, username, secret, min_password_length=minimum),
        )  # fmt: skip
    console.print(f"password of {username} changed; its sessions are ended")


@user_app.command("token")
def user_token(
    username: Annotated[str, typer.Argument(help="the user the token acts as (its role applies)")],
    name: Annotated[str, typer.Option(help="what the token is for, e.g. 'video platform'")] = "",
    expires_days: Annotated[
        float | None, typer.Option(min=0.001, help="days until it expires [default: never]")
    ] = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Issue an API token (printed once on stdout): send it as `Authorization: Bearer <token>`."""
    from datetime import timedelta

    from tracker.store.users import issue_api_token_sync

    expires = None if expires_days is None else timedelta(days=expires_days)
    with _friendly_errors():
        token = _with_database(
            database_url, "issue the token",
            lambda c: issue_api_token_sync(c, username, name, expires_in=expires),
        )  # fmt: skip
    err_console.print(f"new API token of {username} (shown once; revoke with `serenazgo user revoke ID`):")
    sys.stdout.write(token + "\n")


@user_app.command("tokens")
def user_tokens(
    username: Annotated[str | None, typer.Argument(help="only this user's")] = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """API tokens and console sessions, newest first (never the secrets)."""
    from tracker.store.users import list_tokens_sync

    with _friendly_errors():
        rows = _with_database(database_url, "list tokens", lambda c: list_tokens_sync(c, username))

    def when(ts: datetime | None) -> str:
        return "" if ts is None else ts.strftime("%Y-%m-%d %H:%M")

    table = Table("id", "user", "kind", "name", "from", "created", "expires", "revoked", "last used")
    for r in rows:
        table.add_row(
            str(r.token_id), r.username, r.kind, r.name, r.origin, when(r.created_at), when(r.expires_at),
            when(r.revoked_at), when(r.last_used_at),
        )  # fmt: skip
    console.print(table)


@user_app.command("revoke")
def user_revoke(
    token_id: Annotated[int, typer.Argument(help="the id `serenazgo user tokens` shows")],
    database_url: DatabaseUrlOption = None,
) -> None:
    """Revoke an API token or end a console session."""
    from tracker.store.users import revoke_token_id_sync

    with _friendly_errors():
        done = _with_database(
            database_url,
            "revoke the token",
            lambda c: revoke_token_id_sync(c, token_id),
        )
    if not done:
        err_console.print(f"[red]no live token with id {token_id}[/red] (see `serenazgo user tokens`)")
        raise typer.Exit(1)
    console.print(f"token {token_id} revoked")


@broker_app.command("acl")
def broker_acl(
    out: Annotated[Path, typer.Option("--out", help="folder to write password_file and acl_file into")],
    owner: Annotated[
        str | None,
        typer.Option(help="hand both files to this OS user (the broker's, e.g. mosquitto; needs root)"),
    ] = None,
    allow_anonymous: Annotated[
        bool, typer.Option(help="let clients without a login use every topic (closed lab networks only)")
    ] = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Write Mosquitto's password file and ACL for every unit's device credential, and the bridge's login.

    The bridge's login is the user and password of SERENAZGO_MQTT_URL. Point Mosquitto at the files
    (``password_file``, ``acl_file``, ``allow_anonymous false``) and reload it (SIGHUP) after each run;
    run it again whenever credentials are issued or revoked.
    """
    import pwd

    from mqtt_bridge.broker_acl import PASSWORD_FILE, bridge_account, render_access, write_access_files
    from tracker.store.credentials import broker_credentials_sync

    settings = _settings()
    target = settings.mqtt
    if target is None or not target.username or not target.password:
        err_console.print(
            "[bold red]error:[/bold red] set SERENAZGO_MQTT_URL=mqtt://USER:PASSWORD@HOST:PORT with the "
            "bridge's login: it is written into the files with the bridge's topics"
        )
        raise typer.Exit(2)
    chown = None
    if owner is not None:
        try:
            entry = pwd.getpwnam(owner)
        except KeyError:
            err_console.print(f"[bold red]error:[/bold red] no OS user {owner!r}")
            raise typer.Exit(2) from None
        chown = lambda path: os.chown(path, entry.pw_uid, entry.pw_gid)  # noqa: E731
    with _friendly_errors():
        creds = _with_database(database_url, "read device credentials", broker_credentials_sync)
        try:
            previous = (out / PASSWORD_FILE).read_text(encoding="utf-8")
        except OSError:
            previous = ""
        bridge = bridge_account(target.username, target.password, previous)
        files = render_access([bridge], creds, allow_anonymous=allow_anonymous)
    for why in files.skipped:
        err_console.print(f"[yellow]left out:[/yellow] {why}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        changed = write_access_files(out, files, chown)
    except OSError as exc:
        err_console.print(f"[bold red]error:[/bold red] cannot write into {out}: {exc}")
        raise typer.Exit(1) from exc
    n_devices = files.password_file.count("\n") - 1
    state = "written" if changed else "unchanged"
    console.print(
        f"{out / 'password_file'} and {out / 'acl_file'} {state}: {n_devices} device(s) and the bridge"
    )


@app.command()
def version() -> None:
    """Print serenazgo's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        console.print(f"serenazgo {dist_version('serenazgo')}")
    except PackageNotFoundError:
        console.print("serenazgo (not installed)")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
