"""``/api/v1/units/{unit_id}/track``: where a unit went over a time window (GeoJSON, CSV or GPX)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

import orjson
from fastapi import APIRouter, HTTPException, Query, Response, status

from api.access import READ, admits
from api.deps import Pool
from api.schemas import Problem
from tracker.errors import UnitNotFoundError
from tracker.store import queries
from tracker.store import units as unit_store
from tracker.track_formats import iso_z, track_csv, track_geojson, track_gpx

router = APIRouter(prefix="/api/v1/units", tags=["tracks"])

DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=7)
MAX_POINTS = 200_000  # a drone reporting every 2 s for 4.6 days; beyond this, ask for a shorter window


# The window parameters, shared with the evidence route (same defaults, same checks in resolve_window).
StartQuery = Annotated[datetime | None, Query(description="ISO-8601; default: end - 24 h (UTC if no offset)")]
EndQuery = Annotated[datetime | None, Query(description="ISO-8601, exclusive; default: now, or start + 24 h")]


class TrackFormat(StrEnum):
    """Output format of a track."""

    GEOJSON = "geojson"
    CSV = "csv"
    GPX = "gpx"


MEDIA_TYPES = {
    TrackFormat.GEOJSON: "application/geo+json",
    TrackFormat.CSV: "text/csv; charset=utf-8",
    TrackFormat.GPX: "application/gpx+xml",
}


def _utc(ts: datetime) -> datetime:
    # A time without an offset is taken as UTC, the system's only time zone inside.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _span(d: timedelta) -> str:
    """A window length for people: ``7 days``, ``24 hours``, ``90 minutes``."""
    secs = int(d.total_seconds())
    if secs % 86400 == 0 and secs > 86400:
        return f"{secs // 86400} days"
    if secs % 3600 == 0:
        return f"{secs // 3600} hours"
    return f"{secs // 60} minutes"


def resolve_window(
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    default: timedelta = DEFAULT_WINDOW,
    longest: timedelta = MAX_WINDOW,
) -> tuple[datetime, datetime]:
    """The ``[start, end)`` window asked for: the ``default`` (24 h) up to now when unsaid; 422 if impossible.

    A window longer than ``longest`` (7 days) is refused with a 422 too.

    >>> now = datetime(2024, 5, 6, 12, tzinfo=UTC)
    >>> [iso_z(t) for t in resolve_window(None, None, now)]
    ['2024-05-05T12:00:00Z', '2024-05-06T12:00:00Z']
    """
    if start is None and end is None:
        end = now
    if end is None:
        assert start is not None
        end = _utc(start) + default
    end = _utc(end)
    start = end - default if start is None else _utc(start)
    if end <= start:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"end ({iso_z(end)}) must be after start ({iso_z(start)})",
        )
    if end - start > longest:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"the window {iso_z(start)} .. {iso_z(end)} is longer than {_span(longest)}: "
            "ask for several shorter windows",
        )
    return start, end


@router.get(
    "/{unit_id}/track",
    summary="A unit's track over a time window",
    responses={
        200: {
            "content": {
                "application/geo+json": {},
                "text/csv": {},
                "application/gpx+xml": {},
            },
            "description": "GeoJSON Feature (LineString, lon/lat), CSV with a header row, or GPX 1.1",
        },
        404: {"model": Problem},
        422: {"model": Problem},
    },
    **admits(READ),
)
async def get_track(
    unit_id: str,
    pool: Pool,
    start: StartQuery = None,
    end: EndQuery = None,
    format: Annotated[TrackFormat, Query(description="geojson, csv or gpx")] = TrackFormat.GEOJSON,
    include_outliers: Annotated[
        bool, Query(description="include fixes the filters judged OUTLIER (spikes); excluded by default")
    ] = False,
) -> Response:
    """The unit's fixes with ``start <= ts < end``, oldest first, in the chosen format."""
    now = datetime.now(UTC)
    window_start, window_end = resolve_window(start, end, now)
    try:
        unit = await unit_store.get_unit(pool, unit_id)
    except UnitNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    points = await queries.track(
        pool, unit_id, window_start, window_end, exclude_outliers=not include_outliers, limit=MAX_POINTS + 1
    )
    if len(points) > MAX_POINTS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"more than {MAX_POINTS} fixes in this window: ask for a shorter one",
        )
    stem = f"{unit_id}_{window_start:%Y%m%dT%H%M%SZ}"
    if format is TrackFormat.CSV:
        body: str | bytes = track_csv(unit, points)
        headers = {"Content-Disposition": f'attachment; filename="{stem}.csv"'}
    elif format is TrackFormat.GPX:
        body = track_gpx(unit, points, now)
        headers = {"Content-Disposition": f'attachment; filename="{stem}.gpx"'}
    else:
        body = orjson.dumps(track_geojson(unit, points, window_start, window_end))
        headers = {}
    return Response(body, media_type=MEDIA_TYPES[format], headers=headers)
