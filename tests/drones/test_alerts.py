"""Drone alerts (no I/O) on scripted flights through a real LiveFleet: return required, below reserve,
telemetry lost, altitude exceeded, each once per episode and re-armed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pyproj import Geod

from drones.alerts import DroneAlerts, squadron_model
from drones.endurance import SquadronModel
from geo.docks import PROFILES, Dock
from tracker.config import DroneSettings, Settings
from tracker.errors import ConfigError
from tracker.events import Event, EventType
from tracker.fleet import LiveFleet
from tracker.model import DroneTelemetry, Ping, Unit, UnitKind

GEOD = Geod(ellps="WGS84")
T0 = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
DOCK = Dock(
    "dock-palacio", "Palacio", -12.1197, -77.0297, PROFILES["m3td"], profile_key="m3td", aircraft_id="dr-1"
)
PROFILE = PROFILES["m3td"]  # 2100 s usable, reserve 25 %, 15 m/s
LANDING_S = 30.0
STEP_S = 2  # DJI Cloud API OSD: 0.5 Hz
AZIMUTH = 60.0  # outbound heading, degrees from north


def along(dist_m: float) -> tuple[float, float]:
    """(lat, lon) ``dist_m`` out from the dock along the outbound heading (pyproj's forward geodesic)."""
    lon, lat, _ = GEOD.fwd(DOCK.lon, DOCK.lat, AZIMUTH, dist_m)
    return lat, lon


class Rig:
    """A LiveFleet with one drone and the alerts fed from its real changes."""

    def __init__(self, settings: DroneSettings | None = None, uid: str = "dr-1") -> None:
        self.uid = uid
        self.fleet = LiveFleet()
        self.fleet.load([Unit(uid, UnitKind.DRONE)], [])
        self.settings = settings or DroneSettings()
        self.alerts = DroneAlerts(self.settings, SquadronModel(PROFILES, "m3td", {}, [DOCK], LANDING_S))

    def report(self, t: float, dist_m: float | None = None, **tel: object) -> list[Event]:
        """Telemetry (and a fix ``dist_m`` out, if given) at T0 + t, as one ingest batch."""
        ts = T0 + timedelta(seconds=t)
        pings = [] if dist_m is None else [Ping(self.uid, ts, *along(dist_m))]
        report = DroneTelemetry(self.uid, ts, **tel)  # type: ignore[arg-type]
        return self.alerts.on_changes(self.fleet.apply(pings=pings, telemetry=[report]))

    def sweep(self, t: float) -> list[Event]:
        return self.alerts.sweep(self.fleet.snapshot(), T0 + timedelta(seconds=t))


def types(events: list[Event]) -> list[str]:
    return [str(e.type) for e in events]


def battery_at(t: float) -> float:
    """Battery % after t s of flight, draining at the profile's rate (a full charge lasts usable_s)."""
    return 100.0 - 100.0 * t / PROFILE.usable_s


def truth_margin_s(t: float) -> float:
    """If the aircraft turned back at t: seconds of charge above the reserve it would land with.

    Independent of the model: the distance out is cruise × t by construction (positions placed with
    pyproj's forward geodesic), the way back costs that distance at cruise plus the landing, and
    the battery drains at the profile's rate.
    """
    dist_m = PROFILE.cruise_mps * t
    back_s = dist_m / PROFILE.cruise_mps + LANDING_S
    landing_pct = battery_at(t) - 100.0 * back_s / PROFILE.usable_s
    return (landing_pct - 100.0 * PROFILE.reserve) / 100.0 * PROFILE.usable_s


def test_return_required_fires_once_where_the_return_becomes_barely_possible() -> None:
    rig = Rig()
    threshold = rig.settings.return_margin_s
    fired: list[tuple[int, Event]] = []
    steps = list(range(0, 1700, STEP_S))
    for t in steps:
        events = rig.report(t, PROFILE.cruise_mps * t, battery_pct=battery_at(t), flight_mode="mission")
        fired += [(t, e) for e in events]
    expected = next(t for t in steps if truth_margin_s(t) <= threshold)
    # By hand: margin(t) = 2100 × 0.75 - t - (t + 30) = 1545 - 2t <= 60 from t = 742.5 s: the step at 744 s.
    assert expected == 744
    assert truth_margin_s(expected - STEP_S) > threshold >= truth_margin_s(expected) > 0  # still possible
    returns = [(t, e) for t, e in fired if e.type == EventType.DRONE_RETURN_REQUIRED]
    assert [t for t, _ in returns] == [expected]
    event = returns[0][1]
    assert event.ts == T0 + timedelta(seconds=expected)
    assert event.detail["margin_s"] == pytest.approx(truth_margin_s(expected), abs=0.05)
    assert event.detail["distance_home_m"] == pytest.approx(PROFILE.cruise_mps * expected, abs=0.05)
    assert event.detail["home_source"] == "dock" and event.detail["profile"] == "m3td"
    # Below the reserve (25 %) from the first step past 1575 s: once too, long after the return alert.
    below = [t for t, e in fired if e.type == EventType.DRONE_BELOW_RESERVE]
    assert below == [1576]
    assert rig.alerts.active("dr-1") == ["drone_below_reserve", "drone_return_required"]


def test_the_alerts_rearm_after_landing_and_fire_again_on_the_next_sortie() -> None:
    rig = Rig()
    t = 0
    for t in range(0, 800, STEP_S):
        rig.report(t, PROFILE.cruise_mps * t, battery_pct=battery_at(t), flight_mode="mission")
    assert rig.alerts.active("dr-1") == ["drone_return_required"]
    # Flying home at cruise keeps the margin about constant: no new alert on the way back.
    out = PROFILE.cruise_mps * t
    events: list[Event] = []
    for k in range(1, 100):
        dist = max(out - PROFILE.cruise_mps * STEP_S * k, 0.0)
        tt = t + STEP_S * k
        events += rig.report(tt, dist, battery_pct=battery_at(tt), flight_mode="returning_home")
    assert events == []
    # Docked and recharged: re-armed, silently.
    assert rig.report(t + 400, 0.0, battery_pct=30.0, flight_mode="on_ground", docked=True) == []
    assert rig.alerts.active("dr-1") == []
    # The next sortie starts at 100 % (time restarts at 2000 s): the alert fires again at its own step.
    fired = []
    for s in range(0, 800, STEP_S):
        events = rig.report(
            2000 + s, PROFILE.cruise_mps * s, battery_pct=battery_at(s), flight_mode="mission"
        )
        fired += [s for e in events if e.type == EventType.DRONE_RETURN_REQUIRED]
    assert fired == [744]


def test_a_margin_that_recovers_past_the_band_rearms_and_unknown_margins_change_nothing() -> None:
    rig = Rig(DroneSettings(return_margin_s=60, return_rearm_s=60))

    # Hovering 1 km out: margin = 2100 × (p - 0.25) - (66.7 + 30).
    def at_pct(t: float, pct: float) -> list[str]:
        return types(rig.report(t, 1000.0, battery_pct=pct, flight_mode="hovering"))

    def pct_for(margin: float) -> float:
        return 100.0 * ((margin + 1000.0 / 15.0 + LANDING_S) / PROFILE.usable_s + PROFILE.reserve)

    assert at_pct(0, pct_for(61)) == []
    assert at_pct(2, pct_for(59)) == ["drone_return_required"]
    assert at_pct(4, pct_for(115)) == []  # within the band: not re-armed
    assert at_pct(6, pct_for(59)) == []
    assert types(rig.report(8, None, flight_mode="hovering")) == []  # no battery: no decision
    assert at_pct(10, pct_for(125)) == []  # above 60 + 60: re-armed
    assert at_pct(12, pct_for(50)) == ["drone_return_required"]


def test_a_drone_with_no_home_gets_no_return_alert_but_still_the_reserve_one() -> None:
    rig = Rig(uid="dr-9")  # not under any dock, no home point in its telemetry
    assert types(rig.report(0, 500.0, battery_pct=20.0, flight_mode="mission")) == ["drone_below_reserve"]
    assert types(rig.report(2, 500.0, battery_pct=21.0, flight_mode="mission")) == []
    assert types(rig.report(4, 500.0, battery_pct=29.0, flight_mode="mission")) == []  # 25 + 5 re-arms at 30
    assert types(rig.report(6, 500.0, battery_pct=24.0, flight_mode="mission")) == []
    assert types(rig.report(8, 500.0, battery_pct=30.0, flight_mode="mission")) == []
    assert types(rig.report(10, 500.0, battery_pct=24.0, flight_mode="mission")) == ["drone_below_reserve"]
    # On the ground below the reserve (charging in its dock) is no alert.
    rig2 = Rig()
    assert rig2.report(0, 0.0, battery_pct=10.0, flight_mode="on_ground", docked=True) == []


def test_telemetry_lost_only_when_airborne_and_after_the_threshold() -> None:
    rig = Rig(DroneSettings(telemetry_lost_s=30))
    rig.report(0, 800.0, battery_pct=80.0, flight_mode="mission")
    assert rig.sweep(30) == []  # exactly 30 s old: not yet
    lost = rig.sweep(31)
    assert types(lost) == ["drone_telemetry_lost"]
    assert lost[0].ts == T0 + timedelta(seconds=31)
    assert lost[0].detail["age_s"] == 31.0 and lost[0].detail["flight_mode"] == "mission"
    assert rig.sweep(60) == [] and rig.sweep(600) == []  # once per episode
    # Reports come back: re-armed by the next sweep; a new silence fires again.
    rig.report(700, 900.0, battery_pct=70.0, flight_mode="mission")
    assert rig.sweep(701) == []
    assert types(rig.sweep(731)) == ["drone_telemetry_lost"]
    # Telemetry fresh but the position old (no fix for 40 s) is lost too.
    rig.report(740, 900.0, battery_pct=70.0, flight_mode="mission")
    assert rig.sweep(741) == []
    rig.report(780, None, battery_pct=69.0, flight_mode="mission")
    assert types(rig.sweep(781)) == ["drone_telemetry_lost"]


def test_a_drone_on_the_ground_or_docked_is_never_lost() -> None:
    for tel in ({"flight_mode": "on_ground"}, {"docked": True, "flight_mode": "mission"}):
        rig = Rig()
        rig.report(0, 0.0, battery_pct=100.0, **tel)
        assert rig.sweep(3600) == []


def test_altitude_exceeded_fires_once_and_rearms_below_the_band() -> None:
    rig = Rig(DroneSettings(altitude_limit_m=120, altitude_rearm_m=10))
    alts = [100, 119, 120, 121, 125, 118, 111, 121, 110, 121, 130]
    fired = []
    for i, alt in enumerate(alts):
        for e in rig.report(2 * i, 500.0, battery_pct=90.0, alt_takeoff_m=float(alt), flight_mode="mission"):
            assert e.type == EventType.DRONE_ALTITUDE_EXCEEDED
            fired.append(alt)
            assert e.detail["limit_m"] == 120
    # 121 fires; 125, 118, 111 and 121 do not (not 10 m below yet); 110 re-arms; 121 fires again.
    assert fired == [121, 121]


def test_conditions_true_at_start_are_adopted_silently() -> None:
    fleet = LiveFleet()
    fleet.load([Unit("dr-1", UnitKind.DRONE)], [])
    fleet.apply(
        pings=[Ping("dr-1", T0, *along(9000.0))],
        telemetry=[DroneTelemetry("dr-1", T0, battery_pct=20.0, alt_takeoff_m=150.0, flight_mode="mission")],
    )
    alerts = DroneAlerts(DroneSettings(), SquadronModel(PROFILES, "m3td", {}, [DOCK], LANDING_S))
    alerts.seed(fleet.snapshot(), T0 + timedelta(seconds=120))
    assert alerts.active("dr-1") == sorted(
        ["drone_return_required", "drone_below_reserve", "drone_altitude_exceeded", "drone_telemetry_lost"]
    )
    assert alerts.sweep(fleet.snapshot(), T0 + timedelta(seconds=200)) == []
    nxt = fleet.apply(
        pings=[Ping("dr-1", T0 + timedelta(seconds=2), *along(9000.0))],
        telemetry=[DroneTelemetry("dr-1", T0 + timedelta(seconds=2), battery_pct=19.0, alt_takeoff_m=151.0)],
    )
    assert alerts.on_changes(nxt) == []


def test_settings_with_an_unknown_profile_are_refused_with_the_setting_to_fix() -> None:
    with pytest.raises(ConfigError, match="SERENAZGO_DRONES__PROFILES"):
        squadron_model(Settings(drones=DroneSettings(profiles={"dr-1": "m99"})))
    model = squadron_model(Settings(drones=DroneSettings(profiles={"dr-1": "m3e"})), [DOCK])
    assert model.profile_for("dr-1")[0] == "m3e" and model.landing_s == 30.0


def test_a_launch_after_a_long_docked_rest_gets_time_to_report_a_fix() -> None:
    rig = Rig(DroneSettings(telemetry_lost_s=30))
    # Last fix from the previous flight, an hour ago; then docked (DJI: no fix while docked).
    rig.report(0, 0.0, battery_pct=100.0, flight_mode="on_ground", docked=True)
    rig.report(3600, None, battery_pct=100.0, flight_mode="taking_off", docked=False)
    assert rig.sweep(3605) == []  # the hour-old fix does not make a fresh launch lost
    rig.report(3620, None, battery_pct=99.0, flight_mode="mission")
    assert rig.sweep(3625) == []
    # Still no fix 31 s after take-off while the telemetry keeps coming: the position is lost.
    rig.report(3630, None, battery_pct=99.0, flight_mode="mission")
    assert types(rig.sweep(3631)) == ["drone_telemetry_lost"]


def test_no_return_alert_for_an_aircraft_already_heading_home() -> None:
    rig = Rig()
    # 9 km out at 40 %: margin = 2100 × 0.15 - (600 + 30) < 0.
    assert types(rig.report(0, 9000.0, battery_pct=40.0, flight_mode="returning_home")) == []
    assert types(rig.report(2, 8970.0, battery_pct=40.0, flight_mode="landing")) == []
    assert types(rig.report(4, 8940.0, battery_pct=40.0, flight_mode="mission")) == ["drone_return_required"]
