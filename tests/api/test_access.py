"""The access table: every route of the OpenAPI document × every role, asserted against the app.

Generated from the document itself (``x-roles`` / ``x-public`` on each operation),
so a new route is covered the day it is added. Every role acts through a real API
token of a real user in PostgreSQL (no cached shortcuts: ``SERENAZGO_AUTH__CACHE_S=0``
makes every request look its token up). Expired, revoked, malformed tokens and
disabled users are refused; nothing answers data without credentials.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest

from api.context import ApiContext
from tests.api.conftest import running_app
from tracker.config import Settings
from tracker.model import Unit, UnitKind
from tracker.store.credentials import issue_token_sync
from tracker.store.units import create_unit_sync
from tracker.store.users import (
    add_user_sync,
    issue_api_token_sync,
    list_tokens_sync,
    revoke_token_id_sync,
    set_disabled_sync,
)
from tracker.users import Role

# The only operations open without a user, each for a stated reason (x-public); a new public route
# must be added here on purpose.
PUBLIC = {
    ("post", "/api/v1/auth/login"),
    ("get", "/healthz"),
    ("get", "/api/v1/ingest/osmand"),  # devices: their unit's device token, not a user role
    ("post", "/api/v1/ingest/osmand"),
    ("post", "/api/v1/ingest/owntracks"),
}
# Sample values for path parameters; the route need not find anything, only decide who may ask.
PATH_VALUES = {
    "unit_id": "car-01",
    "incident_id": "1",
    "geofence_id": "gf-1",
    "zone_id": "zone-1",
    "username": "nobody",
    "token_id": "999999",
}
# Read-only roles must not be able to change anything: these POSTs change nothing but the caller's own
# session (logout) or only compute an answer (a flight path checked against restricted airspace).
READ_ONLY_ALLOWED_CHANGES = {("post", "/api/v1/auth/logout"), ("post", "/api/v1/airspace/check")}


@dataclass
class Access:
    client: httpx.AsyncClient
    ctx: ApiContext
    tokens: dict[Role, str]
    conninfo: str


@pytest.fixture
async def access(pg_url: str) -> AsyncIterator[Access]:
    """The app on a real database with one real user and API token per role; no token cache."""
    tokens = {}
    for role in Role:
        add_user_sync(pg_url, f"user-{role.value}", role, None)
        tokens[role] = issue_api_token_sync(pg_url, f"user-{role.value}", "access table")
    settings = Settings(database_url=pg_url, ingest_auth=True)
    settings.auth.cache_s = 0.0
    async with running_app(settings) as api:
        yield Access(api.client, api.ctx, tokens, pg_url)


def operations(app_openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) of every operation in the document."""
    return [
        (method, path, op)
        for path, ops in app_openapi["paths"].items()
        for method, op in ops.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)


