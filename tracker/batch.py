"""What the ingest pipeline hands to storage: one batch, one transaction.

The bridge builds an :class:`IngestBatch` from many MQTT messages, the writer
stores it in a single transaction, and only then are those messages
acknowledged. Everything a batch changes is idempotent, so a batch replayed
after a crash (the broker redelivers what was never acknowledged) stores
nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import orjson

from tracker.model import DroneTelemetry, FieldReport, Ping, PingFlag, StatusUpdate, Unit


@dataclass(slots=True)
class DeadLetter:
    """A rejected message, kept with its topic, (truncated) payload and the reason."""

    topic: str
    payload: bytes
    reason: str
    detail: str
    received_at: datetime

    def announcement(self) -> bytes:
        """The JSON published on ``serenazgo/deadletter`` once it is stored (without the payload)."""
        return orjson.dumps(
            {
                "topic": self.topic,
                "reason": self.reason,
                "detail": self.detail,
                "received_at": self.received_at.isoformat(),
            }
        )


@dataclass(slots=True, frozen=True)
class FlagUpdate:
    """Flags learnt about an already-stored fix (e.g. confirmed outlier once the next fix came)."""

    unit_id: str
    ts: datetime
    add: PingFlag


@dataclass(slots=True)
class IngestBatch:
    """Everything one transaction stores.

    ``pings`` are structurally valid, resolved to a unit and carry their quality
    flags. ``unit_latest`` moves to the newest ping per unit that is not
    SUSPECT, OUTLIER or LATE, and never backwards; for a JITTER ping it takes the
    new time, speed and battery but keeps the previous position.
    """

    pings: list[Ping] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    statuses: list[tuple[str, StatusUpdate]] = field(default_factory=list)
    flag_updates: list[FlagUpdate] = field(default_factory=list)
    new_units: list[Unit] = field(default_factory=list)
    telemetry: list[DroneTelemetry] = field(default_factory=list)  # stored once per (unit_id, ts)
    reports: list[FieldReport] = field(default_factory=list)  # incidents, stored once per (unit_id, ts)

    def __len__(self) -> int:
        return (
            len(self.pings) + len(self.dead_letters) + len(self.statuses) + len(self.telemetry)
            + len(self.reports)
        )  # fmt: skip


@dataclass(slots=True, frozen=True)
class BatchResult:
    """What a committed batch did: new rows, rows already there, dead letters kept.

    ``incidents``: ids of the incidents the batch's field reports created (not the redelivered ones).
    """

    stored: int
    duplicates: int
    dead_letters: int
    incidents: tuple[int, ...] = ()


# Pings with any of these flags never become a unit's latest position.
NOT_LATEST = PingFlag.SUSPECT | PingFlag.OUTLIER | PingFlag.LATE
