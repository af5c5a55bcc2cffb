"""Storing a pipeline result, with what the database refuses isolated down to the message at fault.

Shared by the MQTT bridge and HTTP ingest's worker. An outage
(:class:`StorageError`) is the caller's to handle (the bridge retries, HTTP ingest
answers 503). Data the database refuses (:class:`StorageDataError`, e.g. a CHECK
constraint) fails again on every retry, so the batch is split in halves, down to
the one message at fault, which is stored as a ``storage_refused`` dead letter
instead (keeping the unit it registered, if any); the rest is stored as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mqtt_bridge.pipeline import PipelineResult, RawMessage
from tracker import metrics
from tracker.batch import BatchResult, DeadLetter, IngestBatch
from tracker.errors import StorageDataError
from tracker.store.writer import PositionWriter

log = logging.getLogger(__name__)

STORAGE_REFUSED = "storage_refused"


@dataclass(slots=True, frozen=True)
class StoredPart:
    """One write: messages ``lo:hi`` of the batch, and what was stored for them.

    ``result`` is their part of the pipeline's result, or, when the database
    refused message ``lo`` (then ``hi == lo + 1``), only its dead letter ``refused``.
    """

    lo: int
    hi: int
    result: PipelineResult
    written: BatchResult
    refused: DeadLetter | None = None


def store_isolating(
    writer: PositionWriter,
    result: PipelineResult,
    messages: Sequence[RawMessage],
    lo: int = 0,
    hi: int | None = None,
    *,
    who: str = "ingest",
) -> list[StoredPart]:
    """Store messages ``lo:hi`` of ``result`` (all by default), splitting around refused data.

    ``who`` names the caller in the log. Raises :class:`StorageError` on an outage.
    """
    hi = len(messages) if hi is None else hi
    part = result if (lo, hi) == (0, len(messages)) else result.part(lo, hi)
    try:
        return [StoredPart(lo, hi, part, writer.write(part.batch))]
    except StorageDataError as exc:
        metrics.BATCH_FAILURES.labels("data").inc()
        if hi - lo > 1:
            mid = (lo + hi) // 2
            return store_isolating(writer, result, messages, lo, mid, who=who) + store_isolating(
                writer, result, messages, mid, hi, who=who
            )
        return [_store_refused(writer, part, messages[lo], lo, exc, who)]


def _store_refused(
    writer: PositionWriter,
    part: PipelineResult,
    message: RawMessage,
    index: int,
    exc: StorageDataError,
    who: str,
) -> StoredPart:
    """Store the one message the database refused as a dead letter (its new unit, if any, kept)."""
    log.warning("%s: the database refused a message on %.200r: %s", who, message.topic, exc)
    metrics.REJECTED.labels(STORAGE_REFUSED).inc()
    letter = DeadLetter(
        message.topic,
        message.payload,
        STORAGE_REFUSED,
        f"the database refused this message: {str(exc)[:500]}",
        datetime.fromtimestamp(message.received_at, UTC),
    )
    with_unit = IngestBatch(dead_letters=[letter], new_units=part.batch.new_units)
    for batch in (with_unit, IngestBatch(dead_letters=[letter])):
        try:
            return StoredPart(index, index + 1, PipelineResult(batch=batch), writer.write(batch), letter)
        except StorageDataError:
            continue
    log.error("%s: not even the dead letter could be stored; dropping the message", who)
    return StoredPart(index, index + 1, PipelineResult(), BatchResult(0, 0, 0), letter)


__all__ = ["STORAGE_REFUSED", "StoredPart", "store_isolating"]
