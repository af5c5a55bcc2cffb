"""``/api/v1/incidents`` and a unit's own reports, through httpx against the app with a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.context import ApiContext
from tests.fixtures.auth import seed_headers
from tests.tracker.incidents_rig import SCENE, FleetRig, offset
from tracker.config import Settings
from tracker.dispatch import Candidate
from tracker.incidents import IncidentService
from tracker.model import Freshness, UnitKind, UnitStatus
from tracker.registry import UnitRegistry
from tracker.store.credentials import issue_token_sync

pytestmark = pytest.mark.integration

# The incident service's own audit lines (the API adds one per request: "POST /api/v1/...").
DOMAIN_LINES = "position(' /api/' in action) = 0"
BASE = "/api/v1/incidents"


@dataclass
class IncidentApi:
    client: httpx.AsyncClient
    ctx: ApiContext
    rig: FleetRig
    service: IncidentService


@pytest.fixture
def rig(pg_url: str) -> Iterator[FleetRig]:
    r = FleetRig(pg_url)
    try:
        yield r
    finally:
        r.close()


def fixed_recommender(rig: FleetRig) -> Any:
    """Every available unit with a fix, in id order, with a made-up ETA (the Dispatcher's contract only)."""

    def recommend(lat: float, lon: float, k: int) -> list[Candidate]:
        return [
            Candidate(
                s.unit.unit_id,
                s.unit.kind,
                s.unit.callsign,
                s.status,
                s.fix.lat,
                s.fix.lon,
                100.0 * i,
                20.0 * i,
                1.0,
                Freshness.LIVE,
            )
            for i, s in enumerate(rig.fleet.snapshot(), start=1)
            if s.fix is not None and s.status is UnitStatus.AVAILABLE
        ][:k]

    return recommend


async def build(pg_url: str, rig: FleetRig, recommend: Any) -> AsyncIterator[IncidentApi]:
    settings = Settings(database_url=pg_url)
    ctx = ApiContext(
        settings=settings, conninfo=pg_url, registry=UnitRegistry(), fleet=rig.fleet, pool_max_size=4
    )
    app = create_app(ctx)
    async with app.router.lifespan_context(app):
        assert ctx.pool is not None
        service = IncidentService(ctx.pool, ctx.fleet, settings.dispatch, recommend, rig.record)
        await service.start()
        ctx.incidents = service
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                # Logged in as op-ana, a radio operator: the audit trail's actor.
                headers=seed_headers(ctx, "operator", "op-ana"),
                transport=transport,
                base_url="http://serenazgo.test",
            ) as client:
                yield IncidentApi(client, ctx, rig, service)
        finally:
            await service.stop()


@pytest.fixture
async def api(pg_url: str, rig: FleetRig) -> AsyncIterator[IncidentApi]:
    async for built in build(pg_url, rig, fixed_recommender(rig)):
        yield built


@pytest.fixture
async def api_without_dispatcher(pg_url: str, rig: FleetRig) -> AsyncIterator[IncidentApi]:
    async for built in build(pg_url, rig, None):
        yield built


REPORT = {
    "lat": SCENE[0], "lon": SCENE[1], "category": "seguridad_ciudadana", "channel": "whatsapp", "priority": 2,
    "description": "robo al paso", "address": "Av. José Larco 400", "reported_by": "vecina",
    "operator": "op-ana",
}  # fmt: skip


