"""geo.live_index: columns, slot reuse, bucket lists and hash under churn, memory per unit."""

from __future__ import annotations

import h3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geo.live_index import CELL_SIZES, DEFAULT_CELL_DEG, H3_RES, LiveIndex, suggest_cell_deg

NOW = 1_716_217_200.0


def test_upsert_fills_the_columns_and_the_h3_cell() -> None:
    index = LiveIndex()
    slot = index.upsert("car-1", -12.1211, -77.0297, 0, 1, NOW, capabilities=0b101, sector=3)
    assert index.slot_of("car-1") == slot
    assert index.unit_id(slot) == "car-1"
    assert (index.lat[slot], index.lon[slot]) == (-12.1211, -77.0297)
    assert (index.kind[slot], index.status[slot], index.sector[slot]) == (0, 1, 3)
    assert index.fix_time[slot] == NOW
    assert index.capabilities[slot] == 0b101
    assert h3.int_to_str(int(index.h3_cell[slot])) == h3.latlng_to_cell(-12.1211, -77.0297, H3_RES)
    with pytest.raises(ValueError, match="read-only"):
        index.lat[slot] = 0.0


def test_longitude_180_is_filed_as_minus_180() -> None:
    index = LiveIndex()
    slot = index.upsert("east", 10.0, 180.0, 0, 0, NOW)
    assert index.lon[slot] == -180.0
    index.check()


def test_removed_slots_are_reused_and_ids_map_both_ways() -> None:
    index = LiveIndex(capacity=16)
    slots = index.upsert_many([f"u{i}" for i in range(10)], np.zeros(10), np.linspace(0, 1, 10), np.zeros(10),
                              np.zeros(10), np.full(10, NOW))  # fmt: skip
    assert sorted(slots.tolist()) == list(range(10))
    freed = index.slot_of("u3")
    assert index.remove("u3") and not index.remove("u3")
    assert "u3" not in index and len(index) == 9
    assert index.upsert("new", 1.0, 1.0, 2, 0, NOW) == freed
    assert index.unit_id(freed) == "new"
    assert index.top == 10
    index.check()


def test_bad_rows_are_refused_and_change_nothing() -> None:
    index = LiveIndex()
    index.upsert("ok", 0.0, 0.0, 0, 0, NOW)
    for bad in (
        {"lat": [91.0], "lon": [0.0], "kind": [0], "status": [0]},
        {"lat": [0.0], "lon": [float("nan")], "kind": [0], "status": [0]},
        {"lat": [0.0], "lon": [0.0], "kind": [5], "status": [0]},
        {"lat": [0.0], "lon": [0.0], "kind": [0], "status": [7]},
    ):
        with pytest.raises(ValueError):
            index.upsert_many(["x"], fix_time=[NOW], **bad)  # type: ignore[arg-type]
    assert len(index) == 1 and "x" not in index
    index.check()


def test_the_arrays_grow_past_their_capacity() -> None:
    index = LiveIndex(capacity=16)
    n = 5000
    rng = np.random.default_rng(3)
    for start in range(0, n, 700):
        m = min(700, n - start)
        index.upsert_many([f"u{i}" for i in range(start, start + m)], rng.uniform(-90, 90, m),
                          rng.uniform(-180, 180, m), rng.integers(0, 5, m), rng.integers(0, 5, m),
                          np.full(m, NOW))  # fmt: skip
    assert len(index) == n and index.capacity >= n
    index.check()


ops = st.lists(
    st.tuples(
        st.sampled_from(["move", "jump", "status", "kind", "remove"]),
        st.integers(0, 40),  # unit
        st.floats(-89.9, 89.9),
        st.floats(-180.0, 180.0),
        st.integers(0, 4),
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_buckets_hash_and_columns_stay_consistent_under_any_churn(
    script: list[tuple[str, int, float, float, int]],
) -> None:
    index = LiveIndex(capacity=16, cell_deg=0.5)  # coarse cells: many units share buckets
    model: dict[str, tuple[float, float, int, int]] = {}
    for op, u, lat, lon, code in script:
        uid = f"u{u}"
        if op == "remove":
            assert index.remove(uid) == (uid in model)
            model.pop(uid, None)
            continue
        old = model.get(uid, (0.0, 0.0, 0, 0))
        if op == "move":  # a small step: usually the same cell
            row = (max(-90.0, min(90.0, old[0] + lat / 1000)), old[1], old[2], old[3])
        elif op == "jump":
            row = (lat, lon, old[2], old[3])
        elif op == "status":
            row = (old[0], old[1], old[2], code)
        else:
            row = (old[0], old[1], code, old[3])
        model[uid] = row
        index.upsert(uid, row[0], row[1], row[2], row[3], NOW)
    index.check()
    assert len(index) == len(model)
    for uid, (lat, lon, kind, status) in model.items():
        s = index.slot_of(uid)
        assert s is not None
        assert index.lat[s] == lat and index.lon[s] == (lon - 360.0 if lon >= 180.0 else lon)
        assert (index.kind[s], index.status[s]) == (kind, status)


@pytest.mark.parametrize("n", [20_000, 100_000])
def test_memory_per_unit_is_under_200_bytes(n: int) -> None:
    rng = np.random.default_rng(11)
    ids = [f"unit-{i:06d}" for i in range(n)]  # the ids exist already (the fleet holds them)
    index = LiveIndex(capacity=n + n // 8 + 64)  # as the Dispatcher sizes it
    lat, lon = rng.uniform(-12.25, -11.75, n), rng.uniform(-77.2, -76.8, n)
    kinds, statuses = rng.integers(0, 5, n), rng.integers(0, 5, n)
    index.upsert_many(
        ids, lat, lon, kinds, statuses, np.full(n, NOW), rng.integers(0, 16, n), rng.integers(0, 40, n)
    )
    mem = index.memory_bytes()
    assert mem["total"] == mem["columns"] + mem["buckets"] + mem["id_maps"]
    assert mem["total"] / n <= 200, mem
    # Even counting the id strings (shared with the fleet's Unit objects), it stays modest.
    assert (mem["total"] + mem["id_strings"]) / n <= 270, mem


def test_suggested_cell_size_grows_as_the_fleet_thins_out() -> None:
    rng = np.random.default_rng(2)
    sizes = []
    for n in (100_000, 10_000, 2_000, 200):
        sizes.append(suggest_cell_deg(rng.uniform(-12.25, -11.75, n), rng.uniform(-77.2, -76.8, n)))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert sizes[:3] == [0.0075, 0.025, 0.05]
    assert suggest_cell_deg([], []) == DEFAULT_CELL_DEG
    for c in CELL_SIZES:
        LiveIndex(cell_deg=c)  # every suggestion tiles the globe
