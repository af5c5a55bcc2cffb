"""The console after a lost live feed, in Debian's headless Chromium, over the whole stack.

Playwright stands between the page and ``/api/v1/ws``: it passes the feed through, then cuts it
and refuses the page's reconnections while the world changes through MQTT and the API (a unit
moves, another is sent to an incident, an incident is cancelled, a new unit appears). The page
must say it is offline and keep the old picture; once the feed is let through again it must show
the new world from the new snapshot alone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute

from tests.api.live_stack import LiveStack, native_ping
from tests.console.test_console_browser import HTTP_TIMEOUT_S, marker_latlng, open_console, report
from tests.fixtures.auth import ADMIN
from tests.mqtt_bridge.ingest_rig import IngestRig
from tracker.model import Unit, UnitKind

pytestmark = [pytest.mark.browser, pytest.mark.integration]


class FeedGate:
    """The page's WebSocket through Playwright: passed to the server while open, refused while shut."""

    def __init__(self) -> None:
        self.open = True
        self.routes: list[tuple[WebSocketRoute, WebSocketRoute]] = []
        self.refused = 0

    def install(self, page: Page) -> None:
        """Route the page's live feed through the gate (before the page loads)."""
        page.route_web_socket("**/api/v1/ws", self._handle)

    def _handle(self, ws: WebSocketRoute) -> None:
        if not self.open:
            self.refused += 1
            ws.close(code=1011, reason="feed cut by the test")
            return
        self.routes.append((ws, ws.connect_to_server()))

    def shut(self) -> None:
        """Cut every connection now and refuse the next ones."""
        self.open = False
        for page_side, server_side in self.routes:
            server_side.close()
            page_side.close(code=1011, reason="feed cut by the test")
        self.routes.clear()


def test_after_a_lost_feed_the_console_shows_the_new_world_from_the_new_snapshot(
    ingest: IngestRig, make_stack: Callable[..., LiveStack], browser: Browser
) -> None:
    n = ingest.names
    mover, sent, newcomer = n.unit("rsy01"), n.unit("rsy02"), n.unit("rsy03")
    ingest.add_units([
        Unit(mover, UnitKind.PATROL_CAR, callsign="RSY-01"),
        Unit(sent, UnitKind.MOTORCYCLE, callsign="RSY-02"),
        Unit(newcomer, UnitKind.FOOT, callsign="RSY-03"),
    ])  # fmt: skip
    stack = make_stack()
    now = datetime.now(UTC).replace(microsecond=0)
    ingest.publish([
        native_ping(mover, now - timedelta(seconds=30), -12.1190, -77.0320),
        native_ping(sent, now - timedelta(seconds=30), -12.1230, -77.0280),
    ])  # fmt: skip
    fleet = stack.ctx.fleet
    stack.wait_fleet(
        "the first fixes",
        lambda: all((s := fleet.get(u)) is not None and s.fix is not None for u in (mover, sent)),
    )
    base = stack.served.url
    cancelled = report(base, -12.1200, -77.0300, "otro", "phone", 3, "se cancelará")
    kept = report(base, -12.1240, -77.0270, "seguridad_vial", "camera", 2, "sigue abierto")

    gate = FeedGate()
    page = open_console(browser, base, prepare=gate.install)
    page.wait_for_function("document.querySelectorAll('.unit-icon').length === 2")
    page.wait_for_function("document.querySelectorAll('#incident-list li').length === 2")
    page.wait_for_selector("#conn.conn-live")
    assert page.evaluate("window.serenazgo.state.snapshots") == 1

    # The feed is cut: the page says so.
    gate.shut()
    page.wait_for_selector("#conn.conn-down")
    assert "Sin conexión" in page.locator("#conn").inner_text()

    # Meanwhile the world changes.
    ingest.publish([
        native_ping(mover, now - timedelta(seconds=2), -12.1145, -77.0320),
        native_ping(newcomer, now - timedelta(seconds=2), -12.1260, -77.0330),
    ])  # fmt: skip
    r = httpx.post(f"{base}/api/v1/incidents/{kept['incident_id']}/assign",
                   json={"unit_id": sent, "operator": "op-demo"},
                   headers=ADMIN, timeout=HTTP_TIMEOUT_S)  # fmt: skip
    assert r.status_code == 201, r.text
    r = httpx.patch(f"{base}/api/v1/incidents/{cancelled['incident_id']}",
                    json={"operator": "op-demo", "status": "cancelled"},
                    headers=ADMIN, timeout=HTTP_TIMEOUT_S)  # fmt: skip
    assert r.status_code == 200, r.text

    def moved() -> bool:
        m, c = fleet.get(mover), fleet.get(newcomer)
        return m is not None and m.fix is not None and m.fix.lat == pytest.approx(-12.1145) \
            and c is not None and c.fix is not None  # fmt: skip

    stack.wait_fleet("the move and the newcomer", moved)
    # Offline, the page still shows the world as it last saw it.
    assert marker_latlng(page, mover) == pytest.approx([-12.1190, -77.0320])
    assert page.locator("#incident-list li").count() == 2
    assert page.locator(f'.unit-icon[data-unit-id="{sent}"]').get_attribute("data-status") == "available"
    assert page.locator(f'.unit-icon[data-unit-id="{newcomer}"]').count() == 0
    page.wait_for_function("window.serenazgo.state.connection === 'down'")

    # The feed comes back: the page reconnects by itself and the new snapshot is the whole truth.
    gate.open = True
    page.wait_for_function("window.serenazgo.state.snapshots >= 2")
    page.wait_for_selector("#conn.conn-live")
    assert page.locator("#conn").inner_text() == "En vivo"
    assert marker_latlng(page, mover) == pytest.approx([-12.1145, -77.0320])
    assert page.locator(f'.unit-icon[data-unit-id="{sent}"]').get_attribute("data-status") == "dispatched"
    assert marker_latlng(page, newcomer) == pytest.approx([-12.1260, -77.0330])
    items = page.locator("#incident-list li")
    assert [items.nth(i).get_attribute("data-incident-id") for i in range(items.count())] == [
        str(kept["incident_id"])
    ]
    assert page.evaluate("[...window.serenazgo.state.incidents.keys()].map(String)") == [
        str(kept["incident_id"])
    ]
    assert page.locator(".leaflet-marker-pane .incident-icon").count() == 1
    assert page.locator("#unit-list li").count() == 3
    assert page.errors == []  # type: ignore[attr-defined]
