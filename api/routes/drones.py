"""``/api/v1/drones``: every drone's live state with its endurance figures, and its telemetry history.

The live state comes from the in-memory LiveFleet (no database round trip); the
endurance figures from :mod:`drones.endurance` (the aircraft profile, the battery,
the way home). The telemetry history comes from ``drone_telemetry``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Response, status

from api.access import READ, admits
from api.context import ApiContext
from api.deps import Context, Pool
from api.routes.tracks import resolve_window
from api.schemas import Problem
from drones.alerts import squadron_model, watched
from drones.endurance import Endurance, SquadronModel
from tracker.fleet import UnitState
from tracker.model import DroneTelemetry
from tracker.store import queries
from tracker.track_formats import iso_z, num

router = APIRouter(prefix="/api/v1/drones", tags=["drones"])

DEFAULT_WINDOW = timedelta(hours=1)
MAX_WINDOW = timedelta(hours=24)
MAX_ROWS = 100_000  # DJI OSD every 2 s is 43,200 a day; a faster MAVLink stream needs a shorter window
# Telemetry columns of the CSV and JSON rows, in the record's order (unit_id and ts first).
TELEMETRY_FIELDS = tuple(f.name for f in fields(DroneTelemetry))


class TelemetryFormat(StrEnum):
    """Output format of a drone's telemetry."""

    JSON = "json"
    CSV = "csv"


def _model(ctx: ApiContext) -> SquadronModel:
    """The runtime's endurance model, else one built from the settings and the coverage docks (cached)."""
    if ctx.squadron is None:
        docks = ctx.coverage.docks if ctx.coverage is not None else ()
        ctx.squadron = squadron_model(ctx.settings, docks)
    return ctx.squadron


def _value(v: object) -> object:
    if isinstance(v, datetime):
        return iso_z(v)
    if isinstance(v, StrEnum):
        return str(v)
    if isinstance(v, float):
        return num(v, 7)
    return v


def telemetry_json(t: DroneTelemetry) -> dict[str, Any]:
    """One telemetry record as a JSON-ready dict (UTC ``Z`` times, NaN as null)."""
    return {name: _value(getattr(t, name)) for name in TELEMETRY_FIELDS}


def telemetry_csv(rows: list[DroneTelemetry]) -> str:
    """Telemetry records as CSV with a header row; empty cells for unknown values."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TELEMETRY_FIELDS)
    for t in rows:
        writer.writerow(["" if (v := _value(getattr(t, name))) is None else v for name in TELEMETRY_FIELDS])
    return out.getvalue()


def _endurance_json(e: Endurance) -> dict[str, Any]:
    p = e.profile
    return {
        "profile": {
            "key": e.profile_key,
            "name": p.name,
            "cruise_mps": p.cruise_mps,
            "max_flight_s": p.max_flight_s,
            "derating": p.derating,
            "reserve": p.reserve,
            "usable_s": round(p.usable_s, 1),
        },
        "endurance_s": num(e.endurance_s, 1),
        "limited_by": e.limited_by,
        "remaining_s": num(e.remaining_s, 1),
        "reserve_s": num(e.reserve_s, 1),
        "usable_remaining_s": num(e.usable_remaining_s, 1),
        "distance_home_m": num(e.distance_home_m, 1),
        "time_home_s": num(e.time_home_s, 1),
        "return_margin_s": num(e.margin_s, 1),
        "range_m": num(e.range_m, 1),
        "landing_s": e.landing_s,
    }


def drone_json(ctx: ApiContext, state: UnitState, e: Endurance, now: datetime) -> dict[str, Any]:
    """One drone's live state and endurance (the shape of ``GET /api/v1/drones/{id}``)."""
    unit, fix, tel = state.unit, state.fix, state.drone
    cfg = ctx.settings.drones
    position = None
    if fix is not None:
        position = {
            "lat": round(fix.lat, 7),
            "lon": round(fix.lon, 7),
            "ts": iso_z(fix.ts),
            "age_s": round(max((now - fix.ts).total_seconds(), 0.0), 1),
            "speed_mps": num(fix.speed, 2),
            "heading": num(fix.heading, 1),
        }
    telemetry = None
    if tel is not None:
        telemetry = telemetry_json(tel)
        del telemetry["unit_id"]
        telemetry["age_s"] = round(max((now - tel.ts).total_seconds(), 0.0), 1)
    home = None
    if e.home_lat is not None and e.home_lon is not None:
        home = {"lat": e.home_lat, "lon": e.home_lon, "source": e.home_source}
    dock = None
    if e.dock is not None:
        dock = {"dock_id": e.dock.dock_id, "name": e.dock.name, "lat": e.dock.lat, "lon": e.dock.lon}
    alt = None if tel is None else tel.alt_takeoff_m
    return {
        "unit_id": unit.unit_id,
        "callsign": unit.callsign,
        "sector": unit.sector,
        "status": str(state.status),
        "freshness": str(ctx.fleet.freshness(state, now)),
        "airborne": e.airborne,
        "position": position,
        "telemetry": telemetry,
        "home": home,
        "dock": dock,
        "endurance": _endurance_json(e),
        "altitude_exceeded": alt is not None and alt > cfg.altitude_limit_m,
        "return_required": e.airborne and e.margin_s is not None and e.margin_s <= cfg.return_margin_s,
        "alerts": ctx.events.drone_alerts(unit.unit_id) if ctx.events is not None else [],
        "limits": {"altitude_m": cfg.altitude_limit_m, "return_margin_s": cfg.return_margin_s},
    }


