"""``/api/v1/units``: register, list and read field units."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.access import FLEET, READ, admits
from api.deps import Fleet, Pool, Registry
from api.schemas import Problem, UnitCreate, UnitOut
from tracker.errors import DuplicateUnitError, UnitNotFoundError
from tracker.model import UnitKind
from tracker.store import units as unit_store

router = APIRouter(prefix="/api/v1/units", tags=["units"])


@router.get("", summary="List registered units", **admits(READ))
async def list_units(pool: Pool, kind: UnitKind | None = None, sector: str | None = None) -> list[UnitOut]:
    """Every registered unit in id order, optionally of one kind or one sector."""
    units = await unit_store.list_units(pool)
    return [
        UnitOut.of(u)
        for u in units
        if (kind is None or u.kind is kind) and (sector is None or u.sector == sector)
    ]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register a unit",
    responses={409: {"model": Problem, "description": "unit id or an external id already registered"}},
    **admits(FLEET),
)
async def create_unit(body: UnitCreate, pool: Pool, registry: Registry, fleet: Fleet) -> UnitOut:
    """Store the unit, then make it known to the running bridge at once (registry and live fleet)."""
    unit = body.to_unit()
    try:
        # The database decides uniqueness (it is shared by every bridge and API process).
        await unit_store.create_unit(pool, unit)
    except DuplicateUnitError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    try:
        registry.add(unit)
    except DuplicateUnitError as exc:
        # The bridge's registry reload may have loaded this very unit from the database since our
        # insert: the same id with the same external ids is the unit we created, not a conflict.
        known = registry.get(unit.unit_id)
        if known is None or known.external_ids != unit.external_ids:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    fleet.upsert_unit(unit)
    return UnitOut.of(unit)


@router.get("/{unit_id}", summary="Read one unit", responses={404: {"model": Problem}}, **admits(READ))
async def get_unit(unit_id: str, pool: Pool) -> UnitOut:
    """The unit ``unit_id``, or 404."""
    try:
        return UnitOut.of(await unit_store.get_unit(pool, unit_id))
    except UnitNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
