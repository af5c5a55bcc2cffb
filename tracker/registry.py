"""The in-memory unit registry: who is who, by unit id and by each protocol's external id.

The bridge resolves every message's :class:`DeviceRef` here, at ingest speed, so
lookups are plain dict reads. The database (``units`` table) is the source of
truth; the registry is loaded from it at start and told of units created since.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from tracker.errors import DuplicateUnitError
from tracker.model import DERIVED_ID_PREFIX, DeviceRef, Rejection, Source, Unit, UnitKind, is_valid_unit_id

# Kind given to an auto-registered device when nothing better is known: phones are
# carried by serenos on foot, DJI and MAVLink senders are aircraft.
AUTO_REGISTER_KIND: dict[Source, UnitKind] = {
    Source.NATIVE: UnitKind.FOOT,
    Source.OWNTRACKS: UnitKind.FOOT,
    Source.OSMAND: UnitKind.FOOT,
    Source.DJI: UnitKind.DRONE,
    Source.MAVLINK: UnitKind.DRONE,
}
# Derived ids of aircraft protocols: a native sender using one is a gateway relaying a drone.
_DRONE_ID_PREFIXES = tuple(f"{DERIVED_ID_PREFIX[s]}." for s in (Source.DJI, Source.MAVLINK))


class UnitRegistry:
    """Thread-safe index of registered units (the bridge thread writes, API readers read)."""

    def __init__(self, units: Iterable[Unit] = ()) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, Unit] = {}
        self._by_external: dict[tuple[str, str], Unit] = {}
        # Moves with every change: a copy in another process (HTTP ingest's worker) reloads when it did.
        self.generation = 0
        for unit in units:
            self.add(unit)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, unit_id: object) -> bool:
        return unit_id in self._by_id

    def get(self, unit_id: str) -> Unit | None:
        """Return the unit with this id, or None."""
        return self._by_id.get(unit_id)

    def by_external(self, source: Source | str, external_id: str) -> Unit | None:
        """Return the unit that owns ``external_id`` for protocol ``source``, or None."""
        return self._by_external.get((str(source), external_id))

    def all(self) -> list[Unit]:
        """Return every registered unit, in id order."""
        with self._lock:
            return sorted(self._by_id.values(), key=lambda u: u.unit_id)

    def add(self, unit: Unit) -> None:
        """Register ``unit``; raise :class:`DuplicateUnitError` if its id or an external id is taken."""
        with self._lock:
            if unit.unit_id in self._by_id:
                raise DuplicateUnitError(unit.unit_id)
            for proto, ext in unit.external_ids.items():
                owner = self._by_external.get((proto, ext))
                if owner is not None:
                    raise DuplicateUnitError(
                        unit.unit_id, f"external id {proto}:{ext!r} already belongs to unit {owner.unit_id!r}"
                    )
            self._by_id[unit.unit_id] = unit
            for proto, ext in unit.external_ids.items():
                self._by_external[(proto, ext)] = unit
            self.generation += 1

    def replace(self, units: Iterable[Unit]) -> None:
        """Swap the whole content for ``units`` (a reload from the database)."""
        fresh = UnitRegistry(units)
        with self._lock:
            self._by_id = fresh._by_id
            self._by_external = fresh._by_external
            self.generation += 1

    def resolve(self, ref: DeviceRef, auto_register: bool) -> tuple[Unit, bool] | Rejection:
        """Map a message's sender to a unit: ``(unit, newly_registered)`` or a Rejection.

        Native senders name the unit id itself; other protocols are looked up by
        external id. Unknown senders are auto-registered under a derived id only
        when ``auto_register`` is on.
        """
        if ref.source is Source.NATIVE:
            unit = self._by_id.get(ref.external_id)
        else:
            unit = self._by_external.get((ref.source.value, ref.external_id))
        if unit is not None:
            return unit, False
        if not auto_register:
            return Rejection(
                "unknown_unit",
                f"{ref.source.value} sender {ref.external_id!r} is not a registered unit: register it "
                "(POST /api/v1/units with its external id) or turn on SERENAZGO_AUTO_REGISTER",
            )
        unit_id = ref.derived_unit_id()
        if not is_valid_unit_id(unit_id):
            return Rejection("invalid_unit_id", f"cannot derive a valid unit id from {ref.external_id!r}")
        external = {} if ref.source is Source.NATIVE else {ref.source.value: ref.external_id}
        kind = AUTO_REGISTER_KIND[ref.source]
        if ref.source is Source.NATIVE and unit_id.startswith(_DRONE_ID_PREFIXES):
            kind = UnitKind.DRONE  # e.g. mav.<sysid> from the MAVLink gateway, which speaks native topics
        unit = Unit(unit_id=unit_id, kind=kind, callsign=unit_id, external_ids=external)
        try:
            self.add(unit)
        except DuplicateUnitError as exc:
            # Another thread may have registered the same device a moment ago.
            again = self._by_id.get(unit_id)
            if again is not None and again.external_ids == external:
                return again, False
            return Rejection("derived_id_taken", str(exc))
        return unit, True
