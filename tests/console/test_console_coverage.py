"""The console's coverage layer in Debian's headless Chromium, over the whole stack.

The stack of the console tests plus a :class:`CoverageService` over Miraflores (with the demo's
drone docks and camera viewsheds for the drone layers).
The covered share the card shows is checked against Shapely (reach discs in
UTM 18S, as in the API's own tests), and against the API for the same choice;
a failing endpoint leaves a note in the card and the rest of the page working.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route

from geo.docks import Dock
from geo.viewsheds import Viewsheds
from tests.api.live_stack import LiveStack, native_ping, start_stack
from tests.api.test_coverage_api import CAR_PACE, shapely_ratio
from tests.console.test_console_browser import HTTP_TIMEOUT_S, open_console
from tests.fixtures.auth import ADMIN
from tests.mqtt_bridge.ingest_rig import IngestRig
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE
from tracker.coverage import CoverageService
from tracker.coverage_files import DEMO_CAMERAS_FILE, DEMO_DOCKS_FILE, load_docks, load_viewsheds
from tracker.model import Unit, UnitKind

pytestmark = [pytest.mark.browser, pytest.mark.integration]

GAP_PATHS = ".leaflet-overlay-pane path.coverage-gap"
DOCK_MARKERS = ".leaflet-overlay-pane path.coverage-dock"
DOCK_DISCS = ".leaflet-overlay-pane path.coverage-dock-reach"
COVERAGE_URL = re.compile(r"/api/v1/coverage\?")


@pytest.fixture
def coverage_stack(ingest: IngestRig) -> Iterator[Callable[..., LiveStack]]:
    """The live stack with ``ctx.coverage`` over Miraflores (what the runtime sets up with an area).

    ``make(docks, viewsheds)`` adds drone docks and camera viewsheds to the coverage service.
    """
    stacks: list[LiveStack] = []
    area = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")

    def make(docks: list[Dock] | None = None, viewsheds: Viewsheds | None = None) -> LiveStack:
        async def services(stack: LiveStack) -> None:
            stack.ctx.coverage = CoverageService(
                area, stack.bridge.fleet, docks=docks or (), viewsheds=viewsheds
            )

        stack = start_stack(ingest, services=services)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


def wait_coverage(page: Page, minutes: int) -> str:
    """Wait until the card shows an answer for ``minutes`` (or a failure); the card's state."""
    page.wait_for_function(
        """(m) => { const state = document.querySelector('#coverage').dataset.state;
                    const text = document.querySelector('#coverage-ratio').textContent;
                    return ['ok', 'error'].includes(state) && text.startsWith(`Cobertura ${m} min:`); }""",
        arg=minutes,
    )
    state: str = page.locator("#coverage").get_attribute("data-state") or ""
    return state


def shown_percent(page: Page) -> int:
    text = page.locator("#coverage-ratio").inner_text()
    return int(text.split(":")[1].replace("%", "").strip())


