"""``/api/v1/units/{unit_id}/evidence``: a unit's track and attended incidents as a signed evidence package.

The ZIP (see :mod:`tracker.evidence`) carries GPX, GeoJSON, KML and CSV files
and a manifest signed with the installation's Ed25519 key, for requests from the
Ministerio Público, Poder Judicial and PNP; ``serenazgo evidence verify`` checks
one. Each export is recorded in the audit log (who, when, from where, which
window, the manifest's SHA-256).

Who exports is the logged-in user (or the API token's user); an integration may
add whom it exports for with the ``X-Operator`` header or ``operator`` parameter.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status

from api.access import EXPORT, Actor, acting_as, admits
from api.deps import Context, Pool
from api.routes.tracks import MAX_POINTS, EndQuery, StartQuery, resolve_window
from api.schemas import Problem
from tracker.errors import UnitNotFoundError
from tracker.evidence_key import load_signing_key
from tracker.store.evidence import ExportRequest, TooManyPointsError, export_signed

router = APIRouter(prefix="/api/v1/units", tags=["evidence"])


@router.get(
    "/{unit_id}/evidence",
    summary="A signed evidence package of a unit's track and attended incidents",
    response_class=Response,
    responses={
        200: {
            "content": {"application/zip": {}},
            "description": "ZIP: track and incident files, manifest.json, manifest.sig (Ed25519)",
        },
        404: {"model": Problem, "description": "no such unit"},
        422: {"model": Problem, "description": "bad window or too many fixes"},
    },
    **admits(EXPORT),
)
async def get_evidence(
    unit_id: str,
    request: Request,
    ctx: Context,
    pool: Pool,
    actor: Actor,
    start: StartQuery = None,
    end: EndQuery = None,
    include_outliers: Annotated[
        bool,
        Query(
            description="include fixes the filters judged OUTLIER (flagged in the CSV); default: all stored"
        ),
    ] = True,
    operator: Annotated[
        str | None,
        Query(max_length=128, description="whom an integration exports for (recorded beside its own name)"),
    ] = None,
    x_operator: Annotated[str | None, Header(max_length=128, description="as the operator parameter")] = None,
) -> Response:
    """Build, sign and return the package; 404 for an unknown unit, 422 for a bad window.

    The manifest's ``exported_by`` is the logged-in user or the API token's user; an
    integration (the video platform) may add whom it exports for (``operator``).
    """
    now = datetime.now(UTC)
    window_start, window_end = resolve_window(start, end, now)
    who = acting_as(actor, x_operator or operator or "")
    settings = ctx.settings
    # The key file is read (or created, once) off the event loop; it never leaves this process.
    key = await asyncio.to_thread(load_signing_key, settings)
    req = ExportRequest(
        unit_id=unit_id,
        start=window_start,
        end=window_end,
        include_outliers=include_outliers,
        exported_by=who,
        origin=request.client.host if request.client else "",
        max_points=MAX_POINTS,
    )
    try:
        package = await export_signed(pool, req, settings, key, now)
    except UnitNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except TooManyPointsError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return Response(
        package.data,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{package.filename}"',
            "X-Evidence-Manifest-SHA256": package.manifest_sha256,
        },
    )
