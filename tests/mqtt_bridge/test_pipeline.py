"""IngestPipeline: messages in, one batch out (pure; no broker, no database)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_bridge.pipeline import IngestPipeline, PipelineResult
from tracker.config import Settings
from tracker.model import PingFlag, Source, Unit, UnitKind, UnitStatus
from tracker.registry import UnitRegistry

NOW = datetime(2024, 5, 20, 15, 0, tzinfo=UTC)
T0 = NOW - timedelta(minutes=10)


@dataclass
class Msg:
    topic: str
    payload: bytes
    received_at: float = NOW.timestamp()


def native(unit: str, seconds: int, lat: float = -12.1, **extra: object) -> Msg:
    ts = T0 + timedelta(seconds=seconds)
    body = {"ts": int(ts.timestamp() * 1000), "lat": lat, "lon": -77.03, **extra}
    return Msg(f"serenazgo/units/{unit}/position", orjson.dumps(body))


def owntracks(device: str, body: dict[str, object]) -> Msg:
    return Msg(f"owntracks/jane/{device}", orjson.dumps(body))


def registry() -> UnitRegistry:
    return UnitRegistry(
        [
            Unit("car-1", UnitKind.PATROL_CAR),
            Unit("jane", UnitKind.FOOT, external_ids={"owntracks": "owntracks/jane/phone"}),
        ]
    )


def test_a_mixed_batch() -> None:
    pipe = IngestPipeline(registry(), Settings(auto_register=False))
    status_ts = int((T0 + timedelta(seconds=30)).timestamp() * 1000)
    messages = [
        native("car-1", 0),
        owntracks("phone", {"_type": "location", "tst": int(T0.timestamp()), "lat": -12.2, "lon": -77.1}),
        Msg("serenazgo/units/car-1/status", orjson.dumps({"status": "on_scene", "ts": status_ts})),
        native("ghost", 0),  # unknown unit
        Msg("serenazgo/units/car-1/position", b"{oops"),  # invalid JSON
        native("car-1", 5, lat=95.0),  # out of range: the filters reject it
        owntracks("phone", {"_type": "card", "name": "Jane"}),  # nothing to store
        owntracks("phone", {"_type": "lwt", "tst": int(T0.timestamp())}),
        owntracks("tablet", {"_type": "lwt", "tst": int(T0.timestamp())}),  # unknown: ignored
    ]
    result = pipe.run(messages, now=NOW)
    batch = result.batch
    assert [(p.unit_id, p.source) for p in batch.pings] == [
        ("car-1", Source.NATIVE),
        ("jane", Source.OWNTRACKS),
    ]
    assert [(u, s.status) for u, s in batch.statuses] == [("car-1", UnitStatus.ON_SCENE)]
    assert [d.reason for d in batch.dead_letters] == ["unknown_unit", "invalid_json", "lat_out_of_range"]
    assert [d.topic for d in batch.dead_letters] == [messages[i].topic for i in (3, 4, 5)]
    assert batch.dead_letters[0].payload == messages[3].payload
    assert result.disconnected == ["jane"]
    assert result.ignored == {"owntracks_card": 1, "lwt_unknown_unit": 1}
    assert result.rejected == {"unknown_unit": 1, "invalid_json": 1, "lat_out_of_range": 1}
    assert result.messages == len(messages)
    assert result.pings_received == 3
    assert batch.new_units == []


def test_auto_register_creates_each_unit_once() -> None:
    pipe = IngestPipeline(registry(), Settings(auto_register=True))
    result = pipe.run([native("new-7", 0), native("new-7", 10), native("new-8", 0)], now=NOW)
    assert [u.unit_id for u in result.batch.new_units] == ["new-7", "new-8"]
    assert len(result.batch.pings) == 3 and not result.batch.dead_letters


def test_filters_keep_state_between_batches() -> None:
    pipe = IngestPipeline(registry(), Settings())
    pipe.run([native("car-1", 60)], now=NOW)
    (late,) = pipe.run([native("car-1", 0, lat=-12.11)], now=NOW).batch.pings
    assert late.flags & PingFlag.LATE


def test_unknown_sender_triggers_one_refresh_then_resolves() -> None:
    reg = registry()
    calls = []

    def refresh() -> bool:
        calls.append(1)
        reg.add(Unit("late-comer", UnitKind.MOTORCYCLE))
        return True

    pipe = IngestPipeline(reg, Settings(auto_register=False), refresh_units=refresh)
    result = pipe.run([native("late-comer", 0), native("nobody", 0), native("nobody-else", 0)], now=NOW)
    assert calls == [1]  # once per batch, however many unknown senders
    assert [p.unit_id for p in result.batch.pings] == ["late-comer"]
    assert [d.reason for d in result.batch.dead_letters] == ["unknown_unit", "unknown_unit"]


MESSAGES = [
    native("car-1", 0),
    native("ghost", 0),
    Msg("serenazgo/units/car-1/status", orjson.dumps({"status": "dispatched"})),
    native("car-1", 10),
    owntracks("phone", {"_type": "lwt"}),
    Msg("serenazgo/units/car-1/position", b"[]"),
    owntracks("phone", {"_type": "location", "tst": int(T0.timestamp()), "lat": -12.2, "lon": -77.1}),
    native("new-1", 0),
]


def lists(r: PipelineResult) -> tuple[list[object], ...]:
    b = r.batch
    return (b.pings, b.statuses, b.flag_updates, b.new_units, b.dead_letters, r.disconnected)


@given(st.lists(st.integers(0, len(MESSAGES) - 1), max_size=12), st.data())
def test_parts_add_up_to_the_whole(picks: list[int], data: st.DataObject) -> None:
    result = IngestPipeline(registry(), Settings(auto_register=True)).run(
        [MESSAGES[i] for i in picks], now=NOW
    )
    n = result.messages
    cut = data.draw(st.integers(0, n))
    left, right = result.part(0, cut), result.part(cut, n)
    assert (left.messages, right.messages) == (cut, n - cut)
    for whole, a, b in zip(lists(result), lists(left), lists(right), strict=True):
        assert whole == a + b
    # A part of a part is the same as the part of the whole.
    if n:
        i = data.draw(st.integers(0, n - 1))
        assert lists(result.part(i, i + 1)) == lists(result.part(0, n).part(i, i + 1))


@pytest.mark.parametrize("index", range(len(MESSAGES)))
def test_a_single_message_part_holds_only_its_own_items(index: int) -> None:
    result = IngestPipeline(registry(), Settings(auto_register=True)).run(MESSAGES, now=NOW)
    alone = IngestPipeline(registry(), Settings(auto_register=True)).run([MESSAGES[index]], now=NOW)
    part = result.part(index, index + 1)
    # Same counts as decoding the message on its own (the filter state may set other flags).
    assert [len(x) for x in lists(part)] == [len(x) for x in lists(alone)]
