"""/api/v1/live: the LiveFleet as a GeoJSON FeatureCollection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tracker.model import Ping, PingFlag, Source, StatusUpdate, Unit, UnitKind, UnitStatus

pytestmark = pytest.mark.integration


def units() -> list[Unit]:
    return [
        Unit("dron-01", UnitKind.DRONE, callsign="DRON-01", sector="S1"),
        Unit("mov-03", UnitKind.PATROL_CAR, callsign="MOV-03", sector="S4"),
        Unit("ser-014", UnitKind.FOOT, callsign="SER-014", sector="S2"),
    ]


async def test_live_collection_has_one_feature_per_unit_in_lonlat(api) -> None:
    now = datetime.now(UTC)
    fleet = api.ctx.fleet
    fleet.load(units(), [])
    fleet.apply(
        pings=[
            Ping(
                "ser-014",
                now - timedelta(seconds=20),
                -12.1221,
                -77.0295,
                alt=79.0,
                speed=1.3,
                heading=45.0,
                accuracy=6.0,
                battery=81.0,
                flags=PingFlag.TS_DEFAULTED,
                source=Source.OWNTRACKS,
            ),
            # A drone silent for 5 minutes: lost (drones go stale after 15 s, lost after 60 s).
            Ping(
                "dron-01",
                now - timedelta(minutes=5),
                -12.1190,
                -77.0350,
                alt=180.0,
                speed=12.0,
                heading=270.0,
                accuracy=1.5,
                battery=55.0,
            ),
        ],
        statuses=[("ser-014", StatusUpdate(UnitStatus.EN_ROUTE, now))],
    )
    resp = await api.client.get("/api/v1/live")
    assert resp.status_code == 200
    body = resp.json()
    assert body["type"] == "FeatureCollection"
    by_id = {f["id"]: f for f in body["features"]}
    assert list(by_id) == ["dron-01", "mov-03", "ser-014"]

    sereno = by_id["ser-014"]
    assert sereno["type"] == "Feature"
    assert sereno["geometry"] == {"type": "Point", "coordinates": [-77.0295, -12.1221]}
    props = sereno["properties"]
    assert props["kind"] == "foot"
    assert props["callsign"] == "SER-014"
    assert props["sector"] == "S2"
    assert props["status"] == "en_route"
    assert props["freshness"] == "live"
    assert 19.0 <= props["age_s"] < 80.0
    assert datetime.fromisoformat(props["fix_time"]) == (now - timedelta(seconds=20)).replace(
        microsecond=(now - timedelta(seconds=20)).microsecond // 1000 * 1000
    )
    assert (props["speed"], props["heading"], props["battery"], props["accuracy"]) == (1.3, 45.0, 81.0, 6.0)
    assert props["flags"] == ["ts_defaulted"]
    assert props["source"] == "owntracks"

    assert by_id["dron-01"]["properties"]["freshness"] == "lost"
    # A unit that never reported: listed, with no geometry.
    car = by_id["mov-03"]
    assert car["geometry"] is None
    assert car["properties"]["freshness"] == "lost"
    assert car["properties"]["fix_time"] is None


async def test_live_filters_by_kind_and_freshness(api) -> None:
    now = datetime.now(UTC)
    api.ctx.fleet.load(units(), [Ping("ser-014", now, -12.12, -77.03)])
    kinds = (await api.client.get("/api/v1/live", params={"kind": "drone"})).json()
    assert [f["id"] for f in kinds["features"]] == ["dron-01"]
    fresh = (await api.client.get("/api/v1/live", params={"freshness": "live"})).json()
    assert [f["id"] for f in fresh["features"]] == ["ser-014"]
    bad = await api.client.get("/api/v1/live", params={"kind": "tank"})
    assert bad.status_code == 422


async def test_outlier_fix_does_not_move_a_unit_on_the_live_map(api) -> None:
    now = datetime.now(UTC)
    api.ctx.fleet.load(units(), [Ping("ser-014", now - timedelta(seconds=30), -12.12, -77.03)])
    api.ctx.fleet.apply(pings=[Ping("ser-014", now, -12.0, -77.2, flags=PingFlag.SUSPECT)])
    feature = {f["id"]: f for f in (await api.client.get("/api/v1/live")).json()["features"]}["ser-014"]
    assert feature["geometry"]["coordinates"] == [-77.03, -12.12]