async def test_create_get_and_recommendations(api: IncidentApi) -> None:
    api.rig.add_unit("car-1")
    api.rig.fix("car-1", *offset(*SCENE, 500.0))
    api.rig.add_unit("car-2")  # no fix: never recommended
    r = await api.client.post(BASE, json=REPORT)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "open"
    assert body["geometry"] == {"type": "Point", "coordinates": [SCENE[1], SCENE[0]]}
    assert [c["unit_id"] for c in body["recommended"]] == ["car-1"]
    assert body["recommended"][0]["eta_s"] == 20.0
    got = await api.client.get(f"{BASE}/{body['incident_id']}")
    assert got.status_code == 200
    assert got.json() == {k: v for k, v in body.items() if k != "recommended"}
    [(actor, origin)] = api.rig.query(f"SELECT actor, origin FROM audit_log WHERE {DOMAIN_LINES}")
    assert (actor, origin) == ("op-ana", "127.0.0.1")
    # The API's own line for the request, beside the service's.
    [(actor, detail)] = api.rig.query(
        "SELECT actor, detail FROM audit_log WHERE action = 'POST /api/v1/incidents'"
    )
    assert (actor, detail["status"], detail["role"]) == ("op-ana", 201, "operator")


async def test_without_dispatcher_recommendations_are_empty(api_without_dispatcher: IncidentApi) -> None:
    r = await api_without_dispatcher.client.post(BASE, json=REPORT)
    assert r.status_code == 201
    assert r.json()["recommended"] == []


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"lat": 91}, "lat"),
        ({"category": "robo"}, "category"),
        ({"channel": "pigeon"}, "channel"),
        ({"priority": 0}, "priority"),
        ({"priority": 6}, "priority"),
        ({"color": "red"}, "color"),
    ],
)
async def test_create_refuses_bad_bodies_with_422(
    api: IncidentApi, change: dict[str, Any], word: str
) -> None:
    r = await api.client.post(BASE, json={**REPORT, **change})
    assert r.status_code == 422
    assert word in r.text


