"""geo.nearest: exact k-nearest by ETA, checked against brute force everywhere on Earth.

Two references:

- the *same* haversine kernel applied to every unit (``haversine_to``): the search
  must return exactly the brute-force answer (same units, same order, same
  numbers), which checks the rings, pruning, dateline wrap and poles;
- pyproj's WGS84 geodesic (independent ground truth), honest about the sphere:
  the engine ranks by haversine on the mean-radius sphere, which differs from
  the ellipsoid by up to ~0.56 % (the meridian radius of curvature at the
  equator is 6,335,439 m against R = 6,371,009 m). So each returned distance
  must match the geodesic within ``TOL`` = 0.6 %, and no unit left out may be
  more than ``2·TOL`` sooner (by geodesic ETA) than the worst one returned in
  its freshness tier; closer calls are ties within the model's accuracy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from pyproj import Geod

from geo.codes import ALL_KINDS_MASK, N_KINDS, N_STATUSES, kind_mask, status_mask
from geo.eta import StraightLineEta
from geo.live_index import LiveIndex
from geo.nearest import Nearest, NearestSearch, haversine_to, nearest

GEOD = Geod(ellps="WGS84")
TOL = 0.006
NOW = 1_716_217_200.0  # 2024-05-20 15:00 UTC
STALE = np.array([60.0, 60.0, 90.0, 120.0, 15.0])
LOST = np.array([300.0, 300.0, 480.0, 600.0, 60.0])
MODEL = StraightLineEta.from_names()
PLACES = ("lima", "dateline", "north_pole", "south_pole", "globe", "ties", "sparse_lima")


def positions(
    rng: np.random.Generator, where: str, n: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``n`` points of a kind of place (degrees), including the awkward ones."""
    if where in ("lima", "sparse_lima"):
        return rng.uniform(-12.25, -11.75, n), rng.uniform(-77.2, -76.8, n)
    if where == "dateline":
        lat = rng.uniform(-75, 75) + rng.uniform(-1.5, 1.5, n)
        lon = 180.0 + rng.uniform(-1.5, 1.5, n)
        return lat, np.where(lon >= 180.0, lon - 360.0, lon)
    if where in ("north_pole", "south_pole"):
        lat = 90.0 - rng.exponential(0.4, n)
        lat[rng.random(n) < 0.05] = 90.0  # exactly at the pole
        lat = np.clip(lat, 80.0, 90.0)
        return (lat if where == "north_pole" else -lat), rng.uniform(-180.0, 180.0, n)
    if where == "globe":
        return np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-180.0, 180.0, n)
    # "ties": a few spots shared by many units (same distance, often same ETA)
    spots_lat = rng.uniform(-12.2, -12.0, 4)
    spots_lon = rng.uniform(-77.1, -76.9, 4)
    pick = rng.integers(0, 4, n)
    return spots_lat[pick], spots_lon[pick]


def build(rng: np.random.Generator, where: str, n: int) -> LiveIndex:
    """An index of ``n`` random units at ``where`` (kinds, statuses, ages, capabilities, sectors)."""
    index = LiveIndex(capacity=16, cell_deg=float(rng.choice([0.005, 0.005, 0.05, 0.5, 1.0])))
    lat, lon = positions(rng, where, n)
    ages = rng.uniform(-30.0, 700.0, n)  # some from the future (clock skew), some lost
    index.upsert_many(
        [f"u{i}" for i in range(n)], lat, lon, rng.integers(0, N_KINDS, n), rng.integers(0, N_STATUSES, n),
        NOW - ages, rng.integers(0, 8, n), rng.integers(0, 4, n),
    )  # fmt: skip
    # Churn: some units leave and others take their slots, some move.
    gone = [f"u{i}" for i in range(0, n, 7)]
    for uid in gone:
        index.remove(uid)
    if gone:
        lat2, lon2 = positions(rng, where, len(gone))
        index.upsert_many(
            [f"v{i}" for i in range(len(gone))], lat2, lon2, rng.integers(0, N_KINDS, len(gone)),
            rng.integers(0, N_STATUSES, len(gone)), NOW - rng.uniform(0, 700, len(gone)),
        )  # fmt: skip
    index.check()
    return index


