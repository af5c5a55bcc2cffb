"""``/api/v1/events``: unit events (geofences, freshness, battery, arrivals, drones), paged by event id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status

from api.access import READ, admits
from api.deps import Context
from api.schemas import Problem
from tracker.events import EventEngine, EventType

router = APIRouter(prefix="/api/v1/events", tags=["events"])

MAX_PAGE = 1000


async def get_event_engine(ctx: Context) -> EventEngine:
    """The running :class:`EventEngine`, or 503 saying why there is none."""
    if ctx.events is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the event engine is not running in this process, so geofences and events are unavailable here: "
            "start serenazgo with it (serenazgo up) or ask the process that runs it",
        )
    return ctx.events


Events = Annotated[EventEngine, Depends(get_event_engine)]


def parse_since(since: str | None) -> tuple[int | None, datetime | None]:
    """``since`` as (after this event id, at or after this time); 422 saying the accepted forms otherwise."""
    if since is None or since == "":
        return None, None
    if since.isdigit():
        return int(since), None
    try:
        when = datetime.fromisoformat(since)
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"since {since[:60]!r} is neither an event id (digits) nor an ISO-8601 time "
            "such as 2026-11-25T21:00:00Z",
        ) from exc
    # A time without a zone is UTC (the system's zone), not the server's local time.
    return None, when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@router.get(
    "",
    summary="Unit events, oldest first, paged by event id",
    responses={422: {"model": Problem}, 503: {"model": Problem}},
    **admits(READ),
)
async def list_events(
    engine: Events,
    since: Annotated[
        str | None,
        Query(description="an event id (events after it) or an ISO-8601 time (events at or after it)"),
    ] = None,
    event_type: Annotated[
        list[str] | None, Query(alias="type", description="event type(s); repeat the parameter for several")
    ] = None,
    unit_id: str | None = None,
    geofence_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict[str, Any]:
    """``{"events": [...], "next": <since for the next page>}``, ordered by event id.

    Poll or page with ``since=<next>``: ids only grow, so nothing is skipped or
    repeated (paging by time could do both).
    """
    after_id, when = parse_since(since)
    known = {t.value for t in EventType}
    for t in event_type or ():
        if t not in known:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"unknown event type {t[:60]!r}: use one of {', '.join(sorted(known))}",
            )
    events = await engine.list_events(
        after_id=after_id, since=when, types=event_type, unit_id=unit_id, geofence_id=geofence_id, limit=limit
    )
    last = events[-1].event_id if events else None
    return {
        "events": [e.to_json() for e in events],
        "next": str(last) if last is not None else (since or None),
    }
