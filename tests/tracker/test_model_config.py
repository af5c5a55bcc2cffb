"""Unit-id contract, freshness thresholds and configuration parsing."""

from __future__ import annotations

import pickle
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest

from tracker.config import Settings, parse_mqtt_url
from tracker.errors import ConfigError, InvalidUnitIdError
from tracker.freshness import FreshnessThresholds
from tracker.model import Ping, PingFlag, Source, is_valid_unit_id, validate_unit_id


@pytest.mark.parametrize("uid", ["SER-014", "a", "mov.03", "dji.1581F5BKD", "x:y_z-1", "A" * 64])
def test_valid_unit_ids(uid: str) -> None:
    assert is_valid_unit_id(uid)
    assert validate_unit_id(uid) == uid


@pytest.mark.parametrize(
    "uid", ["", "-lead", ".lead", "A" * 65, "a/b", "a+b", "a#", "ñandú", "a b", "ok\n", "a\x00b", "$SYS"]
)
def test_invalid_unit_ids(uid: str) -> None:
    assert not is_valid_unit_id(uid)
    with pytest.raises(InvalidUnitIdError, match="invalid unit id"):
        validate_unit_id(uid)


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="stale"):
        FreshnessThresholds(60, 30)


def test_mqtt_url_parsing() -> None:
    t = parse_mqtt_url("mqtt://bridge:s%40cret@broker.example:1884")
    assert (t.host, t.port, t.username, t.password) == ("broker.example", 1884, "bridge", "s@cret")
    assert t.tls is False
    assert parse_mqtt_url("mqtts://b.example").port == 8883
    with pytest.raises(ConfigError, match="scheme"):
        parse_mqtt_url("http://b.example")
    with pytest.raises(ConfigError, match="port"):
        parse_mqtt_url("mqtt://b.example:99999")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERENAZGO_AUTO_REGISTER", "true")
    monkeypatch.setenv("SERENAZGO_MQTT_URL", "mqtt://h:1999")
    monkeypatch.setenv("SERENAZGO_FILTERS__POOR_ACCURACY_M", "50")
    s = Settings()
    assert s.auto_register is True
    assert s.mqtt is not None and s.mqtt.port == 1999
    assert s.filters.poor_accuracy_m == 50
    with pytest.raises(ValueError, match="positive"):
        Settings(batch_max=0)


def test_a_ping_pickles_with_every_field() -> None:
    """Ping.__reduce__ (HTTP ingest's worker → API process) lists every field, in order."""
    t = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
    values: dict[str, object] = {
        "unit_id": "mov-07", "ts": t, "lat": -12.1, "lon": -77.03, "alt": 80.5, "speed": 1.5,
        "heading": 90.0, "accuracy": 8.0, "battery": 77.0, "flags": PingFlag.JITTER | PingFlag.LATE,
        "source": Source.OSMAND, "received_at": t + timedelta(seconds=1),
    }  # fmt: skip
    assert list(values) == [f.name for f in fields(Ping)]  # a new field must be added here and there
    ping = Ping(**values)  # type: ignore[arg-type]
    back = pickle.loads(pickle.dumps(ping))
    assert back == ping
    assert [getattr(back, name) for name in values] == list(values.values())
    assert type(back.flags) is PingFlag
    assert type(back.source) is Source
