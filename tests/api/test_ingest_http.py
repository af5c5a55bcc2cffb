"""HTTP ingest (OsmAnd / Traccar Client, OwnTracks HTTP) against a real PostgreSQL.

Real client requests go in (Traccar's own decoder-test captures of Traccar Client,
and the OwnTracks app's HTTP-mode body from the OwnTracks booklet; only their time
fields are moved to the present, since fixes older than a week are refused); the
stored rows are read back with SQL and compared with values worked out by hand.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from typer.testing import CliRunner

from api.app import create_app, served_app
from api.cli import app as cli_app
from api.context import ApiContext
from api.routes.ingest import osmand_app
from api.runtime import bind_osmand_socket
from mqtt_bridge.codecs import OSMAND_HTTP_TOPIC
from mqtt_bridge.http_ingest import HttpIngest
from mqtt_bridge.http_ingest_worker import REFRESH_MIN_S
from tests.api.conftest import Api
from tests.fixtures.auth import seed_headers
from tracker.config import Settings
from tracker.fleet import LiveFleet
from tracker.model import PingFlag, Unit, UnitKind
from tracker.registry import UnitRegistry
from tracker.store.embedded import EmbeddedPostgres
from tracker.store.migrations import migrate
from tracker.store.units import create_unit_sync

pytestmark = pytest.mark.integration

KNOT = 1852.0 / 3600.0
T0 = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


async def _app(url: str, **settings: Any) -> AsyncIterator[Api]:
    ctx = ApiContext(
        settings=Settings(database_url=url, **settings),
        conninfo=url,
        registry=UnitRegistry(),
        fleet=LiveFleet(),
        pool_max_size=4,
    )
    app = create_app(ctx)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        # No user credentials by default: phones are not users (register() logs in for itself).
        async with httpx.AsyncClient(transport=transport, base_url="http://serenazgo.test") as client:
            yield Api(client, ctx)


@pytest.fixture
async def open_api(pg_url: str) -> AsyncIterator[Api]:
    """The app with device tokens off (SERENAZGO_INGEST_AUTH=false), as in the demo."""
    async for api in _app(pg_url, ingest_auth=False):
        yield api


@pytest.fixture
async def auth_api(pg_url: str) -> AsyncIterator[Api]:
    """The app with device tokens required (the default), checked afresh on every request."""
    async for api in _app(pg_url, ingest_auth_cache_s=0):
        yield api


async def register(api: Api, unit_id: str, **external: str) -> None:
    body = {"unit_id": unit_id, "kind": "patrol_car", "external_ids": external}
    resp = await api.client.post("/api/v1/units", json=body, headers=seed_headers(api.ctx))
    assert resp.status_code == 201, resp.text


def rows(url: str, unit_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT ts, lat, lon, alt, speed, heading, accuracy, battery, flags, source FROM positions "
            "WHERE unit_id = %s ORDER BY ts",
            (unit_id,),
        ).fetchall()


def dead_letters(url: str) -> list[tuple[str, str, bytes]]:
    with psycopg.connect(url) as conn:
        return [
            (t, r, bytes(p))
            for t, r, p in conn.execute(
                "SELECT topic, reason, payload FROM dead_letters ORDER BY 1, 2"
            ).fetchall()
        ]


def approx_row(row: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    """float4 columns (alt, speed, heading, accuracy, battery) hold ~7 significant digits."""
    assert row[:3] == expected[:3]
    for got, want in zip(row[3:8], expected[3:8], strict=True):
        assert (got is None and want is None) or got == pytest.approx(want, rel=1e-6)
    assert row[8:] == expected[8:]


async def test_traccar_client_query_get_and_form_post_stored_exactly(open_api: Api, pg_url: str) -> None:
    await register(open_api, "mov-07", osmand="902064")
    # Traccar Client (query): the decoder test's request with its time moved to T0.
    q = (
        f"id=902064&lat=42.06288&lon=-88.23412&timestamp={iso(T0).replace(':', '%3A')}"
        "&hdop=6.0&altitude=224.0&speed=10.0&bearing=7.19889788244&batt=87&charge=true"
    )
    resp = await open_api.client.get(f"/api/v1/ingest/osmand?{q}")
    assert resp.status_code == 200, resp.text
    assert resp.content == b""
    # The same device as a form POST, epoch milliseconds.
    t1 = T0 + timedelta(seconds=10)
    form = f"id=902064&lat=42.06290&lon=-88.23410&timestamp={int(t1.timestamp() * 1000)}&speed=0.0&accuracy=9"
    resp = await open_api.client.post(
        "/api/v1/ingest/osmand", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status_code == 200, resp.text
    got = rows(pg_url, "mov-07")
    assert len(got) == 2
    approx_row(got[0], (T0, 42.06288, -88.23412, 224.0, 10.0 * KNOT, 7.19889788244, None, 87.0, 0, 2))
    approx_row(got[1], (t1, 42.06290, -88.23410, None, 0.0, None, 9.0, None, 0, 2))
    # The live fleet moved once the batch was committed.
    state = open_api.ctx.fleet.get("mov-07")
    assert state is not None and state.fix is not None and state.fix.ts == t1


async def test_traccar_client_json_bodies_stored_exactly(open_api: Api, pg_url: str) -> None:
    await register(open_api, "moto-3", osmand="8737767034")
    await register(open_api, "moto-4", osmand="658765")
    t_android = T0 + timedelta(milliseconds=444)
    android = (
        '{"location":{"event":"motionchange","is_moving":false,"uuid":"0e9a2473-a9a7-4c00-997b-fb97d2154e75",'
        f'"timestamp":"{iso(t_android)}","odometer":0,"coords":{{"latitude":-12.1148096,'
        '"longitude":-77.0337015,"accuracy":3.8,"speed":18.67,"speed_accuracy":0.26,"heading":63,'
        '"heading_accuracy":0.28,"altitude":35.7,"altitude_accuracy":3.8},"activity":{"type":"still",'
        '"confidence":100},"battery":{"is_charging":false,"level":0.79},"extras":{}},"device_id":"8737767034"}'
    )
    ios = (
        '{"location":{"extras":{},"mock":true,"coords":{"speed_accuracy":-1,"speed":-1,"longitude":-122.406417,'
        '"ellipsoidal_altitude":0,"floor":null,"heading_accuracy":-1,"latitude":37.785834000000001,"accuracy":5,'
        '"altitude_accuracy":-1,"altitude":0,"heading":-1},"is_moving":false,"age":188,"odometer":0,'
        '"uuid":"2FB04C65-99CF-42AB-8DD3-EBCB4B108BF8","event":"motionchange","battery":{"level":-1,'
        f'"is_charging":false}},"activity":{{"type":"unknown","confidence":100}},"timestamp":"{iso(T0)}"}},'
        '"device_id":"658765"}'
    )
    for body in (android, ios):
        resp = await open_api.client.post(
            "/api/v1/ingest/osmand", content=body, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 200, resp.text
    approx_row(
        rows(pg_url, "moto-3")[0], (t_android, -12.1148096, -77.0337015, 35.7, 18.67, 63.0, 3.8, 79.0, 0, 2)
    )
    approx_row(rows(pg_url, "moto-4")[0], (T0, 37.785834, -122.406417, 0.0, None, None, 5.0, None, 4, 2))


async def test_owntracks_http_mode(open_api: Api, pg_url: str) -> None:
    await register(open_api, "ser-014", owntracks="owntracks/jane/phone")
    tst = int(T0.timestamp())
    # The OwnTracks app's HTTP-mode body (booklet, features/traccar.md), time moved to T0.
    body = (
        f'{{"cog":271,"batt":41,"lon":-77.0301,"acc":5,"vel":18,"vac":3,"lat":-12.1211,"t":"u","conn":"w",'
        f'"tst":{tst},"alt":167,"_type":"location","tid":"JJ","topic":"owntracks/jane/phone"}}'
    )
    resp = await open_api.client.post(
        "/api/v1/ingest/owntracks", content=body, headers={"X-Limit-U": "jane", "X-Limit-D": "phone"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == []
    approx_row(rows(pg_url, "ser-014")[0], (T0, -12.1211, -77.0301, 167.0, 5.0, 271.0, 5.0, 41.0, 0, 1))
    # Query parameters name the sender when the app sends no X-Limit headers.
    body2 = orjson.dumps({"_type": "location", "lat": -12.12, "lon": -77.03, "tst": tst + 30})
    resp = await open_api.client.post("/api/v1/ingest/owntracks?u=jane&d=phone", content=body2)
    assert resp.status_code == 200, resp.text
    assert len(rows(pg_url, "ser-014")) == 2


async def test_hostile_requests_get_a_reason(open_api: Api, pg_url: str) -> None:
    await register(open_api, "mov-07", osmand="902064")
    c = open_api.client
    cases: list[tuple[httpx.Response, int, str]] = [
        (await c.get("/api/v1/ingest/osmand?id=902064&lat=abc&lon=1"), 422, "wrong_type"),
        (await c.get("/api/v1/ingest/osmand?id=902064&lat=1e999&lon=1"), 422, "wrong_type"),
        (await c.get("/api/v1/ingest/osmand?lat=-12.1&lon=-77.0"), 422, "missing_field"),
        (await c.get("/api/v1/ingest/osmand?id=555&lat=-12.1&lon=-77.0"), 422, "unknown_unit"),
        (await c.get("/api/v1/ingest/osmand?id=902064&lat=95&lon=-77.0"), 422, "lat_out_of_range"),
        (await c.post("/api/v1/ingest/osmand", content=b"x" * 70_000), 413, "payload_too_large"),
        (await c.post("/api/v1/ingest/owntracks", content=b"{}"), 422, "missing_field"),
        (
            await c.post(
                "/api/v1/ingest/owntracks", content=b"[1]", headers={"X-Limit-U": "a", "X-Limit-D": "b"}
            ),
            422,
            "not_an_object",
        ),
        (
            await c.post("/api/v1/ingest/owntracks?u=a/b&d=c", content=b"{}"),
            422,
            "invalid_name",
        ),
    ]
    for resp, status, reason in cases:
        assert resp.status_code == status, resp.text
        body = resp.json()
        assert body["reason"] == reason and body["detail"]
    assert rows(pg_url, "mov-07") == []
    # Decoded-but-rejected requests are kept as dead letters, as on MQTT; refused sizes and names are not.
    letters = dead_letters(pg_url)
    assert sorted(r for _, r, _ in letters) == sorted(
        ["wrong_type", "wrong_type", "missing_field", "unknown_unit", "lat_out_of_range", "not_an_object"]
    )


async def test_device_tokens(auth_api: Api, pg_url: str) -> None:
    await register(auth_api, "mov-07", osmand="902064")
    await register(auth_api, "mov-08", osmand="902065")
    runner = CliRunner()
    issued = runner.invoke(cli_app, ["unit", "credentials", "mov-07", "--database-url", pg_url])
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.strip().splitlines()[-1]
    assert len(token) == 43
    other = runner.invoke(cli_app, ["unit", "credentials", "mov-08", "--database-url", pg_url])
    other_token = other.stdout.strip().splitlines()[-1]
    unknown = runner.invoke(cli_app, ["unit", "credentials", "nope", "--database-url", pg_url])
    assert unknown.exit_code == 1 and "not registered" in unknown.output

    c = auth_api.client
    q = "/api/v1/ingest/osmand?id=902064&lat=-12.12&lon=-77.03&timestamp={}"
    ts = int(T0.timestamp())
    no_token = await c.get(q.format(ts))
    assert no_token.status_code == 401 and no_token.json()["reason"] == "missing_token"
    bad = await c.get(q.format(ts), headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["reason"] == "invalid_token"
    wrong_unit = await c.get(q.format(ts), headers={"Authorization": f"Bearer {other_token}"})
    assert wrong_unit.status_code == 403 and wrong_unit.json()["reason"] == "wrong_device"
    assert rows(pg_url, "mov-07") == [] and dead_letters(pg_url) == []

    ok = await c.get(q.format(ts), headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200, ok.text
    ok_query = await c.get(q.format(ts + 1) + f"&token={token}")
    assert ok_query.status_code == 200, ok_query.text
    assert len(rows(pg_url, "mov-07")) == 2
    # A rejected fix keeps no token in its dead letter.
    bad_fix = await c.get(f"/api/v1/ingest/osmand?id=902064&lat=x&lon=1&token={token}")
    assert bad_fix.status_code == 422
    ((topic, reason, payload),) = dead_letters(pg_url)
    assert (topic, reason) == ("http/osmand", "wrong_type")
    assert token.encode() not in payload and b"lat=x" in payload

    # A new token revokes the old one; --revoke leaves none.
    runner.invoke(cli_app, ["unit", "credentials", "mov-07", "--database-url", pg_url])
    old = await c.get(q.format(ts + 2), headers={"Authorization": f"Bearer {token}"})
    assert old.status_code == 401
    runner.invoke(cli_app, ["unit", "credentials", "mov-08", "--revoke", "--database-url", pg_url])
    revoked = await c.get(q.format(ts + 2), headers={"Authorization": f"Bearer {other_token}"})
    assert revoked.status_code == 401


async def test_many_devices_at_once_all_stored(open_api: Api, pg_url: str) -> None:
    n = 60
    for i in range(n):
        await register(open_api, f"car-{i:02d}", osmand=str(4800 + i))
    ts = int(T0.timestamp())
    answers = await asyncio.gather(
        *(
            open_api.client.get(
                f"/api/v1/ingest/osmand?id={4800 + i}&lat=-12.1{i:02d}&lon=-77.03&timestamp={ts}"
            )
            for i in range(n)
        )
    )
    assert [a.status_code for a in answers] == [200] * n
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM positions").fetchone() == (n,)
        assert conn.execute("SELECT count(*) FROM unit_latest").fetchone() == (n,)
    ingest = open_api.ctx.http_ingest
    assert ingest is not None and 1 <= ingest.batches <= n


async def test_osmand_port_app_serves_the_same_handler(open_api: Api, pg_url: str) -> None:
    await register(open_api, "mov-07", osmand="902064")
    app = osmand_app(open_api.ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://phone") as client:
        resp = await client.get(f"/?id=902064&lat=-12.12&lon=-77.03&timestamp={int(T0.timestamp())}&speed=2")
    assert resp.status_code == 200, resp.text
    approx_row(rows(pg_url, "mov-07")[0], (T0, -12.12, -77.03, None, 2 * KNOT, None, None, None, 0, 2))


async def test_the_served_app_takes_ingest_by_its_fast_path_and_the_rest_through_the_app(
    open_api: Api, pg_url: str
) -> None:
    await register(open_api, "mov-08", osmand="902065")
    app = served_app(open_api.ctx)  # what `serenazgo up` serves
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://phone") as client:
        query = f"id=902065&lat=-12.13&lon=-77.02&timestamp={int(T0.timestamp())}"
        got = await client.get(f"/api/v1/ingest/osmand?{query}")
        posted = await client.post(
            "/api/v1/ingest/owntracks", json=[], headers={"X-Limit-U": "u", "X-Limit-D": "d"}
        )
        # Not a fast path (method or path): the app answers, with its middleware and gates.
        wrong_method = await client.get("/api/v1/ingest/owntracks")
        gated = await client.get("/api/v1/live")
        health = await client.get("/healthz")
    assert got.status_code == 200, got.text
    assert rows(pg_url, "mov-08")[0][1:3] == (-12.13, -77.02)
    assert posted.status_code == 200 and posted.json() == []
    assert wrong_method.status_code == 405
    assert gated.status_code == 401
    assert health.status_code in (200, 503) and "checks" in health.json()


@pytest.mark.fault
async def test_database_outage_never_answers_200_for_an_unstored_fix(
    pg_server_factory: Callable[..., EmbeddedPostgres],
) -> None:
    server = pg_server_factory()
    migrate(server.url, timescale=False)
    async for api in _app(server.url, ingest_auth=False):
        await register(api, "mov-07", osmand="902064")
        c = api.client
        url = "/api/v1/ingest/osmand?id=902064&lat=-12.12&lon=-77.0{i}&timestamp={ts}"
        ts = int(T0.timestamp())
        assert (await c.get(url.format(i=0, ts=ts))).status_code == 200
        await asyncio.to_thread(server.stop)
        answered: list[int] = []
        for i in range(1, 4):
            resp = await c.get(url.format(i=i, ts=ts + i))
            answered.append(resp.status_code)
            assert resp.status_code == 503, resp.text
            assert resp.headers["Retry-After"] and resp.json()["reason"] == "database_unavailable"
        await asyncio.to_thread(server.start)
        # The phone resends what was refused: stored once each, now with a 200.
        for i in range(1, 4):
            resp = await c.get(url.format(i=i, ts=ts + i))
            assert resp.status_code == 200, resp.text
        resend = await c.get(url.format(i=3, ts=ts + 3))
        assert resend.status_code == 200
        got = rows(server.url, "mov-07")
        assert [r[0] for r in got] == [T0 + timedelta(seconds=i) for i in range(4)]
        assert all(r[8] & int(PingFlag.LATE) == 0 for r in got[:4])


def test_a_taken_osmand_port_is_reported_with_the_setting_to_change() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sock, note = bind_osmand_socket("127.0.0.1", port)
    assert sock is None
    assert f"port {port}" in note and "SERENAZGO_OSMAND_PORT" in note and "/api/v1/ingest/osmand" in note
    assert bind_osmand_socket("127.0.0.1", 0) == (None, "off (SERENAZGO_OSMAND_PORT=0)")


async def test_a_killed_worker_costs_503s_only_and_comes_back(open_api: Api, pg_url: str) -> None:
    """The commit worker dies: its requests get 503 (nothing acknowledged), the next ones start it again."""
    await register(open_api, "mov-20", osmand="902080")
    ts = int(T0.timestamp())

    async def send(k: int) -> httpx.Response:
        query = f"id=902080&lat=-12.12&lon=-77.03&timestamp={ts + k}"
        return await open_api.client.get(f"/api/v1/ingest/osmand?{query}")

    assert (await send(0)).status_code == 200
    ingest = open_api.ctx.http_ingest
    assert ingest is not None
    pid = ingest.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    answers = [await send(k) for k in range(1, 4)]
    statuses = [a.status_code for a in answers]
    assert statuses[-1] == 200, [a.text for a in answers]
    assert set(statuses) <= {200, 503}
    for a in answers:
        if a.status_code == 503:
            assert a.json()["reason"] == "ingest_restarting"
            assert a.headers["retry-after"] == "5"
    assert ingest.worker_pid not in (None, pid)
    # Exactly the fixes answered 200 are stored: the 503s were never sent to a live worker.
    stored = {int(r[0].timestamp()) - ts for r in rows(pg_url, "mov-20")}
    assert stored == {0} | {k for k, a in zip(range(1, 4), answers, strict=True) if a.status_code == 200}


async def test_units_registered_after_the_worker_started_are_known_at_once(
    open_api: Api, pg_url: str
) -> None:
    """Through this API (the registry's generation moves) or straight into the database (a miss reloads)."""
    await register(open_api, "mov-21", osmand="902081")
    ts = int(T0.timestamp())
    resp = await open_api.client.get(f"/api/v1/ingest/osmand?id=902081&lat=-12.12&lon=-77.03&timestamp={ts}")
    assert resp.status_code == 200, resp.text  # the worker runs and has loaded its units
    await register(open_api, "mov-22", osmand="902082")
    resp = await open_api.client.get(f"/api/v1/ingest/osmand?id=902082&lat=-12.13&lon=-77.03&timestamp={ts}")
    assert resp.status_code == 200, resp.text
    # Another process (the CLI) registers a unit: this API's registry never hears of it.
    with psycopg.connect(pg_url) as conn:
        create_unit_sync(conn, Unit("mov-23", UnitKind.FOOT, external_ids={"osmand": "902083"}))
        conn.commit()
    await asyncio.sleep(REFRESH_MIN_S)  # past the reload rate limit of the worker's last reload
    resp = await open_api.client.get(f"/api/v1/ingest/osmand?id=902083&lat=-12.14&lon=-77.03&timestamp={ts}")
    assert resp.status_code == 200, resp.text
    assert [len(rows(pg_url, u)) for u in ("mov-21", "mov-22", "mov-23")] == [1, 1, 1]
    # This process learnt the unit from the worker: registry, and the live fleet with its fix.
    assert open_api.ctx.registry.by_external("osmand", "902083") is not None
    state = open_api.ctx.fleet.get("mov-23")
    assert state is not None
    assert state.fix is not None
    assert state.fix.lat == -12.14


async def test_stopping_commits_and_answers_everything_queued(open_api: Api, pg_url: str) -> None:
    """stop() with batches queued and in the worker: every request gets its 200, every fix is stored."""
    n = 300
    for i in range(3):
        await register(open_api, f"stp-{i}", osmand=str(903000 + i))
    ctx = open_api.ctx
    ingest = HttpIngest(ctx.settings, pg_url, ctx.registry, ctx.fleet, batch_max=40)
    await ingest.start()
    ts = int(T0.timestamp())
    queries = [
        f"id={903000 + k % 3}&lat=-12.12&lon=-77.03&timestamp={ts + k // 3}".encode() for k in range(n)
    ]
    pending = [asyncio.create_task(ingest.submit(OSMAND_HTTP_TOPIC, q, time.time(), None)) for q in queries]
    await asyncio.sleep(0)  # every request queued; the first batch is on its way
    await ingest.stop()
    outcomes = [task.result() for task in pending]  # stop() returned: all are answered
    assert [o.status for o in outcomes] == [200] * n
    assert ingest.batches >= n // 40
    assert ingest.worker_pid is None
    assert [len(rows(pg_url, f"stp-{i}")) for i in range(3)] == [n // 3] * 3


async def test_a_stuck_worker_is_replaced_and_its_requests_get_503(open_api: Api, pg_url: str) -> None:
    """A worker that stops answering (here: SIGSTOP) is killed after the reply timeout, then replaced."""
    await register(open_api, "mov-24", osmand="902084")
    ctx = open_api.ctx
    ingest = HttpIngest(ctx.settings, pg_url, ctx.registry, ctx.fleet, reply_timeout_s=1.0)
    await ingest.start()
    ts = time.time() - 60
    try:
        first = await ingest.submit(
            OSMAND_HTTP_TOPIC, f"id=902084&lat=-12.1&lon=-77.0&timestamp={int(ts)}".encode(), ts, None
        )
        assert first.status == 200
        stuck = ingest.worker_pid
        assert stuck is not None
        os.kill(stuck, signal.SIGSTOP)
        query = f"id=902084&lat=-12.1&lon=-77.0&timestamp={int(ts) + 1}".encode()
        held = await asyncio.wait_for(ingest.submit(OSMAND_HTTP_TOPIC, query, ts, None), 30)
        assert (held.status, held.reason) == (503, "ingest_restarting")
        again = await ingest.submit(OSMAND_HTTP_TOPIC, query, ts, None)  # the phone resends
        assert again.status == 200
        assert ingest.worker_pid not in (None, stuck)
    finally:
        await ingest.stop()
    assert len(rows(pg_url, "mov-24")) == 2


async def test_a_fix_the_database_refuses_gets_422_and_the_rest_of_its_batch_is_stored(
    open_api: Api, pg_url: str
) -> None:
    """The worker isolates refused data as the bridge does; the refused fix never reaches the live fleet."""
    await register(open_api, "mov-25", osmand="902085")
    with psycopg.connect(pg_url, autocommit=True) as conn:  # a real refusal (SQLSTATE 23514)
        conn.execute("ALTER TABLE positions ADD CONSTRAINT refuse_one CHECK (lat <> -12.124)")
    ts = int(T0.timestamp())
    lats = [-12.121, -12.122, -12.123, -12.124]  # a minute apart, walking; the refused fix is the newest
    answers = await asyncio.gather(
        *(
            open_api.client.get(
                f"/api/v1/ingest/osmand?id=902085&lat={lat}&lon=-77.03&timestamp={ts + 60 * k}"
            )
            for k, lat in enumerate(lats)
        )
    )
    assert [a.status_code for a in answers] == [200, 200, 200, 422]
    assert answers[3].json()["reason"] == "storage_refused"
    assert [r[1] for r in rows(pg_url, "mov-25")] == lats[:3]
    assert [(t, r) for t, r, _ in dead_letters(pg_url)] == [(OSMAND_HTTP_TOPIC, "storage_refused")]
    state = open_api.ctx.fleet.get("mov-25")
    assert state is not None
    assert state.fix is not None
    assert state.fix.lat == -12.123
