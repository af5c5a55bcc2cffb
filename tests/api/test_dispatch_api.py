"""GET /api/v1/dispatch/nearest: ranked units from a real Dispatcher over the app's LiveFleet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pyproj import Geod

from api.app import create_app
from api.context import ApiContext
from tests.api.conftest import Api
from tests.fixtures.auth import seed_headers
from tracker.config import Settings
from tracker.dispatch import Dispatcher
from tracker.fleet import LiveFleet
from tracker.model import Ping, Unit, UnitKind
from tracker.registry import UnitRegistry

pytestmark = pytest.mark.integration

GEOD = Geod(ellps="WGS84")
URL = "/api/v1/dispatch/nearest"
INCIDENT = {"lat": -12.1205, "lon": -77.0305}


def miraflores(fleet: LiveFleet) -> None:
    now = datetime.now(UTC)
    fleet.load(
        [
            Unit("car-1", UnitKind.PATROL_CAR, "Alfa 1", "norte", frozenset({"first_aid"})),
            Unit("moto-1", UnitKind.MOTORCYCLE, "Moto 1", "sur"),
            Unit("foot-1", UnitKind.FOOT, "Sereno 1", "norte"),
            Unit("drone-1", UnitKind.DRONE, "Dron 1"),
        ],
        [
            Ping("car-1", now - timedelta(seconds=5), -12.1190, -77.0290),
            Ping("moto-1", now - timedelta(seconds=5), -12.1300, -77.0300),
            Ping("foot-1", now - timedelta(seconds=5), -12.1207, -77.0307),
            Ping("drone-1", now - timedelta(seconds=30), -12.1205, -77.0305),  # stale (after 15 s)
        ],
    )


@pytest.fixture
async def api(pg_url: str) -> AsyncIterator[Api]:
    """The app with a Dispatcher following its LiveFleet (loaded with a few Miraflores units)."""
    fleet = LiveFleet()
    miraflores(fleet)
    ctx = ApiContext(
        settings=Settings(database_url=pg_url), conninfo=pg_url, registry=UnitRegistry(), fleet=fleet,
        pool_max_size=2,
    )  # fmt: skip
    ctx.dispatcher = Dispatcher(fleet)
    app = create_app(ctx)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                headers=seed_headers(ctx), transport=transport, base_url="http://serenazgo.test"
            ) as client:
                yield Api(client, ctx)
    finally:
        ctx.dispatcher.close()


async def test_nearest_ranks_by_eta_live_before_stale(api: Api) -> None:
    r = await api.client.get(URL, params=INCIDENT)
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [u["unit_id"] for u in body["units"]]
    assert ids == ["foot-1", "car-1", "moto-1", "drone-1"]
    assert [u["freshness"] for u in body["units"]] == ["live", "live", "live", "stale"]
    car = body["units"][1]
    assert set(car) == {"unit_id", "kind", "callsign", "status", "lat", "lon", "distance_m", "eta_s",
                        "fix_age_s", "freshness"}  # fmt: skip
    _, _, true_m = GEOD.inv(INCIDENT["lon"], INCIDENT["lat"], car["lon"], car["lat"])
    assert car["distance_m"] == pytest.approx(true_m, rel=0.006)
    assert car["eta_s"] == pytest.approx(car["distance_m"] * 1.35 / 6.9, abs=0.2)
    assert body["query"]["k"] == 5 and body["query"]["statuses"] == ["available"]
    assert body["model"]["kinds"]["drone"] == {
        "speed_mps": 15.0, "circuity": 1.0, "s_per_km": 66.667, "stale_after_s": 15.0, "lost_after_s": 60.0,
    }  # fmt: skip


async def test_filters(api: Api) -> None:
    async def ids(**params: object) -> list[str]:
        r = await api.client.get(URL, params={**INCIDENT, **params})
        assert r.status_code == 200, r.text
        return [u["unit_id"] for u in r.json()["units"]]

    assert await ids(kinds="patrol_car,motorcycle") == ["car-1", "moto-1"]
    assert await ids(kinds=["drone", "foot"]) == ["foot-1", "drone-1"]
    assert await ids(capabilities="first_aid") == ["car-1"]
    assert await ids(sector="norte", k=1) == ["foot-1"]
    assert await ids(max_age_s=10) == ["foot-1", "car-1", "moto-1"]
    assert await ids(statuses="dispatched") == []


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"lat": 91, "lon": 0}, "lat must be in [-90, 90]"),
        ({"lat": 0, "lon": -200}, "lon must be in [-180, 180]"),
        ({"lat": 0, "lon": 0, "k": 0}, "k must be in 1..100"),
        ({"lat": 0, "lon": 0, "k": 101}, "k must be in 1..100"),
        ({"lat": 0, "lon": 0, "kinds": "horse"}, "unknown kind horse"),
        ({"lat": 0, "lon": 0, "statuses": "asleep"}, "unknown status asleep"),
        ({"lat": 0, "lon": 0, "max_age_s": -5}, "max_age_s must be"),
    ],
)
async def test_bad_queries_are_422_with_a_reason(api: Api, params: dict[str, object], reason: str) -> None:
    r = await api.client.get(URL, params=params)
    assert r.status_code == 422
    assert reason in r.json()["detail"]


async def test_missing_or_non_numeric_coordinates_are_422(api: Api) -> None:
    assert (await api.client.get(URL, params={"lat": 0})).status_code == 422
    assert (await api.client.get(URL, params={"lat": "x", "lon": 0})).status_code == 422


async def test_without_a_dispatcher_it_is_503(api: Api) -> None:
    dispatcher, api.ctx.dispatcher = api.ctx.dispatcher, None
    try:
        r = await api.client.get(URL, params=INCIDENT)
    finally:
        api.ctx.dispatcher = dispatcher
    assert r.status_code == 503
    assert "dispatch is not running" in r.json()["detail"]
