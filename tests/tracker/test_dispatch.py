"""tracker.dispatch.Dispatcher: the LiveFleet mirrored into the LiveIndex, nearest units by ETA."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pyproj import Geod

from geo.codes import KIND_NAMES, STATUS_NAMES
from geo.eta import DEFAULT_CIRCUITY, DEFAULT_SPEED_MPS
from tracker.config import EtaSettings
from tracker.dispatch import Candidate, Dispatcher
from tracker.fleet import LiveFleet
from tracker.freshness import FreshnessThresholds
from tracker.model import Freshness, Ping, StatusUpdate, Unit, UnitKind, UnitStatus

NOW = datetime(2024, 5, 20, 15, 0, tzinfo=UTC)
GEOD = Geod(ellps="WGS84")
INCIDENT = (-12.1205, -77.0305)  # Parque Kennedy, Miraflores


def test_geo_code_tables_match_the_domain_enums() -> None:
    assert tuple(k.value for k in UnitKind) == KIND_NAMES
    assert tuple(s.value for s in UnitStatus) == STATUS_NAMES


def test_eta_settings_defaults_are_the_documented_geo_defaults() -> None:
    eta = EtaSettings()
    assert {k.value: v for k, v in eta.speed_mps.items()} == DEFAULT_SPEED_MPS
    assert {k.value: v for k, v in eta.circuity.items()} == DEFAULT_CIRCUITY


def fleet_with(*rows: tuple[Unit, tuple[float, float] | None, float]) -> LiveFleet:
    """A fleet of (unit, position or None, fix age in seconds)."""
    fleet = LiveFleet()
    units = [u for u, _, _ in rows]
    fixes = [Ping(u.unit_id, NOW - timedelta(seconds=age), p[0], p[1]) for u, p, age in rows if p is not None]
    fleet.load(units, fixes)
    return fleet


def miraflores() -> LiveFleet:
    return fleet_with(
        (
            Unit("car-1", UnitKind.PATROL_CAR, "Alfa 1", "norte", frozenset({"first_aid"})),
            (-12.1190, -77.0290),
            5,
        ),
        (Unit("moto-1", UnitKind.MOTORCYCLE, "Moto 1", "sur"), (-12.1300, -77.0300), 5),
        (Unit("foot-1", UnitKind.FOOT, "Sereno 1", "norte"), (-12.1207, -77.0307), 5),
        (Unit("foot-stale", UnitKind.FOOT, "Sereno 2"), (-12.1206, -77.0306), 300),
        (Unit("drone-lost", UnitKind.DRONE, "Dron 1"), (-12.1205, -77.0305), 120),
        (Unit("no-fix", UnitKind.FOOT), None, 0),
        (Unit("inactive", UnitKind.PATROL_CAR, active=False), (-12.1205, -77.0305), 1),
    )


def test_candidates_are_ranked_by_eta_with_stale_after_live_and_lost_left_out() -> None:
    with Dispatcher(miraflores()) as d:
        got = d.nearest(*INCIDENT, now=NOW)
        assert [c.unit_id for c in got] == ["foot-1", "car-1", "moto-1", "foot-stale"]
        assert [c.freshness for c in got] == [Freshness.LIVE] * 3 + [Freshness.STALE]
        assert got[1].callsign == "Alfa 1" and got[1].kind is UnitKind.PATROL_CAR
        assert got[1].fix_age_s == pytest.approx(5.0)
        for c in got:
            _, _, true_m = GEOD.inv(INCIDENT[1], INCIDENT[0], c.lon, c.lat)
            assert c.distance_m == pytest.approx(true_m, rel=0.006)
            speed = EtaSettings().speed_mps[c.kind]
            assert c.eta_s == pytest.approx(c.distance_m * EtaSettings().circuity[c.kind] / speed)
        assert len(d) == 5  # units with a fix, active


def test_filters_kinds_capabilities_sector_age_and_status() -> None:
    with Dispatcher(miraflores()) as d:
        ids = lambda **kw: [c.unit_id for c in d.nearest(*INCIDENT, now=NOW, **kw)]  # noqa: E731
        assert ids(kinds=[UnitKind.PATROL_CAR, UnitKind.MOTORCYCLE]) == ["car-1", "moto-1"]
        assert ids(capabilities=["first_aid"]) == ["car-1"]
        assert ids(capabilities=["k9"]) == []  # nobody has it
        assert ids(sector="norte") == ["foot-1", "car-1"]
        assert ids(sector="nowhere") == []
        assert ids(max_age_s=60) == ["foot-1", "car-1", "moto-1"]
        assert ids(statuses=[UnitStatus.DISPATCHED]) == []
        assert ids(k=1) == ["foot-1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"lat": 91.0, "lon": 0.0}, "lat must be in"),
        ({"lat": 0.0, "lon": -181.0}, "lon must be in"),
        ({"lat": float("nan"), "lon": 0.0}, "lat must be in"),
        ({"lat": 0.0, "lon": 0.0, "k": 0}, "k must be"),
        ({"lat": 0.0, "lon": 0.0, "kinds": ["horse"]}, "unknown kind 'horse'"),
        ({"lat": 0.0, "lon": 0.0, "max_age_s": -1.0}, "max_age_s must be"),
    ],
)
def test_bad_arguments_raise_value_error_with_a_reason(args: dict[str, object], message: str) -> None:
    with Dispatcher(LiveFleet()) as d, pytest.raises(ValueError, match=message):
        d.nearest(**args)  # type: ignore[arg-type]


def test_follows_moves_status_changes_new_and_retired_units_until_closed() -> None:
    fleet = miraflores()
    d = Dispatcher(fleet)
    # foot-1 walks away; car-1 is dispatched; a new drone appears right there.
    fleet.apply(pings=[Ping("foot-1", NOW, -12.1400, -77.0300)])
    fleet.apply(statuses=[("car-1", StatusUpdate(UnitStatus.DISPATCHED, NOW))])
    fleet.upsert_unit(Unit("drone-2", UnitKind.DRONE, "Dron 2"))
    fleet.apply(pings=[Ping("drone-2", NOW, -12.1215, -77.0305)])
    got = [c.unit_id for c in d.nearest(*INCIDENT, now=NOW)]
    assert got[0] == "drone-2" and "car-1" not in got
    assert [c.unit_id for c in d.nearest(*INCIDENT, now=NOW, statuses=[UnitStatus.DISPATCHED])] == ["car-1"]
    # A unit retired from service disappears; a changed description (kind) is followed.
    fleet.upsert_unit(Unit("drone-2", UnitKind.DRONE, active=False))
    fleet.upsert_unit(Unit("moto-1", UnitKind.BICYCLE, "Bici 1", "sur"))
    got = d.nearest(*INCIDENT, now=NOW)
    assert "drone-2" not in [c.unit_id for c in got]
    assert next(c for c in got if c.unit_id == "moto-1").kind is UnitKind.BICYCLE
    d.close()
    fleet.apply(pings=[Ping("foot-1", NOW + timedelta(seconds=1), -12.1205, -77.0305)])
    foot = next(c for c in d.nearest(*INCIDENT, now=NOW) if c.unit_id == "foot-1")
    assert foot.lat == -12.1400  # no longer followed: still where it was
    d.close()  # idempotent


def test_custom_eta_settings_and_thresholds() -> None:
    fleet = miraflores()
    slow_cars = EtaSettings(speed_mps={UnitKind.PATROL_CAR: 0.1})
    strict = {UnitKind.FOOT: FreshnessThresholds(1.0, 10.0)}
    with Dispatcher(fleet, eta=slow_cars, thresholds=strict) as d:
        got = [c.unit_id for c in d.nearest(*INCIDENT, now=NOW)]
        # Cars crawl; foot units are stale after 1 s and lost after 10 s.
        assert got == ["moto-1", "car-1", "foot-1"]
        info = d.model_info()
        assert info["kinds"]["patrol_car"]["speed_mps"] == 0.1
        assert info["kinds"]["foot"]["lost_after_s"] == 10.0
        assert info["kinds"]["drone"]["circuity"] == 1.0


def test_matches_brute_force_over_a_random_fleet_through_live_fleet() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    kinds = list(UnitKind)
    statuses = list(UnitStatus)
    units = [
        Unit(f"u{i:04d}", kinds[int(rng.integers(0, 5))], status=statuses[int(rng.integers(0, 5))])
        for i in range(n)
    ]
    lat = rng.uniform(-12.25, -11.75, n)
    lon = rng.uniform(-77.2, -76.8, n)
    ages = rng.uniform(0, 700, n)
    fleet = LiveFleet()
    fleet.load(units, [Ping(u.unit_id, NOW - timedelta(seconds=float(a)), float(la), float(lo))
                       for u, la, lo, a in zip(units, lat, lon, ages, strict=True)])  # fmt: skip
    eta = EtaSettings()
    with Dispatcher(fleet) as d:
        for _ in range(100):
            q = (float(rng.uniform(-12.25, -11.75)), float(rng.uniform(-77.2, -76.8)))
            got = d.nearest(*q, k=7, now=NOW)
            ranked = []
            for state in fleet.snapshot():
                fresh = fleet.freshness(state, NOW)
                if state.status is not UnitStatus.AVAILABLE or fresh is Freshness.LOST or state.fix is None:
                    continue
                _, _, m = GEOD.inv(q[1], q[0], state.fix.lon, state.fix.lat)
                t = m * eta.circuity[state.unit.kind] / eta.speed_mps[state.unit.kind]
                ranked.append((fresh is Freshness.STALE, t, state.unit.unit_id))
            ranked.sort()
            # Same units in the same order, except where the geodesic and the sphere disagree on a near tie.
            for c, (stale, t, uid) in zip(got, ranked[:7], strict=True):
                assert c.freshness is (Freshness.STALE if stale else Freshness.LIVE)
                assert c.unit_id == uid or c.eta_s == pytest.approx(t, rel=0.012)


def test_queries_during_ingest_never_see_a_half_updated_unit() -> None:
    fleet = miraflores()
    d = Dispatcher(fleet)
    stop = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 3000:
            i += 1
            # foot-1 jumps between two places; each fix carries its own place.
            lat = -12.1207 if i % 2 else -12.1100
            fleet.apply(pings=[Ping("foot-1", NOW + timedelta(milliseconds=i), lat, -77.0307)])

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(3000):
            for c in d.nearest(*INCIDENT, now=NOW + timedelta(seconds=5)):
                _, _, m = GEOD.inv(INCIDENT[1], INCIDENT[0], c.lon, c.lat)
                if abs(c.distance_m - m) > 0.006 * m + 0.01:
                    errors.append(f"{c.unit_id}: {c.distance_m} m reported, {m} m at its position")
            if not t.is_alive():
                break
    finally:
        stop.set()
        t.join()
        d.close()
    assert errors == []


def test_candidates_are_real_candidates() -> None:
    with Dispatcher(miraflores()) as d:
        (c,) = d.nearest(*INCIDENT, k=1, now=NOW)
    same = Candidate(
        c.unit_id, c.kind, c.callsign, c.status, c.lat, c.lon, c.distance_m, c.eta_s, c.fix_age_s, c.freshness
    )
    assert type(c) is Candidate and c == same and hash(c) == hash(same)
    assert c.to_json() == same.to_json()
    with pytest.raises(AttributeError):
        c.eta_s = 0.0  # type: ignore[misc]
