"""The operator console in Debian's headless Chromium, over the whole stack.

Real Mosquitto, real PostgreSQL, the real bridge, the Dispatcher and the
IncidentService, the app in uvicorn; Playwright drives ``/usr/bin/chromium``
(never a downloaded browser). Every request that is not to the app (the
OpenStreetMap tiles) is aborted, so the console is tested as it runs offline.

``SERENAZGO_CONSOLE_SCREENSHOT=docs/console.png`` makes the simulated-fleet test
write its screenshot there (the picture in the docs); otherwise it goes to the
test's temporary folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, Page, Route
from pyproj import Geod

from api.auth import SESSION_COOKIE
from mqtt_bridge.simulator import encode, register_units
from tests.api.live_stack import LiveStack, native_ping
from tests.fixtures.auth import ADMIN, ROLE_TOKENS
from tests.fixtures.mosquitto import publish_qos1
from tests.mqtt_bridge.ingest_rig import IngestRig
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE
from tracker.model import Unit, UnitKind
from tracker.simulation import FleetSimulation
from tracker.store.users import add_user_sync
from tracker.users import Role

pytestmark = [pytest.mark.browser, pytest.mark.integration]

WAIT_MS = 30_000
HTTP_TIMEOUT_S = 30.0  # a loaded CI machine, not a slow API
SCREENSHOT_ENV = "SERENAZGO_CONSOLE_SCREENSHOT"
SCREENSHOT_MAX_BYTES = 400_000
PASSWORD = "clave-de-prueba-42"  # of the tests' users (new_user)
GEOD = Geod(ellps="WGS84")


# ----- fixtures ---------------------------------------------------------------------------------


def open_console(
    browser: Browser, url: str, prepare: Callable[[Page], None] | None = None, role: str | None = "admin"
) -> Page:
    """A 1366×768 page on the console, logged in as ``role``; requests that are not to the app are
    aborted (offline).

    The session cookie carries the role's test token (tests/fixtures/auth.py), as the
    console's login would; the login form itself is tested in test_console_login.py.
    ``role`` None: no cookie, the page is left at its login form.
    ``prepare(page)`` runs before the page loads (routes of its own, e.g. over the live feed).
    """
    page = browser.new_page(viewport={"width": 1366, "height": 768}, locale="es-PE")
    if role is not None:
        page.context.add_cookies(
            [{"name": SESSION_COOKIE, "value": ROLE_TOKENS[Role(role)], "url": url, "httpOnly": True}]
        )
    if prepare is not None:
        prepare(page)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.context.set_default_timeout(WAIT_MS)

    def offline(route: Route) -> None:
        if route.request.url.startswith(url):
            route.continue_()
        else:
            route.abort()

    page.route(re.compile(r".*"), offline)
    page.goto(url + "/")
    if role is None:
        page.wait_for_selector("#login-form", state="visible")
    else:
        page.wait_for_function("window.serenazgo && window.serenazgo.state.snapshots > 0")
    page.errors = errors  # type: ignore[attr-defined]
    return page


def new_user(ingest: IngestRig, role: str, display_name: str = "") -> str:
    """A real user of ``role`` with :data:`PASSWORD` in the test's database, named for the test."""
    username = f"{role}-{ingest.names.base}".lower()[:64]
    add_user_sync(ingest.conninfo, username, role, PASSWORD, display_name=display_name, created_by="test")
    return username


def submit_login(page: Page, username: str, password: str) -> None:
    """Type into the console's login form and send it, as a person would."""
    page.locator("#login-user").fill(username)
    page.locator("#login-password").fill(password)
    page.locator("#login-submit").click()


def log_in(page: Page, username: str, password: str = PASSWORD) -> None:
    """Log in through the form (of ``open_console(..., role=None)``) and wait for the live picture."""
    submit_login(page, username, password)
    page.wait_for_function("window.serenazgo.state.snapshots > 0")
    assert page.locator("main.layout").is_visible()
    assert page.locator("#login").is_hidden()


