"""The console's supervision card in Debian's headless Chromium, over the whole stack.

Five incidents with known report-to-arrival times (set in the database, as the stats API test
does) and ninety stored coverage samples with one bad hour. The card's tables must show the
API's own figures for the same period, and the chart one dot per sample with the API's worst
hours shaded.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from tests.api.live_stack import LiveStack
from tests.console.test_console_browser import HTTP_TIMEOUT_S, open_console, report
from tests.fixtures.auth import ADMIN
from tests.mqtt_bridge.ingest_rig import IngestRig
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE
from tracker.coverage import CoverageService
from tracker.coverage_history import CoverageSampler
from tracker.store import coverage as coverage_store
from tracker.store.coverage import SampleRow

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# (category, channel, seconds from report to the first unit on scene)
INCIDENTS = [
    ("seguridad_ciudadana", "phone", 240),
    ("seguridad_ciudadana", "whatsapp", 420),
    ("seguridad_ciudadana", "phone", 900),
    ("seguridad_vial", "camera", 300),
    ("defensa_civil", "phone", 75),
]
SAMPLES = 90


def duration_text(s: float | None) -> str:
    """The console's formatDuration, written again here from its specification."""
    if s is None:
        return "—"
    total = round(s)
    return f"{total // 60} min {total % 60:02d} s" if total >= 60 else f"{total} s"


def test_supervision_shows_the_apis_response_times_and_one_chart_point_per_sample(
    ingest: IngestRig, make_stack: Callable[..., LiveStack], browser: Browser
) -> None:
    area = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    # Samples a minute apart from 2.5 h ago; the hour that starts at the first full hour is bad.
    first = now - timedelta(minutes=150)
    bad_hour = first.replace(minute=0) + timedelta(hours=1)
    rows = [
        SampleRow(
            t := first + timedelta(minutes=i),
            "ground",
            480.0,
            9,
            0.35 + 0.001 * i if bad_hour <= t < bad_hour + timedelta(hours=1) else 0.8 - 0.001 * i,
            0.5,
            6,
        )
        for i in range(SAMPLES)
    ]

    async def history(stack: LiveStack) -> None:
        assert stack.ctx.pool is not None
        stack.ctx.coverage_history = CoverageSampler(stack.ctx.pool, CoverageService(area, stack.ctx.fleet))
        await coverage_store.insert_samples(stack.ctx.pool, rows)

    stack = make_stack(history)
    base = stack.served.url
    for category, channel, seconds in INCIDENTS:
        inc = report(base, -12.12, -77.03, category, channel, 3, "prueba")
        ingest.query(
            "UPDATE incidents SET first_assigned_at = created_at + interval '20 s',"
            " first_arrival_at = created_at + make_interval(secs => %s) WHERE incident_id = %s",
            seconds,
            inc["incident_id"],
        )

    page = open_console(browser, base)
    page.locator("#supervision-toggle").click()
    page.wait_for_selector('#supervision[data-state="ok"]')
    since, until = page.evaluate(
        "[new Date(window.serenazgo.supervision.since).toISOString(),"
        " new Date(window.serenazgo.supervision.until).toISOString()]"
    )
    period = {"since": since, "until": until}
    stats = httpx.get(
        f"{base}/api/v1/incidents/stats", params=period, headers=ADMIN, timeout=HTTP_TIMEOUT_S
    ).json()
    assert stats["overall"]["count"] == len(INCIDENTS)

    for dimension in ("category", "channel"):
        groups: dict[str, Any] = stats["by"][dimension]
        table = page.locator(f"#stats-{dimension} table tbody tr")
        shown = {}
        for i in range(table.count()):
            row = table.nth(i)
            cells = row.locator("td")
            shown[row.get_attribute("data-key")] = {
                "count": int(cells.nth(1).inner_text()),
                "text": [cells.nth(k).inner_text() for k in (2, 3, 4)],
                "data": [float(row.get_attribute(f"data-{q}") or "nan") for q in ("p50", "p90", "mean")],
            }
        assert set(shown) == set(groups)
        for key, g in groups.items():
            r = g["response_s"]
            assert shown[key]["count"] == g["count"]
            assert shown[key]["data"] == [r["p50"], r["p90"], r["mean"]]
            assert shown[key]["text"] == [duration_text(r[q]) for q in ("p50", "p90", "mean")]
    # Spanish labels of the data's identifiers.
    assert (
        page.locator('#stats-category tr[data-key="seguridad_vial"] td').first.inner_text()
        == "Seguridad vial"
    )

    params = {**period, "layer": "ground", "minutes": "8", "bucket": "minute"}
    hist = httpx.get(
        f"{base}/api/v1/coverage/history", params=params, headers=ADMIN, timeout=HTTP_TIMEOUT_S
    ).json()
    assert len(hist["points"]) == SAMPLES
    dots = page.locator("#coverage-chart svg circle.sample")
    assert dots.count() == SAMPLES
    assert [dots.nth(i).get_attribute("data-start") for i in range(SAMPLES)] == [
        p["start"] for p in hist["points"]
    ]
    assert [float(dots.nth(i).get_attribute("data-ratio") or "nan") for i in range(SAMPLES)] == [
        p["covered_area_ratio"]["avg"] for p in hist["points"]
    ]
    worst = page.locator("#coverage-chart svg rect.worst")
    assert [worst.nth(i).get_attribute("data-start") for i in range(worst.count())] == [
        w["start"] for w in hist["worst_hours"]
    ]
    assert hist["worst_hours"][0]["start"] == bad_hour.isoformat()
    # The dots of the worst hours are the red ones.
    red = page.locator("#coverage-chart svg circle.sample.worst")
    worst_starts = [datetime.fromisoformat(w["start"]) for w in hist["worst_hours"]]
    expected_red = [
        p["start"]
        for p in hist["points"]
        if any(s <= datetime.fromisoformat(p["start"]) < s + timedelta(hours=1) for s in worst_starts)
    ]
    assert [red.nth(i).get_attribute("data-start") for i in range(red.count())] == expected_red
    assert page.errors == []  # type: ignore[attr-defined]
