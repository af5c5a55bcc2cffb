"""Unit registry: resolution of senders to units, auto-registration, duplicates."""

from __future__ import annotations

import pytest

from tracker.errors import DuplicateUnitError
from tracker.model import DeviceRef, Rejection, Source, Unit, UnitKind
from tracker.registry import UnitRegistry


def _car(uid: str = "MOV-01", **ext: str) -> Unit:
    return Unit(unit_id=uid, kind=UnitKind.PATROL_CAR, external_ids=dict(ext))


def test_native_sender_resolves_by_unit_id() -> None:
    reg = UnitRegistry([_car()])
    resolved = reg.resolve(DeviceRef(Source.NATIVE, "MOV-01"), auto_register=False)
    assert not isinstance(resolved, Rejection)
    assert resolved[0].unit_id == "MOV-01"
    assert resolved[1] is False


def test_owntracks_sender_resolves_by_external_id() -> None:
    reg = UnitRegistry([_car("SER-014", owntracks="owntracks/jane/phone")])
    resolved = reg.resolve(DeviceRef(Source.OWNTRACKS, "owntracks/jane/phone"), auto_register=False)
    assert not isinstance(resolved, Rejection)
    assert resolved[0].unit_id == "SER-014"


def test_unknown_sender_is_rejected_with_what_to_do() -> None:
    reg = UnitRegistry()
    resolved = reg.resolve(DeviceRef(Source.OWNTRACKS, "owntracks/ghost/phone"), auto_register=False)
    assert isinstance(resolved, Rejection)
    assert resolved.reason == "unknown_unit"
    assert "SERENAZGO_AUTO_REGISTER" in resolved.detail


@pytest.mark.parametrize(
    ("ref", "expected_id", "kind"),
    [
        (DeviceRef(Source.OWNTRACKS, "owntracks/jane/phone"), "ot.jane.phone", UnitKind.FOOT),
        (DeviceRef(Source.OSMAND, "48241179"), "osm.48241179", UnitKind.FOOT),
        (DeviceRef(Source.DJI, "1581F5BKD225D00BP891"), "dji.1581F5BKD225D00BP891", UnitKind.DRONE),
        (DeviceRef(Source.MAVLINK, "7"), "mav.7", UnitKind.DRONE),
        # The MAVLink gateway relays an unmapped aircraft on the native topics as mav.<sysid>.
        (DeviceRef(Source.NATIVE, "mav.42"), "mav.42", UnitKind.DRONE),
        (DeviceRef(Source.NATIVE, "dji.SN1"), "dji.SN1", UnitKind.DRONE),
        (DeviceRef(Source.NATIVE, "maverick"), "maverick", UnitKind.FOOT),
    ],
)
def test_auto_register_derives_the_contract_id(ref: DeviceRef, expected_id: str, kind: UnitKind) -> None:
    reg = UnitRegistry()
    resolved = reg.resolve(ref, auto_register=True)
    assert not isinstance(resolved, Rejection)
    unit, new = resolved
    assert (unit.unit_id, unit.kind, new) == (expected_id, kind, True)
    # Second message from the same device maps to the same unit, not a new one.
    again = reg.resolve(ref, auto_register=True)
    assert not isinstance(again, Rejection)
    assert again == (unit, False)


def test_auto_register_sanitises_hostile_external_ids() -> None:
    reg = UnitRegistry()
    resolved = reg.resolve(DeviceRef(Source.OWNTRACKS, "owntracks/jané/ph one"), auto_register=True)
    assert not isinstance(resolved, Rejection)
    assert resolved[0].unit_id == "ot.jan..ph.one"


def test_derived_id_already_taken_by_another_unit_is_rejected() -> None:
    reg = UnitRegistry([_car("ot.jane.phone")])
    resolved = reg.resolve(DeviceRef(Source.OWNTRACKS, "owntracks/jane/phone"), auto_register=True)
    assert isinstance(resolved, Rejection)
    assert resolved.reason == "derived_id_taken"


def test_duplicate_id_and_external_id_are_refused() -> None:
    reg = UnitRegistry([_car("A", owntracks="owntracks/a/b")])
    with pytest.raises(DuplicateUnitError):
        reg.add(_car("A"))
    with pytest.raises(DuplicateUnitError, match="already belongs to unit 'A'"):
        reg.add(_car("B", owntracks="owntracks/a/b"))
    assert [u.unit_id for u in reg.all()] == ["A"]


def test_replace_swaps_content() -> None:
    reg = UnitRegistry([_car("A")])
    reg.replace([_car("B"), _car("C")])
    assert "A" not in reg
    assert [u.unit_id for u in reg.all()] == ["B", "C"]
