"""PositionWriter against a real PostgreSQL: exactly-once storage, latest, flags, statuses, dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tracker.batch import DeadLetter, FlagUpdate, IngestBatch
from tracker.model import Ping, PingFlag, Source, StatusUpdate, Unit, UnitKind, UnitStatus
from tracker.store import writer as writer_module
from tracker.store.schema import DEAD_LETTER_PAYLOAD_MAX, SOURCE_BY_CODE
from tracker.store.units import create_unit_sync
from tracker.store.writer import PositionWriter

pytestmark = pytest.mark.integration

# Recent enough for any retention, fixed to the second so comparisons are exact.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


def ping(unit_id: str, second: float, lat: float = -12.12, lon: float = -77.03, **kw: object) -> Ping:
    ts = T0 + timedelta(seconds=second)
    fields: dict[str, object] = {
        "alt": 79.5,
        "speed": 1.25,
        "heading": 90.0,
        "accuracy": 8.0,
        "battery": 77.0,
        "source": Source.OWNTRACKS,
        "received_at": ts + timedelta(milliseconds=1500),
    }
    fields.update(kw)
    return Ping(unit_id, ts, lat, lon, **fields)  # type: ignore[arg-type]


@pytest.fixture(autouse=True, params=["arrays", "staging"])
def latest_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test on both ways to unit_latest: binary arrays (few units a batch) and the staging COPY."""
    monkeypatch.setattr(writer_module, "LATEST_ARRAYS_MAX", 10**6 if request.param == "arrays" else 0)
    return str(request.param)


@pytest.fixture
def writer(pg_url: str) -> Iterator[PositionWriter]:
    with PositionWriter(pg_url) as w:
        yield w


