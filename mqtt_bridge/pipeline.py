"""The pure step from received messages to one :class:`IngestBatch` (no I/O).

For each message, in order (an explicit pipeline, as in Traccar's ProcessingHandler):

1. :func:`mqtt_bridge.codecs.decode_message`: Decoded, Ignored or Rejection
   (the DJI codecs remember topology, dock OSD and home points in the
   pipeline's own :class:`drones.dji.DjiState`).
2. ``UnitRegistry.resolve``: the sender's unit (auto-registered when allowed and
   new: it joins ``batch.new_units``); an unknown sender is a Rejection.
3. :class:`tracker.filters.FilterPipeline` per ping: a Rejection, or the ping
   with its quality flags plus retroactive :class:`FlagUpdate`\\ s.
4. Drone telemetry goes to ``batch.telemetry`` and field incident reports to
   ``batch.reports``, with the unit id set. Statuses
   go to ``batch.statuses``; an OwnTracks ``lwt`` marks the unit disconnected
   (for ``LiveFleet.apply(disconnected=…)`` after commit). An lwt from an
   unknown device is ignored: a last will is no reason to create a unit.

Every Rejection becomes a :class:`DeadLetter` (topic, payload, reason, detail) in
the same batch: refused input is stored, counted and acknowledged like the
rest, never silently dropped. Counters (rejections and ignores by reason,
filter steps that fired) come back with the batch so that metrics are updated
once per batch.

The result also records where each message's items sit in the batch lists
(:meth:`PipelineResult.part`), so that a batch the database refuses can be
split to find the one message at fault.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from drones.dji import DjiState
from mqtt_bridge.codecs import decode_message
from tracker.batch import DeadLetter, FlagUpdate, IngestBatch
from tracker.config import Settings
from tracker.filters import FilterPipeline
from tracker.model import (
    Decoded,
    DecodeResult,
    DroneTelemetry,
    FieldReport,
    Ignored,
    Ping,
    Rejection,
    StatusUpdate,
    Unit,
)
from tracker.registry import UnitRegistry

UNKNOWN_UNIT = "unknown_unit"


class RawMessage(Protocol):
    """What the pipeline needs of a received message (an InboundMessage fits)."""

    @property
    def topic(self) -> str:
        """The MQTT topic."""

    @property
    def payload(self) -> bytes:
        """The raw payload."""

    @property
    def received_at(self) -> float:
        """Arrival time, seconds since the epoch (``time.time()``)."""


# Lengths of (pings, statuses, flag_updates, new_units, dead_letters, disconnected, telemetry,
# reports) after each message.
_Ends = tuple[int, int, int, int, int, int, int, int]
NO_ENDS: _Ends = (0, 0, 0, 0, 0, 0, 0, 0)


@dataclass(slots=True)
class PipelineResult:
    """One batch to store, plus what the fleet and the metrics need once it is committed."""

    batch: IngestBatch = field(default_factory=IngestBatch)
    disconnected: list[str] = field(default_factory=list)  # units whose OwnTracks lwt arrived
    pings_received: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)
    fired: Counter[str] = field(default_factory=Counter)
    ends: list[_Ends] = field(default_factory=list)  # per message (see module docstring)

    @property
    def messages(self) -> int:
        """Number of messages this result was built from."""
        return len(self.ends)

    def part(self, lo: int, hi: int) -> PipelineResult:
        """The result of messages ``lo`` to ``hi - 1`` alone (counters are not split)."""
        start: _Ends = self.ends[lo - 1] if lo > 0 else NO_ENDS
        stop = self.ends[hi - 1] if hi > lo else start
        b = self.batch
        sub = IngestBatch(
            pings=b.pings[start[0] : stop[0]],
            statuses=b.statuses[start[1] : stop[1]],
            flag_updates=b.flag_updates[start[2] : stop[2]],
            new_units=b.new_units[start[3] : stop[3]],
            dead_letters=b.dead_letters[start[4] : stop[4]],
            telemetry=b.telemetry[start[6] : stop[6]],
            reports=b.reports[start[7] : stop[7]],
        )
        shifted = [tuple(e - s for e, s in zip(end, start, strict=True)) for end in self.ends[lo:hi]]
        return PipelineResult(
            batch=sub,
            disconnected=self.disconnected[start[5] : stop[5]],
            ends=shifted,  # type: ignore[arg-type]
        )


class IngestPipeline:
    """Turns received messages into a batch; keeps the per-unit filter state between batches.

    ``refresh_units`` (optional) is called, at most once per :meth:`run`, when a
    sender is unknown: it may load units registered since the registry was filled
    (by another process) and returns True when it found any; the sender is then
    looked up again.
    """

    def __init__(
        self,
        registry: UnitRegistry,
        settings: Settings,
        filters: FilterPipeline | None = None,
        refresh_units: Callable[[], bool] | None = None,
    ) -> None:
        self.registry = registry
        self.auto_register = settings.auto_register
        self.max_payload_bytes = settings.max_payload_bytes
        self.filters = filters or FilterPipeline(settings.filters)
        self.refresh_units = refresh_units
        self.dji = DjiState()  # DJI topology, merged dock OSD and home points, kept between batches

    def run(
        self,
        messages: Sequence[RawMessage],
        now: datetime | None = None,
        decoded: Sequence[DecodeResult] | None = None,
    ) -> PipelineResult:
        """Decode, resolve and filter ``messages`` into one :class:`PipelineResult`.

        ``decoded``: the messages' codec results when the caller already has them
        (HTTP ingest decodes each request to authenticate its sender), one per message.
        """
        result = PipelineResult()
        batch = result.batch
        pings: list[Ping] = batch.pings
        statuses: list[tuple[str, StatusUpdate]] = batch.statuses
        flag_updates: list[FlagUpdate] = batch.flag_updates
        new_units: list[Unit] = batch.new_units
        dead: list[DeadLetter] = batch.dead_letters
        telemetry: list[DroneTelemetry] = batch.telemetry
        reports: list[FieldReport] = batch.reports
        disconnected = result.disconnected
        ends = result.ends
        rejected, ignored, fired = result.rejected, result.ignored, result.fired
        ctx = self.filters.context(now or datetime.now(UTC))
        check = self.filters.check
        fired_names: list[str] = []  # counted once at the end (Counter.update per ping is slow)
        resolve = self.registry.resolve
        auto = self.auto_register
        limit = self.max_payload_bytes
        dji = self.dji
        refreshed = self.refresh_units is None
        fromtimestamp = datetime.fromtimestamp
        received_pings = 0

        for i, m in enumerate(messages):
            topic = m.topic
            payload = m.payload
            received = fromtimestamp(m.received_at, UTC)
            res = decode_message(topic, payload, received, limit, dji) if decoded is None else decoded[i]
            if type(res) is Decoded:
                event = res.event
                if event is not None and event.kind == "lwt" and not res.pings:
                    known = resolve(res.ref, False)
                    if not isinstance(known, Rejection):
                        disconnected.append(known[0].unit_id)
                    else:
                        ignored["lwt_unknown_unit"] += 1
                else:
                    found = resolve(res.ref, auto)
                    if isinstance(found, Rejection) and found.reason == UNKNOWN_UNIT and not refreshed:
                        refreshed = True
                        assert self.refresh_units is not None
                        if self.refresh_units():
                            found = resolve(res.ref, auto)
                    if isinstance(found, Rejection):
                        rejected[found.reason] += 1
                        dead.append(DeadLetter(topic, payload, found.reason, found.detail, received))
                    else:
                        unit, is_new = found
                        if is_new:
                            new_units.append(unit)
                        unit_id = unit.unit_id
                        kind = unit.kind
                        for ping in res.pings:
                            received_pings += 1
                            ping.unit_id = unit_id
                            f = check(ping, kind, ctx, fired_names)
                            if f is None:
                                pings.append(ping)
                            elif type(f) is FlagUpdate:
                                pings.append(ping)
                                flag_updates.append(f)
                            else:
                                assert type(f) is Rejection
                                rejected[f.reason] += 1
                                dead.append(DeadLetter(topic, payload, f.reason, f.detail, received))
                        if res.telemetry:
                            for t in res.telemetry:
                                t.unit_id = unit_id
                            telemetry.extend(res.telemetry)
                        if res.status is not None:
                            statuses.append((unit_id, res.status))
                        if res.report is not None:
                            res.report.unit_id = unit_id
                            reports.append(res.report)
                        if event is not None:
                            ignored[f"event_{event.kind}"] += 1  # recorded nowhere yet: counted
            elif type(res) is Ignored:
                ignored[res.reason] += 1
            else:
                assert type(res) is Rejection
                rejected[res.reason] += 1
                dead.append(DeadLetter(topic, payload, res.reason, res.detail, received))
            ends.append(
                (
                    len(pings), len(statuses), len(flag_updates), len(new_units), len(dead),
                    len(disconnected), len(telemetry), len(reports),
                )
            )  # fmt: skip
        result.pings_received = received_pings
        fired.update(fired_names)
        return result


__all__ = ["NO_ENDS", "IngestPipeline", "PipelineResult", "RawMessage"]