async def call(client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    # An empty JSON object: enough to get past authorization, where a body is looked at (422 then).
    body = {} if method in {"post", "put", "patch"} else None
    return await client.request(method.upper(), concrete(path), json=body, headers=headers)


async def test_every_route_declares_who_may_call_it(access: Access) -> None:
    ops = operations(access.client._transport.app.openapi())  # type: ignore[attr-defined]
    assert len(ops) >= 45
    for method, path, op in ops:
        declared = ("x-roles" in op) + ("x-public" in op)
        assert declared == 1, f"{method.upper()} {path} declares {declared} access rules"
        if "x-public" in op:
            assert (method, path) in PUBLIC, f"{method.upper()} {path} is public: {op['x-public']}"
            assert op["x-public"].strip()
        else:
            assert set(op["x-roles"]) <= {r.value for r in Role}
            assert op["x-roles"], f"{method.upper()} {path} admits nobody"
            # /docs shows how to authenticate on every gated operation.
            assert {k for req in op["security"] for k in req} == {"HTTPBearer", "APIKeyCookie"}
    assert {(m, p) for m, p, op in ops if "x-public" in op} == PUBLIC


async def test_access_table_every_route_by_every_role(access: Access) -> None:
    """Allowed roles get past authorization (whatever the route then answers); the others get 403;
    without credentials, 401 everywhere but the public routes."""
    table: dict[tuple[str, str], dict[str, int]] = {}
    mismatches = []
    ops = operations(access.client._transport.app.openapi())  # type: ignore[attr-defined]
    for method, path, op in ops:
        row = table.setdefault((method, path), {})
        anonymous = await call(access.client, method, path, {})
        row["anonymous"] = anonymous.status_code
        if "x-public" in op:
            if path.startswith("/api/v1/ingest/"):
                # Devices need their device token (a user's token is not one); an incomplete request
                # may be refused for what it lacks first. Either way nothing is stored.
                assert anonymous.status_code in (401, 422), (method, path, anonymous.text)
                user = await call(
                    access.client, method, path, {"Authorization": f"Bearer {access.tokens[Role.ADMIN]}"}
                )
                assert user.status_code in (401, 422), (method, path, user.text)
            else:
                assert anonymous.status_code not in (401, 403), (method, path, anonymous.text)
            continue
        if anonymous.status_code != 401:
            mismatches.append(f"{method.upper()} {path} anonymous -> {anonymous.status_code}")
        else:
            assert anonymous.headers["www-authenticate"] == "Bearer"
            assert set(anonymous.json()) == {"detail"}  # says what to do, carries no data
        for role in Role:
            resp = await call(access.client, method, path, {"Authorization": f"Bearer {access.tokens[role]}"})
            row[role.value] = resp.status_code
            allowed = role.value in op["x-roles"]
            if allowed and resp.status_code in (401, 403):
                mismatches.append(f"{method.upper()} {path} as {role.value}: {resp.status_code} {resp.text}")
            if not allowed:
                if resp.status_code != 403:
                    mismatches.append(f"{method.upper()} {path} as {role.value}: {resp.status_code}, not 403")
                elif role.value not in resp.json()["detail"]:
                    mismatches.append(f"{method.upper()} {path}: the 403 does not name the role")
    assert not mismatches, "\n".join(mismatches)
    # The table covers every (route, role) pair, plus the anonymous column.
    gated = [k for k, (m, p, op) in zip(table, ops, strict=True) if "x-roles" in op]
    assert all(len(table[k]) == len(Role) + 1 for k in gated)


async def test_read_only_roles_change_nothing(access: Access) -> None:
    ops = operations(access.client._transport.app.openapi())  # type: ignore[attr-defined]
    for method, path, op in ops:
        if method == "get" or "x-public" in op or (method, path) in READ_ONLY_ALLOWED_CHANGES:
            continue
        assert "viewer" not in op["x-roles"], f"a viewer may {method.upper()} {path}"
    # Who may assign: radio operators and their supervisors, not planners, viewers or integrations.
    assign = access.client._transport.app.openapi()["paths"]["/api/v1/incidents/{incident_id}/assign"]  # type: ignore[attr-defined]
    assert assign["post"]["x-roles"] == ["admin", "operator", "supervisor"]


async def test_expired_revoked_malformed_and_disabled_are_refused(access: Access) -> None:
    url = "/api/v1/units"

    async def status_with(header: str | bytes) -> int:
        return (await access.client.get(url, headers={"Authorization": header})).status_code

    good = issue_api_token_sync(access.conninfo, "user-viewer", "to revoke")
    assert await status_with(f"Bearer {good}") == 200
    [row] = [t for t in list_tokens_sync(access.conninfo, "user-viewer") if t.name == "to revoke"]
    assert revoke_token_id_sync(access.conninfo, row.token_id)
    assert await status_with(f"Bearer {good}") == 401  # revoked by the CLI's function: no cache to wait out

    expired = issue_api_token_sync(
        access.conninfo, "user-viewer", "expired", expires_in=timedelta(seconds=-1)
    )
    assert await status_with(f"Bearer {expired}") == 401

    for malformed in (
        "Bearer",
        "Bearer ",
        f"Basic {good}",
        f"Bearer {good}x",
        f"Bearer {good[:-1]}",
        "Bearer " + "a" * 5000,
        "Bearer sza_\u00e9\u00e9".encode(),  # raw bytes beyond ASCII
        f"bearer  {access.tokens[Role.VIEWER]} extra",
    ):
        assert await status_with(malformed) == 401, malformed

    # Disabling a user stops its tokens.
    viewer = access.tokens[Role.VIEWER]
    assert await status_with(f"Bearer {viewer}") == 200
    set_disabled_sync(access.conninfo, "user-viewer")
    assert await status_with(f"Bearer {viewer}") == 401
    set_disabled_sync(access.conninfo, "user-viewer", False)
    assert await status_with(f"Bearer {viewer}") == 200


async def test_revoking_through_the_api_bites_at_once_even_with_a_cache(access: Access) -> None:
    access.ctx.settings.auth.cache_s = 3600.0  # the CLI's revocations would wait this out; the API's do not
    admin = {"Authorization": f"Bearer {access.tokens[Role.ADMIN]}"}
    made = await access.client.post(
        "/api/v1/users/user-operator/tokens", json={"name": "radio 3"}, headers=admin
    )
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert token.startswith("sza_")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await access.client.get("/api/v1/auth/me", headers=headers)).json()["role"] == "operator"
    listed = (
        await access.client.get("/api/v1/tokens", params={"username": "user-operator"}, headers=admin)
    ).json()
    [row] = [t for t in listed if t["name"] == "radio 3"]
    assert "token" not in row and row["last_used_at"] is not None
    gone = await access.client.delete(f"/api/v1/tokens/{row['token_id']}", headers=admin)
    assert gone.status_code == 204
    assert (await access.client.get("/api/v1/auth/me", headers=headers)).status_code == 401
    # Only its SHA-256 was ever stored.
    with psycopg.connect(access.conninfo) as conn:
        stored = conn.execute("SELECT token_sha256 FROM user_tokens WHERE name = 'radio 3'").fetchone()
    assert stored is not None and token.encode() not in bytes(stored[0])


