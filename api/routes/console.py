"""The operator console: the map page at ``/``, its static files, Leaflet, and ``/api/v1/area``.

Leaflet is served from the ``xstatic-leaflet`` wheel under ``/static/leaflet/`` so the
console works without Internet access; only the OpenStreetMap background tiles
need it, and the page works without them (the district boundaries come from
``/api/v1/area``).
"""

from __future__ import annotations

from pathlib import Path

import xstatic.pkg.leaflet as xstatic_leaflet
from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api.access import READ, admits, public
from api.deps import Context

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
LEAFLET_DIR = Path(xstatic_leaflet.BASE_DIR)

router = APIRouter()
router.mount("/static/console", StaticFiles(directory=STATIC_DIR), name="console-static")
router.mount("/static/leaflet", StaticFiles(directory=LEAFLET_DIR), name="leaflet")


@router.get("/", include_in_schema=False, **public("the page itself holds no data: it asks to log in"))
async def console_page() -> FileResponse:
    """The operator console (a static page that talks to the API and the WebSocket)."""
    # no-cache: after an upgrade, operators get the new page without clearing their browser.
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get(
    "/api/v1/area",
    tags=["console"],
    summary="Boundary of the service area (GeoJSON)",
    response_class=FileResponse,
    responses={200: {"content": {"application/geo+json": {}}}},
    **admits(READ),
)
async def area(ctx: Context) -> FileResponse:
    """The service area boundary: ``SERENAZGO_AREA``, or Lima's districts shipped in tracker/data."""
    return FileResponse(ctx.settings.area_file(), media_type="application/geo+json")