def _drone_state(ctx: ApiContext, unit_id: str) -> UnitState:
    state = ctx.fleet.get(unit_id)
    if state is None or not watched(state):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no drone {unit_id[:64]!r}: GET /api/v1/drones lists them (a drone is a unit of kind drone "
            "or one that sends drone telemetry)",
        )
    return state


@router.get(
    "", summary="Every drone's live state: position, battery, altitude, return-home margin", **admits(READ)
)
async def list_drones(ctx: Context) -> dict[str, Any]:
    """``{"generated_at", "limits", "drones": [...]}``, a drone per entry in unit id order (``/{unit_id}``).

    ``limits`` (altitude limit, return margin) is also given at the top, so a
    client (the console's sortie planner) knows them before any drone is tracked.
    """
    now = datetime.now(UTC)
    states = [s for s in ctx.fleet.snapshot() if watched(s)]
    model = _model(ctx)
    assessed = model.assess_many([(s.unit.unit_id, s.drone, s.fix) for s in states])
    cfg = ctx.settings.drones
    return {
        "generated_at": iso_z(now),
        "limits": {"altitude_m": cfg.altitude_limit_m, "return_margin_s": cfg.return_margin_s},
        "drones": [drone_json(ctx, s, e, now) for s, e in zip(states, assessed, strict=True)],
    }


@router.get(
    "/{unit_id}",
    summary="One drone's live state and endurance",
    responses={404: {"model": Problem}},
    **admits(READ),
)
async def get_drone(unit_id: str, ctx: Context) -> dict[str, Any]:
    """Position and freshness, the newest telemetry (battery, remaining flight, altitudes, vertical
    speed, flight mode, dock), home, and the endurance model's figures: the profile, usable time
    above the reserve, distance and time home, return-home margin (s) and remaining range (m)."""
    state = _drone_state(ctx, unit_id)
    now = datetime.now(UTC)
    return drone_json(ctx, state, _model(ctx).assess(unit_id, state.drone, state.fix), now)


@router.get(
    "/{unit_id}/telemetry",
    summary="A drone's telemetry over a time window (JSON or CSV)",
    responses={
        200: {"content": {"application/json": {}, "text/csv": {}}, "description": "records, oldest first"},
        404: {"model": Problem},
        422: {"model": Problem},
    },
    **admits(READ),
)
async def get_telemetry(
    unit_id: str,
    ctx: Context,
    pool: Pool,
    start: Annotated[
        datetime | None, Query(description="ISO-8601; default: end - 1 h (UTC if no offset)")
    ] = None,
    end: Annotated[
        datetime | None, Query(description="ISO-8601, exclusive; default: now, or start + 1 h")
    ] = None,
    format: Annotated[TelemetryFormat, Query(description="json or csv")] = TelemetryFormat.JSON,
) -> Response:
    """The drone's stored telemetry with ``start <= ts < end`` (at most 24 h), oldest first."""
    window_start, window_end = resolve_window(start, end, datetime.now(UTC), DEFAULT_WINDOW, MAX_WINDOW)
    _drone_state(ctx, unit_id)
    rows = await queries.drone_telemetry(pool, unit_id, window_start, window_end, limit=MAX_ROWS + 1)
    if len(rows) > MAX_ROWS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"more than {MAX_ROWS} telemetry records in this window: ask for a shorter one",
        )
    if format is TelemetryFormat.CSV:
        stem = f"{unit_id}_telemetry_{window_start:%Y%m%dT%H%M%SZ}"
        return Response(
            telemetry_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{stem}.csv"'},
        )
    body = {
        "unit_id": unit_id,
        "start": iso_z(window_start),
        "end": iso_z(window_end),
        "telemetry": [telemetry_json(t) for t in rows],
    }
    return Response(orjson.dumps(body), media_type="application/json")
