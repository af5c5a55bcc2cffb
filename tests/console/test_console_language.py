"""The console's language switch (ES by default, EN on request) in Debian's headless Chromium."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.api.live_stack import LiveStack, native_ping
from tests.console.test_console_browser import open_console
from tests.mqtt_bridge.ingest_rig import IngestRig
from tracker.model import Unit, UnitKind

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# Every text of the page marked for translation: [key, what it shows] for text, aria-label and placeholder.
MARKED = """() => [
    ...[...document.querySelectorAll('[data-i18n]')].map((n) => [n.dataset.i18n, n.textContent]),
    ...[...document.querySelectorAll('[data-i18n-aria]')].map(
        (n) => [n.dataset.i18nAria, n.getAttribute('aria-label')]),
    ...[...document.querySelectorAll('[data-i18n-placeholder]')].map(
        (n) => [n.dataset.i18nPlaceholder, n.placeholder]),
]"""


def visible(page: Page) -> dict[str, Any]:
    """What the operator reads in a few places that come from the page, LABELS and the live data."""
    result: dict[str, Any] = page.evaluate(
        """() => ({
            units: document.querySelector('#units-title [data-i18n]').textContent,
            chip: document.querySelector('#status-counts li[data-status="available"]').textContent,
            lost: document.querySelector('#status-counts li[data-freshness="lost"]').textContent,
            category: document.querySelector('#f-category option[value="seguridad_vial"]').textContent,
            conn: document.getElementById('conn').textContent,
            age: document.querySelector('#unit-list li .age').textContent.replace(/[0-9]+/, 'N'),
            legend: document.querySelector('.legend').textContent,
            lang: document.documentElement.lang,
            pressed: document.querySelector('.lang-switch [aria-pressed="true"]').dataset.lang,
        })"""
    )
    return result


def test_english_beside_spanish_switches_the_labels_and_is_remembered(
    ingest: IngestRig, make_stack: Callable[..., LiveStack], browser: Browser
) -> None:
    car = ingest.names.unit("lng01")
    ingest.add_units([Unit(car, UnitKind.PATROL_CAR, callsign="LNG-01")])
    stack = make_stack()
    now = datetime.now(UTC)
    ingest.publish([native_ping(car, now - timedelta(seconds=3), -12.12, -77.03)])
    stack.wait_fleet("the fix", lambda: (s := stack.ctx.fleet.get(car)) is not None and s.fix is not None)

    page = open_console(browser, stack.served.url)
    page.wait_for_selector(f'#unit-list li[data-unit-id="{car}"]')
    page.wait_for_selector("#conn.conn-live")
    spanish = visible(page)
    assert spanish["units"] == "Unidades"
    assert spanish["chip"] == "Disponible 1"
    assert spanish["lost"] == "Perdidas 0"
    assert spanish["category"] == "Seguridad vial"
    assert spanish["conn"] == "En vivo"
    assert spanish["age"] in ("hace N s", "hace N min")
    assert "Patrullero" in spanish["legend"]
    assert (spanish["lang"], spanish["pressed"]) == ("es", "es")
    labels_es = page.evaluate("JSON.stringify(window.serenazgo.LABELS)")
    marked_es = dict(page.evaluate(MARKED))

    page.locator("#lang-en").click()
    english = visible(page)
    assert english == {
        "units": "Units", "chip": "Available 1", "lost": "Lost 0", "category": "Road safety", "conn": "Live",
        "legend": english["legend"], "lang": "en", "pressed": "en", "age": english["age"],
    }  # fmt: skip
    assert english["age"] in ("N s ago", "N min ago")
    assert "Patrol car" in english["legend"] and "Patrullero" not in english["legend"]
    assert page.evaluate("localStorage.getItem('serenazgo.lang')") == "en"
    # Every LABELS table has its English twin with the same keys, and every marked text has an English text.
    es_tables = json.loads(labels_es)
    en_tables = page.evaluate("JSON.parse(JSON.stringify(window.serenazgo.LABELS))")
    assert set(en_tables) == set(es_tables)
    for table, entries in es_tables.items():
        assert set(en_tables[table]) == set(entries), table
    marked_en = dict(page.evaluate(MARKED))
    assert set(marked_en) == set(marked_es)
    for key, text in marked_en.items():
        assert text and text != key, f"{key} has no English text"
    assert sum(marked_en[k] != marked_es[k] for k in marked_en) >= len(marked_en) - 3  # "Drones", "p50"…

    # The unit's popup too.
    page.evaluate("(id) => window.serenazgo.state.units.get(id).marker.openPopup()", car)
    popup = page.locator(".leaflet-popup-content").inner_text()
    assert "Kind\tPatrol car" in popup and "Status\tAvailable" in popup and "Track" in popup
    page.keyboard.press("Escape")

    # Remembered: a reload comes back in English.
    page.reload()
    page.wait_for_function("window.serenazgo && window.serenazgo.state.snapshots > 0")
    page.wait_for_selector(f'#unit-list li[data-unit-id="{car}"]')
    page.wait_for_selector("#conn.conn-live")
    assert visible(page)["units"] == "Units"
    assert visible(page)["chip"] == "Available 1"
    assert visible(page)["pressed"] == "en"

    page.locator("#lang-es").click()
    assert visible(page)["units"] == "Unidades"
    assert visible(page)["chip"] == "Disponible 1"
    assert page.evaluate("localStorage.getItem('serenazgo.lang')") == "es"
    assert page.errors == []  # type: ignore[attr-defined]
