"""The console's drone sortie planner in Debian's headless Chromium, over the whole stack.

The stack of the console tests plus a :class:`CoverageService` over Miraflores with three docks
whose aircraft sit in the dock at 10 % charge (so the drone layer has gaps beyond about 900 m of
them) and the demo restricted airspace stored through the API. The planner card plans the next
launch (a charged aircraft) over those gaps; what it draws and lists is checked against the API's
own answers for the same request (format json and geojson), the unreachable crosses against
Shapely (zones) and pyproj (the operating radius), the downloads against the API's exports, an
API refusal is shown with the API's words, and "Borrar plan" removes everything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import shapely
from playwright.sync_api import Browser, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from pyproj import Geod, Transformer
from shapely.geometry import Point, shape

from geo.docks import PROFILES, Dock
from tests.api.live_stack import LiveStack, start_stack
from tests.console.test_console_browser import HTTP_TIMEOUT_S, open_console
from tests.fixtures.auth import ADMIN
from tests.mqtt_bridge.ingest_rig import IngestRig
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE
from tracker.coverage import CoverageService
from tracker.coverage_files import DATA_DIR

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ROUTES = ".leaflet-overlay-pane path.sortie-route"
WAYPOINTS = ".leaflet-marker-pane .sortie-waypoint"
CROSSES = ".leaflet-marker-pane .sortie-unreachable"
SORTIE_DOCK = ".leaflet-overlay-pane path.sortie-dock"
PLAN = "/api/v1/drones/sorties/plan"
GEOD = Geod(ellps="WGS84")
TO_UTM = Transformer.from_crs("EPSG:4326", "EPSG:32718", always_xy=True).transform  # UTM 18S: Lima
SHORT_RADIUS_M = 1500.0

# The Palacio's roof (a long-range M3TD) and the district's east edge with an aircraft whose dock may only
# fly 1.5 km out; both charging at 10 %. A third dock is out of service (its option is disabled).
PALACIO = Dock("dock-a", "Palacio (prueba)", -12.1197, -77.0297, PROFILES["m3td"], "m3td", battery_pct=10.0)
EAST = Dock(
    "dock-b", "Borde este (prueba)", -12.1250, -77.0200,
    replace(PROFILES["m3td"], max_radius_m=SHORT_RADIUS_M), "m3td", battery_pct=10.0,
)  # fmt: skip
CLOSED = Dock("dock-c", "Surquillo (prueba)", -12.1130, -77.0180, PROFILES["m3td"], "m3td", in_service=False)


@pytest.fixture
def sortie_stack(ingest: IngestRig) -> Iterator[LiveStack]:
    """The live stack with ``ctx.coverage`` over Miraflores and the three docks, demo zones stored."""
    area = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")

    async def services(stack: LiveStack) -> None:
        stack.ctx.coverage = CoverageService(area, stack.bridge.fleet, docks=[PALACIO, EAST, CLOSED])

    stack = start_stack(ingest, services=services)
    try:
        zones = (DATA_DIR / "demo_miraflores_airspace.geojson").read_text(encoding="utf-8")
        r = httpx.post(f"{stack.served.url}/api/v1/airspace", content=zones,
                       headers={**ADMIN, "content-type": "application/json"},
                       timeout=HTTP_TIMEOUT_S)  # fmt: skip
        assert r.status_code == 201, r.text
        yield stack
    finally:
        stack.stop()


def utm(geom: Any) -> Any:
    """A lon/lat geometry in UTM 18S metres."""
    return shapely.transform(geom, lambda x, y: TO_UTM(x, y), interleaved=False)


def api_plan(stack: LiveStack, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{stack.served.url}{PLAN}", json=body, headers=ADMIN, timeout=HTTP_TIMEOUT_S)


def plan_in_console(page: Page, dock_id: str) -> str:
    """Choose the dock and press Planificar; the card's final state (ok or error)."""
    page.locator("#sortie-dock").select_option(dock_id)
    page.locator("#sortie-plan").click()
    page.wait_for_function("['ok', 'error'].includes(document.querySelector('#sorties').dataset.state)")
    return page.locator("#sorties").get_attribute("data-state") or ""


def drawn_routes(page: Page) -> list[list[list[float]]]:
    """Each drawn route's vertices as [lon, lat], in sortie order."""
    result: list[list[list[float]]] = page.evaluate(
        "() => window.serenazgo.sorties.routes.map((r) => r.getLatLngs().map((p) => [p.lng, p.lat]))"
    )
    return result


