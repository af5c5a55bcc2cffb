"""Logging in and out, the failed-login limit, and the user CLI, against real users in PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from argon2 import PasswordHasher
from typer.testing import CliRunner

from api.auth import SESSION_COOKIE
from api.cli import app as cli_app
from api.context import ApiContext
from tests.api.conftest import running_app
from tracker.config import Settings
from tracker.store.users import (
    DEMO_PASSWORD,
    add_user_sync,
    ensure_demo_users_sync,
    ensure_first_admin_sync,
    list_users_sync,
    set_disabled_sync,
)
from tracker.users import Role

PASSWORD = "radio-central-7"


@dataclass
class Site:
    client: httpx.AsyncClient
    ctx: ApiContext
    conninfo: str


@pytest.fixture
async def site(pg_url: str) -> AsyncIterator[Site]:
    """The app over HTTPS (the session cookie is Secure), no credentials preset, one operator user."""
    add_user_sync(pg_url, "op-ana", Role.OPERATOR, PASSWORD, display_name="Ana Quispe")
    settings = Settings(database_url=pg_url)
    settings.auth.login_max_failures = 3
    async with running_app(settings, base_url="https://serenazgo.test") as api:
        yield Site(api.client, api.ctx, pg_url)


async def login(site: Site, username: str, password: str) -> httpx.Response:
    return await site.client.post("/api/v1/auth/login", json={"username": username, "password": password})


async def test_login_sets_a_strict_httponly_secure_cookie_and_logout_ends_it(site: Site) -> None:
    assert (await site.client.get("/api/v1/auth/me")).status_code == 401
    r = await login(site, "OP-Ana ", PASSWORD)  # user names are case- and space-insensitive
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("username", "display_name", "role", "via")} == {
        "username": "op-ana",
        "display_name": "Ana Quispe",
        "role": "operator",
        "via": "session",
    }
    cookie = r.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "samesite", "max-age", "path"} <= attributes
    assert "samesite=strict" in cookie.lower()
    session = site.client.cookies[SESSION_COOKIE]
    assert session.startswith("szs_")
    me = await site.client.get("/api/v1/auth/me")
    assert me.status_code == 200 and me.json()["role"] == "operator"
    # The operator may report an incident but not change a user.
    assert (await site.client.get("/api/v1/users")).status_code == 403

    assert (await site.client.post("/api/v1/auth/logout")).status_code == 204
    assert SESSION_COOKIE not in site.client.cookies
    # The old cookie, replayed, no longer works: the session is revoked in the database.
    replay = await site.client.get("/api/v1/auth/me", cookies={SESSION_COOKIE: session})
    assert replay.status_code == 401


async def test_wrong_password_and_unknown_user_get_the_same_answer(site: Site) -> None:
    wrong = await login(site, "op-ana", "not-the-password")
    unknown = await login(site, "op-nadie", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "wrong user name or password"}
    assert SESSION_COOKIE not in site.client.cookies


async def test_failed_logins_are_limited_per_user_then_per_address(site: Site) -> None:
    for _ in range(3):
        assert (await login(site, "op-ana", "guess-guess")).status_code == 401
    limited = await login(site, "op-ana", PASSWORD)  # even the right password waits
    assert limited.status_code == 429
    retry_after = int(limited.headers["retry-after"])
    assert 0 < retry_after <= 300
    assert f"try again in {retry_after} s" in limited.json()["detail"]
    # Another user from the same address is not locked out by op-ana's failures...
    add_user_sync(site.conninfo, "op-luis", Role.OPERATOR, PASSWORD)
    assert (await login(site, "op-luis", PASSWORD)).status_code == 200
    # ...until the address itself has failed 4 x 3 times, over any user names.
    for i in range(9):
        assert (await login(site, f"spray-{i}", "guess-guess")).status_code == 401
    assert (await login(site, "op-luis", PASSWORD)).status_code == 429
    # Every attempt is in the audit trail under the name it tried, with its outcome.
    with psycopg.connect(site.conninfo) as conn:
        rows = conn.execute(
            "SELECT actor, detail->>'status' FROM audit_log"
            " WHERE action = 'POST /api/v1/auth/login' ORDER BY audit_id"
        ).fetchall()
    assert rows[:4] == [("op-ana", "401")] * 3 + [("op-ana", "429")]
    assert rows[-1] == ("op-luis", "429")
    assert len(rows) == 3 + 1 + 1 + 9 + 1


async def test_a_disabled_user_cannot_log_in_and_its_session_stops(site: Site) -> None:
    assert (await login(site, "op-ana", PASSWORD)).status_code == 200
    assert (await site.client.get("/api/v1/units")).status_code == 200
    set_disabled_sync(site.conninfo, "op-ana")
    site.ctx.auth_cache.clear()  # as after the cache's few seconds
    assert (await site.client.get("/api/v1/units")).status_code == 401
    refused = await login(site, "op-ana", PASSWORD)
    assert refused.status_code == 401 and "disabled" in refused.json()["detail"]


def test_passwords_are_stored_as_argon2id(pg_url: str) -> None:
    add_user_sync(pg_url, "sup-rosa", Role.SUPERVISOR, PASSWORD)
    with psycopg.connect(pg_url) as conn:
        (stored,) = conn.execute("SELECT password_hash FROM users WHERE username = 'sup-rosa'").fetchone()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD)  # the reference implementation agrees
    with pytest.raises(ValueError, match="too short"):
        add_user_sync(pg_url, "short", Role.VIEWER, "corta")


def test_first_start_creates_one_admin(pg_url: str) -> None:
    password = ensure_first_admin_sync(pg_url)
    assert password is not None and len(password) >= 16
    assert ensure_first_admin_sync(pg_url) is None  # only on an empty database
    [admin] = list_users_sync(pg_url)
    assert (admin.username, admin.role, admin.can_log_in) == ("admin", Role.ADMIN, True)
    with psycopg.connect(pg_url) as conn:
        (stored,) = conn.execute("SELECT password_hash FROM users").fetchone()
    assert PasswordHasher().verify(stored, password)


def test_the_demo_has_one_user_per_role(pg_url: str) -> None:
    demo = pg_url
    assert sorted(ensure_demo_users_sync(demo)) == sorted(r.value for r in Role)
    assert ensure_demo_users_sync(demo) == []
    users = {u.username: u for u in list_users_sync(demo)}
    assert {u.role for u in users.values()} == set(Role)
    assert not users["integration"].can_log_in  # an integration acts through tokens
    # The README tells demo users the password.
    assert DEMO_PASSWORD in (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def test_user_cli_add_list_disable_token(pg_url: str) -> None:
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
        result = runner.invoke(cli_app, [*args, "--database-url", pg_url], input=stdin)
        return result.exit_code, result.output

    code, out = run(
        "user", "add", "op-ana", "--role", "operator", "--display-name", "Ana", stdin=PASSWORD + "\n"
    )
    assert code == 0, out
    code, out = run("user", "add", "video", "--role", "integration")
    assert code == 0 and "API tokens" in out
    code, out = run("user", "add", "op-ana", "--role", "viewer", stdin=PASSWORD + "\n")
    assert code == 1 and "already exists" in out
    code, out = run("user", "add", "x", "--role", "janitor", stdin=PASSWORD + "\n")
    assert code == 1 and "unknown role" in out
    code, out = run("user", "token", "video", "--name", "video platform")
    assert code == 0, out
    token = out.strip().splitlines()[-1]
    assert token.startswith("sza_")
    code, out = run("user", "list")
    assert code == 0 and "op-ana" in out and "integration" in out and "tokens" in out, out
    code, out = run("user", "disable", "op-ana")
    assert code == 0
    [ana] = [u for u in list_users_sync(pg_url) if u.username == "op-ana"]
    assert ana.disabled
    code, out = run("user", "tokens", "video")
    assert code == 0 and "video" in out and "platform" in out
    with psycopg.connect(pg_url) as conn:
        (token_id,) = conn.execute(
            "SELECT token_id FROM user_tokens WHERE name = 'video platform'"
        ).fetchone()
    assert run("user", "revoke", str(token_id))[0] == 0
    code, out = run("user", "revoke", str(token_id))
    assert code == 1 and "no live token" in out
