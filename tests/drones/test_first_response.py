"""Drone as first responder: docked drones pay the launch, a drone that cannot get back is not offered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pyproj import Geod

from drones.endurance import SquadronModel
from drones.first_response import DroneTiming
from geo.docks import DEFAULT_TAKEOFF_S, PROFILES, Dock
from tracker.dispatch import Dispatcher
from tracker.fleet import LiveFleet
from tracker.model import DroneTelemetry, Ping, Unit, UnitKind

NOW = datetime(2024, 5, 20, 15, 0, tzinfo=UTC)
GEOD = Geod(ellps="WGS84")
INCIDENT = (-12.1205, -77.0305)  # Parque Kennedy
M3TD = PROFILES["m3td"]  # 15 m/s, 50 min × 0.7 usable, 25 % reserve


def at(bearing_deg: float, metres: float, origin: tuple[float, float] = INCIDENT) -> tuple[float, float]:
    lon, lat, _ = GEOD.fwd(origin[1], origin[0], bearing_deg, metres)
    return lat, lon


def true_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    return float(GEOD.inv(a[1], a[0], b[1], b[0])[2])


def squadron() -> tuple[LiveFleet, SquadronModel, dict[str, tuple[float, float]]]:
    dock_a = at(0.0, 1500.0)  # 1.5 km north of the incident
    dock_b = at(180.0, 2500.0)
    places = {
        "docked": dock_a,  # in its dock, charged
        "flying": at(90.0, 1300.0),  # on patrol, 1.3 km east, plenty of battery
        "tired": at(270.0, 400.0),  # closest, but nearly flat: cannot hold and return
        "car": at(45.0, 300.0),
    }
    units = [
        Unit("docked", UnitKind.DRONE),
        Unit("flying", UnitKind.DRONE),
        Unit("tired", UnitKind.DRONE),
        Unit("car", UnitKind.PATROL_CAR),
    ]
    fixes = [Ping(u, NOW - timedelta(seconds=2), *p) for u, p in places.items()]
    home_b = {"home_lat": dock_b[0], "home_lon": dock_b[1]}
    telemetry = [
        DroneTelemetry("docked", NOW, docked=True, flight_mode="on_ground", battery_pct=100.0),
        DroneTelemetry("flying", NOW, flight_mode="mission", battery_pct=80.0, **home_b),
        DroneTelemetry("tired", NOW, flight_mode="mission", battery_pct=27.0, **home_b),
    ]
    fleet = LiveFleet()
    fleet.load(units, fixes, telemetry)
    docks = [
        Dock("dock-a", "A", *dock_a, M3TD, "m3td", aircraft_id="docked"),
        Dock("dock-b", "B", *dock_b, M3TD, "m3td"),
    ]
    return fleet, SquadronModel(PROFILES, "m3td", docks=docks), places


def test_drones_are_ranked_by_launch_plus_flight_and_flat_ones_are_not_offered() -> None:
    fleet, model, places = squadron()
    with Dispatcher(fleet, drone_timing=DroneTiming(model, fleet, hold_s=120.0)) as d:
        got = d.nearest(*INCIDENT, k=5, now=NOW)
    by_id = {c.unit_id: c for c in got}
    assert "tired" not in by_id  # 400 m away, but 27 % is barely above its 25 % reserve
    v = M3TD.cruise_mps
    docked_eta = DEFAULT_TAKEOFF_S + true_m(places["docked"], INCIDENT) / v  # 30 + 100 s
    flying_eta = true_m(places["flying"], INCIDENT) / v  # 86.7 s, already in the air
    assert by_id["docked"].eta_s == pytest.approx(docked_eta, rel=0.005)
    assert by_id["flying"].eta_s == pytest.approx(flying_eta, rel=0.005)
    # The farther airborne drone beats the nearer docked one; the car (300 m) ranks by its own model.
    order = [c.unit_id for c in got]
    assert order.index("flying") < order.index("docked")
    assert order == sorted(order, key=lambda u: by_id[u].eta_s)
    docked = by_id["docked"].drone
    assert docked is not None and docked["docked"] is True and docked["battery_checked"] is True
    # Mission: launch + out, hold 2 min, back to its dock (the same distance) + landing.
    need = docked_eta + 120.0 + true_m(places["docked"], INCIDENT) / v + DEFAULT_TAKEOFF_S
    assert docked["mission_s"] == pytest.approx(need, rel=0.005)
    usable = M3TD.usable_s * (1.0 - M3TD.reserve)  # a full charge above the reserve
    assert docked["spare_s"] == pytest.approx(usable - need, rel=0.005)
    assert by_id["car"].drone is None


def test_the_tired_drone_is_offered_once_the_hold_it_must_afford_is_short_enough() -> None:
    fleet, model, places = squadron()
    # 27 % of the usable endurance less the 25 % reserve: 2 % × 2,100 s = 42 s of flight above the reserve.
    usable = M3TD.usable_s * (0.27 - M3TD.reserve)
    v = M3TD.cruise_mps
    out = true_m(places["tired"], INCIDENT) / v
    back = true_m(INCIDENT, at(180.0, 2500.0)) / v + DEFAULT_TAKEOFF_S
    assert out + back > usable  # even with no hold it cannot come back: never offered
    with Dispatcher(fleet, drone_timing=DroneTiming(model, fleet, hold_s=0.0)) as d:
        assert "tired" not in [c.unit_id for c in d.nearest(*INCIDENT, k=5, now=NOW)]
    fleet.apply(telemetry=[DroneTelemetry("tired", NOW + timedelta(seconds=1), flight_mode="mission",
                                          battery_pct=60.0, home_lat=places["docked"][0],
                                          home_lon=places["docked"][1])])  # fmt: skip
    with Dispatcher(fleet, drone_timing=DroneTiming(model, fleet, hold_s=0.0)) as d:
        first = d.nearest(*INCIDENT, k=5, now=NOW)[0]
    assert first.unit_id == "tired"  # charged, it is the nearest airborne drone


def test_without_drone_timing_or_without_drones_in_the_query_nothing_changes() -> None:
    fleet, model, _ = squadron()
    with Dispatcher(fleet) as plain, Dispatcher(fleet, drone_timing=DroneTiming(model, fleet)) as timed:
        cars = [UnitKind.PATROL_CAR]
        assert timed.nearest(*INCIDENT, kinds=cars, now=NOW) == plain.nearest(*INCIDENT, kinds=cars, now=NOW)
        # Plain ranking offers every drone at its straight-line ETA, the flat one included.
        assert "tired" in [c.unit_id for c in plain.nearest(*INCIDENT, k=5, now=NOW)]