def hover_tooltip(page: Page, locator: str) -> str:
    page.locator(locator).first.hover()
    tip = page.locator(".leaflet-tooltip.sortie-unreachable-tip")
    tip.wait_for()
    return tip.inner_text()


def download(page: Page, button: str, tmp_path: Path) -> tuple[str, str]:
    """Click a download button; (suggested file name, content). No file: fail with the card's message."""
    try:
        with page.expect_download() as info:
            page.locator(button).click()
    except PlaywrightTimeout:
        pytest.fail(f"no download: {page.locator('#sortie-message').inner_text()!r}")
    dl = info.value
    target = tmp_path / dl.suggested_filename
    dl.save_as(target)
    return dl.suggested_filename, target.read_text(encoding="utf-8")


def test_sorties_are_drawn_listed_and_exported_as_the_api_plans_them(
    sortie_stack: LiveStack, browser: Browser, tmp_path: Path
) -> None:
    stack = sortie_stack
    page = open_console(browser, stack.served.url)
    page.wait_for_function("window.serenazgo.airspace.loaded")
    assert page.locator("#sortie-form").is_hidden()
    page.locator("#coverage-minutes").select_option("4")
    page.locator("#sorties-on").check()
    page.wait_for_function("document.querySelector('#sorties').dataset.docks === '3'")
    options = page.locator("#sortie-dock option")
    assert options.all_inner_texts() == [
        "Palacio (prueba)",
        "Borde este (prueba)",
        "Surquillo (prueba) (fuera de servicio)",
    ]
    assert [options.nth(i).is_disabled() for i in range(3)] == [False, False, True]
    assert page.locator("#sortie-altitude").input_value() == "100"
    page.wait_for_function("document.querySelector('#sortie-altitude').max === '120'")  # the API's limit
    page.locator("#sortie-layer").select_option("drones")
    assert "capa drones a 4 min" in page.locator("#sortie-target-note").inner_text()

    # ----- from the Palacio: several sorties, gap cells inside the demo zones left out -----
    assert plan_in_console(page, "dock-a") == "ok", page.locator("#sortie-message").inner_text()
    body = {"dock_id": "dock-a", "targets": "gaps", "minutes": 4, "layer": "drones", "altitude_m": 100}
    api = api_plan(stack, {**body, "format": "json"}).json()
    assert page.evaluate("window.serenazgo.sorties.plan") == api  # the console asked what the planner asks
    n = len(api["sorties"])
    assert n >= 2, "the gaps need more than one battery"
    geo = api_plan(stack, {**body, "format": "geojson"}).json()
    lines = [f["geometry"]["coordinates"] for f in geo["features"] if f["properties"]["kind"] == "sortie"]
    assert page.locator(ROUTES).count() == n == len(lines)
    assert drawn_routes(page) == lines  # same vertices, same order, one polyline per sortie
    assert [len(r) for r in drawn_routes(page)] == [len(s["waypoints"]) for s in api["sorties"]]
    covered = [t for s in api["sorties"] for t in s["targets"]]
    assert page.locator(WAYPOINTS).count() == len(covered)
    for s in api["sorties"]:  # targets numbered 1..k in flight order, per sortie
        numbers = page.locator(f'{WAYPOINTS}[data-sortie="{s["sortie"]}"]').all_inner_texts()
        assert numbers == [str(k) for k in range(1, len(s["targets"]) + 1)]
    assert page.locator(SORTIE_DOCK).count() == 1

    # The summary: a row per sortie with the API's figures, and the totals.
    rows = page.locator("#sortie-summary tbody tr:not(.total)")
    assert rows.count() == n
    for i, s in enumerate(api["sorties"]):
        row = rows.nth(i)
        assert float(row.get_attribute("data-distance-m") or "nan") == s["distance_m"]
        assert float(row.get_attribute("data-flight-s") or "nan") == s["flight_s"]
        assert float(row.get_attribute("data-battery-pct") or "nan") == s["battery_pct"]
        cells = row.locator("td").all_inner_texts()
        assert cells[0].strip() == str(s["sortie"])
        assert float(cells[1].removesuffix(" km")) == pytest.approx(s["distance_m"] / 1000, abs=0.051)
        assert float(cells[2].removesuffix(" min")) == pytest.approx(s["flight_s"] / 60, abs=0.051)
        assert int(cells[3].removesuffix(" %")) == pytest.approx(s["battery_pct"], abs=0.51)
        assert int(cells[4]) == len(s["targets"])
    total = page.locator("#sortie-summary tr.total td").all_inner_texts()
    t = api["totals"]
    assert float(total[1].removesuffix(" km")) == pytest.approx(t["distance_m"] / 1000, abs=0.051)
    assert float(total[2].removesuffix(" min")) == pytest.approx(t["flight_s"] / 60, abs=0.051)
    charges = sum(s["battery_pct"] for s in api["sorties"]) / 100  # batteries add up to charges
    assert float(total[3].removesuffix(" cargas")) == pytest.approx(charges, abs=0.051)
    assert int(total[4]) == t["targets_covered"] == len(covered)

    # Grey crosses: every unreachable target, each inside a demo zone grown by the clearance (Shapely).
    unreachable = api["unreachable"]
    assert unreachable and {u["reason"] for u in unreachable} == {"inside_restricted_airspace"}
    assert page.locator(CROSSES).count() == len(unreachable)
    assert page.locator("#sortie-summary .sortie-unreachable-note").get_attribute("data-unreachable") == str(
        len(unreachable)
    )
    zones = [utm(shape(f["geometry"])) for f in json.loads(
        (DATA_DIR / "demo_miraflores_airspace.geojson").read_text(encoding="utf-8"))["features"]]  # fmt: skip
    for u in unreachable:
        p = utm(Point(u["lon"], u["lat"]))
        assert min(z.distance(p) for z in zones) <= api["clearance_m"] + 1.0, u
    assert "Dentro de espacio aéreo restringido" in hover_tooltip(page, CROSSES)

    # Downloads: the drawn plan as QGroundControl and KML files, what the API exports for it.
    name, text = download(page, "#sortie-summary button.download-qgc[data-sortie='2']", tmp_path)
    qgc = api_plan(stack, {**body, "format": "qgc", "sortie": 2})
    assert name == "sorties-dock-a-2.plan" and json.loads(text) == qgc.json()
    name, text = download(page, "#sortie-kml", tmp_path)
    assert name == "sorties-dock-a.kml" and text == api_plan(stack, {**body, "format": "kml"}).text

    # The gaps move (the Palacio's aircraft charges to 20 %: its reach grows). Planning the gaps now
    # gives another plan, but the download is still the plan on the map: the drawn route, point by point.
    service = stack.ctx.coverage
    assert service is not None
    stack.ctx.coverage = CoverageService(
        service.area, stack.bridge.fleet, docks=[replace(PALACIO, battery_pct=20.0), EAST, CLOSED]
    )
    try:
        moved = api_plan(stack, {**body, "format": "json"}).json()
        assert 0 < moved["totals"]["targets_covered"] < t["targets_covered"]
        assert moved["sorties"][0]["waypoints"] != api["sorties"][0]["waypoints"]
        name, text = download(page, "#sortie-summary button.download-qgc[data-sortie='1']", tmp_path)
    finally:
        stack.ctx.coverage = service
    items = json.loads(text)["mission"]["items"]
    drawn = api["sorties"][0]["waypoints"]  # take-off, a waypoint per point after the dock, land
    assert name == "sorties-dock-a-1.plan" and len(items) == len(drawn) + 1
    flown = [(i["params"][4], i["params"][5]) for i in items[1:-1]]
    assert flown == [(w["lat"], w["lon"]) for w in drawn[1:]]
    assert [i["params"][0] for i in items[1:-1]] == [w["loiter_s"] for w in drawn[1:]]

    # ----- "Borrar plan": routes, waypoints, crosses, dock and summary go -----
    page.locator("#sortie-clear").click()
    assert page.evaluate("window.serenazgo.sortieLayer.getLayers().length") == 0
    for sel in (ROUTES, WAYPOINTS, CROSSES, SORTIE_DOCK, "#sortie-summary *"):
        assert page.locator(sel).count() == 0, sel
    assert page.evaluate("window.serenazgo.sorties.plan") is None

    # ----- from the east edge: the gaps beyond its 1.5 km operating radius are too far -----
    assert plan_in_console(page, "dock-b") == "ok", page.locator("#sortie-message").inner_text()
    far_body = {**body, "dock_id": "dock-b"}
    far = api_plan(stack, {**far_body, "format": "json"}).json()
    assert page.evaluate("window.serenazgo.sorties.plan") == far
    beyond = [u for u in far["unreachable"] if u["reason"] == "beyond_operating_radius"]
    assert beyond and far["sorties"]
    assert page.locator(f'{CROSSES}[data-reason="beyond_operating_radius"]').count() == len(beyond)
    for u in beyond:  # pyproj: farther than the radius (the planner's local frame is within 0.2 %)
        assert GEOD.inv(EAST.lon, EAST.lat, u["lon"], u["lat"])[2] > SHORT_RADIUS_M * 0.998
    for s in far["sorties"]:
        for w in s["waypoints"]:
            if w["role"] == "target":
                assert GEOD.inv(EAST.lon, EAST.lat, w["lon"], w["lat"])[2] <= SHORT_RADIUS_M * 1.002
    assert page.locator(ROUTES).count() == len(far["sorties"])
    assert "Fuera del radio de operación de la base" in hover_tooltip(
        page, f'{CROSSES}[data-reason="beyond_operating_radius"]'
    )

    # Switching the card off clears the plan too.
    page.locator("#sorties-on").uncheck()
    assert page.locator(ROUTES).count() == 0 and page.locator(CROSSES).count() == 0
    assert page.locator("#sorties").get_attribute("data-state") == "off"
    assert page.errors == []  # type: ignore[attr-defined]


