"""The console's keyboard shortcuts in Debian's headless Chromium, over the whole stack.

Each shortcut is pressed as an operator would and its effect checked in the page and, for the
assignments, in the API (the incident's units).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.api.live_stack import LiveStack, native_ping
from tests.console.test_console_browser import (
    HTTP_TIMEOUT_S,
    click_map_at,
    open_console,
    report,
    wait_nearest,
)
from tests.fixtures.auth import ADMIN
from tests.mqtt_bridge.ingest_rig import IngestRig
from tracker.model import Unit, UnitKind

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def pick(page: Page) -> list[float] | None:
    result: list[float] | None = page.evaluate(
        "window.serenazgo.state.pick && [window.serenazgo.state.pick.lat, window.serenazgo.state.pick.lon]"
    )
    return result


def ranked(page: Page) -> list[str | None]:
    rows = page.locator("#nearest tbody tr")
    return [rows.nth(i).get_attribute("data-unit-id") for i in range(rows.count())]


def incident_units(base: str, incident_id: int) -> list[str]:
    r = httpx.get(f"{base}/api/v1/incidents/{incident_id}", headers=ADMIN, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    units: list[str] = r.json()["units"]
    return units


def test_each_keyboard_shortcut_does_what_the_list_says(
    ingest: IngestRig, make_stack: Callable[..., LiveStack], browser: Browser
) -> None:
    n = ingest.names
    cars = [n.unit(f"key0{i}") for i in range(1, 5)]
    ingest.add_units([Unit(u, UnitKind.PATROL_CAR, callsign=f"KEY-0{i + 1}") for i, u in enumerate(cars)])
    stack = make_stack()
    now = datetime.now(UTC)
    # Spread out so that the ranking from the incidents is unambiguous.
    places = [(-12.1190, -77.0320), (-12.1230, -77.0280), (-12.1300, -77.0200), (-12.1150, -77.0400)]
    ingest.publish(
        [
            native_ping(u, now - timedelta(seconds=5), lat, lon)
            for u, (lat, lon) in zip(cars, places, strict=True)
        ]
    )
    stack.wait_fleet("the fixes", lambda: all(stack.ctx.fleet.get(u).fix is not None for u in cars))  # type: ignore[union-attr]
    base = stack.served.url
    first = report(base, -12.1200, -77.0310, "seguridad_ciudadana", "phone", 2, "primero")
    second = report(base, -12.1240, -77.0270, "seguridad_vial", "camera", 3, "segundo")

    page = open_console(browser, base)
    page.wait_for_function("document.querySelectorAll('#incident-list li').length === 2")
    page.wait_for_function("document.querySelectorAll('.unit-icon').length === 4")

    # ? shows the list and hides it again.
    assert page.locator("#shortcuts").is_hidden()
    page.keyboard.press("?")
    assert page.locator("#shortcuts").is_visible()
    page.keyboard.press("?")
    assert page.locator("#shortcuts").is_hidden()

    # N with no click yet: a new incident at the map centre, the form ready (focus on the category).
    centre = page.evaluate("[window.serenazgo.map.getCenter().lat, window.serenazgo.map.getCenter().lng]")
    page.keyboard.press("n")
    assert page.locator("#dispatch").is_visible()
    assert pick(page) == pytest.approx(centre)
    assert page.evaluate("document.activeElement.id") == "f-category"
    wait_nearest(page)
    # Typing in a field: shortcuts do nothing; Esc only leaves the field.
    page.keyboard.press("?")
    assert page.locator("#shortcuts").is_hidden()
    page.keyboard.press("Escape")
    assert page.evaluate("document.activeElement.id") != "f-category"
    assert page.locator("#dispatch").is_visible()
    # Esc closes the panels.
    page.keyboard.press("?")
    assert page.locator("#shortcuts").is_visible()
    page.keyboard.press("Escape")
    assert page.locator("#dispatch").is_hidden() and page.locator("#shortcuts").is_hidden()
    assert pick(page) is None

    # N after a click on the map: the incident goes at that click, not at the (moved) centre.
    click_map_at(page, -12.1210, -77.0300)
    clicked = page.evaluate("window.serenazgo.state.lastClick")
    page.keyboard.press("Escape")
    page.evaluate("window.serenazgo.map.panBy([200, 150], {animate: false})")
    page.keyboard.press("N")
    assert pick(page) == pytest.approx(clicked)
    page.keyboard.press("Escape")  # out of the category select
    page.keyboard.press("Escape")  # and the panel closed

    # / goes to the unit search without typing the slash; letters typed there are not shortcuts.
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "unit-filter"
    page.keyboard.type("KEY-02")
    assert page.locator("#unit-filter").input_value() == "KEY-02"
    assert page.locator("#dispatch").is_hidden()  # the "N"… of no shortcut; the "2" chose nothing
    page.wait_for_function("document.querySelectorAll('#unit-list li').length === 1")
    page.keyboard.press("Escape")
    page.locator("#unit-filter").fill("")

    # The first incident chosen in the list; 2 chooses the second-ranked unit, A assigns it there.
    page.locator(f'#incident-list li[data-incident-id="{first["incident_id"]}"]').click()
    wait_nearest(page)
    page.evaluate("document.activeElement.blur()")
    order = ranked(page)
    assert len(order) == 4
    page.keyboard.press("2")
    chosen = page.locator("#nearest tbody tr.chosen")
    assert chosen.count() == 1 and chosen.get_attribute("data-unit-id") == order[1]
    page.keyboard.press("a")
    page.wait_for_function("document.querySelector('#form-message').textContent.includes('asignada')")
    assert incident_units(base, first["incident_id"]) == [order[1]]

    # The second incident: A with no choice assigns the top-ranked unit (as the API ranks it).
    page.locator(f'#incident-list li[data-incident-id="{second["incident_id"]}"]').click()
    wait_nearest(page)
    page.evaluate("document.activeElement.blur()")
    order = ranked(page)
    api = httpx.get(
        f"{base}/api/v1/dispatch/nearest",
        params={"lat": second["lat"], "lon": second["lon"], "k": 5},
        headers=ADMIN,
        timeout=HTTP_TIMEOUT_S,
    ).json()
    assert order == [c["unit_id"] for c in api["units"]]
    page.keyboard.press("5")  # beyond the ranking: nothing is chosen instead
    assert page.locator("#nearest tbody tr.chosen").get_attribute("data-unit-id") == order[0]
    page.keyboard.press("A")
    page.wait_for_function("document.querySelector('#form-message').textContent.includes('asignada')")
    assert incident_units(base, second["incident_id"]) == [order[0]]
    assert page.errors == []  # type: ignore[attr-defined]