def query_points(rng: np.random.Generator, where: str, q: int) -> list[tuple[float, float]]:
    """Query points: mostly where the fleet is, some anywhere, and the poles and the dateline exactly."""
    lat, lon = positions(rng, where, q)
    pts = [(float(a), float(b)) for a, b in zip(lat, lon, strict=True)]
    g_lat, g_lon = positions(rng, "globe", 3)
    pts += [(float(a), float(b)) for a, b in zip(g_lat, g_lon, strict=True)]
    pts += [(90.0, 0.0), (-90.0, 123.0), (0.0, 180.0), (float(lat[0]) if q else 0.0, -180.0)]
    return pts


def random_filters(rng: np.random.Generator) -> dict[str, object]:
    """A random combination of the filters (often none of them)."""
    f: dict[str, object] = {}
    if rng.random() < 0.4:
        f["kinds"] = [int(x) for x in np.nonzero(rng.random(N_KINDS) < 0.5)[0]]
    if rng.random() < 0.4:
        f["statuses"] = [int(x) for x in np.nonzero(rng.random(N_STATUSES) < 0.5)[0]]
    if rng.random() < 0.3:
        f["capabilities"] = int(rng.integers(0, 8))
    if rng.random() < 0.2:
        f["sector"] = int(rng.integers(0, 4))
    if rng.random() < 0.3:
        f["max_age_s"] = float(rng.uniform(0, 500))
    return f


def qualifying(index: LiveIndex, f: dict[str, object]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Slots passing the filters (brute force, plain numpy) and their tier (0 live, 1 stale)."""
    top = index.top
    st_ = index.status.astype(np.int64)
    kd = index.kind.astype(np.int64)
    age = NOW - index.fix_time
    kinds = f.get("kinds")
    statuses = f.get("statuses", [0])
    ok = st_ >= 0
    ok &= np.isin(kd, list(range(N_KINDS)) if kinds is None else list(kinds))  # type: ignore[call-overload]
    ok &= np.isin(st_, list(statuses))  # type: ignore[call-overload]
    caps = np.uint64(f.get("capabilities", 0))  # type: ignore[call-overload]
    ok &= (index.capabilities & caps) == caps
    if "sector" in f:
        ok &= index.sector == f["sector"]
    if "max_age_s" in f:
        ok &= age <= f["max_age_s"]  # type: ignore[operator]
    kd_safe = np.clip(kd, 0, N_KINDS - 1)
    ok &= age < LOST[kd_safe]
    slots = np.nonzero(ok[:top])[0]
    tier = (age[slots] >= STALE[kd_safe[slots]]).astype(np.int64)
    return slots, tier


def run(index: LiveIndex, lat: float, lon: float, k: int, f: dict[str, object]) -> Nearest:
    return nearest(
        index, lat, lon, k, now=NOW, model=MODEL, stale_after_s=STALE, lost_after_s=LOST,
        kinds=f.get("kinds"), statuses=f.get("statuses", [0]),  # type: ignore[arg-type]
        capabilities=f.get("capabilities", 0), sector=f.get("sector"),  # type: ignore[arg-type]
        max_age_s=f.get("max_age_s"),  # type: ignore[arg-type]
    )  # fmt: skip


def brute_force(index: LiveIndex, lat: float, lon: float, k: int, f: dict[str, object]) -> Nearest:
    """Every qualifying unit ranked by (tier, eta, distance, slot) with the engine's own distance kernel."""
    slots, tier = qualifying(index, f)
    lon = lon - 360.0 if lon >= 180.0 else lon
    d = haversine_to(index.lat[slots], index.lon[slots], lat, lon)
    eta = d * MODEL.pace[index.kind[slots].astype(np.int64)]
    order = np.lexsort((slots, d, eta, tier))[:k]
    return Nearest(np.vstack([tier[order], eta[order], d[order], slots[order]]).astype(np.float64))


scenarios = st.tuples(
    st.integers(0, 2**32 - 1), st.sampled_from(PLACES), st.integers(0, 250), st.integers(1, 12)
)  # fmt: skip


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios)
def test_search_equals_brute_force_with_the_same_distance_kernel(scenario: tuple[int, str, int, int]) -> None:
    seed, where, n, k = scenario
    rng = np.random.default_rng(seed)
    if where == "sparse_lima":
        n = min(n, 6)  # fewer than k live units: the search must widen to the whole Earth
    index = build(rng, where, n)
    for lat, lon in query_points(rng, where, 12):
        f = random_filters(rng)
        got = run(index, lat, lon, k, f)
        want = brute_force(index, lat, lon, k, f)
        assert got.slots.tolist() == want.slots.tolist(), (where, lat, lon, k, f)
        assert np.array_equal(got.eta_s, want.eta_s)
        assert np.array_equal(got.distance_m, want.distance_m)
        assert np.array_equal(got.stale, want.stale)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios)
