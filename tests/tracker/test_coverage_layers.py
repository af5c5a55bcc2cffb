"""CoverageService's drone and combined layers over a LiveFleet (no servers): docks, airborne drones,
cameras; the dock/camera files and their settings."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import shapely

from geo.docks import PROFILES, Dock, dock_eta
from geo.viewsheds import seen_eta, viewshed_cover
from tracker.area_file import load_area
from tracker.config import DEFAULT_DISTRICTS_FILE, CoverageSettings, Settings
from tracker.coverage import CAMERA_UNIT, GROUND_KINDS, LAYER_KINDS, CoverageService
from tracker.coverage_files import DEMO_CAMERAS_FILE, DEMO_DOCKS_FILE, load_docks, load_viewsheds
from tracker.errors import ConfigError
from tracker.fleet import LiveFleet
from tracker.model import Ping, StatusUpdate, Unit, UnitKind, UnitStatus

MIRAFLORES = load_area(DEFAULT_DISTRICTS_FILE, "Miraflores")
NOW = datetime(2026, 5, 1, 15, 0, tzinfo=UTC)
PALACIO = (-12.1197, -77.0297)


def fleet_of(units: list[tuple[str, UnitKind, float, float, UnitStatus, float | None]]) -> LiveFleet:
    fleet = LiveFleet()
    fleet.load([Unit(u, k) for u, k, *_ in units], [])
    fleet.apply(
        [Ping(u, NOW, lat, lon, battery=b) for u, _, lat, lon, _, b in units],
        [(u, StatusUpdate(s, NOW)) for u, _, _, _, s, _ in units],
    )
    return fleet


UNITS = [
    ("car1", UnitKind.PATROL_CAR, -12.1211, -77.0297, UnitStatus.AVAILABLE, None),
    ("moto1", UnitKind.MOTORCYCLE, -12.1300, -77.0200, UnitStatus.AVAILABLE, None),
    ("dr-air", UnitKind.DRONE, -12.1150, -77.0450, UnitStatus.AVAILABLE, 80.0),  # flying
    ("dr-parked", UnitKind.DRONE, PALACIO[0] + 0.0002, PALACIO[1], UnitStatus.AVAILABLE, 90.0),  # on a dock
]


@pytest.fixture(scope="module")
def demo_docks() -> list[Dock]:
    return load_docks(DEMO_DOCKS_FILE)


def test_demo_files_load_and_lie_inside_miraflores(demo_docks: list[Dock]) -> None:
    assert [d.dock_id for d in demo_docks] == ["dock-palacio", "dock-costaverde", "dock-surquillo"]
    assert all(MIRAFLORES.contains(shapely.Point(d.lon, d.lat)) for d in demo_docks)
    views = load_viewsheds(DEMO_CAMERAS_FILE)
    assert views.size == 6 and MIRAFLORES.intersects(views.union)
    raw = json.loads(DEMO_CAMERAS_FILE.read_text(encoding="utf-8"))
    assert "DEMO" in raw["name"] and all(f["properties"]["demo"] for f in raw["features"])


def test_combined_is_the_elementwise_union_of_the_layers(demo_docks: list[Dock]) -> None:
    fleet = fleet_of(UNITS)
    views = load_viewsheds(DEMO_CAMERAS_FILE)
    service = CoverageService(MIRAFLORES, fleet, docks=demo_docks, viewsheds=views)
    t = 100.0
    ground = service.compute(t, LAYER_KINDS["ground"], 10, NOW)
    drones = service.compute(t, LAYER_KINDS["drones"], 10, NOW)
    combined = service.compute(t, LAYER_KINDS["combined"], 10, NOW, cameras=True)
    grid = service.grid(10)
    cover = viewshed_cover(grid, views)
    expect = np.minimum.reduce([ground.result.best_eta_s, drones.result.best_eta_s, seen_eta(cover)])
    np.testing.assert_array_equal(combined.result.best_eta_s, expect)
    assert np.all(combined.result.best_unit[cover.seen] == CAMERA_UNIT)
    w = grid.clipped_area_m2
    assert combined.result.covered_area_ratio == pytest.approx(float(w[np.isfinite(expect)].sum() / w.sum()))
    assert combined.result.covered_area_ratio > max(
        ground.result.covered_area_ratio, drones.result.covered_area_ratio
    )
    body = combined.to_json(service.model)
    assert body["model"]["viewsheds"]["included"] is True
    assert body["model"]["viewsheds"]["cells_seen"] == int(cover.seen.sum())
    assert (
        service.compute(t, LAYER_KINDS["combined"], 10, NOW).to_json(service.model)["model"]["viewsheds"][
            "included"
        ]
        is False
    )


def test_drone_layer_is_docks_plus_airborne_drones_not_on_a_dock(demo_docks: list[Dock]) -> None:
    fleet = fleet_of(UNITS)
    service = CoverageService(MIRAFLORES, fleet, docks=demo_docks)
    t = 90.0
    answer = service.compute(t, LAYER_KINDS["drones"], 10, NOW)
    grid = service.grid(10)
    d_eta, _ = dock_eta(grid, demo_docks, t)
    # Only the flying drone counts where it is (the parked one counts through its dock).
    air = CoverageService(MIRAFLORES, fleet_of([UNITS[2]])).compute(t, LAYER_KINDS["drones"], 10, NOW)
    np.testing.assert_array_equal(answer.result.best_eta_s, np.minimum(d_eta, air.result.best_eta_s))
    assert answer.units == 1
    docks = {d["id"]: d for d in answer.to_json(service.model)["model"]["docks"]}
    assert docks["dock-palacio"]["reach_m"] == pytest.approx(15.0 * (t - 30.0))
    assert docks["dock-palacio"]["limit"] == "time" and docks["dock-palacio"]["reserve"] == 0.25
    # The ground layer ignores the docks.
    assert service.compute(t, LAYER_KINDS["ground"], 10, NOW).docks == ()
    # Without docks the parked drone counts like any other.
    plain = CoverageService(MIRAFLORES, fleet).compute(t, LAYER_KINDS["drones"], 10, NOW)
    assert plain.units == 2


def test_a_dock_follows_its_tracked_aircraft() -> None:
    dock = Dock("d1", "Palacio", *PALACIO, PROFILES["m3td"], aircraft_id="dr-1")
    t = 300.0

    def answer(status: UnitStatus, lat: float, lon: float, battery: float | None) -> tuple[float, str, int]:
        fleet = fleet_of([("dr-1", UnitKind.DRONE, lat, lon, status, battery)])
        a = CoverageService(MIRAFLORES, fleet, docks=[dock]).compute(t, (UnitKind.DRONE,), 10, NOW)
        (d,) = a.to_json(CoverageService(MIRAFLORES, fleet).model)["model"]["docks"]
        return a.result.covered_area_ratio, d["limit"], a.units

    full, limit, units = answer(UnitStatus.AVAILABLE, *PALACIO, None)
    assert limit == "time" and units == 0 and full > 0.5
    # On the dock with 10 %: 210 s × 0.75 = 157.5 s; (157.5 - 60) / 2 × 15 = 731 m
    low, limit, _ = answer(UnitStatus.AVAILABLE, *PALACIO, 10.0)
    assert limit == "energy" and 0 < low < full
    # Busy on an incident: the dock is empty.
    busy, limit, units = answer(UnitStatus.DISPATCHED, *PALACIO, 90.0)
    assert (busy, limit, units) == (0.0, "out_of_service", 0)
    # Away from the dock and available: the drone counts where it flies, the dock covers nothing.
    away, limit, units = answer(UnitStatus.AVAILABLE, -12.13, -77.02, 90.0)
    assert limit == "out_of_service" and units == 1 and away > 0
    # Its fix lost: the dock cannot count on it.
    fleet = LiveFleet()
    fleet.load([Unit("dr-1", UnitKind.DRONE)], [])
    fleet.apply(
        [Ping("dr-1", NOW - timedelta(hours=2), *PALACIO)],
        [("dr-1", StatusUpdate(UnitStatus.AVAILABLE, NOW))],
    )
    lost = CoverageService(MIRAFLORES, fleet, docks=[dock]).compute(t, (UnitKind.DRONE,), 10, NOW)
    assert lost.result.covered_area_ratio == 0.0


def write(tmp_path: Path, obj: object, name: str = "f.geojson") -> Path:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return p


def test_file_errors_name_the_file_the_feature_and_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found: fix SERENAZGO_COVERAGE__DOCKS"):
        load_docks(tmp_path / "none.geojson")
    with pytest.raises(ConfigError, match=r"is not readable GeoJSON .*: fix SERENAZGO_COVERAGE__CAMERAS"):
        load_viewsheds(write(tmp_path, "{not json"))
    point = {"type": "Point", "coordinates": [-77.0, -12.1]}
    bad = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {"id": "d1", "profile": "m9"}, "geometry": point}],
    }
    with pytest.raises(ConfigError) as err:
        load_docks(write(tmp_path, bad))
    assert "feature 0 (dock 'd1'): unknown aircraft profile 'm9'" in str(err.value)
    assert "SERENAZGO_COVERAGE__DOCKS" in str(err.value)
    with pytest.raises(ConfigError, match=r"feature 0 .*a viewshed must be a Polygon"):
        load_viewsheds(write(tmp_path, bad))


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SERENAZGO_COVERAGE__DOCKS", str(DEMO_DOCKS_FILE))
    monkeypatch.setenv("SERENAZGO_COVERAGE__CAMERAS", str(DEMO_CAMERAS_FILE))
    monkeypatch.setenv("SERENAZGO_COVERAGE__RESERVE", "0.3")
    monkeypatch.setenv("SERENAZGO_COVERAGE__TAKEOFF_S", "45")
    monkeypatch.setenv("SERENAZGO_COVERAGE__AIRCRAFT__M3TD__CRUISE_MPS", "12")
    monkeypatch.setenv("SERENAZGO_COVERAGE__AIRCRAFT__LOCAL__NAME", "Local quad")
    monkeypatch.setenv("SERENAZGO_COVERAGE__AIRCRAFT__LOCAL__CRUISE_MPS", "10")
    monkeypatch.setenv("SERENAZGO_COVERAGE__AIRCRAFT__LOCAL__MAX_FLIGHT_S", "1500")
    cs = Settings().coverage
    assert (cs.docks, cs.cameras, cs.takeoff_s) == (DEMO_DOCKS_FILE, DEMO_CAMERAS_FILE, 45.0)
    prof = cs.profiles()
    assert (prof["m3td"].cruise_mps, prof["m3td"].max_flight_s, prof["m3td"].reserve) == (12.0, 3000.0, 0.3)
    assert prof["m4td"] == replace(PROFILES["m4td"], reserve=0.3)
    assert (prof["local"].cruise_mps, prof["local"].derating) == (10.0, 0.7)
    docks = load_docks(DEMO_DOCKS_FILE, cs)
    assert docks[0].profile.cruise_mps == 12.0
    with pytest.raises(ValueError, match="default_profile 'nope' is not in the aircraft table"):
        CoverageSettings(default_profile="nope")


def test_layer_kinds_are_unchanged() -> None:
    assert LAYER_KINDS["combined"] == (*GROUND_KINDS, UnitKind.DRONE)