def test_refusals_are_shown_with_the_apis_words(sortie_stack: LiveStack, browser: Browser) -> None:
    stack = sortie_stack
    page = open_console(browser, stack.served.url)
    page.locator("#sorties-on").check()
    page.wait_for_function("document.querySelector('#sorties').dataset.docks === '3'")
    page.wait_for_function("document.querySelector('#sortie-altitude').max === '120'")
    page.locator("#sortie-layer").select_option("drones")
    page.locator("#coverage-minutes").select_option("4")
    assert plan_in_console(page, "dock-a") == "ok"
    assert page.locator(ROUTES).count() >= 1

    # Over the limit: refused in the card before asking, the drawn plan stays.
    page.locator("#sortie-altitude").fill("150")
    page.locator("#sortie-plan").click()
    assert page.locator("#sortie-message").inner_text() == "La altura máxima es 120 m (límite de vuelo)."
    assert page.locator(ROUTES).count() >= 1
    page.locator("#sortie-altitude").fill("100")

    # A zone over the Palacio's dock: the API refuses (422) and the card shows its message; no plan drawn.
    zone = Point(PALACIO.lon, PALACIO.lat).buffer(0.001)
    feature = {"type": "Feature", "id": "test-over-dock",
               "properties": {"name": "Evento en el Palacio", "kind": "event", "floor_m": 0},
               "geometry": zone.__geo_interface__}  # fmt: skip
    r = httpx.post(f"{stack.served.url}/api/v1/airspace", json=feature, headers=ADMIN, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 201, r.text
    refused = api_plan(stack, {"dock_id": "dock-a", "targets": "gaps", "minutes": 4, "layer": "drones"})
    assert refused.status_code == 422 and "inside restricted airspace" in refused.json()["detail"]
    assert plan_in_console(page, "dock-a") == "error"
    assert (
        page.locator("#sortie-message").inner_text() == f"No se pudo planificar: {refused.json()['detail']}"
    )
    assert page.locator(ROUTES).count() == 0 and page.locator("#sortie-summary *").count() == 0

    # The other dock still plans; then the coverage service goes away: the API no longer knows the
    # dock (it names the docks it knows) and the card says so.
    assert plan_in_console(page, "dock-b") == "ok"
    coverage = stack.ctx.coverage
    stack.ctx.coverage = None
    try:
        unknown = api_plan(stack, {"dock_id": "dock-b", "targets": "gaps", "minutes": 4, "layer": "drones"})
        assert unknown.status_code == 422
        assert plan_in_console(page, "dock-b") == "error"
        shown = page.locator("#sortie-message").inner_text()
        assert shown == f"No se pudo planificar: {unknown.json()['detail']}"
        assert page.locator(ROUTES).count() == 0
    finally:
        stack.ctx.coverage = coverage
    assert page.errors == []  # type: ignore[attr-defined]
