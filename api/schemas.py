"""Request and response bodies (pydantic lives only here, at the HTTP edge)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from mqtt_bridge.broker_acl import DJI_GATEWAY
from tracker.errors import InvalidUnitIdError
from tracker.model import Source, Unit, UnitKind, UnitStatus, is_valid_unit_id

# Protocols a unit can be known by besides its own id (native senders use the unit id), and the
# serial of the DJI gateway (dock or remote controller) that publishes for an aircraft (broker ACL).
EXTERNAL_PROTOCOLS = (*(s.value for s in Source if s is not Source.NATIVE), DJI_GATEWAY)

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)]


class UnitCreate(BaseModel):
    """Body of ``POST /api/v1/units``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "unit_id": "ser-014",
                    "kind": "foot",
                    "callsign": "SER-014",
                    "sector": "S2",
                    "capabilities": ["first_aid"],
                    "external_ids": {"owntracks": "owntracks/ser014/phone"},
                }
            ]
        },
    )

    unit_id: str = Field(
        description="1-64 characters from A-Z a-z 0-9 _ . : -, starting with a letter or digit"
    )
    kind: UnitKind
    callsign: ShortText = ""
    sector: ShortText = ""
    capabilities: list[
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    ] = Field(default_factory=list, max_length=32)
    external_ids: dict[str, str] = Field(
        default_factory=dict,
        description="protocol -> the device's own id: owntracks ('owntracks/{user}/{device}'), "
        "osmand, dji (aircraft serial), dji_gateway (its dock's serial: the broker lets the unit's "
        "credential publish the dock's topics), mavlink",
    )

    @field_validator("unit_id")
    @classmethod
    def _unit_id(cls, v: str) -> str:
        if not is_valid_unit_id(v):
            raise ValueError(str(InvalidUnitIdError(v)))
        return v

    @field_validator("external_ids")
    @classmethod
    def _external_ids(cls, v: dict[str, str]) -> dict[str, str]:
        for proto, ext in v.items():
            if proto not in EXTERNAL_PROTOCOLS:
                raise ValueError(
                    f"unknown protocol {proto[:40]!r} in external_ids: "
                    f"use one of {', '.join(EXTERNAL_PROTOCOLS)}"
                )
            if not ext or len(ext) > 300 or not ext.isprintable():
                raise ValueError(f"external id for {proto} must be 1-300 printable characters")
            if proto == Source.OWNTRACKS.value:
                parts = ext.split("/")
                if (
                    len(parts) != 3
                    or parts[0] != "owntracks"
                    or not all(parts[1:])
                    or "+" in ext
                    or "#" in ext
                ):
                    raise ValueError(
                        f"owntracks external id {ext[:80]!r} must be the phone's topic "
                        "'owntracks/{user}/{device}'"
                    )
        return v

    def to_unit(self) -> Unit:
        """The domain :class:`Unit` this body describes."""
        return Unit(
            unit_id=self.unit_id,
            kind=self.kind,
            callsign=self.callsign,
            sector=self.sector,
            capabilities=frozenset(self.capabilities),
            external_ids=dict(self.external_ids),
        )


class UnitOut(BaseModel):
    """A registered unit."""

    unit_id: str
    kind: UnitKind
    callsign: str
    sector: str
    capabilities: list[str]
    external_ids: dict[str, str]
    status: UnitStatus
    active: bool

    @classmethod
    def of(cls, unit: Unit) -> UnitOut:
        """Build from a domain :class:`Unit`."""
        return cls(
            unit_id=unit.unit_id,
            kind=unit.kind,
            callsign=unit.callsign,
            sector=unit.sector,
            capabilities=sorted(unit.capabilities),
            external_ids=dict(unit.external_ids),
            status=unit.status,
            active=unit.active,
        )


class Problem(BaseModel):
    """An error: what went wrong and what to do about it."""

    detail: str