def rows(url: str, sql: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def latest(url: str, unit_id: str) -> tuple[object, ...]:
    found = rows(
        url,
        "SELECT ts, lat, lon, alt, speed, heading, accuracy, battery, flags"
        " FROM unit_latest WHERE unit_id = %s",
        [unit_id],
    )
    assert len(found) == 1, found
    return found[0]


def test_stores_every_ping_exactly_once_with_all_fields(writer: PositionWriter, pg_url: str) -> None:
    pings = [
        ping(f"u{i % 7}", i, lat=-12.1 - i * 1e-5, lon=-77.0 + i * 1e-5, flags=PingFlag(i % 2 * 2))
        for i in range(500)
    ]
    pings.append(
        ping("bare", 1, alt=None, speed=None, heading=None, accuracy=None, battery=None, received_at=None)
    )
    result = writer.write(IngestBatch(pings=pings))
    assert (result.stored, result.duplicates, result.dead_letters) == (501, 0, 0)

    again = writer.write(IngestBatch(pings=pings))
    assert (again.stored, again.duplicates) == (0, 501)

    stored = rows(
        pg_url,
        "SELECT unit_id, ts, lat, lon, alt, speed, heading, accuracy, battery, flags, source, recv_lag_ms"
        " FROM positions ORDER BY unit_id, ts",
    )
    expected = sorted(pings, key=lambda p: (p.unit_id, p.ts))
    assert len(stored) == len(expected)
    for row, p in zip(stored, expected, strict=True):
        unit_id, ts, lat, lon, alt, speed, heading, accuracy, battery, flags, source, lag = row
        assert (unit_id, ts, lat, lon) == (p.unit_id, p.ts, p.lat, p.lon)  # float8: exact
        assert (alt, speed, heading, accuracy, battery) == (p.alt, p.speed, p.heading, p.accuracy, p.battery)
        assert flags == int(p.flags)
        assert SOURCE_BY_CODE[source] is p.source  # type: ignore[index]
        assert lag == (None if p.received_at is None else 1500)


def test_partly_replayed_batch_stores_only_the_new_fixes(writer: PositionWriter, pg_url: str) -> None:
    first = [ping("rep", i, lat=-12.0 - i * 1e-4) for i in range(100)]
    writer.write(IngestBatch(pings=first))
    mixed = first[50:] + [ping("rep", 100 + i, lat=-13.0) for i in range(50)]
    result = writer.write(IngestBatch(pings=mixed))
    assert (result.stored, result.duplicates) == (50, 50)
    stored = rows(pg_url, "SELECT ts, lat FROM positions WHERE unit_id = 'rep' ORDER BY ts")
    assert stored == [(p.ts, p.lat) for p in first] + [(p.ts, p.lat) for p in mixed[50:]]
    # The replayed fixes kept their first version; latest moved to the newest new fix.
    assert latest(pg_url, "rep")[:2] == (T0 + timedelta(seconds=149), -13.0)


def test_duplicates_inside_one_batch_are_stored_once(writer: PositionWriter, pg_url: str) -> None:
    first = ping("dup", 10, lat=-12.0)
    twin = ping("dup", 10, lat=-12.5)  # same (unit, ts): a redelivered copy
    result = writer.write(IngestBatch(pings=[first, twin, ping("dup", 11)]))
    assert (result.stored, result.duplicates) == (2, 1)
    assert rows(pg_url, "SELECT count(*) FROM positions WHERE unit_id = 'dup'") == [(2,)]


def test_latest_never_moves_backwards(writer: PositionWriter, pg_url: str) -> None:
    writer.write(IngestBatch(pings=[ping("car1", 100, lat=-12.100)]))
    # A late fix, not even flagged LATE by the filters: the database guard alone must hold.
    writer.write(IngestBatch(pings=[ping("car1", 50, lat=-12.050)]))
    assert latest(pg_url, "car1")[:2] == (T0 + timedelta(seconds=100), -12.100)
    # Newest and older fix in one batch, newest first in the list.
    writer.write(IngestBatch(pings=[ping("car1", 300, lat=-12.300), ping("car1", 200, lat=-12.200)]))
    assert latest(pg_url, "car1")[:2] == (T0 + timedelta(seconds=300), -12.300)
    # All fixes were stored even though only the newest moved latest.
    assert rows(pg_url, "SELECT count(*) FROM positions WHERE unit_id = 'car1'") == [(4,)]


@pytest.mark.parametrize("flag", [PingFlag.SUSPECT, PingFlag.OUTLIER, PingFlag.LATE])
def test_not_latest_flags_never_become_latest(writer: PositionWriter, pg_url: str, flag: PingFlag) -> None:
    writer.write(IngestBatch(pings=[ping("m1", 10, lat=-12.010)]))
    writer.write(IngestBatch(pings=[ping("m1", 20, lat=-13.0, flags=flag), ping("m1", 15, lat=-12.015)]))
    ts, lat, *_ = latest(pg_url, "m1")
    assert (ts, lat) == (T0 + timedelta(seconds=15), -12.015)
    # A unit whose only fix is not eligible has no latest row at all.
    writer.write(IngestBatch(pings=[ping("m2", 10, flags=flag)]))
    assert rows(pg_url, "SELECT count(*) FROM unit_latest WHERE unit_id = 'm2'") == [(0,)]


def test_jitter_keeps_position_but_takes_time_speed_battery(writer: PositionWriter, pg_url: str) -> None:
    writer.write(IngestBatch(pings=[ping("foot1", 0, lat=-12.1000, lon=-77.0300, speed=1.4, battery=90.0)]))
    jitter = ping(
        "foot1", 30, lat=-12.1001, lon=-77.0301, alt=90.0, speed=0.1, battery=89.0, flags=PingFlag.JITTER
    )
    writer.write(IngestBatch(pings=[jitter]))
    ts, lat, lon, alt, speed, _heading, _acc, battery, flags = latest(pg_url, "foot1")
    assert (ts, lat, lon, alt) == (T0 + timedelta(seconds=30), -12.1000, -77.0300, 79.5)
    assert (speed, battery, flags) == (pytest.approx(0.1), 89.0, int(PingFlag.JITTER))
    # The jitter fix itself is stored as reported.
    assert rows(pg_url, "SELECT lat FROM positions WHERE unit_id = 'foot1' AND ts = %s", [jitter.ts]) == [
        (-12.1001,)
    ]


def test_jitter_after_a_move_in_the_same_batch_keeps_the_moved_position(
    writer: PositionWriter, pg_url: str
) -> None:
    writer.write(IngestBatch(pings=[ping("foot2", 0, lat=-12.2000)]))
    moved = ping("foot2", 10, lat=-12.2100)
    still = ping("foot2", 20, lat=-12.2101, flags=PingFlag.JITTER)
    writer.write(IngestBatch(pings=[still, moved]))
    ts, lat, *_ = latest(pg_url, "foot2")
    assert (ts, lat) == (T0 + timedelta(seconds=20), -12.2100)


def test_first_fix_of_a_unit_may_be_jitter(writer: PositionWriter, pg_url: str) -> None:
    writer.write(IngestBatch(pings=[ping("foot3", 5, lat=-12.3, flags=PingFlag.JITTER)]))
    assert latest(pg_url, "foot3")[:2] == (T0 + timedelta(seconds=5), -12.3)


def test_flag_updates_add_bits_to_stored_fixes(writer: PositionWriter, pg_url: str) -> None:
    target = ping("d1", 40, flags=PingFlag.SUSPECT)
    other = ping("d1", 41, flags=PingFlag.POOR_ACCURACY)
    writer.write(IngestBatch(pings=[target, other]))
    writer.write(
        IngestBatch(
            flag_updates=[
                FlagUpdate("d1", target.ts, PingFlag.OUTLIER),
                FlagUpdate("d1", target.ts, PingFlag.MOCK),  # two updates of one fix: both bits land
                FlagUpdate("ghost", target.ts, PingFlag.OUTLIER),  # no such fix: nothing happens
            ]
        )
    )
    got = dict(rows(pg_url, "SELECT ts, flags FROM positions WHERE unit_id = 'd1'"))
    assert got[target.ts] == int(PingFlag.SUSPECT | PingFlag.OUTLIER | PingFlag.MOCK)
    assert got[other.ts] == int(PingFlag.POOR_ACCURACY)


def test_flag_update_for_a_fix_in_the_same_batch(writer: PositionWriter, pg_url: str) -> None:
    p = ping("d2", 1)
    writer.write(IngestBatch(pings=[p], flag_updates=[FlagUpdate("d2", p.ts, PingFlag.OUTLIER)]))
    assert rows(pg_url, "SELECT flags FROM positions WHERE unit_id = 'd2'") == [(int(PingFlag.OUTLIER),)]


def test_status_updates_only_move_forwards(writer: PositionWriter, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_unit_sync(conn, Unit("car9", UnitKind.PATROL_CAR))
    t = T0 + timedelta(minutes=5)
    writer.write(
        IngestBatch(
            statuses=[
                ("car9", StatusUpdate(UnitStatus.EN_ROUTE, t - timedelta(seconds=1))),
                ("car9", StatusUpdate(UnitStatus.DISPATCHED, t)),
                ("nobody", StatusUpdate(UnitStatus.ON_SCENE, t)),  # unknown unit: ignored
            ]
        )
    )
    assert rows(pg_url, "SELECT status, status_ts FROM units WHERE unit_id = 'car9'") == [("dispatched", t)]
    writer.write(
        IngestBatch(statuses=[("car9", StatusUpdate(UnitStatus.AVAILABLE, t - timedelta(minutes=1)))])
    )
    assert rows(pg_url, "SELECT status FROM units WHERE unit_id = 'car9'") == [("dispatched",)]
    writer.write(
        IngestBatch(statuses=[("car9", StatusUpdate(UnitStatus.ON_SCENE, t + timedelta(minutes=1)))])
    )
    assert rows(pg_url, "SELECT status FROM units WHERE unit_id = 'car9'") == [("on_scene",)]


def test_new_units_are_registered_idempotently(writer: PositionWriter, pg_url: str) -> None:
    unit = Unit("ot.jane.phone", UnitKind.FOOT, external_ids={"owntracks": "owntracks/jane/phone"})
    clash = Unit("ot.other", UnitKind.FOOT, external_ids={"owntracks": "owntracks/jane/phone"})
    writer.write(IngestBatch(new_units=[unit], pings=[ping("ot.jane.phone", 1)]))
    writer.write(IngestBatch(new_units=[unit, clash], pings=[ping("ot.jane.phone", 2)]))
    assert rows(pg_url, "SELECT unit_id, kind FROM units ORDER BY unit_id") == [("ot.jane.phone", "foot")]
    assert rows(pg_url, "SELECT protocol, external_id, unit_id FROM unit_external_ids") == [
        ("owntracks", "owntracks/jane/phone", "ot.jane.phone")
    ]


def test_dead_letters_keep_payload_reason_and_size(writer: PositionWriter, pg_url: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    big = bytes(range(256)) * 40  # 10,240 bytes, binary
    letters = [
        DeadLetter("serenazgo/units/x/position", b'{"lat": 91}', "lat_out_of_range", "lat 91 > 90", now),
        DeadLetter("owntracks/a/b", big, "payload_too_large", "bad\x00byte", now + timedelta(seconds=1)),
    ]
    result = writer.write(IngestBatch(dead_letters=letters))
    assert result.dead_letters == 2
    got = rows(
        pg_url,
        "SELECT received_at, topic, payload, payload_size, reason, detail FROM dead_letters ORDER BY id",
    )
    assert got[0] == (
        now,
        "serenazgo/units/x/position",
        b'{"lat": 91}',
        11,
        "lat_out_of_range",
        "lat 91 > 90",
    )
    assert got[1][2] == big[:DEAD_LETTER_PAYLOAD_MAX]
    assert got[1][3] == len(big)
    assert got[1][5] == "bad\\0byte"  # PostgreSQL text cannot hold NUL: escaped, not a failed batch


def test_a_failed_batch_stores_nothing(writer: PositionWriter, pg_url: str) -> None:
    from tracker.errors import StorageError

    good = ping("ok1", 1)
    bad_letter = DeadLetter("t", b"x", "r", "d", None)  # type: ignore[arg-type]  # NOT NULL violated
    with pytest.raises(StorageError):
        writer.write(IngestBatch(pings=[good], dead_letters=[bad_letter]))
    assert rows(pg_url, "SELECT count(*) FROM positions") == [(0,)]
    assert rows(pg_url, "SELECT count(*) FROM unit_latest") == [(0,)]
    # The writer is still usable after a rolled-back batch.
    assert writer.write(IngestBatch(pings=[good])).stored == 1


def test_receive_lag_is_clamped_to_int4(writer: PositionWriter, pg_url: str) -> None:
    very_late = ping("lag1", 0, received_at=T0 + timedelta(days=30))  # 2.59e9 ms > int4
    early = ping("lag1", 1, received_at=T0 - timedelta(days=30))
    writer.write(IngestBatch(pings=[very_late, early]))
    assert rows(pg_url, "SELECT recv_lag_ms FROM positions ORDER BY ts") == [(2**31 - 1,), (-(2**31),)]


def test_data_the_server_refuses_is_a_storage_data_error_and_the_writer_recovers(
    writer: PositionWriter, pg_url: str
) -> None:
    """Text PostgreSQL cannot store (a NUL byte) is told apart from an outage."""
    from tracker.errors import StorageDataError

    # Codecs and the registry never let such an id through; the writer must still not
    # report it as a transient failure, or the bridge would retry it forever.
    with pytest.raises(StorageDataError, match="0x00"):
        writer.write(IngestBatch(pings=[ping("MOV\x0001", 0)]))
    result = writer.write(IngestBatch(pings=[ping("MOV-01", 1)]))
    assert result.stored == 1