def test_ranking_agrees_with_wgs84_geodesics_within_the_sphere_error(
    scenario: tuple[int, str, int, int],
) -> None:
    seed, where, n, k = scenario
    rng = np.random.default_rng(seed)
    index = build(rng, where, n)
    for lat, lon in query_points(rng, where, 10):
        f = random_filters(rng)
        got = run(index, lat, lon, k, f)
        slots, tier = qualifying(index, f)
        assert len(got) == min(k, len(slots))
        if not len(slots):
            continue
        _, _, geo_m = GEOD.inv(
            np.full(len(slots), lon), np.full(len(slots), lat), index.lon[slots], index.lat[slots]
        )  # fmt: skip
        geo_eta = np.asarray(geo_m) * MODEL.pace[index.kind[slots].astype(np.int64)]
        where_in = {int(s): i for i, s in enumerate(slots)}
        picked = [where_in[int(s)] for s in got.slots]
        # Distances: the sphere within TOL of the ellipsoid (plus a millimetre at zero distance).
        assert np.all(
            np.abs(got.distance_m - np.asarray(geo_m)[picked]) <= TOL * np.asarray(geo_m)[picked] + 1e-3
        )
        # Freshness tiers: every live unit before every stale one, and the flags are right.
        assert got.stale.tolist() == (tier[picked] == 1).tolist()
        assert got.stale.tolist() == sorted(got.stale.tolist())
        # Order within a tier: by geodesic ETA too, up to the model's tolerance.
        for a, b in itertools.pairwise(picked):
            if tier[a] == tier[b]:
                assert geo_eta[b] >= geo_eta[a] * (1 - 2 * TOL) - 1e-6
        # Nobody left out arrives clearly sooner than the worst unit kept in its tier.
        if len(got) == k:
            left = np.setdiff1d(np.arange(len(slots)), picked)
            worst_tier = int(tier[picked[-1]])
            assert not np.any(tier[left] < worst_tier)
            same = left[tier[left] == worst_tier]
            worst = max(geo_eta[i] for i in picked if tier[i] == worst_tier)
            assert np.all(geo_eta[same] >= worst * (1 - 2 * TOL) - 1e-6)


class TurnoutEta:
    """A model only Python knows: a turnout delay per kind plus a position-dependent slowdown."""

    turnout = np.array([30.0, 20.0, 10.0, 0.0, 60.0])

    def eta_s(
        self,
        distance_m: NDArray[np.float64],
        kind: NDArray[np.int8],
        lat: NDArray[np.float64],
        lon: NDArray[np.float64],
        to_lat: float,
        to_lon: float,
    ) -> NDArray[np.float64]:
        k = np.asarray(kind, dtype=np.int64)
        slowdown = 1.0 + 0.5 * np.abs(np.sin(np.radians(lat) * 7.0))  # "traffic" by where the unit is
        out: NDArray[np.float64] = self.turnout[k] + distance_m * MODEL.pace[k] * slowdown
        return out

    def min_pace_s_per_m(self, kinds: Iterable[int]) -> float:
        return MODEL.min_pace_s_per_m(kinds)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios)
def test_a_pluggable_model_gets_the_exact_answer_too(scenario: tuple[int, str, int, int]) -> None:
    seed, where, n, k = scenario
    rng = np.random.default_rng(seed)
    index = build(rng, where, n)
    model = TurnoutEta()
    search = NearestSearch(index, model, STALE, LOST)
    for lat, lon in query_points(rng, where, 6):
        f = random_filters(rng)
        got = search.query(
            lat, lon, k, now=NOW, kinds=kind_mask(f.get("kinds")),  # type: ignore[arg-type]
            statuses=status_mask(f.get("statuses", [0])), capabilities=f.get("capabilities", 0),  # type: ignore[arg-type]
            sector=f.get("sector", -1), max_age_s=f.get("max_age_s", math.inf),  # type: ignore[arg-type]
        )  # fmt: skip
        slots, tier = qualifying(index, f)
        d = haversine_to(index.lat[slots], index.lon[slots], lat, lon - 360.0 if lon >= 180.0 else lon)
        eta = model.eta_s(d, index.kind[slots], index.lat[slots], index.lon[slots], lat, lon)
        order = np.lexsort((slots, d, eta, tier))[:k]
        assert got.slots.tolist() == slots[order].tolist()
        assert np.array_equal(got.eta_s, eta[order])


