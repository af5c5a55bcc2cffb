"""The console's restricted airspace layer in Debian's headless Chromium, over the whole stack.

Zones posted through the API appear as red footprints with a tooltip (name, kind, altitude band);
the layer can be switched off; a point inside a zone can still be picked for dispatch.
"""

from __future__ import annotations

import httpx
import pytest
import shapely
from playwright.sync_api import Browser

from tests.api.live_stack import start_stack
from tests.console.test_console_browser import HTTP_TIMEOUT_S, click_map_at, open_console
from tests.fixtures.auth import ADMIN
from tests.mqtt_bridge.ingest_rig import IngestRig
from tracker.coverage_files import DATA_DIR

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ZONE_PATHS = ".leaflet-overlay-pane path.airspace-zone"


def test_airspace_zones_are_drawn_with_their_band(ingest: IngestRig, browser: Browser) -> None:
    stack = start_stack(ingest)
    try:
        demo = httpx.Client(base_url=stack.served.url, headers=ADMIN, timeout=HTTP_TIMEOUT_S)
        zones = (DATA_DIR / "demo_miraflores_airspace.geojson").read_text(encoding="utf-8")
        resp = demo.post("/api/v1/airspace", content=zones, headers={"content-type": "application/json"})
        assert resp.status_code == 201, resp.text
        features = resp.json()["features"]
        page = open_console(browser, stack.served.url)
        page.wait_for_function("window.serenazgo.airspace.loaded")
        assert page.locator(ZONE_PATHS).count() == len(features) == 3

        # Hover the approach surface: its tooltip names it and gives its band (from 90 m up).
        approach = next(f for f in features if f["properties"]["kind"] == "military")
        inner = shapely.geometry.shape(approach["geometry"]).representative_point()
        click_map_at(page, inner.y, inner.x)  # centres the map there and picks the point
        page.wait_for_selector("#dispatch:not([hidden])")  # a click inside a zone still picks the point
        box = page.locator("#map").bounding_box()
        assert box is not None
        xy = page.evaluate(
            "([lat, lon]) => { const p = window.serenazgo.map.latLngToContainerPoint([lat, lon]);"
            " return [p.x, p.y]; }",
            [inner.y, inner.x],
        )
        page.mouse.move(box["x"] + xy[0] + 3, box["y"] + xy[1] + 3)
        tip = page.locator(".leaflet-tooltip.airspace-tooltip")
        tip.wait_for()
        text = tip.inner_text()
        assert "DEMO Las Palmas" in text and "zona militar" in text and "desde 90 m" in text

        # The layers control switches it off and on.
        page.locator(".leaflet-control-layers").hover()
        page.get_by_label("Espacio aéreo restringido").uncheck()
        assert page.locator(ZONE_PATHS).count() == 0
        page.get_by_label("Espacio aéreo restringido").check()
        assert page.locator(ZONE_PATHS).count() == 3

        # A deleted zone goes at the next refresh.
        assert demo.delete("/api/v1/airspace/demo-embassy").status_code == 204
        page.evaluate("window.serenazgo.refreshAirspace()")
        page.wait_for_function("document.querySelectorAll('path.airspace-zone').length === 2")
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        stack.stop()
