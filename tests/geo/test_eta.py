"""geo.eta: the straight-line model and its defaults."""

from __future__ import annotations

import numpy as np
import pytest

from geo.codes import KIND_CODE, KIND_NAMES
from geo.eta import DEFAULT_CIRCUITY, DEFAULT_SPEED_MPS, EtaModel, StraightLineEta


def test_eta_is_distance_times_circuity_over_speed() -> None:
    model = StraightLineEta.from_names()
    kinds = np.array([KIND_CODE[k] for k in KIND_NAMES], dtype=np.int8)
    d = np.full(len(kinds), 1000.0)
    eta = model.eta_s(d, kinds, d * 0, d * 0, 0.0, 0.0)
    want = [1000.0 * DEFAULT_CIRCUITY[k] / DEFAULT_SPEED_MPS[k] for k in KIND_NAMES]
    assert eta.tolist() == pytest.approx(want)
    assert eta[KIND_CODE["drone"]] == pytest.approx(1000 / 15)  # drones fly straight


def test_lower_bound_is_the_fastest_pace_of_the_kinds() -> None:
    model = StraightLineEta.from_names()
    assert model.min_pace_s_per_m([KIND_CODE["foot"], KIND_CODE["drone"]]) == pytest.approx(1 / 15)
    assert model.min_pace_s_per_m([KIND_CODE["foot"]]) == pytest.approx(1.35 / 1.4)
    assert isinstance(model, EtaModel)


def test_overrides_and_refusals() -> None:
    model = StraightLineEta.from_names({"foot": 2.0}, {"drone": 1.1})
    assert model.speed_mps[KIND_CODE["foot"]] == 2.0
    assert model.circuity[KIND_CODE["drone"]] == 1.1
    with pytest.raises(ValueError, match="unknown unit kinds"):
        StraightLineEta.from_names({"horse": 5.0})
    with pytest.raises(ValueError, match="circuity must be >= 1"):
        StraightLineEta.from_names(circuity={"foot": 0.9})
    with pytest.raises(ValueError, match="speeds must be positive"):
        StraightLineEta.from_names({"foot": 0.0})


def test_describe_lists_every_kind() -> None:
    info = StraightLineEta.from_names().describe()
    assert set(info["kinds"]) == set(KIND_NAMES)
    assert info["kinds"]["patrol_car"] == {"speed_mps": 6.9, "circuity": 1.35, "s_per_km": 195.652}
