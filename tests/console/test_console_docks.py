"""The console's coverage layer draws the drone docks (marker and reach disc) of the drone and combined
layers, in Debian's headless Chromium over the whole stack, with the demo docks and cameras of Miraflores."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Browser

from tests.api.live_stack import LiveStack, start_stack
from tests.console.test_console_browser import HTTP_TIMEOUT_S, open_console
from tests.console.test_console_coverage import GAP_PATHS, wait_coverage
from tests.mqtt_bridge.ingest_rig import IngestRig
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE
from tracker.coverage import CoverageService
from tracker.coverage_files import DEMO_CAMERAS_FILE, DEMO_DOCKS_FILE, load_docks, load_viewsheds

pytestmark = [pytest.mark.browser, pytest.mark.integration]

DOCK_MARKERS = ".leaflet-overlay-pane path.coverage-dock"
DOCK_DISCS = ".leaflet-overlay-pane path.coverage-dock-reach"


@pytest.fixture
def docks_stack(ingest: IngestRig) -> Iterator[Callable[[], LiveStack]]:
    """The live stack with ``ctx.coverage`` over Miraflores with the demo docks and cameras."""
    stacks: list[LiveStack] = []
    area = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
    docks, cameras = load_docks(DEMO_DOCKS_FILE), load_viewsheds(DEMO_CAMERAS_FILE)

    async def services(stack: LiveStack) -> None:
        stack.ctx.coverage = CoverageService(area, stack.bridge.fleet, docks=docks, viewsheds=cameras)

    def make() -> LiveStack:
        stack = start_stack(ingest, services=services)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


def test_drone_layers_draw_the_docks_and_their_reach(
    docks_stack: Callable[[], LiveStack], browser: Browser
) -> None:
    stack = docks_stack()
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
                    timeout=HTTP_TIMEOUT_S).json()  # fmt: skip
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
