"""``/api/v1/coverage`` with the demo drone docks and camera viewsheds of Miraflores: the drone layer
against Shapely buffers in UTM 18S, the combined layer against the layers taken apart, and the model
section; and which files ``serenazgo up`` (demo or not) reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.app import create_app
from api.context import ApiContext
from api.runtime import Runtime, UpOptions
from tests.api.test_coverage_api import MIRAFLORES, fleet_with, shapely_ratio
from tracker.config import CoverageSettings, Settings
from tracker.coverage import CoverageService
from tracker.coverage_files import DEMO_CAMERAS_FILE, DEMO_DOCKS_FILE, load_docks, load_viewsheds
from tracker.errors import ConfigError
from tracker.fleet import LiveFleet
from tracker.model import UnitKind, UnitStatus
from tracker.registry import UnitRegistry

DOCKS = load_docks(DEMO_DOCKS_FILE)
CAMERAS = load_viewsheds(DEMO_CAMERAS_FILE)


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[LiveFleet], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(fleet: LiveFleet) -> httpx.AsyncClient:
        ctx = ApiContext(settings=Settings(), conninfo="", registry=UnitRegistry(), fleet=fleet)
        ctx.coverage = CoverageService(MIRAFLORES, fleet, docks=DOCKS, viewsheds=CAMERAS)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://t")
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.aclose()


async def test_drone_layer_reaches_from_the_docks_as_shapely_buffers_do(client_for) -> None:
    client = client_for(fleet_with([], datetime.now(UTC)))
    r = await client.get("/api/v1/coverage", params={"minutes": 1.5, "layer": "drones"})
    assert r.status_code == 200, r.text
    body = r.json()
    reach = 15.0 * (90.0 - 30.0)  # cruise 15 m/s for 90 s less the 30 s take-off: time-limited, 900 m
    docks = body["model"]["docks"]
    assert [d["id"] for d in docks] == ["dock-palacio", "dock-costaverde", "dock-surquillo"]
    for d in docks:
        assert (d["reach_m"], d["limit"], d["reserve"], d["hold_s"]) == (reach, "time", 0.25, 0.0)
        assert d["profile"] in ("m3td", "m4td") and d["aircraft"].startswith("DJI Matrice")
    assert body["model"]["viewsheds"]["included"] is False
    want = shapely_ratio([(d["lat"], d["lon"]) for d in docks], reach)
    assert 0.1 < want < 0.95
    assert body["covered_area_ratio"] == pytest.approx(want, abs=0.01)


async def test_combined_layer_adds_ground_drones_and_cameras(client_for) -> None:
    now = datetime.now(UTC)
    cars = [
        ("car1", UnitKind.PATROL_CAR, -12.1085, -77.0480, UnitStatus.AVAILABLE),
        ("car2", UnitKind.PATROL_CAR, -12.1330, -77.0260, UnitStatus.AVAILABLE),
    ]
    client = client_for(fleet_with(cars, now))
    params = {"minutes": 1.5, "cells": "true"}
    layers = {
        layer: (await client.get("/api/v1/coverage", params={**params, "layer": layer})).json()
        for layer in ("ground", "drones", "combined")
    }
    combined = layers["combined"]
    assert combined["model"]["viewsheds"]["included"] is True
    assert combined["model"]["viewsheds"]["cameras"] == 6
    seen = combined["model"]["viewsheds"]["cells_seen"]
    assert seen > 0

    def eta(body: dict[str, object]) -> np.ndarray:
        cells = body["cell_eta_s"]
        assert isinstance(cells, list)
        return np.array([np.inf if c["eta_s"] is None else c["eta_s"] for c in cells])

    ground, drones, both = eta(layers["ground"]), eta(layers["drones"]), eta(combined)
    # Reached in the combined layer: reached by the ground or the drone layer, or seen by a camera.
    assert int((both == 0.0).sum()) >= seen
    reached = np.isfinite(ground) | np.isfinite(drones)
    assert np.all(np.isfinite(both)[reached])
    assert int((np.isfinite(both) & ~reached).sum()) <= seen
    np.testing.assert_allclose(both[reached & (both > 0)], np.minimum(ground, drones)[reached & (both > 0)])
    assert combined["covered_area_ratio"] > max(layers["ground"]["covered_area_ratio"],
                                                layers["drones"]["covered_area_ratio"])  # fmt: skip
    assert layers["ground"]["model"]["docks"] == []


def test_runtime_reads_the_demo_files_only_for_the_miraflores_demo(tmp_path: Path) -> None:
    assert Runtime(Settings(), UpOptions(demo=True)).coverage_files() == (DEMO_DOCKS_FILE, DEMO_CAMERAS_FILE)
    assert Runtime(Settings(), UpOptions(demo=True, district="miraflores")).coverage_files() == (
        DEMO_DOCKS_FILE,
        DEMO_CAMERAS_FILE,
    )
    assert Runtime(Settings(), UpOptions(demo=True, district="Barranco")).coverage_files() == (None, None)
    assert Runtime(Settings(), UpOptions()).coverage_files() == (None, None)
    mine = tmp_path / "docks.geojson"
    own = Settings(coverage=CoverageSettings(docks=mine))
    assert Runtime(own, UpOptions(demo=True)).coverage_files() == (mine, DEMO_CAMERAS_FILE)
    assert Runtime(own, UpOptions()).coverage_files() == (mine, None)


def test_a_bad_docks_file_stops_the_start_with_its_reason(tmp_path: Path) -> None:
    bad = tmp_path / "docks.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": []}', encoding="utf-8")
    runtime = Runtime(Settings(coverage=CoverageSettings(docks=bad)), UpOptions())
    with pytest.raises(ConfigError, match=r"holds no dock features .*SERENAZGO_COVERAGE__DOCKS"):
        runtime._load_coverage_files()
    runtime = Runtime(Settings(), UpOptions(demo=True))
    runtime._load_coverage_files()
    assert len(runtime._docks) == 3 and runtime._viewsheds is not None
