"""The console's track replay in Debian's headless Chromium, over the whole stack.

A unit reports eight fixes over MQTT (one a minute); "Recorrido" in its popup asks the API for the
last 15 minutes of its track. The drawn line must be the API's own coordinates for the same request,
and the replay marker must stand, for any slider time, on the last fix at or before that time
(reckoned here from the API's timestamps).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.api.live_stack import LiveStack, native_ping
from tests.console.test_console_browser import (
    HTTP_TIMEOUT_S,
    open_console,
)
from tests.fixtures.auth import ADMIN
from tests.mqtt_bridge.ingest_rig import IngestRig
from tracker.model import Unit, UnitKind

pytestmark = [pytest.mark.browser, pytest.mark.integration]

FIXES = 8


def api_track(base: str, path: str) -> dict[str, Any]:
    """The API's answer to the console's own track request."""
    r = httpx.get(base + path, headers=ADMIN, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def marker_at(page: Page, offset_ms: float) -> list[float]:
    """Move the slider to ``offset_ms`` after the first fix, as a drag does; the marker's [lat, lon]."""
    result: list[float] = page.evaluate(
        """(ms) => {
            const slider = document.getElementById('track-slider');
            slider.value = String(ms);
            slider.dispatchEvent(new Event('input', {bubbles: true}));
            const p = window.serenazgo.track.marker.getLatLng();
            return [p.lat, p.lng];
        }""",
        offset_ms,
    )
    return result


def test_a_units_track_is_drawn_as_the_api_gives_it_and_replayed_fix_by_fix(
    ingest: IngestRig, make_stack: Callable[[], LiveStack], browser: Browser
) -> None:
    car = ingest.names.unit("trk01")
    ingest.add_units([Unit(car, UnitKind.PATROL_CAR, callsign="TRK-01")])
    stack = make_stack()
    now = datetime.now(UTC).replace(microsecond=0)
    first = now - timedelta(minutes=9)
    # A zig-zag so that a wrong index cannot land on the right place by chance.
    sent = [
        native_ping(
            car, first + timedelta(seconds=60 * i), -12.1200 + 0.0009 * i, -77.0300 + (0.0007 if i % 2 else 0)
        )
        for i in range(FIXES)
    ]
    ingest.publish(sent)
    base = stack.served.url
    window = {
        "start": (now - timedelta(minutes=15)).isoformat(),
        "end": (now + timedelta(minutes=1)).isoformat(),
    }
    stack.wait_fleet(
        "the eight fixes stored",
        lambda: (
            httpx.get(
                f"{base}/api/v1/units/{car}/track", params=window, headers=ADMIN, timeout=HTTP_TIMEOUT_S
            ).json()["properties"]["count"]
            == FIXES
        ),
    )

    page = open_console(browser, base)
    page.wait_for_selector(f'.unit-icon[data-unit-id="{car}"]')
    # From the unit's popup.
    page.evaluate("(id) => window.serenazgo.state.units.get(id).marker.openPopup()", car)
    page.locator(".leaflet-popup-content button.track-open").click()
    page.wait_for_selector('#track[data-state="ok"]')
    assert page.locator("#track-unit").inner_text() == "TRK-01"
    assert page.locator('.track-preset[data-minutes="15"]').get_attribute("aria-pressed") == "true"

    path = page.evaluate("window.serenazgo.track.url")
    assert "format=geojson" in path
    feature = api_track(base, path)
    coords = feature["geometry"]["coordinates"]
    assert len(coords) == FIXES
    drawn = page.evaluate("window.serenazgo.track.line.getLatLngs().map((p) => [p.lng, p.lat])")
    assert drawn == coords
    assert page.locator(".leaflet-overlay-pane path.track-line").count() == 1
    # The window asked for is the last 15 minutes.
    start = datetime.fromisoformat(page.evaluate("window.serenazgo.track.start.toISOString()"))
    end = datetime.fromisoformat(page.evaluate("window.serenazgo.track.end.toISOString()"))
    assert end - start == timedelta(minutes=15)

    # The slider: at any time t the marker is on the last fix at or before t.
    times = [
        datetime.fromisoformat(x).timestamp() * 1000
        for x in feature["properties"]["coordinateProperties"]["times"]
    ]
    t0 = times[0]
    for offset in [0, 1, 59_999, 60_000, 60_001, 150_500, 300_000, 419_999, times[-1] - t0]:
        i = bisect_right(times, t0 + offset) - 1
        assert marker_at(page, offset) == [coords[i][1], coords[i][0]], f"at +{offset} ms"

    # Play at ×60 from the start: the replay runs to the last fix and stops there.
    marker_at(page, 0)
    page.select_option("#track-speed", "60")
    page.locator("#track-play").click()
    page.wait_for_selector('#track[data-playing="true"]')
    page.wait_for_selector('#track[data-playing="false"]')
    assert page.evaluate("window.serenazgo.track.index") == FIXES - 1
    assert marker_at(page, times[-1] - t0) == [coords[-1][1], coords[-1][0]]

    # From the units list, with the 1 h preset: the same track (all fixes are within it).
    page.locator("#track-close").click()
    assert page.locator(".leaflet-overlay-pane path.track-line").count() == 0
    page.locator(f'#unit-list li[data-unit-id="{car}"] button.track-open').click()
    page.wait_for_selector('#track[data-state="ok"]')
    page.locator('.track-preset[data-minutes="60"]').click()
    page.wait_for_function("window.serenazgo.track.end - window.serenazgo.track.start === 3600000")
    page.wait_for_selector('#track[data-state="ok"]')
    drawn = page.evaluate("window.serenazgo.track.line.getLatLngs().map((p) => [p.lng, p.lat])")
    assert drawn == api_track(base, page.evaluate("window.serenazgo.track.url"))["geometry"]["coordinates"]

    # A chosen window: from 30 s before the first fix to 30 s after the fifth (the browser's local time).
    page.locator('.track-preset[data-minutes="custom"]').click()
    assert page.locator("#track-custom").is_visible()
    local = """(ms) => { const d = new Date(ms), p = (n) => String(n).padStart(2, '0');
        return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:`
            + `${p(d.getMinutes())}:${p(d.getSeconds())}`; }"""
    page.locator("#track-start").fill(page.evaluate(local, times[0] - 30_000))
    page.locator("#track-end").fill(page.evaluate(local, times[4] + 30_000))
    page.locator("#track-custom button[type=submit]").click()
    page.wait_for_function(f"window.serenazgo.track.start.getTime() === {times[0] - 30_000}")
    page.wait_for_selector('#track[data-state="ok"]')
    assert page.evaluate("window.serenazgo.track.end.getTime()") == times[4] + 30_000
    drawn = page.evaluate("window.serenazgo.track.line.getLatLngs().map((p) => [p.lng, p.lat])")
    assert drawn == coords[:5]
    assert drawn == api_track(base, page.evaluate("window.serenazgo.track.url"))["geometry"]["coordinates"]
    # An end before the start is refused in the card, without asking the API.
    page.locator("#track-end").fill(page.evaluate(local, times[0] - 60_000))
    page.locator("#track-custom button[type=submit]").click()
    assert "inicio anterior al fin" in page.locator("#track-message").inner_text()
    assert page.errors == []  # type: ignore[attr-defined]