def test_coverage_layer_draws_the_gaps_and_the_covered_share(
    ingest: IngestRig, coverage_stack: Callable[..., LiveStack], browser: Browser
) -> None:
    n = ingest.names
    car, drone = n.unit("mov01"), n.unit("dron01")
    ingest.add_units([Unit(car, UnitKind.PATROL_CAR, callsign="MOV-01"),
                      Unit(drone, UnitKind.DRONE, callsign="DRON-01")])  # fmt: skip
    stack = coverage_stack()
    now = datetime.now(UTC).replace(microsecond=0)
    where = {car: (-12.1211, -77.0297), drone: (-12.1080, -77.0450)}
    ingest.publish([native_ping(u, now - timedelta(seconds=5), lat, lon) for u, (lat, lon) in where.items()])
    stack.wait_fleet("the first fixes", lambda: all(stack.ctx.fleet.get(u).fix is not None for u in where))  # type: ignore[union-attr]

    page = open_console(browser, stack.served.url)
    page.wait_for_function("document.querySelectorAll('.unit-icon').length === 2")
    assert page.locator("#coverage").get_attribute("data-state") == "off"
    assert page.locator(GAP_PATHS).count() == 0

    # On, 4 min, ground: one patrol car covers a disc of 1.2 km around it, a part of Miraflores.
    page.locator("#coverage-minutes").select_option("4")
    page.locator("#coverage-on").check()
    assert wait_coverage(page, 4) == "ok", page.locator("#coverage-note").inner_text()
    assert page.locator(GAP_PATHS).count() >= 1
    ground = shown_percent(page)
    truth = shapely_ratio([where[car]], 240.0 / CAR_PACE)
    assert 0.1 < truth < 0.9  # partial coverage: there are gaps to draw
    assert ground == pytest.approx(100 * truth, abs=2.0)
    api = httpx.get(f"{stack.served.url}/api/v1/coverage", params={"minutes": 4, "layer": "ground"},
                    headers=ADMIN, timeout=HTTP_TIMEOUT_S).json()  # fmt: skip
    assert page.locator("#coverage").get_attribute("data-ratio") == str(api["covered_area_ratio"])
    assert "1 unidad disponible" in page.locator("#coverage-detail").inner_text()

    # Combined: the drone adds its reach; the share grows and matches the API's.
    page.locator("#coverage-layer").select_option("combined")
    page.wait_for_function("document.querySelector('#coverage-detail').textContent.includes('combinada')")
    combined = httpx.get(f"{stack.served.url}/api/v1/coverage", params={"minutes": 4, "layer": "combined"},
                         headers=ADMIN, timeout=HTTP_TIMEOUT_S).json()  # fmt: skip
    assert page.locator("#coverage").get_attribute("data-ratio") == str(combined["covered_area_ratio"])
    assert combined["covered_area_ratio"] > api["covered_area_ratio"]

    # The endpoint fails: the card says so, the gaps go, units and the rest of the page stay.
    def fail(route: Route) -> None:
        route.fulfill(status=503, content_type="application/json", body='{"detail": "coverage is down"}')

    page.route(COVERAGE_URL, fail)
    page.locator("#coverage-minutes").select_option("8")
    assert wait_coverage(page, 8) == "error"
    assert "coverage is down" in page.locator("#coverage-note").inner_text()
    assert page.locator(GAP_PATHS).count() == 0
    assert page.locator(".unit-icon").count() == 2
    page.wait_for_selector("#conn.conn-live")

    # It comes back: the next refresh draws again; switched off, the layer goes.
    page.unroute(COVERAGE_URL, fail)
    page.locator("#coverage-layer").select_option("ground")
    page.locator("#coverage-minutes").select_option("12")
    assert wait_coverage(page, 12) == "ok"
    assert page.locator("#coverage-note").is_hidden()
    page.locator("#coverage-on").uncheck()
    assert page.locator(GAP_PATHS).count() == 0
    assert page.locator("#coverage").get_attribute("data-state") == "off"
    assert page.errors == []  # type: ignore[attr-defined]


def test_drone_layers_draw_the_docks_and_their_reach(
    coverage_stack: Callable[..., LiveStack], browser: Browser
) -> None:
    stack = coverage_stack(load_docks(DEMO_DOCKS_FILE), load_viewsheds(DEMO_CAMERAS_FILE))
    page = open_console(browser, stack.served.url)
    page.locator("#coverage-minutes").select_option("4")
    page.locator("#coverage-layer").select_option("drones")
    page.locator("#coverage-on").check()
    assert wait_coverage(page, 4) == "ok", page.locator("#coverage-note").inner_text()
    assert page.locator(DOCK_MARKERS).count() == 3
    assert page.locator(DOCK_DISCS).count() == 3
    assert page.locator("#coverage").get_attribute("data-docks") == "3"
    assert "3 bases de drones" in page.locator("#coverage-detail").inner_text()
    api = httpx.get(f"{stack.served.url}/api/v1/coverage", params={"minutes": 4, "layer": "drones"},
                    headers=ADMIN, timeout=HTTP_TIMEOUT_S).json()  # fmt: skip
    # Three docks 3 km apart reach all of Miraflores within 4 minutes.
    shown = float(page.locator("#coverage").get_attribute("data-ratio") or "nan")
    assert shown == api["covered_area_ratio"] == 1.0
    # A reach disc is as wide on screen as the API's reach: 3,150 m at 4 min (15 m/s × 210 s).
    assert {d["reach_m"] for d in api["model"]["docks"]} == {3150.0}
    width_px = page.locator(DOCK_DISCS).first.bounding_box()["width"]  # type: ignore[index]
    metres_per_px = page.evaluate(
        """() => { const m = window.serenazgo.map, c = m.getCenter(), p = m.latLngToContainerPoint(c);
                   return m.distance(c, m.containerPointToLatLng([p.x + 100, p.y])) / 100; }"""
    )
    assert width_px * metres_per_px == pytest.approx(2 * 3150.0, rel=0.05)

    # Combined: the cameras are named too; ground: no docks on the map.
    page.locator("#coverage-layer").select_option("combined")
    page.wait_for_function("document.querySelector('#coverage-detail').textContent.includes('6 cámaras')")
    assert page.locator(DOCK_MARKERS).count() == 3
    page.locator("#coverage-layer").select_option("ground")
    page.wait_for_function("document.querySelector('#coverage-detail').textContent.includes('terrestre')")
    assert page.locator(DOCK_MARKERS).count() == 0 and page.locator(DOCK_DISCS).count() == 0
    assert page.locator(GAP_PATHS).count() >= 1
    page.locator("#coverage-on").uncheck()
    assert page.locator(DOCK_MARKERS).count() == 0
    assert page.errors == []  # type: ignore[attr-defined]