async def test_state_changes_are_audited_with_who_what_and_where(access: Access) -> None:
    viewer = {"Authorization": f"Bearer {access.tokens[Role.VIEWER]}"}
    planner = {"Authorization": f"Bearer {access.tokens[Role.PLANNER]}"}
    refused = await access.client.post(
        "/api/v1/incidents/1/assign", json={"unit_id": "car-01"}, headers=viewer
    )
    assert refused.status_code == 403
    fence = {
        "type": "Feature",
        "id": "s-1",
        "properties": {"name": "Sector 1", "kind": "sector"},
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [[-77.04, -12.13], [-77.02, -12.13], [-77.02, -12.11], [-77.04, -12.11], [-77.04, -12.13]]
            ],
        },
    }
    made = await access.client.post("/api/v1/geofences", json=fence, headers=planner)
    with psycopg.connect(access.conninfo) as conn:
        rows = conn.execute(
            "SELECT actor, origin, action, subject, detail FROM audit_log ORDER BY audit_id"
        ).fetchall()
    by_action = {r[2]: r for r in rows}
    actor, origin, _, subject, detail = by_action["POST /api/v1/incidents/{incident_id}/assign"]
    assert (actor, subject, detail["status"], detail["role"]) == (
        "user-viewer",
        "/api/v1/incidents/1/assign",
        403,
        "viewer",
    )
    assert origin  # the client's address
    actor, _, _, _, detail = by_action["POST /api/v1/geofences"]
    assert (actor, detail["status"]) == ("user-planner", made.status_code)
    # Reads are not state changes.
    await access.client.get("/api/v1/units", headers=viewer)
    with psycopg.connect(access.conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM audit_log WHERE action LIKE 'GET %'").fetchone() == (0,)


async def test_a_unit_reports_from_the_field_with_its_own_device_token(access: Access) -> None:
    with psycopg.connect(access.conninfo) as conn:
        for unit_id in ("car-01", "car-02"):
            create_unit_sync(conn, Unit(unit_id=unit_id, kind=UnitKind.PATROL_CAR))
    device = issue_token_sync(access.conninfo, "car-01")
    body = {"category": "otro", "lat": -12.12, "lon": -77.03}

    async def report(unit_id: str, token: str) -> httpx.Response:
        return await access.client.post(
            f"/api/v1/units/{unit_id}/incidents", json=body, headers={"Authorization": f"Bearer {token}"}
        )

    # Past the gate (this app runs no incident service: 503 says so, after authorization).
    own = await report("car-01", device)
    assert own.status_code == 503, own.text
    other = await report("car-02", device)
    assert other.status_code == 403 and "belongs to unit 'car-01'" in other.json()["detail"]
    assert (await report("car-01", "not-a-token")).status_code == 401
    viewer = await report("car-01", access.tokens[Role.VIEWER])
    assert viewer.status_code == 403  # a user is judged by its role, never as a device
    issue_token_sync(access.conninfo, "car-01")  # a new token revokes the old one
    assert (await report("car-01", device)).status_code == 401
    with psycopg.connect(access.conninfo) as conn:
        actors = conn.execute(
            "SELECT actor, detail->>'status' FROM audit_log WHERE subject = '/api/v1/units/car-01/incidents'"
            " ORDER BY audit_id"
        ).fetchall()
    assert actors[0] == ("unit:car-01", "503")
    assert ("user-viewer", "403") in actors
