"""Logging in to the console, and a console that offers each role what the API admits it.

Real users in the stack's PostgreSQL (``add_user_sync``) log in through the login form in Debian's
headless Chromium; the session is the HttpOnly cookie the server sets. The ground truth is the
API and the database: the assignment row, the audit trail (whose actor is the logged-in user),
the incident after a refused call, and ``/api/v1/auth/me`` answering 401 to a logged-out cookie.

With ``SERENAZGO_CONSOLE_SCREENSHOT=docs/console.png`` (as for test_console_browser.py) the login
screen and the operator's console after an assignment are written beside it, as
``console-login.png`` and ``console-operator.png``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, Page, sync_playwright
from pyproj import Geod

from api.auth import SESSION_COOKIE
from tests.api.live_stack import LiveStack, native_ping
from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.console.test_console_browser import (
    HTTP_TIMEOUT_S,
    PASSWORD,
    SCREENSHOT_ENV,
    click_map_at,
    log_in,
    new_user,
    open_console,
    report,
    screenshot,
    submit_login,
    wait_nearest,
)
from tests.fixtures.auth import ADMIN
from tests.mqtt_bridge.ingest_rig import IngestRig
from tracker.model import Unit, UnitKind
from tracker.store.users import set_disabled_sync
from tracker.users import Role

pytestmark = [pytest.mark.browser, pytest.mark.integration]

GEOD = Geod(ellps="WGS84")
# The console's actions and the routes behind them (what window.serenazgo.CAN must mirror).
ACTIONS = {
    "report": ("/api/v1/incidents", "post"),
    "dispatch": ("/api/v1/incidents/{incident_id}/assign", "post"),
    "plan": ("/api/v1/drones/sorties/plan", "post"),
}


# ----- helpers ----------------------------------------------------------------------------------


def screenshot_path(tmp_path: Path, name: str) -> Path:
    """Beside the docs picture when asked for (``SERENAZGO_CONSOLE_SCREENSHOT``), else the test's folder."""
    docs = os.environ.get(SCREENSHOT_ENV)
    return (Path(docs).parent if docs else tmp_path) / name


def page_fetch(page: Page, path: str, body: dict[str, Any]) -> list[Any]:
    """POST ``body`` to ``path`` from the page, through the console's own API wrapper: [status, JSON]."""
    result: list[Any] = page.evaluate(
        """async ([path, body]) => {
            const r = await window.serenazgo.api(path, {
                method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
            return [r.status, await r.json()];
        }""",
        [path, body],
    )
    return result


def visible_needs(page: Page) -> dict[str, bool]:
    """For each role-gated part of the page (``data-needs``), whether any of it is shown."""
    result: dict[str, bool] = page.evaluate(
        """() => {
            const out = {};
            for (const n of document.querySelectorAll('[data-needs]')) {
                out[n.dataset.needs] = (out[n.dataset.needs] || false) || !n.hidden;
            }
            return out;
        }"""
    )
    return result


# ----- tests ------------------------------------------------------------------------------------


