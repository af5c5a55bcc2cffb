"""Pure logic of incidents: the transition table, validation and the JSON forms (no servers)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from tracker.incidents import (
    OPERATOR_STATUSES,
    TERMINAL,
    TRANSITIONS,
    Assignment,
    Channel,
    Incident,
    IncidentCategory,
    IncidentInputError,
    IncidentPatch,
    IncidentStatus,
    InvalidTransitionError,
    can_transition,
    check_transition,
    validate_point,
    validate_priority,
)
from tracker.store.incidents import STATS_DIMENSIONS, stats_sql

S = IncidentStatus
T0 = datetime(2024, 5, 6, 14, 0, tzinfo=UTC)

# The life cycle as the issue states it, written out independently of the module's table.
EXPECTED = {
    (S.OPEN, S.ASSIGNED), (S.OPEN, S.CANCELLED),
    (S.ASSIGNED, S.OPEN), (S.ASSIGNED, S.EN_ROUTE), (S.ASSIGNED, S.ON_SCENE), (S.ASSIGNED, S.CLOSED),
    (S.ASSIGNED, S.CANCELLED),
    (S.EN_ROUTE, S.OPEN), (S.EN_ROUTE, S.ON_SCENE), (S.EN_ROUTE, S.CLOSED), (S.EN_ROUTE, S.CANCELLED),
    (S.ON_SCENE, S.CLOSED), (S.ON_SCENE, S.CANCELLED),
}  # fmt: skip


def test_transition_table_is_exactly_the_life_cycle() -> None:
    allowed = {(a, b) for a, b in itertools.product(S, S) if can_transition(a, b)}
    assert allowed == EXPECTED
    assert set(TRANSITIONS) == set(S)


@pytest.mark.parametrize(("current", "wanted"), list(itertools.product(S, S)))
def test_check_transition_raises_exactly_for_forbidden_moves(current: S, wanted: S) -> None:
    if (current, wanted) in EXPECTED:
        check_transition(current, wanted, 7)
    else:
        with pytest.raises(InvalidTransitionError) as info:
            check_transition(current, wanted, 7)
        assert f"incident 7 is {current} and cannot become {wanted}" in str(info.value)


def test_terminal_states_are_final_and_reachable_from_every_active_state() -> None:
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()
    for status in set(S) - TERMINAL:
        assert S.CANCELLED in TRANSITIONS[status]
        assert status is S.OPEN or S.CLOSED in TRANSITIONS[status]
    assert {S.CLOSED, S.CANCELLED} == OPERATOR_STATUSES
    # No cycle except going back to OPEN when the last unit is released before arrival.
    assert all(S.OPEN not in TRANSITIONS[s] for s in (S.ON_SCENE, S.CLOSED, S.CANCELLED))


def test_closed_error_message_lists_nothing_allowed() -> None:
    with pytest.raises(InvalidTransitionError, match="none: it is final"):
        check_transition(S.CLOSED, S.CANCELLED)


def test_vocabularies_match_the_database_checks() -> None:
    assert [c.value for c in IncidentCategory] == [
        "fiscalizacion", "seguridad_ciudadana", "obras_servicios", "defensa_civil", "seguridad_vial",
        "apoyo_turista", "otro",
    ]  # fmt: skip
    assert [c.value for c in Channel] == ["patrol", "camera", "whatsapp", "phone", "social", "other"]


@pytest.mark.parametrize(("lat", "lon"), [(91.0, 0.0), (-90.5, 0.0), (0.0, 180.1), (float("nan"), 0.0)])
def test_bad_points_are_refused(lat: float, lon: float) -> None:
    with pytest.raises(IncidentInputError, match="out of range"):
        validate_point(lat, lon)


def test_priority_range() -> None:
    for p in range(1, 6):
        validate_priority(p)
    for p in (0, 6, -1):
        with pytest.raises(IncidentInputError, match="1 \\(highest\\) to 5"):
            validate_priority(p)


def test_patch_empty() -> None:
    assert IncidentPatch().empty()
    assert not IncidentPatch(priority=2).empty()


def test_incident_json_is_geojson_friendly_with_milestones() -> None:
    a = Assignment(
        1, 9, "car-1", T0 + timedelta(seconds=40), "op", 180.04, 1200.06, T0 + timedelta(seconds=300)
    )
    inc = Incident(
        9, -12.12, -77.03, IncidentCategory.SEGURIDAD_VIAL, Channel.CAMERA, 2, "choque", "Av. Larco 1150",
        S.ON_SCENE, "cam-14", T0, T0 + timedelta(seconds=300), T0 + timedelta(seconds=40),
        T0 + timedelta(seconds=300), assignments=(a,),
    )  # fmt: skip
    j = inc.to_json()
    assert j["geometry"] == {"type": "Point", "coordinates": [-77.03, -12.12]}
    assert (j["lat"], j["lon"]) == (-12.12, -77.03)
    assert j["created_at"] == "2024-05-06T14:00:00Z"
    assert (j["assign_s"], j["response_s"]) == (40.0, 300.0)
    assert j["units"] == ["car-1"]
    assert j["assignments"][0]["travel_s"] == 260.0
    assert j["assignments"][0]["eta_s"] == 180.0
    assert j["assignments"][0]["open"] is True
    assert (j["category"], j["channel"], j["status"]) == ("seguridad_vial", "camera", "on_scene")


def test_stats_sql_groups_only_by_whitelisted_columns() -> None:
    sql = stats_sql(["category", "channel"])
    assert "GROUPING SETS ((), (category), (channel))" in sql
    assert "percentile_cont(0.9)" in sql
    with pytest.raises(KeyError):
        stats_sql(["category; DROP TABLE incidents"])
    assert set(STATS_DIMENSIONS) == {"category", "channel", "priority"}
