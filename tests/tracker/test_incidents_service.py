"""IncidentService and its SQL against a real PostgreSQL: life cycle, refusals, audit, arrival, stats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from geo.distance import haversine_m
from tests.tracker.incidents_rig import SCENE, FleetRig, offset, wait_for
from tracker.config import DispatchSettings
from tracker.dispatch import Candidate
from tracker.errors import StorageError, UnitNotFoundError
from tracker.events import Event
from tracker.incidents import (
    Channel,
    IncidentCategory,
    IncidentClosedError,
    IncidentInputError,
    IncidentNotFoundError,
    IncidentPatch,
    IncidentService,
    IncidentStatus,
    InvalidTransitionError,
    NotAssignedError,
    UnitUnavailableError,
)
from tracker.model import Freshness, UnitKind, UnitStatus
from tracker.store import incidents as store
from tracker.store.pool import open_pool

pytestmark = pytest.mark.integration

S = IncidentStatus


@pytest.fixture
def rig(pg_url: str) -> Iterator[FleetRig]:
    r = FleetRig(pg_url)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
async def pool(pg_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    p = await open_pool(pg_url, max_size=4)
    try:
        yield p
    finally:
        await p.close()


def nearest_from(rig: FleetRig) -> Any:
    """A stand-in recommender (the Dispatcher's contract): available units with a fix, nearest first."""

    def recommend(lat: float, lon: float, k: int) -> list[Candidate]:
        now = datetime.now(UTC)
        out = []
        for state in rig.fleet.snapshot():
            if state.fix is None or state.status is not UnitStatus.AVAILABLE:
                continue
            d = haversine_m(lat, lon, state.fix.lat, state.fix.lon)
            out.append(
                Candidate(
                    state.unit.unit_id,
                    state.unit.kind,
                    state.unit.callsign,
                    state.status,
                    state.fix.lat,
                    state.fix.lon,
                    d,
                    d * 1.35 / 6.9,
                    (now - state.fix.ts).total_seconds(),
                    Freshness.LIVE,
                )
            )
        return sorted(out, key=lambda c: c.eta_s)[:k]

    return recommend


@pytest.fixture
async def service(pool: AsyncConnectionPool[Any], rig: FleetRig) -> AsyncIterator[IncidentService]:
    svc = IncidentService(pool, rig.fleet, DispatchSettings(), nearest_from(rig), rig.record)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def new_incident(svc: IncidentService, **kw: Any) -> int:
    values: dict[str, Any] = {
        "lat": SCENE[0], "lon": SCENE[1], "category": IncidentCategory.SEGURIDAD_CIUDADANA,
        "channel": Channel.PHONE, "priority": 2, "description": "robo al paso", "reported_by": "vecino",
        "operator": "op-ana", "origin": "10.0.0.5",
    }  # fmt: skip
    values.update(kw)
    incident, _ = await svc.create(**values)
    return incident.incident_id


def audit(rig: FleetRig, incident_id: int) -> list[tuple[Any, ...]]:
    return rig.query(
        "SELECT action, actor, origin, detail FROM audit_log WHERE subject = %s ORDER BY audit_id",
        f"incident:{incident_id}",
    )


async def test_create_returns_ranked_units_and_writes_audit(service: IncidentService, rig: FleetRig) -> None:
    for i, north in enumerate((900.0, 300.0, 2500.0)):
        rig.add_unit(f"car-{i}")
        rig.fix(f"car-{i}", *offset(*SCENE, north))
    rig.add_unit("car-off")
    rig.fix("car-off", *offset(*SCENE, 50.0))
    rig.status("car-off", UnitStatus.OUT_OF_SERVICE)
    incident, recommended = await service.create(
        lat=SCENE[0], lon=SCENE[1], category=IncidentCategory.SEGURIDAD_VIAL, channel=Channel.CAMERA,
        priority=1, description="choque", address="Av. Larco 1150", reported_by="cam-14", operator="op-ana",
        origin="10.0.0.5",
    )  # fmt: skip
    assert [c.unit_id for c in recommended] == ["car-1", "car-0", "car-2"]
    assert incident.status is S.OPEN
    assert (incident.category, incident.channel, incident.priority) == (
        IncidentCategory.SEGURIDAD_VIAL, Channel.CAMERA, 1
    )  # fmt: skip
    stored = await service.get(incident.incident_id)
    assert stored == incident
    [(action, actor, origin, detail)] = audit(rig, incident.incident_id)
    assert (action, actor, origin) == ("create", "op-ana", "10.0.0.5")
    assert detail["category"] == "seguridad_vial"
    assert rig.feed == [("incident", incident.to_json())]


async def test_create_without_recommender_and_bad_input(
    pool: AsyncConnectionPool[Any], rig: FleetRig
) -> None:
    svc = IncidentService(pool, rig.fleet, DispatchSettings())
    incident, recommended = await svc.create(
        lat=SCENE[0], lon=SCENE[1], category=IncidentCategory.OTRO, channel=Channel.WHATSAPP
    )
    assert recommended == []
    assert incident.priority == 3
    with pytest.raises(IncidentInputError):
        await svc.create(lat=95.0, lon=0.0, category=IncidentCategory.OTRO, channel=Channel.OTHER)
    with pytest.raises(IncidentInputError):
        await svc.create(lat=0.0, lon=0.0, category=IncidentCategory.OTRO, channel=Channel.OTHER, priority=9)
    with pytest.raises(IncidentNotFoundError, match="incident 999 does not exist"):
        await svc.get(999)


async def test_assign_dispatches_the_unit_in_database_and_fleet(
    service: IncidentService, rig: FleetRig
) -> None:
    rig.add_unit("car-1")
    rig.fix("car-1", *offset(*SCENE, 800.0))
    iid = await new_incident(service)
    incident, assignment = await service.assign(iid, "car-1", "op-ana", "10.0.0.5")
    assert incident.status is S.ASSIGNED
    assert incident.first_assigned_at == assignment.assigned_at
    assert incident.open_units() == ["car-1"]
    # The predicted ETA and distance come from the ranking the unit was in.
    assert assignment.distance_m == pytest.approx(800.0, rel=0.01)
    assert assignment.eta_s == pytest.approx(800.0 * 1.35 / 6.9, rel=0.01)
    assert rig.unit_status("car-1") == "dispatched"
    state = rig.fleet.get("car-1")
    assert state is not None
    assert state.status is UnitStatus.DISPATCHED
    assert service.watched() == {"car-1": iid}
    (_, (action, actor, origin, detail)) = audit(rig, iid)
    assert (action, actor, origin) == ("assign", "op-ana", "10.0.0.5")
    assert detail["unit_id"] == "car-1"
    assert detail["incident_status"] == "assigned"
    assert rig.feed[-1] == ("incident", incident.to_json())


async def test_assign_refuses_unknown_busy_out_of_service_lost_and_closed(
    service: IncidentService, rig: FleetRig
) -> None:
    now = datetime.now(UTC)
    rig.add_unit("busy")
    rig.fix("busy", *offset(*SCENE, 400.0))
    rig.add_unit("off")
    rig.fix("off", *offset(*SCENE, 400.0))
    rig.status("off", UnitStatus.OUT_OF_SERVICE)
    rig.add_unit("silent")  # never reported a position
    rig.add_unit("lost", UnitKind.FOOT)
    rig.fix("lost", *offset(*SCENE, 100.0), ts=now - timedelta(hours=2))
    rig.add_unit("gone", active=False)
    rig.fix("gone", *offset(*SCENE, 100.0))
    first = await new_incident(service)
    second = await new_incident(service)
    await service.assign(first, "busy", "op-ana")

    with pytest.raises(UnitNotFoundError):
        await service.assign(second, "nobody", "op-ana")
    with pytest.raises(UnitUnavailableError) as busy:
        await service.assign(second, "busy", "op-ana")
    assert busy.value.reason == "busy"
    assert busy.value.incident_id == first
    assert f"unit 'busy' is busy: assigned to incident {first} (its status: dispatched)" in str(busy.value)
    with pytest.raises(UnitUnavailableError, match="'off' is out_of_service, not available") as off:
        await service.assign(second, "off", "op-ana")
    assert off.value.reason == "not_available"
    with pytest.raises(UnitUnavailableError, match="never reported a position") as silent:
        await service.assign(second, "silent", "op-ana")
    assert silent.value.reason == "position_lost"
    with pytest.raises(UnitUnavailableError, match="has lost its position") as lost:
        await service.assign(second, "lost", "op-ana")
    assert lost.value.reason == "position_lost"
    with pytest.raises(UnitUnavailableError, match="deactivated"):
        await service.assign(second, "gone", "op-ana")
    with pytest.raises(IncidentNotFoundError):
        await service.assign(12345, "busy", "op-ana")

    await service.cancel(second, "op-ana", reason="duplicado")
    rig.add_unit("free")
    rig.fix("free", *offset(*SCENE, 100.0))
    with pytest.raises(IncidentClosedError, match=f"incident {second} is cancelled"):
        await service.assign(second, "free", "op-ana")
    # Nothing was changed by the refusals.
    assert rig.query("SELECT unit_id FROM assignments WHERE released_at IS NULL") == [("busy",)]
    assert rig.unit_status("free") == "available"
    assert [a for a, *_ in audit(rig, second)] == ["create", "cancel"]


async def test_a_unique_violation_between_check_and_insert_is_the_same_409(
    service: IncidentService, rig: FleetRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.add_unit("car-1")
    rig.fix("car-1", *offset(*SCENE, 400.0))
    first = await new_incident(service)
    second = await new_incident(service)
    await service.assign(first, "car-1", "op-ana")
    # Let the unit look free to the check, as if another process inserted its assignment just after.
    rig.query("UPDATE units SET status = 'available' WHERE unit_id = 'car-1'")
    real = store.select_open_assignment_of_unit
    calls: list[str] = []

    async def blind_once(conn: Any, unit_id: str) -> Any:
        calls.append(unit_id)
        return None if len(calls) == 1 else await real(conn, unit_id)

    monkeypatch.setattr(store, "select_open_assignment_of_unit", blind_once)
    with pytest.raises(UnitUnavailableError) as info:
        await service.assign(second, "car-1", "op-ana")
    assert info.value.reason == "busy"
    assert info.value.incident_id == first
    assert isinstance(info.value.__cause__, psycopg.errors.UniqueViolation)


async def test_concurrent_assignments_of_one_unit_give_one_winner(
    service: IncidentService, rig: FleetRig
) -> None:
    rig.add_unit("car-1")
    rig.fix("car-1", *offset(*SCENE, 400.0))
    ids = [await new_incident(service) for _ in range(4)]
    results = await asyncio.gather(
        *(service.assign(i, "car-1", f"op-{i}") for i in ids), return_exceptions=True
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1
    assert all(isinstance(e, UnitUnavailableError) and e.reason == "busy" for e in lost)
    assert rig.query("SELECT count(*) FROM assignments")[0][0] == 1


async def test_release_frees_the_unit_and_reopens_the_incident(
    service: IncidentService, rig: FleetRig
) -> None:
    rig.add_unit("car-1")
    rig.fix("car-1", *offset(*SCENE, 400.0))
    iid = await new_incident(service)
    await service.assign(iid, "car-1", "op-ana")
    incident = await service.release(iid, "car-1", "op-luis", "10.0.0.9")
    assert incident.status is S.OPEN
    assert incident.open_units() == []
    assert incident.assignments[0].release_reason == "released"
    assert rig.unit_status("car-1") == "available"
    state = rig.fleet.get("car-1")
    assert state is not None
    assert state.status is UnitStatus.AVAILABLE
    assert service.watched() == {}
    assert [(a, who, o) for a, who, o, _ in audit(rig, iid)][-1] == ("release", "op-luis", "10.0.0.9")
    with pytest.raises(NotAssignedError):
        await service.release(iid, "car-1", "op-luis")
    # Free again: it can be sent once more.
    again, _ = await service.assign(iid, "car-1", "op-ana")
    assert again.status is S.ASSIGNED
    assert len(again.assignments) == 2


async def test_release_keeps_a_status_the_unit_set_itself(service: IncidentService, rig: FleetRig) -> None:
    rig.add_unit("car-1")
    rig.fix("car-1", *offset(*SCENE, 400.0))
    iid = await new_incident(service)
    await service.assign(iid, "car-1", "op-ana")
    rig.status("car-1", UnitStatus.OUT_OF_SERVICE, datetime.now(UTC) + timedelta(seconds=1))
    await service.release(iid, "car-1", "op-ana")
    assert rig.unit_status("car-1") == "out_of_service"


async def test_arrival_from_positions_en_route_and_close(service: IncidentService, rig: FleetRig) -> None:
    t0 = datetime.now(UTC) - timedelta(seconds=1)
    rig.add_unit("car-1")
    rig.fix("car-1", *offset(*SCENE, 1500.0), ts=t0 - timedelta(seconds=10))
    rig.add_unit("car-2")
    rig.fix("car-2", *offset(*SCENE, -1200.0), ts=t0 - timedelta(seconds=10))
    iid = await new_incident(service)
    await service.assign(iid, "car-1", "op-ana")
    await service.assign(iid, "car-2", "op-ana")

    rig.status("car-1", UnitStatus.EN_ROUTE, datetime.now(UTC) + timedelta(milliseconds=5))
    await service.drain()
    assert (await service.get(iid)).status is S.EN_ROUTE

    # Closer, but outside the radius (75 m): nothing yet.
    rig.fix("car-1", *offset(*SCENE, 500.0), ts=datetime.now(UTC))
    rig.fix("car-1", *offset(*SCENE, 90.0), ts=datetime.now(UTC) + timedelta(milliseconds=10))
    await service.drain()
    assert (await service.get(iid)).first_arrival_at is None
    arrival = datetime.now(UTC) + timedelta(milliseconds=20)
    rig.fix("car-1", *offset(*SCENE, 40.0, 20.0), ts=arrival)
    await service.drain()
    incident = await service.get(iid)
    assert incident.status is S.ON_SCENE
    assert incident.first_arrival_at == arrival
    by_unit = {a.unit_id: a for a in incident.assignments}
    assert by_unit["car-1"].arrived_at == arrival
    assert by_unit["car-2"].arrived_at is None
    assert rig.unit_status("car-1") == "on_scene"
    state = rig.fleet.get("car-1")
    assert state is not None
    assert state.status is UnitStatus.ON_SCENE
    [(etype, unit, inc, detail, ts)] = rig.query("SELECT type, unit_id, incident_id, detail, ts FROM events")
    assert (etype, unit, inc, ts) == ("unit_arrived", "car-1", iid, arrival)
    assert detail["distance_m"] == pytest.approx(haversine_m(*offset(*SCENE, 40.0, 20.0), *SCENE), abs=0.1)
    assert detail["source"] == "position"
    # Further fixes inside the radius record nothing more.
    rig.fix("car-1", *offset(*SCENE, 10.0), ts=arrival + timedelta(seconds=5))
    await service.drain()
    assert rig.query("SELECT count(*) FROM events")[0][0] == 1

    # The second unit reports on_scene itself: that counts as its arrival.
    reported = datetime.now(UTC) + timedelta(seconds=1)
    rig.status("car-2", UnitStatus.ON_SCENE, reported)
    await service.drain()
    incident = await service.get(iid)
    assert {a.unit_id: a.arrived_at for a in incident.assignments}["car-2"] == reported
    assert incident.first_arrival_at == arrival  # the first arrival stays the first

    closed = await service.close(iid, "robo frustrado, detenido entregado a PNP", "op-ana", "10.0.0.5")
    assert closed.status is S.CLOSED
    assert closed.closed_at is not None
    assert closed.resolution.startswith("robo frustrado")
    assert closed.open_units() == []
    assert {a.release_reason for a in closed.assignments} == {"incident closed"}
    assert {rig.unit_status("car-1"), rig.unit_status("car-2")} == {"available"}
    assert {s.status for s in rig.fleet.snapshot()} == {UnitStatus.AVAILABLE}
    assert service.watched() == {}
    actions = [(a, who) for a, who, _, _ in audit(rig, iid)]
    assert actions == [
        ("create", "op-ana"), ("assign", "op-ana"), ("assign", "op-ana"), ("en_route", "unit:car-1"),
        ("arrive", "system"), ("arrive", "unit:car-2"), ("close", "op-ana"),
    ]  # fmt: skip
    # Every incident change went to the live feed, the last one as it is now; so did the arrival events,
    # in the shape the event engine gives its events.
    assert [k for k, _ in rig.feed if k == "incident"] == ["incident"] * len(actions)
    assert rig.feed[-1] == ("incident", closed.to_json())
    events = [payload for k, payload in rig.feed if k == "event"]
    stored = rig.query(
        "SELECT event_id, type, ts, unit_id, incident_id, detail, recorded_at FROM events ORDER BY event_id"
    )
    assert events == [Event(t, ts, u, None, i, d, e, rec).to_json() for e, t, ts, u, i, d, rec in stored]
    assert [e["unit_id"] for e in events] == ["car-1", "car-2"]
    with pytest.raises(InvalidTransitionError, match="is closed and cannot become closed"):
        await service.close(iid, "again", "op-ana")


async def test_a_unit_already_at_the_scene_arrives_when_assigned(
    service: IncidentService, rig: FleetRig
) -> None:
    rig.add_unit("ser-1", UnitKind.FOOT)
    rig.fix("ser-1", *offset(*SCENE, 30.0), ts=datetime.now(UTC) - timedelta(seconds=20))
    iid = await new_incident(service, channel=Channel.PATROL)
    _, assignment = await service.assign(iid, "ser-1", "op-ana")
    await service.drain()
    incident = await service.get(iid)
    assert incident.status is S.ON_SCENE
    # Arrival is not earlier than the assignment.
    assert incident.first_arrival_at == assignment.assigned_at


async def test_only_fixes_taken_after_the_assignment_count(service: IncidentService, rig: FleetRig) -> None:
    now = datetime.now(UTC)
    rig.add_unit("ser-1", UnitKind.FOOT)
    rig.fix("ser-1", *offset(*SCENE, 30.0), ts=now - timedelta(minutes=5))  # stale: not judged at assignment
    rig.add_unit("car-1")
    rig.fix("car-1", *offset(*SCENE, 900.0), ts=now - timedelta(seconds=40))
    iid = await new_incident(service)
    await service.assign(iid, "ser-1", "op-ana")
    await service.assign(iid, "car-1", "op-ana")
    await service.drain()
    assert (await service.get(iid)).status is S.ASSIGNED
    # A phone uploads fixes it buffered while offline: one from before the assignment, at the scene.
    rig.fix("car-1", *offset(*SCENE, 20.0), ts=now - timedelta(seconds=10))
    await service.drain()
    assert (await service.get(iid)).first_arrival_at is None
    # The sereno's next fix, taken after the assignment, at the scene: arrived then.
    moved = datetime.now(UTC) + timedelta(milliseconds=5)
    rig.fix("ser-1", *offset(*SCENE, 25.0), ts=moved)
    await service.drain()
    incident = await service.get(iid)
    assert incident.status is S.ON_SCENE
    assert incident.first_arrival_at == moved


async def test_start_loads_open_assignments_and_catches_up(
    pool: AsyncConnectionPool[Any], rig: FleetRig, service: IncidentService
) -> None:
    rig.add_unit("car-1")
    rig.fix("car-1", *offset(*SCENE, 900.0))
    iid = await new_incident(service)
    await service.assign(iid, "car-1", "op-ana")
    await service.stop()
    # While no service watched, the unit reached the scene.
    arrival = datetime.now(UTC) + timedelta(milliseconds=5)
    rig.fix("car-1", *offset(*SCENE, 20.0), ts=arrival)
    assert (await service.get(iid)).status is S.ASSIGNED
    restarted = IncidentService(pool, rig.fleet, DispatchSettings())
    await restarted.start()
    try:
        assert restarted.watched() == {"car-1": iid}
        await restarted.drain()
        incident = await restarted.get(iid)
        assert incident.status is S.ON_SCENE
        assert incident.first_arrival_at == arrival
    finally:
        await restarted.stop()


async def test_patch_fields_cancel_and_refusals(service: IncidentService, rig: FleetRig) -> None:
    iid = await new_incident(service)
    patched = await service.patch(
        iid, IncidentPatch(description="robo a mano armada", priority=1, category=IncidentCategory.OTRO),
        "op-luis", "10.0.0.7",
    )  # fmt: skip
    assert (patched.description, patched.priority, patched.category) == ("robo a mano armada", 1, "otro")
    assert patched.updated_at > patched.created_at
    (_, (action, actor, origin, detail)) = audit(rig, iid)
    assert (action, actor, origin) == ("update", "op-luis", "10.0.0.7")
    assert detail["changes"] == {"description": "robo a mano armada", "priority": 1, "category": "otro"}
    assert detail["before"]["priority"] == 2
    with pytest.raises(IncidentInputError, match="nothing to change"):
        await service.patch(iid, IncidentPatch(), "op")
    with pytest.raises(IncidentInputError, match="priority 0"):
        await service.patch(iid, IncidentPatch(priority=0), "op")
    with pytest.raises(IncidentInputError, match="cannot be set directly"):
        await service.patch(iid, IncidentPatch(status=S.ON_SCENE), "op")
    with pytest.raises(InvalidTransitionError, match="is open and cannot become closed"):
        await service.patch(iid, IncidentPatch(status=S.CLOSED), "op")
    cancelled = await service.cancel(iid, "op-luis", reason="llamada falsa")
    assert cancelled.status is S.CANCELLED
    assert cancelled.resolution == "llamada falsa"
    with pytest.raises(IncidentNotFoundError):
        await service.patch(4242, IncidentPatch(priority=1), "op")


async def test_list_filters_and_pages(service: IncidentService, rig: FleetRig) -> None:
    ids = [
        await new_incident(service, category=cat, channel=ch)
        for cat, ch in [
            (IncidentCategory.OTRO, Channel.PHONE), (IncidentCategory.FISCALIZACION, Channel.WHATSAPP),
            (IncidentCategory.OTRO, Channel.CAMERA), (IncidentCategory.DEFENSA_CIVIL, Channel.WHATSAPP),
            (IncidentCategory.OTRO, Channel.WHATSAPP),
        ]
    ]  # fmt: skip
    await service.cancel(ids[1], "op")
    rig.add_unit("car-1")
    rig.fix("car-1", *offset(*SCENE, 400.0))
    await service.assign(ids[2], "car-1", "op")

    async def listed(**kw: Any) -> list[int]:
        return [i.incident_id for i in (await service.list(**kw)).items]

    assert await listed() == ids[::-1]
    assert await listed(status="active") == [ids[4], ids[3], ids[2], ids[0]]
    assert await listed(status="open") == [ids[4], ids[3], ids[0]]
    assert await listed(status="cancelled") == [ids[1]]
    assert await listed(category=IncidentCategory.OTRO) == [ids[4], ids[2], ids[0]]
    assert await listed(channel=Channel.WHATSAPP, status="active") == [ids[4], ids[3]]
    assert await listed(since=datetime.now(UTC) + timedelta(hours=1)) == []
    page1 = await service.list(limit=2)
    assert [i.incident_id for i in page1.items] == [ids[4], ids[3]]
    assert page1.next_before == ids[3]
    page3 = await service.list(limit=2, before=ids[1])
    assert [i.incident_id for i in page3.items] == [ids[0]]
    assert page3.next_before is None
    assigned = (await service.list(status="assigned")).items
    assert [a.unit_id for a in assigned[0].assignments] == ["car-1"]
    with pytest.raises(IncidentInputError, match="unknown status filter"):
        await service.list(status="sideways")


async def test_stats_percentiles_match_numpy(
    service: IncidentService, pool: AsyncConnectionPool[Any], rig: FleetRig
) -> None:
    rng = np.random.default_rng(4)
    base = datetime(2024, 5, 1, tzinfo=UTC)
    cats = [
        IncidentCategory.SEGURIDAD_CIUDADANA,
        IncidentCategory.FISCALIZACION,
        IncidentCategory.SEGURIDAD_VIAL,
    ]
    chans = [Channel.PHONE, Channel.WHATSAPP, Channel.CAMERA, Channel.PATROL]
    rows: list[dict[str, Any]] = []
    async with pool.connection() as conn, conn.transaction():
        for k in range(600):
            created = base + timedelta(seconds=float(rng.uniform(0, 6 * 86400)))
            cat, ch = cats[int(rng.integers(3))], chans[int(rng.integers(4))]
            row = await store.insert_incident(
                conn, lat=SCENE[0], lon=SCENE[1], category=str(cat), channel=str(ch), priority=3,
                description="", address="", reported_by="", created_at=created,
            )  # fmt: skip
            assign_s = float(rng.gamma(2.0, 40.0)) if rng.random() < 0.9 else None
            response_s = (
                assign_s + float(rng.lognormal(6.0, 0.5)) if assign_s and rng.random() < 0.85 else None
            )
            changes: dict[str, Any] = {}
            if assign_s is not None:
                changes["first_assigned_at"] = created + timedelta(seconds=assign_s)
            if response_s is not None:
                changes["first_arrival_at"] = created + timedelta(seconds=response_s)
            if changes:
                await store.update_incident(conn, row[0], changes, created)
            rows.append({"created": created, "cat": str(cat), "ch": str(ch), "assign": assign_s,
                         "response": response_s, "k": k})  # fmt: skip
    since, until = base + timedelta(days=1), base + timedelta(days=5)
    stats = await service.stats(since, until)
    window = [r for r in rows if since <= r["created"] < until]

    def check(group: Any, selected: list[dict[str, Any]]) -> None:
        assert group.count == len(selected)
        resp = np.array([r["response"] for r in selected if r["response"] is not None])
        assign = np.array([r["assign"] for r in selected if r["assign"] is not None])
        assert group.arrived == len(resp)
        assert group.assigned == len(assign)
        # percentile_cont is linear interpolation between the closest ranks: numpy's default method.
        assert group.response_p50_s == pytest.approx(np.percentile(resp, 50), abs=1e-3)
        assert group.response_p90_s == pytest.approx(np.percentile(resp, 90), abs=1e-3)
        assert group.response_mean_s == pytest.approx(resp.mean(), abs=1e-3)
        assert group.assign_p50_s == pytest.approx(np.percentile(assign, 50), abs=1e-3)
        assert group.assign_p90_s == pytest.approx(np.percentile(assign, 90), abs=1e-3)
        assert group.assign_mean_s == pytest.approx(assign.mean(), abs=1e-3)

    check(stats.overall, window)
    assert set(stats.groups) == {"category", "channel"}
    assert set(stats.groups["category"]) == {str(c) for c in cats}
    for cat in cats:
        check(stats.groups["category"][str(cat)], [r for r in window if r["cat"] == str(cat)])
    for ch in chans:
        check(stats.groups["channel"][str(ch)], [r for r in window if r["ch"] == str(ch)])
    # An empty window still has an overall row, with no figures.
    empty = await service.stats(base - timedelta(days=9), base - timedelta(days=8))
    assert (empty.overall.count, empty.overall.response_p50_s, empty.groups["category"]) == (0, None, {})
    with pytest.raises(IncidentInputError, match="cannot group by"):
        await service.stats(since, until, by=("sector",))
    with pytest.raises(IncidentInputError, match="must be after"):
        await service.stats(until, since)
    by_priority = await service.stats(since, until, by=("priority",))
    assert by_priority.groups["priority"]["3"].count == len(window)


async def test_no_feed_listener_failure_stops_a_change(pool: AsyncConnectionPool[Any], rig: FleetRig) -> None:
    def broken(kind: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("console gone")

    svc = IncidentService(pool, rig.fleet, DispatchSettings(), feed=broken)
    incident, _ = await svc.create(lat=SCENE[0], lon=SCENE[1], category=IncidentCategory.OTRO,
                                   channel=Channel.SOCIAL)  # fmt: skip
    await wait_for("the incident stored", lambda: rig.query("SELECT count(*) FROM incidents")[0][0] == 1)
    assert (await svc.get(incident.incident_id)).channel is Channel.SOCIAL


async def test_a_conninfo_gives_the_service_its_own_pool(pg_url: str, rig: FleetRig) -> None:
    svc = IncidentService(pg_url, rig.fleet, DispatchSettings())
    with pytest.raises(StorageError, match="not started"):
        await svc.get(1)
    await svc.start()
    try:
        incident, _ = await svc.create(
            lat=SCENE[0], lon=SCENE[1], category=IncidentCategory.APOYO_TURISTA, channel=Channel.SOCIAL
        )
        assert (await svc.get(incident.incident_id)).category is IncidentCategory.APOYO_TURISTA
    finally:
        await svc.stop()
    with pytest.raises(StorageError, match="not started"):
        await svc.get(incident.incident_id)