def test_an_operator_logs_in_creates_an_incident_assigns_the_nearest_unit_and_replays_its_arrival(
    ingest: IngestRig, make_stack: Callable[[], LiveStack], browser: Browser, tmp_path: Path
) -> None:
    n = ingest.names
    car, car2, moto, foot = n.unit("lgn01"), n.unit("lgn02"), n.unit("lgn03"), n.unit("lgn04")
    ingest.add_units([
        Unit(car, UnitKind.PATROL_CAR, callsign="MOV-11", sector="S1"),
        Unit(car2, UnitKind.PATROL_CAR, callsign="MOV-12", sector="S2"),
        Unit(moto, UnitKind.MOTORCYCLE, callsign="MOTO-13", sector="S3"),
        Unit(foot, UnitKind.FOOT, callsign="SER-014", sector="S1"),
    ])  # fmt: skip
    stack = make_stack()
    operator = new_user(ingest, "operator", display_name="Ana Quispe")
    scene_lat, scene_lon = -12.1200, -77.0300
    start_lat, start_lon = -12.1227, -77.0300  # MOV-11, 300 m south of the scene; the others 1 km or more
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=20)
    starts = {car: (start_lat, start_lon), car2: (-12.1300, -77.0200), moto: (-12.1150, -77.0400),
              foot: (-12.1110, -77.0280)}  # fmt: skip
    ingest.publish([native_ping(u, first, lat, lon) for u, (lat, lon) in starts.items()])
    fleet = stack.ctx.fleet
    stack.wait_fleet("the first fixes", lambda: all((s := fleet.get(u)) is not None and s.fix is not None
                                                    for u in starts))  # fmt: skip
    base = stack.served.url

    page = open_console(browser, base, role=None)
    log_in(page, operator)
    # Who is logged in, in the header; an operator plans no sorties.
    assert page.locator("#user-name").inner_text() == "Ana Quispe"
    assert page.locator("#user-role").inner_text() == "Operador"
    assert page.locator("#session-tools").is_visible()
    assert visible_needs(page) == {"report": True, "dispatch": True, "plan": False}
    page.wait_for_function("document.querySelectorAll('.unit-icon').length === 4")

    # A click on the map, the form filled in, «Crear incidente».
    click_map_at(page, scene_lat, scene_lon)
    wait_nearest(page)
    picked = page.evaluate("[window.serenazgo.state.pick.lat, window.serenazgo.state.pick.lon]")
    page.select_option("#f-category", "seguridad_ciudadana")
    page.select_option("#f-priority", "2")
    page.locator("#f-description").fill("robo al paso en el parque")
    page.locator("#create-incident").click()
    page.wait_for_function("document.querySelector('#form-message').textContent.includes('creado')")
    incident_id = page.evaluate("window.serenazgo.state.pick.incident.incident_id")
    page.wait_for_selector(f'#incident-list li[data-incident-id="{incident_id}"]')

    # One click on the top-ranked unit's «Asignar»: it is MOV-11, the API's first for that point.
    rows = page.locator("#nearest tbody tr")
    assert rows.nth(0).get_attribute("data-unit-id") == car
    query = {"lat": picked[0], "lon": picked[1], "k": 5}
    nearest = httpx.get(f"{base}/api/v1/dispatch/nearest", params=query, headers=ADMIN, timeout=60)
    assert nearest.json()["units"][0]["unit_id"] == car
    rows.nth(0).locator("button.assign").click()
    page.wait_for_selector(f'.unit-icon[data-unit-id="{car}"][data-status="dispatched"]')
    page.wait_for_function("document.querySelector('#form-message').textContent.includes('asignada')")
    page.wait_for_function(
        "(id) => document.querySelector(`#incident-list li[data-incident-id='${id}']`).textContent"
        ".includes('Asignado')",
        arg=incident_id,
    )
    page.wait_for_function("""document.querySelector('#status-counts li[data-status="dispatched"]')
                              .textContent === 'Despachada 1'""")
    page.evaluate("window.serenazgo.fitUnits()")
    screenshot(page, screenshot_path(tmp_path, "console-operator.png"))

    # MOV-11 drives to the scene (about 10 m/s): two fixes on the way, the last 10 m from the scene.
    last = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    span = (last - first) / 3
    route = [(round(start_lat + (scene_lat - start_lat) * k / 3, 6), scene_lon) for k in (1, 2)]
    route.append((scene_lat - 0.00009, scene_lon))
    moves = [
        native_ping(car, first + span * (i + 1), lat, lon, speed=10.0) for i, (lat, lon) in enumerate(route)
    ]
    ingest.publish(moves)
    # The console shows the arrival: the incident on scene (list, dispatch card), the unit's ring, the event.
    page.wait_for_function(
        "(id) => document.querySelector(`#incident-list li[data-incident-id='${id}']`).textContent"
        ".includes('En escena')",
        arg=incident_id,
    )
    page.wait_for_selector(f'.unit-icon[data-unit-id="{car}"][data-status="on_scene"]')
    page.wait_for_selector(f'#event-list li[data-event-type="unit_arrived"] >> text=#{incident_id}')
    assert "En escena" in page.locator("#dispatch-incident").inner_text()

    # The database: MOV-11's assignment, by the operator, arrived; the incident on scene; the audit trail
    # names the operator for the creation and the assignment.
    assert ingest.query(
        "SELECT unit_id, assigned_by, arrived_at IS NOT NULL FROM assignments WHERE incident_id = %s",
        incident_id,
    ) == [(car, operator, True)]
    assert ingest.query(
        "SELECT status, first_arrival_at IS NOT NULL, priority, description FROM incidents "
        "WHERE incident_id = %s",
        incident_id,
    ) == [("on_scene", True, 2, "robo al paso en el parque")]
    audit = ingest.query(
        "SELECT action, subject, detail->>'status' FROM audit_log WHERE actor = %s ORDER BY audit_id",
        operator,
    )
    assert ("POST /api/v1/auth/login", "/api/v1/auth/login", "200") in audit
    assert ("POST /api/v1/incidents", "/api/v1/incidents", "201") in audit
    assert (
        "POST /api/v1/incidents/{incident_id}/assign",
        f"/api/v1/incidents/{incident_id}/assign",
        "201",
    ) in audit

    # Replay MOV-11's track from the units list: the API's coordinates, the last one at the scene.
    page.locator(f'#unit-list li[data-unit-id="{car}"] button.track-open').click()
    page.wait_for_selector('#track[data-state="ok"]')
    feature = httpx.get(base + page.evaluate("window.serenazgo.track.url"), headers=ADMIN,
                        timeout=HTTP_TIMEOUT_S).json()  # fmt: skip
    coords = feature["geometry"]["coordinates"]
    assert coords == [[start_lon, start_lat], *[[lon, lat] for lat, lon in route]]
    drawn = page.evaluate("window.serenazgo.track.line.getLatLngs().map((p) => [p.lng, p.lat])")
    assert drawn == coords
    _, _, to_scene = GEOD.inv(coords[-1][0], coords[-1][1], scene_lon, scene_lat)
    assert to_scene < stack.ctx.settings.dispatch.arrival_radius_m
    page.select_option("#track-speed", "60")
    page.locator("#track-play").click()
    page.wait_for_selector('#track[data-playing="true"]')
    page.wait_for_selector('#track[data-playing="false"]')
    assert page.evaluate("window.serenazgo.track.index") == len(coords) - 1
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_viewer_is_offered_no_assignment_and_the_server_refuses_one_in_words(
    ingest: IngestRig, make_stack: Callable[[], LiveStack], browser: Browser
) -> None:
    car = ingest.names.unit("vw01")
    ingest.add_units([Unit(car, UnitKind.PATROL_CAR, callsign="MOV-21")])
    stack = make_stack()
    viewer = new_user(ingest, "viewer")
    now = datetime.now(UTC).replace(microsecond=0)
    ingest.publish([native_ping(car, now - timedelta(seconds=10), -12.1210, -77.0300)])
    stack.wait_fleet("the fix", lambda: (s := stack.ctx.fleet.get(car)) is not None and s.fix is not None)
    base = stack.served.url
    incident = report(base, -12.1200, -77.0300, "seguridad_vial", "camera", 3, "choque leve")
    incident_id = incident["incident_id"]

    page = open_console(browser, base, role=None)
    log_in(page, viewer)
    assert page.locator("#user-role").inner_text() == "Observador"
    assert visible_needs(page) == {"report": False, "dispatch": False, "plan": False}
    # The incident chosen in the list: its ranked units are shown, without «Asignar».
    page.locator(f'#incident-list li[data-incident-id="{incident_id}"]').click()
    page.wait_for_selector(f'#nearest tbody tr[data-unit-id="{car}"]')
    assert page.locator("#nearest button.assign").count() == 0
    assert page.locator("#incident-form").is_hidden()
    # Nor do the shortcuts assign (A) or open a new incident (N).
    page.locator("#map").focus()
    page.keyboard.press("a")
    page.keyboard.press("2")
    assert page.evaluate("window.serenazgo.state.pick.chosen") == 0

    # Asked from the page anyway, the server refuses with its reason, which the console shows.
    status, body = page_fetch(page, f"/api/v1/incidents/{incident_id}/assign", {"unit_id": car})
    assert status == 403
    assert "role 'viewer' may not do this" in body["detail"]
    page.wait_for_selector("#notice:not([hidden])")
    assert body["detail"] in page.locator("#notice-text").inner_text()

    # Nothing changed: the incident is open with no unit, the unit is available, the refusal is audited.
    now_incident = httpx.get(
        f"{base}/api/v1/incidents/{incident_id}", headers=ADMIN, timeout=HTTP_TIMEOUT_S
    ).json()
    assert (now_incident["status"], now_incident["units"]) == ("open", [])
    assert ingest.query("SELECT count(*) FROM assignments WHERE incident_id = %s", incident_id) == [(0,)]
    assert ingest.query("SELECT status FROM units WHERE unit_id = %s", car) == [("available",)]
    assert ingest.query(
        "SELECT detail->>'status', detail->>'role' FROM audit_log WHERE actor = %s AND subject = %s",
        viewer, f"/api/v1/incidents/{incident_id}/assign",
    ) == [("403", "viewer")]  # fmt: skip
    assert page.errors == []  # type: ignore[attr-defined]