def test_empty_index_k_beyond_the_fleet_and_everything_filtered_out() -> None:
    index = LiveIndex()
    assert len(nearest(index, 0.0, 0.0, 5, now=NOW)) == 0
    index.upsert_many(["a", "b"], [-12.1, -12.2], [-77.0, -77.0], [0, 3], [0, 0], [NOW, NOW])
    got = nearest(index, -12.1, -77.0, 50, now=NOW)
    assert index.unit_ids(got.slots) == ["a", "b"]
    assert len(nearest(index, -12.1, -77.0, 5, now=NOW, kinds=[4])) == 0
    assert len(nearest(index, -12.1, -77.0, 5, now=NOW, statuses=[1])) == 0
    assert len(nearest(index, -12.1, -77.0, 5, now=NOW, capabilities=1)) == 0
    assert len(nearest(index, -12.1, -77.0, 5, now=NOW, kinds=[])) == 0


def test_live_units_rank_before_stale_ones_and_lost_ones_never_show() -> None:
    index = LiveIndex()
    # A stale car at 10 m, a live foot unit 1 km away, a lost drone on the spot.
    index.upsert("stale-car", -12.10009, -77.0, 0, 0, NOW - 100)
    index.upsert("live-foot", -12.109, -77.0, 3, 0, NOW - 5)
    index.upsert("lost-drone", -12.1, -77.0, 4, 0, NOW - 61)
    got = nearest(index, -12.1, -77.0, 5, now=NOW, stale_after_s=STALE, lost_after_s=LOST)
    assert index.unit_ids(got.slots) == ["live-foot", "stale-car"]
    assert got.stale.tolist() == [False, True]


def test_eta_ranks_a_fast_far_unit_before_a_slow_near_one() -> None:
    index = LiveIndex()
    index.upsert("walker", -12.1, -77.0 + 0.004, 3, 0, NOW)  # ~436 m on foot: ~420 s
    index.upsert("drone", -12.1, -77.0 + 0.05, 4, 0, NOW)  # ~5.4 km at 15 m/s: ~363 s
    got = nearest(index, -12.1, -77.0, 2, now=NOW)
    assert index.unit_ids(got.slots) == ["drone", "walker"]
    assert got.eta_s[0] == pytest.approx(got.distance_m[0] / 15.0)


@pytest.mark.parametrize(("lat", "lon"), [(91.0, 0.0), (0.0, 181.0), (math.nan, 0.0), (0.0, -180.5)])
def test_bad_query_points_are_refused(lat: float, lon: float) -> None:
    with pytest.raises(ValueError, match="lat must be in"):
        nearest(LiveIndex(), lat, lon, 1, now=NOW)


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be"):
        nearest(LiveIndex(), 0.0, 0.0, 0, now=NOW)


def test_work_counters_show_a_local_search_in_a_dense_fleet() -> None:
    rng = np.random.default_rng(7)
    index = LiveIndex()
    n = 20_000
    lat, lon = positions(rng, "lima", n)
    index.upsert_many(
        [f"w{i}" for i in range(n)], lat, lon, rng.integers(0, 5, n), np.zeros(n), np.full(n, NOW)
    )
    search = NearestSearch(index, MODEL, STALE, LOST)
    for _ in range(50):
        search.query(float(rng.uniform(-12.2, -11.8)), float(rng.uniform(-77.15, -76.85)), 5, now=NOW,
                     kinds=ALL_KINDS_MASK)  # fmt: skip
    stats = search.stats
    assert stats["queries"] == 50
    assert stats["full_scans"] == 0
    assert stats["visits"] < 50 * n / 20  # a few hundred units per query at most, never the fleet