def screenshot(page: Page, out: Path) -> None:
    """A picture of the page at ``out`` (for the docs: under :data:`SCREENSHOT_MAX_BYTES`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    page.mouse.move(5, 740)  # no unit's tooltip under the pointer in the picture
    # Two animation frames: Leaflet has placed the markers and the panel is painted.
    page.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    page.screenshot(path=str(out))
    size = out.stat().st_size
    assert 0 < size < SCREENSHOT_MAX_BYTES, f"{out} is {size} bytes"


def click_map_at(page: Page, lat: float, lon: float, beside_markers: bool = False) -> None:
    """Centre the map on (lat, lon) and click there like an operator would.

    ``beside_markers``: click at the nearest spot no marker covers (a click on a unit
    opens it). With a whole simulated fleet on the map a unit may stand exactly where
    the test wants to click; an operator would click beside it, and so does this.
    """
    x, y = page.evaluate(
        """([lat, lon, beside]) => {
            const map = window.serenazgo.map;
            map.setView([lat, lon], 16, {animate: false});
            const p = map.latLngToContainerPoint([lat, lon]);
            const box = map.getContainer().getBoundingClientRect();
            const free = (x, y) => {
                const e = document.elementFromPoint(x, y);
                return e !== null && !e.closest(".leaflet-marker-icon, .leaflet-interactive, .leaflet-popup");
            };
            for (let r = 0; beside && r <= 60; r += 6) {
                for (let a = 0; a < 360; a += r === 0 ? 360 : 30) {
                    const x = box.left + p.x + r * Math.cos(a * Math.PI / 180);
                    const y = box.top + p.y + r * Math.sin(a * Math.PI / 180);
                    if (free(x, y)) return [x, y];
                }
            }
            return [box.left + p.x, box.top + p.y];
        }""",
        [lat, lon, beside_markers],
    )
    page.mouse.click(x, y)


def freshness_at(page: Page, unit_id: str, seconds_after_fix: float) -> list[str | None]:
    """Set the console's clock to ``seconds_after_fix`` after the unit's fix and re-judge freshness.

    Returns the unit's freshness in the console's state, on its marker, and the marker's opacity.
    """
    result: list[str | None] = page.evaluate(
        """([id, s]) => {
            const sz = window.serenazgo;
            const e = sz.state.units.get(id);
            sz.state.clockOffsetMs = Date.parse(e.feature.properties.fix_time) + s * 1000 - Date.now();
            sz.refreshFreshness();
            const node = e.marker && e.marker.getElement();
            if (!node) return [e.freshness, null, null];
            return [e.freshness, node.dataset.freshness, getComputedStyle(node).opacity];
        }""",
        [unit_id, seconds_after_fix],
    )
    return result


def marker_latlng(page: Page, unit_id: str) -> list[float] | None:
    result: list[float] | None = page.evaluate(
        """(id) => {
            const e = window.serenazgo.state.units.get(id);
            if (!e || !e.marker) return null;
            const p = e.marker.getLatLng();
            return [p.lat, p.lng];
        }""",
        unit_id,
    )
    return result


def report(base: str, lat: float, lon: float, category: str, channel: str, priority: int, text: str) -> Any:
    """POST an incident; its JSON (with ``recommended`` units)."""
    body = {"lat": lat, "lon": lon, "category": category, "channel": channel, "priority": priority,
            "description": text, "operator": "op-demo"}  # fmt: skip
    resp = httpx.post(f"{base}/api/v1/incidents", json=body, headers=ADMIN, timeout=HTTP_TIMEOUT_S)
    assert resp.status_code == 201, resp.text
    return resp.json()


def wait_nearest(page: Page) -> None:
    """Wait for the ranked units of the clicked point (fail with the page's message if the query failed)."""
    page.wait_for_selector("#nearest button.assign, #nearest .error")
    error = page.locator("#nearest .error")
    assert error.count() == 0, error.inner_text()


def parse_metres(text: str) -> float:
    value, unit = text.replace("\u00a0", " ").split()
    return float(value) * (1000.0 if unit == "km" else 1.0)


# ----- tests ------------------------------------------------------------------------------------


def test_units_move_and_an_assignment_from_the_nearest_list_shows_on_the_map(
    ingest: IngestRig, make_stack: Callable[[], LiveStack], browser: Browser
) -> None:
    n = ingest.names
    car, car2, foot, moto = n.unit("mov01"), n.unit("mov02"), n.unit("ser001"), n.unit("moto01")
    drone = n.unit("dron01")
    ingest.add_units([
        Unit(car, UnitKind.PATROL_CAR, callsign="MOV-01", sector="S1"),
        Unit(car2, UnitKind.PATROL_CAR, callsign="MOV-02", sector="S2"),
        Unit(foot, UnitKind.FOOT, callsign="SER-001", sector="S1"),
        Unit(moto, UnitKind.MOTORCYCLE, callsign="MOTO-01", sector="S3"),
        Unit(drone, UnitKind.DRONE, callsign="DRON-01"),
    ])  # fmt: skip
    stack = make_stack()
    now = datetime.now(UTC).replace(microsecond=0)
    start = {car: (-12.1190, -77.0320), car2: (-12.1300, -77.0200), foot: (-12.1230, -77.0280),
             moto: (-12.1150, -77.0400), drone: (-12.1260, -77.0380)}  # fmt: skip
    ingest.publish([native_ping(u, now - timedelta(seconds=20), lat, lon) for u, (lat, lon) in start.items()])
    stack.wait_fleet("the first fixes", lambda: all(stack.ctx.fleet.get(u).fix is not None for u in start))  # type: ignore[union-attr]

    page = open_console(browser, stack.served.url)
    # The units appear, each with its status, in the list and on the map.
    page.wait_for_function("document.querySelectorAll('.unit-icon').length === 5")
    assert page.locator(f'.unit-icon[data-unit-id="{car}"]').get_attribute("data-status") == "available"
    assert page.locator("#unit-list li").count() == 5
    page.wait_for_function("""document.querySelector('#status-counts li[data-status="available"]')
                              .textContent === 'Disponible 5'""")
    assert marker_latlng(page, car) == pytest.approx([-12.1190, -77.0320])

    # A ping published over MQTT moves the marker (111 m north).
    ingest.publish([native_ping(car, now - timedelta(seconds=2), -12.1180, -77.0320, speed=6.0)])
    page.wait_for_function(
        """(id) => { const e = window.serenazgo.state.units.get(id);
                     return e && e.marker && Math.abs(e.marker.getLatLng().lat - -12.118) < 1e-9; }""",
        arg=car,
    )
    assert marker_latlng(page, car) == pytest.approx([-12.1180, -77.0320])

    # The feed drops every console (the hub stops): the page reconnects by itself, with a new snapshot.
    stack.served.run(stack.hub.stop())
    page.wait_for_function("window.serenazgo.state.snapshots >= 2")
    page.wait_for_selector("#conn.conn-live")
    assert marker_latlng(page, car) == pytest.approx([-12.1180, -77.0320])

    # A click 150 m from MOV-01 (and 700 m or more from the rest) lists the nearest units.
    click_lat, click_lon = -12.1170, -77.0330
    click_map_at(page, click_lat, click_lon)
    wait_nearest(page)
    picked = page.evaluate("[window.serenazgo.state.pick.lat, window.serenazgo.state.pick.lon]")
    rows = page.locator("#nearest tbody tr")
    ids = [rows.nth(i).get_attribute("data-unit-id") for i in range(rows.count())]
    assert ids[0] == car
    # The page shows what the API ranks for that point, and the distance agrees with pyproj's geodesic.
    query = {"lat": picked[0], "lon": picked[1], "k": 5}
    base = stack.served.url
    api = httpx.get(
        f"{base}/api/v1/dispatch/nearest", params=query, headers=ADMIN, timeout=HTTP_TIMEOUT_S
    ).json()
    assert ids == [c["unit_id"] for c in api["units"]]
    shown = parse_metres(rows.nth(0).locator("td").nth(2).inner_text())
    _, _, true_m = GEOD.inv(-77.0320, -12.1180, picked[1], picked[0])
    assert shown == pytest.approx(true_m, rel=0.01, abs=1.0)

    # One click on «Asignar» creates the incident there and sends MOV-01: its ring turns "dispatched".
    page.locator(f'#nearest button.assign[data-unit-id="{car}"]').click()
    page.wait_for_selector(f'.unit-icon[data-unit-id="{car}"][data-status="dispatched"]')
    page.wait_for_function("document.querySelectorAll('#incident-list li').length === 1")
    page.wait_for_function("document.querySelector('#form-message').textContent.includes('asignada')")
    page.wait_for_function("""document.querySelector('#status-counts li[data-status="dispatched"]')
                              .textContent === 'Despachada 1'""")
    active = {"status": "active"}
    resp = httpx.get(
        f"{stack.served.url}/api/v1/incidents", params=active, headers=ADMIN, timeout=HTTP_TIMEOUT_S
    )
    incidents = resp.json()["items"]
    assert len(incidents) == 1
    assert incidents[0]["units"] == [car]
    assert incidents[0]["lat"] == pytest.approx(picked[0])
    assert incidents[0]["status"] == "assigned"

    # Freshness is the console's own reckoning from the fix age (on the server's clock), with the
    # snapshot's thresholds per kind: a drone is stale 15 s after its fix and lost after 60 s,
    # a patrol car stale only after 60 s. Lost units are greyed, and hidden on request.
    assert freshness_at(page, drone, 5) == ["live", "live", "1"]
    assert freshness_at(page, drone, 20) == ["stale", "stale", "0.45"]
    assert freshness_at(page, car2, 20)[:2] == ["live", "live"]
    assert freshness_at(page, drone, 61) == ["lost", "lost", "0.35"]
    page.locator("#show-lost").uncheck()
    assert page.evaluate("(id) => window.serenazgo.state.units.get(id).marker", drone) is None
    assert page.locator(f'.unit-icon[data-unit-id="{car2}"]').count() == 1
    assert page.errors == []  # type: ignore[attr-defined]


def test_console_screenshot_of_a_simulated_fleet(
    ingest: IngestRig, make_stack: Callable[[], LiveStack], browser: Browser, tmp_path: Path
) -> None:
    """About 100 units in Miraflores (the demo's fleet) on the map: the picture in docs/console.png."""
    now = datetime.now(UTC)
    area = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
    sim = FleetSimulation(area, seed=7, start=now - timedelta(minutes=20))
    register_units(ingest.conninfo, sim.units)
    stack = make_stack()
    # Twenty simulated minutes give dispatched and on-scene units; the last two minutes of fixes
    # (and every status change) are enough for a live map.
    fixes = [f for f in sim.advance_to(now) if f.true_ts >= now - timedelta(minutes=2)]
    statuses = sim.take_status_events()
    messages = [encode(m) for m in (*statuses, *fixes)]
    result = publish_qos1(ingest.broker.port, messages, client_id=ingest.names.client("sim"))
    assert all(result.acked)
    fleet = stack.ctx.fleet
    reporting = {f.unit.unit_id for f in fixes}
    stack.wait_fleet(
        "the simulated fleet in the LiveFleet",
        lambda: all(fleet.get(u).fix is not None for u in reporting),  # type: ignore[union-attr]
    )
    base = stack.served.url
    # Two open incidents, one with a unit on its way.
    first = report(base, -12.1195, -77.0305, "seguridad_ciudadana", "whatsapp", 2, "robo al paso, parque")
    report(base, -12.1290, -77.0250, "seguridad_vial", "camera", 3, "choque leve en Av. Benavides")
    if first.get("recommended"):
        unit_id = first["recommended"][0]["unit_id"]
        httpx.post(f"{base}/api/v1/incidents/{first['incident_id']}/assign",
                   json={"unit_id": unit_id, "operator": "op-demo"},
                   headers=ADMIN, timeout=HTTP_TIMEOUT_S)  # fmt: skip

    # A radio operator logged in: her name and role in the header.
    page = open_console(browser, base, role=None)
    log_in(page, new_user(ingest, "operator", display_name="Rosa Huamán"))
    page.wait_for_function(f"document.querySelectorAll('.unit-icon').length >= {len(reporting)}")
    page.wait_for_function("document.querySelectorAll('#incident-list li').length === 2")
    # The operator has clicked a point: the ranked units are on the panel.
    click_map_at(page, -12.1230, -77.0290, beside_markers=True)
    wait_nearest(page)
    picked = page.evaluate("[window.serenazgo.state.pick.lat, window.serenazgo.state.pick.lon]")
    assert picked == pytest.approx([-12.1230, -77.0290], abs=0.002)  # beside a marker, not elsewhere
    page.evaluate("window.serenazgo.fitUnits()")
    # The picture is of Miraflores' fleet, not of the whole area (a late zoom animation would undo the fit).
    assert page.evaluate("window.serenazgo.map.getZoom()") >= 14
    screenshot(page, Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "console.png"))
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_drone_popup_shows_battery_altitude_and_return_margin(
    ingest: IngestRig, make_stack: Callable[[], LiveStack], browser: Browser
) -> None:
    drone = ingest.names.unit("dron07")
    ingest.add_units([Unit(drone, UnitKind.DRONE, callsign="DRON-07")])
    stack = make_stack()
    now = datetime.now(UTC).replace(microsecond=0)
    home_lat, home_lon = -12.1197, -77.0297
    lon, lat, _ = GEOD.fwd(home_lon, home_lat, 200.0, 2000.0)  # 2 km out from its home point
    telemetry = {
        "ts": int((now - timedelta(seconds=1)).timestamp() * 1000), "battery_pct": 60, "alt_takeoff_m": 130.0,
        "flight_mode": "mission", "home": {"lat": home_lat, "lon": home_lon}, "docked": False,
    }  # fmt: skip
    ingest.publish([native_ping(drone, now - timedelta(seconds=1), lat, lon)])
    publish_qos1(
        ingest.broker.port,
        [(f"serenazgo/units/{drone}/drone", orjson.dumps(telemetry))],
        client_id=ingest.names.client("drone"),
    )
    stack.wait_fleet("the drone's fix and telemetry", lambda: (s := stack.ctx.fleet.get(drone)) is not None
                     and s.fix is not None and s.drone is not None)  # fmt: skip

    page = open_console(browser, stack.served.url)
    page.wait_for_selector(f'.unit-icon[data-unit-id="{drone}"]')
    page.evaluate("(id) => window.serenazgo.state.units.get(id).marker.openPopup()", drone)
    page.wait_for_selector(".leaflet-popup-content >> text=Margen de regreso")
    text = page.locator(".leaflet-popup-content").inner_text()
    # m3td: 2100 s a charge; at 60 % it has 2100 × (0.60 - 0.25) = 735 s above the reserve; home is
    # 2000 m / 15 m/s + 30 s = 163.3 s away: a margin of 571.7 s, shown as 9:32 min.
    api = httpx.get(f"{stack.served.url}/api/v1/drones/{drone}", headers=ADMIN, timeout=HTTP_TIMEOUT_S).json()
    assert api["endurance"]["return_margin_s"] == pytest.approx(571.7, abs=0.1)
    assert "Margen de regreso\t9:32 min" in text
    assert "Batería (dron)\t60 %" in text
    assert "Altura\t130 m s/despegue · sobre el límite de 120 m" in text
    assert "Modo\tEn misión" in text
    assert page.errors == []  # type: ignore[attr-defined]