async def test_assign_release_and_refusals(api: IncidentApi) -> None:
    rig = api.rig
    rig.add_unit("car-1")
    rig.fix("car-1", *offset(*SCENE, 500.0))
    rig.add_unit("car-off")
    rig.fix("car-off", *offset(*SCENE, 500.0))
    rig.status("car-off", UnitStatus.OUT_OF_SERVICE)
    rig.add_unit("ser-lost", UnitKind.FOOT)
    rig.fix("ser-lost", *offset(*SCENE, 100.0), ts=datetime.now(UTC) - timedelta(hours=3))
    first = (await api.client.post(BASE, json=REPORT)).json()["incident_id"]
    second = (await api.client.post(BASE, json=REPORT)).json()["incident_id"]

    r = await api.client.post(f"{BASE}/{first}/assign", json={"unit_id": "car-1", "operator": "op-ana"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["incident"]["status"] == "assigned"
    assert body["assignment"]["unit_id"] == "car-1"
    assert body["assignment"]["eta_s"] == 20.0
    assert rig.unit_status("car-1") == "dispatched"

    r = await api.client.post(f"{BASE}/{second}/assign", json={"unit_id": "car-1", "operator": "op-ana"})
    assert r.status_code == 409
    assert r.json()["detail"].startswith(
        f"unit 'car-1' is busy: assigned to incident {first} (its status: dispatched)"
    )
    r = await api.client.post(f"{BASE}/{second}/assign", json={"unit_id": "car-off", "operator": "op-ana"})
    assert r.status_code == 409
    assert "out_of_service, not available" in r.json()["detail"]
    r = await api.client.post(f"{BASE}/{second}/assign", json={"unit_id": "ser-lost", "operator": "op-ana"})
    assert r.status_code == 409
    assert "lost its position" in r.json()["detail"]
    r = await api.client.post(f"{BASE}/{second}/assign", json={"unit_id": "ghost", "operator": "op-ana"})
    assert r.status_code == 404
    assert "'ghost' is not registered" in r.json()["detail"]
    r = await api.client.post(f"{BASE}/999999/assign", json={"unit_id": "car-1", "operator": "op-ana"})
    assert r.status_code == 404
    r = await api.client.post(f"{BASE}/{second}/assign", json={"unit_id": "bad id!", "operator": "op-ana"})
    assert r.status_code == 422

    r = await api.client.post(f"{BASE}/{first}/release", json={"unit_id": "car-1", "operator": "op-luis",
                                                               "reason": "reasignado"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "open"
    assert r.json()["assignments"][0]["release_reason"] == "reasignado"
    assert rig.unit_status("car-1") == "available"
    r = await api.client.post(f"{BASE}/{first}/release", json={"unit_id": "car-1", "operator": "op-luis"})
    assert r.status_code == 409
    assert "not assigned to incident" in r.json()["detail"]
    r = await api.client.post(f"{BASE}/{second}/assign", json={"unit_id": "car-1"})  # the user acts
    assert r.status_code == 201

    actions = api.rig.query(
        f"SELECT action, actor, origin FROM audit_log WHERE {DOMAIN_LINES} ORDER BY audit_id"
    )
    assert [a for a, _, _ in actions] == ["create", "create", "assign", "release", "assign"]
    assert {o for _, _, o in actions} == {"127.0.0.1"}
    # op-ana released on op-luis's word: both are named.
    assert [w for _, w, _ in actions] == ["op-ana"] * 3 + ["op-ana (for op-luis)", "op-ana"]


async def test_patch_close_cancel_and_conflicts(api: IncidentApi) -> None:
    api.rig.add_unit("car-1")
    api.rig.fix("car-1", *offset(*SCENE, 500.0))
    iid = (await api.client.post(BASE, json=REPORT)).json()["incident_id"]
    r = await api.client.patch(
        f"{BASE}/{iid}", json={"operator": "op-ana", "priority": 1, "description": "x"}
    )
    assert r.status_code == 200
    assert (r.json()["priority"], r.json()["description"]) == (1, "x")
    r = await api.client.patch(f"{BASE}/{iid}", json={"operator": "op-ana"})
    assert r.status_code == 422
    assert "nothing to change" in r.json()["detail"]
    r = await api.client.patch(f"{BASE}/{iid}", json={"operator": "op-ana", "status": "on_scene"})
    assert r.status_code == 422
    assert "send closed or cancelled" in r.json()["detail"]
    r = await api.client.patch(f"{BASE}/{iid}", json={"operator": "op-ana", "status": "closed"})
    assert r.status_code == 409
    assert "is open and cannot become closed" in r.json()["detail"]
    r = await api.client.patch(f"{BASE}/{iid}", json={"priority": 2})  # no operator: the user acts
    assert r.status_code == 200 and r.json()["priority"] == 2
    await api.client.post(f"{BASE}/{iid}/assign", json={"unit_id": "car-1", "operator": "op-ana"})
    r = await api.client.patch(
        f"{BASE}/{iid}",
        json={"operator": "op-ana", "status": "closed", "resolution": "resuelto por teléfono"},
    )
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["resolution"], body["units"]) == ("closed", "resuelto por teléfono", [])
    assert body["closed_at"] is not None
    assert api.rig.unit_status("car-1") == "available"
    r = await api.client.patch(f"{BASE}/{iid}", json={"operator": "op-ana", "status": "cancelled"})
    assert r.status_code == 409
    r = await api.client.post(f"{BASE}/{iid}/assign", json={"unit_id": "car-1", "operator": "op-ana"})
    assert r.status_code == 409
    assert f"incident {iid} is closed" in r.json()["detail"]
    r = await api.client.patch(f"{BASE}/424242", json={"operator": "op-ana", "priority": 2})
    assert r.status_code == 404
    assert "does not exist" in r.json()["detail"]


async def test_list_filters_and_paging(api: IncidentApi) -> None:
    ids = []
    for ch in ("phone", "whatsapp", "camera"):
        r = await api.client.post(BASE, json={**REPORT, "channel": ch})
        ids.append(r.json()["incident_id"])
    await api.client.patch(f"{BASE}/{ids[0]}", json={"operator": "op", "status": "cancelled"})
    r = await api.client.get(BASE)
    assert [i["incident_id"] for i in r.json()["items"]] == ids[::-1]
    r = await api.client.get(BASE, params={"status": "active"})
    assert [i["incident_id"] for i in r.json()["items"]] == [ids[2], ids[1]]
    r = await api.client.get(BASE, params={"channel": "whatsapp"})
    assert [i["incident_id"] for i in r.json()["items"]] == [ids[1]]
    r = await api.client.get(BASE, params={"limit": 2})
    assert r.json()["next_before"] == ids[1]
    r = await api.client.get(BASE, params={"limit": 2, "before": ids[1]})
    assert [i["incident_id"] for i in r.json()["items"]] == [ids[0]]
    assert r.json()["next_before"] is None
    r = await api.client.get(BASE, params={"since": (datetime.now(UTC) + timedelta(hours=1)).isoformat()})
    assert r.json()["items"] == []
    r = await api.client.get(BASE, params={"status": "sideways"})
    assert r.status_code == 422
    assert "unknown status filter" in r.json()["detail"]
    r = await api.client.get(f"{BASE}/notanumber")
    assert r.status_code == 422


async def test_stats_route(api: IncidentApi) -> None:
    iid = (await api.client.post(BASE, json=REPORT)).json()["incident_id"]
    api.rig.query(
        "UPDATE incidents SET first_assigned_at = created_at + interval '30 s',"
        " first_arrival_at = created_at + interval '400 s' WHERE incident_id = %s",
        iid,
    )
    r = await api.client.get(f"{BASE}/stats")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["overall"]["count"] == 1
    assert body["overall"]["response_s"] == {"p50": 400.0, "p90": 400.0, "mean": 400.0}
    assert body["overall"]["assign_s"]["p50"] == 30.0
    assert body["by"]["category"]["seguridad_ciudadana"]["arrived"] == 1
    assert body["by"]["channel"]["whatsapp"]["count"] == 1
    r = await api.client.get(f"{BASE}/stats", params={"by": "priority"})
    assert set(r.json()["by"]) == {"priority"}
    r = await api.client.get(f"{BASE}/stats", params={"by": "sector"})
    assert r.status_code == 422
    assert "cannot group by 'sector'" in r.json()["detail"]
    now = datetime.now(UTC)
    r = await api.client.get(
        f"{BASE}/stats", params={"since": now.isoformat(), "until": (now - timedelta(1)).isoformat()}
    )
    assert r.status_code == 422
    r = await api.client.get(f"{BASE}/stats", params={"since": "2020-01-01T00:00:00Z"})
    assert r.status_code == 422
    assert "shorter" in r.json()["detail"]


async def test_503_when_the_service_is_not_running(api: IncidentApi) -> None:
    api.ctx.incidents = None
    r = await api.client.get(BASE)
    assert r.status_code == 503
    assert "incident service was not started" in r.json()["detail"]


async def test_openapi_documents_the_routes(api: IncidentApi) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert set(paths[BASE]) == {"get", "post"}
    assert set(paths[f"{BASE}/{{incident_id}}"]) == {"get", "patch"}
    one = f"{BASE}/{{incident_id}}"
    assert {f"{BASE}/stats", f"{one}/assign", f"{one}/release"} <= set(paths)
    assert "409" in paths[f"{BASE}/{{incident_id}}/assign"]["post"]["responses"]


# ----- a unit's own report: POST /api/v1/units/{unit_id}/incidents (channel patrol) -------------


def unit_url(unit_id: str) -> str:
    return f"/api/v1/units/{unit_id}/incidents"


async def test_a_report_is_placed_at_the_units_position_and_goes_through_create(api: IncidentApi) -> None:
    api.rig.add_unit("car-1")
    where = offset(*SCENE, 120.0, 40.0)
    api.rig.fix("car-1", *where)
    api.rig.add_unit("car-2")
    api.rig.fix("car-2", *offset(*SCENE, 900.0))
    r = await api.client.post(unit_url("car-1"), json={"category": "seguridad_vial", "priority": 2,
                                                  "description": "choque"})  # fmt: skip
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["lat"], body["lon"]) == where
    assert (body["channel"], body["reported_by"], body["category"], body["priority"], body["status"]) == (
        "patrol", "car-1", "seguridad_vial", 2, "open"
    )  # fmt: skip
    # The same path as any report: recommendations, the audit log, the live feed, readable back.
    assert {c["unit_id"] for c in body["recommended"]} == {"car-1", "car-2"}
    [(actor, action, subject)] = api.rig.query(
        f"SELECT actor, action, subject FROM audit_log WHERE {DOMAIN_LINES}"
    )
    assert (actor, action, subject) == ("car-1", "create", f"incident:{body['incident_id']}")
    assert [(k, p["incident_id"]) for k, p in api.rig.feed if k == "incident"] == [
        ("incident", body["incident_id"])
    ]
    got = await api.client.get(f"/api/v1/incidents/{body['incident_id']}")
    assert got.json()["channel"] == "patrol"


async def test_a_given_point_wins_and_ts_dates_the_incident(api: IncidentApi) -> None:
    api.rig.add_unit("car-1")
    api.rig.fix("car-1", *SCENE)
    seen = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    there = offset(*SCENE, -300.0)
    r = await api.client.post(
        unit_url("car-1"), json={"category": "otro", "lat": there[0], "lon": there[1], "ts": seen.isoformat()}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["lat"], body["lon"]) == there
    assert datetime.fromisoformat(body["created_at"]) == seen
    # A clock running ahead never dates an incident in the future.
    ahead = datetime.now(UTC) + timedelta(hours=2)
    r = await api.client.post(unit_url("car-1"), json={"category": "otro", "ts": ahead.isoformat()})
    assert r.status_code == 201
    assert datetime.fromisoformat(r.json()["created_at"]) < ahead - timedelta(hours=1)


async def test_refusals(api: IncidentApi) -> None:
    api.rig.add_unit("car-1")  # registered, no position yet
    r = await api.client.post(unit_url("ghost"), json={"category": "otro"})
    assert r.status_code == 404
    assert "ghost" in r.json()["detail"]
    r = await api.client.post(unit_url("car-1"), json={"category": "otro"})
    assert r.status_code == 409
    assert "lat and lon" in r.json()["detail"]
    for body, word in (
        ({"category": "robo"}, "category"),
        ({"category": "otro", "priority": 9}, "priority"),
        ({"category": "otro", "lat": 91, "lon": 0}, "lat"),
        ({"category": "otro", "lat": -12.1}, "lon"),
        ({"category": "otro", "channel": "phone"}, "channel"),
    ):
        r = await api.client.post(unit_url("car-1"), json=body)
        assert r.status_code == 422, (body, r.text)
        assert word in r.text, (body, r.text)
    r = await api.client.post(unit_url("bad id"), json={"category": "otro"})
    assert r.status_code == 422
    assert api.rig.query("SELECT count(*) FROM incidents") == [(0,)]


async def test_a_unit_reports_with_its_device_token_from_its_position(api: IncidentApi) -> None:
    api.rig.add_unit("car-1")
    where = offset(*SCENE, 60.0, 10.0)
    api.rig.fix("car-1", *where)
    device = {"Authorization": f"Bearer {issue_token_sync(api.rig.conninfo, 'car-1')}"}
    r = await api.client.post(unit_url("car-1"), json={"category": "otro", "priority": 2}, headers=device)
    assert r.status_code == 201, r.text
    assert (r.json()["lat"], r.json()["lon"], r.json()["channel"]) == (*where, "patrol")
    [(actor,)] = api.rig.query("SELECT actor FROM audit_log WHERE position(' /api/' in action) > 0")
    assert actor == "unit:car-1"