def test_wrong_password_disabled_account_and_too_many_attempts_are_said_and_logout_ends_the_session(
    ingest: IngestRig, make_stack: Callable[[], LiveStack], browser: Browser, tmp_path: Path
) -> None:
    stack = make_stack()
    operator = new_user(ingest, "operator", display_name="Luis Rojas")
    disabled = new_user(ingest, "supervisor")
    set_disabled_sync(ingest.conninfo, disabled)
    base = stack.served.url

    page = open_console(browser, base, role=None)
    # Nothing of the console before a login: only the form (and the language switch).
    assert page.locator("main.layout").is_hidden()
    assert page.locator("#session-tools").is_hidden()
    assert page.evaluate("window.serenazgo.session.user") is None
    page.locator("#login-user").fill("ana.quispe")  # a name as a person has it, for the picture
    screenshot(page, screenshot_path(tmp_path, "console-login.png"))

    submit_login(page, operator, "not-the-password")
    page.wait_for_function("document.querySelector('#login-message').textContent !== ''")
    assert page.locator("#login-message").inner_text() == "Usuario o contraseña incorrectos."
    assert page.locator("#login-password").input_value() == ""  # the page keeps no password
    assert page.locator("main.layout").is_hidden()
    assert page.evaluate("window.serenazgo.state.snapshots") == 0
    page.locator("#lang-en").click()
    assert page.locator("#login-message").inner_text() == "Wrong user name or password."
    assert page.locator("#login-submit").inner_text() == "Log in"
    page.locator("#lang-es").click()

    submit_login(page, disabled, PASSWORD)
    page.wait_for_function("document.querySelector('#login-message').textContent.includes('desactivada')")
    assert page.locator("main.layout").is_hidden()

    # Past the limit of failures for a user name: 429, and the form says how long to wait.
    guessed = f"nobody-{ingest.names.base}".lower()[:64]
    auth = stack.ctx.settings.auth
    for attempt in range(auth.login_max_failures):
        submit_login(page, guessed, f"guess-{attempt}")
        page.wait_for_function("document.querySelector('#login-message').textContent.includes('incorrectos')")
        page.evaluate("document.querySelector('#login-message').textContent = ''")
    submit_login(page, guessed, "one-more-guess")
    page.wait_for_function("document.querySelector('#login-message').textContent.includes('Demasiados')")
    text = page.locator("#login-message").inner_text()
    match = re.fullmatch(r"Demasiados intentos fallidos: vuelva a intentar en (\d+) s\.", text)
    assert match is not None, text
    assert 1 <= int(match.group(1)) <= math.ceil(auth.login_window_s)
    assert page.locator("#login-submit").is_disabled()
    assert page.locator("main.layout").is_hidden()
    assert page.errors == []  # type: ignore[attr-defined]

    # The right password (in another browser: this form waits out the limit): the console, and the user
    # in the header. The session cookie is HttpOnly, and nothing secret is in the page's storage.
    page = open_console(browser, base, role=None)
    log_in(page, operator)
    assert page.locator("#user-name").inner_text() == "Luis Rojas"
    assert page.locator("#user-role").inner_text() == "Operador"
    cookie = next(c for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    stored = page.evaluate(
        "JSON.stringify([document.cookie, Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    assert cookie["value"] not in stored and PASSWORD not in stored
    me = httpx.get(
        f"{base}/api/v1/auth/me", cookies={SESSION_COOKIE: cookie["value"]}, timeout=HTTP_TIMEOUT_S
    )
    assert (me.status_code, me.json()["username"], me.json()["via"]) == (200, operator, "session")

    # «Salir»: back to the login form, and the old cookie no longer opens anything.
    page.locator("#logout").click()
    page.wait_for_selector("#login-form", state="visible")
    assert page.locator("main.layout").is_hidden()
    assert page.evaluate("window.serenazgo.state.snapshots") == 0
    for path in ("/api/v1/auth/me", "/api/v1/incidents"):
        resp = httpx.get(base + path, cookies={SESSION_COOKIE: cookie["value"]}, timeout=HTTP_TIMEOUT_S)
        assert resp.status_code == 401, (path, resp.text)
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_session_that_ends_under_the_console_brings_back_the_login_form(
    ingest: IngestRig, make_stack: Callable[[], LiveStack], browser: Browser
) -> None:
    stack = make_stack()
    operator = new_user(ingest, "operator")
    base = stack.served.url
    page = open_console(browser, base, role=None)
    log_in(page, operator)

    def end_session() -> None:
        # An administrator disables the account; the API forgets checked secrets at once when it
        # revokes through the API (the CLI's changes bite within cache_s): done here by hand.
        set_disabled_sync(ingest.conninfo, operator)
        stack.ctx.auth_cache.clear()

    def expect_login_form() -> None:
        page.wait_for_selector("#login-form", state="visible")
        assert page.locator("main.layout").is_hidden()
        assert page.locator("#login-message").inner_text() == "Su sesión terminó: vuelva a iniciar sesión."
        assert page.locator("#login-user").input_value() == operator

    def log_in_again() -> None:
        set_disabled_sync(ingest.conninfo, operator, disabled=False)
        snapshots = page.evaluate("window.serenazgo.state.snapshots")
        page.locator("#login-password").fill(PASSWORD)
        page.locator("#login-submit").click()
        page.wait_for_function(f"window.serenazgo.state.snapshots > {snapshots}")
        assert page.locator("main.layout").is_visible()

    # The live feed drops (the hub stops) and its reconnection is refused: /me says 401, the form is back.
    end_session()
    stack.served.run(stack.hub.stop())
    expect_login_form()
    me = httpx.get(f"{base}/api/v1/auth/me", cookies=page_cookies(page), timeout=HTTP_TIMEOUT_S)
    assert me.status_code == 401
    # The same user again: the console resumes with a new snapshot.
    log_in_again()

    # An API call answered 401 does the same.
    end_session()
    page.evaluate("window.serenazgo.refreshAirspace()")
    expect_login_form()
    log_in_again()

    # A session that simply runs out while the operator only watches the live feed (no API call):
    # at its expires_at the console asks /me and goes back to the form.
    stack.ctx.settings.auth.session_hours = 5 / 3600  # the next session lasts 5 s
    page.locator("#logout").click()
    page.wait_for_selector("#login-form", state="visible")
    log_in(page, operator)
    expires = datetime.fromisoformat(page.evaluate("window.serenazgo.session.user.expires_at"))
    assert expires - datetime.now(UTC) < timedelta(seconds=6)
    expect_login_form()
    assert page.errors == []  # type: ignore[attr-defined]


def page_cookies(page: Page) -> dict[str, str]:
    """The page's cookies (the HttpOnly session too: the browser, not the page, gives them)."""
    return {c["name"]: c["value"] for c in page.context.cookies()}


def test_the_console_offers_each_role_what_the_api_admits_it(
    ingest: IngestRig, make_stack: Callable[[], LiveStack], browser: Browser
) -> None:
    stack = make_stack()
    base = stack.served.url
    app = stack.served.server.config.app
    assert isinstance(app, FastAPI)
    openapi = app.openapi()
    admitted = {
        action: sorted(openapi["paths"][path][method]["x-roles"])
        for action, (path, method) in ACTIONS.items()
    }
    for role in (Role.ADMIN, Role.SUPERVISOR, Role.OPERATOR, Role.PLANNER, Role.VIEWER):
        page = open_console(browser, base, role=role.value)
        # The console's table is the API's own declaration for the routes it calls...
        can = page.evaluate("window.serenazgo.CAN")
        assert {a: sorted(r) for a, r in can.items()} == admitted
        # ...and what the page shows follows it.
        assert visible_needs(page) == {a: role.value in r for a, r in admitted.items()}, role
        page.close()


def test_over_plain_http_on_a_network_name_the_login_says_the_cookie_was_refused(
    ingest: IngestRig, make_stack: Callable[[], LiveStack]
) -> None:
    """Browsers keep a Secure cookie over plain HTTP only on localhost: reached by a network name
    (as on a security centre's LAN without TLS), the console must say why a good login goes nowhere."""
    stack = make_stack()
    operator = new_user(ingest, "operator")
    port = stack.served.url.rsplit(":", 1)[1]
    # Chromium resolves the name to this machine, and treats the origin as what it is: not secure.
    rules = "--host-resolver-rules=MAP central.serenazgo.test 127.0.0.1"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, rules])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768}, locale="es-PE")
            page.goto(f"http://central.serenazgo.test:{port}/")
            page.wait_for_selector("#login-form")
            submit_login(page, operator, PASSWORD)
            page.wait_for_function("document.querySelector('#login-message').textContent !== ''")
            message = page.locator("#login-message").inner_text()
            assert "HTTPS" in message and "SERENAZGO_AUTH__COOKIE_SECURE=false" in message
            assert page.locator("main.layout").is_hidden()
            assert page.context.cookies() == []  # the browser did refuse it
        finally:
            browser.close()
