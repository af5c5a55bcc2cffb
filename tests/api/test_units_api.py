"""/api/v1/units against a real PostgreSQL: create, read, list, and every refusal with its reason."""

from __future__ import annotations

import psycopg
import pytest

from api.schemas import UnitCreate
from tracker.model import DeviceRef, Source, UnitKind

pytestmark = pytest.mark.integration

SERENO = {
    "unit_id": "ser-014",
    "kind": "foot",
    "callsign": "SER-014",
    "sector": "S2",
    "capabilities": ["first_aid"],
    "external_ids": {"owntracks": "owntracks/ser014/phone"},
}


async def test_create_then_read_and_list(api, pg_url) -> None:
    resp = await api.client.post("/api/v1/units", json=SERENO)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["unit_id"] == "ser-014"
    assert body["status"] == "available"
    assert body["external_ids"] == {"owntracks": "owntracks/ser014/phone"}

    one = await api.client.get("/api/v1/units/ser-014")
    assert one.status_code == 200
    assert one.json() == body

    await api.client.post(
        "/api/v1/units", json={"unit_id": "mov-03", "kind": "patrol_car", "callsign": "MOV-03"}
    )
    listed = await api.client.get("/api/v1/units")
    assert [u["unit_id"] for u in listed.json()] == ["mov-03", "ser-014"]
    cars = await api.client.get("/api/v1/units", params={"kind": "patrol_car"})
    assert [u["unit_id"] for u in cars.json()] == ["mov-03"]

    # Stored in the database (the source of truth), read back with plain SQL.
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT kind, callsign, sector, capabilities FROM units WHERE unit_id = 'ser-014'"
        ).fetchone()
    assert row == ("foot", "SER-014", "S2", ["first_aid"])


async def test_created_unit_is_known_to_the_bridge_registry_and_live_fleet_at_once(api) -> None:
    resp = await api.client.post("/api/v1/units", json=SERENO)
    assert resp.status_code == 201
    resolved = api.ctx.registry.resolve(
        DeviceRef(Source.OWNTRACKS, "owntracks/ser014/phone"), auto_register=False
    )
    assert not hasattr(resolved, "reason"), resolved
    unit, new = resolved
    assert (unit.unit_id, new) == ("ser-014", False)
    state = api.ctx.fleet.get("ser-014")
    assert state is not None
    assert state.unit.kind is UnitKind.FOOT
    live = await api.client.get("/api/v1/live")
    assert [f["id"] for f in live.json()["features"]] == ["ser-014"]


async def test_duplicate_id_is_409_with_a_message(api) -> None:
    assert (await api.client.post("/api/v1/units", json=SERENO)).status_code == 201
    again = await api.client.post("/api/v1/units", json={**SERENO, "external_ids": {}})
    assert again.status_code == 409
    assert "ser-014" in again.json()["detail"]
    assert "already exists" in again.json()["detail"]


async def test_duplicate_external_id_is_409_naming_it(api) -> None:
    assert (await api.client.post("/api/v1/units", json=SERENO)).status_code == 201
    other = {**SERENO, "unit_id": "ser-015", "callsign": "SER-015"}
    resp = await api.client.post("/api/v1/units", json=other)
    assert resp.status_code == 409
    assert "external id" in resp.json()["detail"]
    # Nothing half-done: neither the database nor the registry took the second unit.
    assert (await api.client.get("/api/v1/units/ser-015")).status_code == 404
    assert api.ctx.registry.get("ser-015") is None


async def test_unit_the_bridge_loaded_since_the_insert_is_still_201(api, pg_url) -> None:
    # The bridge's registry reload can pick the new row up between the API's insert and its
    # own registry.add: the unit is already there, with the same id and external ids.
    api.ctx.registry.add(UnitCreate(**SERENO).to_unit())
    resp = await api.client.post("/api/v1/units", json=SERENO)
    assert resp.status_code == 201, resp.text
    assert resp.json()["unit_id"] == "ser-014"
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT count(*) FROM units WHERE unit_id = 'ser-014'").fetchone()
    assert row == (1,)
    assert api.ctx.fleet.get("ser-014") is not None


async def test_another_unit_under_the_same_id_in_the_registry_is_still_409(api) -> None:
    api.ctx.registry.add(UnitCreate(**{**SERENO, "external_ids": {}}).to_unit())
    resp = await api.client.post("/api/v1/units", json=SERENO)
    assert resp.status_code == 409
    assert "ser-014" in resp.json()["detail"]


@pytest.mark.parametrize(
    "bad_id", ["", "-starts-with-dash", "has space", "a/b", "x" * 65, "trailing\n", "plus+", "ñandú"]
)
async def test_unit_id_outside_the_contract_is_422_with_the_reason(api, bad_id) -> None:
    resp = await api.client.post("/api/v1/units", json={**SERENO, "unit_id": bad_id, "external_ids": {}})
    assert resp.status_code == 422
    assert "invalid unit id" in resp.text


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"kind": "tank"}, "kind"),
        ({"kind": None}, "kind"),
        ({"external_ids": {"icq": "123"}}, "unknown protocol"),
        ({"external_ids": {"owntracks": "jane/phone"}}, "owntracks/{user}/{device}"),
        ({"external_ids": {"owntracks": "owntracks/+/phone"}}, "owntracks/{user}/{device}"),
        ({"callsign": "x" * 65}, "callsign"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_invalid_bodies_are_422_with_the_reason(api, change, reason) -> None:
    resp = await api.client.post("/api/v1/units", json={**SERENO, **change})
    assert resp.status_code == 422
    assert reason in resp.text
    assert api.ctx.registry.get("ser-014") is None


async def test_unknown_unit_is_404_with_a_message(api) -> None:
    resp = await api.client.get("/api/v1/units/nobody")
    assert resp.status_code == 404
    assert resp.json() == {"detail": "unit 'nobody' is not registered"}


async def test_openapi_documents_the_routes(api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    for path in ("/api/v1/units", "/api/v1/units/{unit_id}", "/api/v1/units/{unit_id}/track", "/api/v1/live"):
        assert path in spec["paths"]
    docs = await api.client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
