"""The password file and ACL renderers, without servers: grants per unit and hostile names kept out."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from mqtt_bridge.broker import EmbeddedBroker, mosquitto_config
from mqtt_bridge.broker_acl import (
    ACL_FILE,
    BRIDGE_USER,
    DJI_GATEWAY,
    GATEWAY_USER,
    HEALTH_USER,
    PASSWORD_FILE,
    SIMULATOR_USER,
    AccessFiles,
    Account,
    Grant,
    load_service_accounts,
    render_access,
    render_acl_file,
    render_password_file,
    service_accounts_path,
    unsafe_reason,
    write_access_files,
)
from mqtt_bridge.topics import SUBSCRIPTION_FILTERS
from tracker.errors import ConfigError
from tracker.mosquitto_hash import mosquitto_hash, verify_mosquitto_hash
from tracker.store.credentials import BrokerCredential

HASH = mosquitto_hash("token", salt=b"0123456789ab")
SERVICES = [
    Account(BRIDGE_USER, mosquitto_hash("b"), (Grant("read", "serenazgo/units/+/position"),)),
    Account(SIMULATOR_USER, mosquitto_hash("s"), (Grant("write", "serenazgo/units/#"),)),
]


def acl_blocks(text: str) -> dict[str | None, list[str]]:
    """The ACL's ``topic`` lines per ``user`` (None: the anonymous block before the first user)."""
    blocks: dict[str | None, list[str]] = {None: []}
    user: str | None = None
    for line in text.splitlines():
        if line.startswith("user "):
            user = line.removeprefix("user ")
            assert user not in blocks, f"user {user} twice"
            blocks[user] = []
        elif line.startswith("topic "):
            blocks[user].append(line)
        else:
            assert line == "" or line.startswith("#"), f"unexpected line {line!r}"
    return blocks


def password_lines(text: str) -> dict[str, str]:
    """username -> hash of a password file, checking every line has exactly one ':'-separated pair."""
    out = {}
    for line in text.splitlines():
        user, sep, hashed = line.partition(":")
        assert sep and ":" not in hashed and user not in out, line
        out[user] = hashed
    return out


def test_a_unit_gets_its_native_owntracks_and_dji_topics_only() -> None:
    cred = BrokerCredential(
        "patrol-7",
        HASH,
        {"owntracks": "owntracks/jane/phone", "dji": "1581F5BK", DJI_GATEWAY: "4TADK1", "osmand": "4824"},
    )
    files = render_access(SERVICES, [cred])
    assert files.skipped == ()
    assert password_lines(files.password_file) == {BRIDGE_USER: SERVICES[0].password_hash,
                                                   SIMULATOR_USER: SERVICES[1].password_hash,
                                                   "patrol-7": HASH}  # fmt: skip
    assert acl_blocks(files.acl_file)["patrol-7"] == [
        "topic readwrite serenazgo/units/patrol-7/#",
        "topic readwrite owntracks/jane/phone/#",
        "topic readwrite thing/product/1581F5BK/#",
        "topic readwrite thing/product/4TADK1/#",
        "topic readwrite sys/product/4TADK1/#",
    ]
    assert acl_blocks(files.acl_file)[None] == []  # anonymous clients: nothing


def test_anonymous_block_only_when_allowed() -> None:
    files = render_access(SERVICES, [], allow_anonymous=True)
    assert acl_blocks(files.acl_file)[None] == ["topic readwrite #"]
    assert files.allow_anonymous
    conf = mosquitto_config(1883, Path("/state"), access=files)
    assert "allow_anonymous true" in conf.splitlines()
    closed = mosquitto_config(1883, Path("/state"), access=render_access(SERVICES, []))
    lines = closed.splitlines()
    assert "allow_anonymous false" in lines
    assert f"password_file /state/{PASSWORD_FILE}" in lines and f"acl_file /state/{ACL_FILE}" in lines
    # Without access (the test fixtures): open, as before.
    assert "allow_anonymous true" in mosquitto_config(1883, Path("/state")).splitlines()
    assert not any(
        line.startswith(("password_file", "acl_file"))
        for line in mosquitto_config(1883, Path("/s")).splitlines()
    )


@pytest.mark.parametrize(
    "owntracks",
    [
        "owntracks/+/phone",
        "owntracks/#/phone",
        "owntracks/jane/ph one",
        "owntracks/jane\nuser serenazgo-bridge/phone",
        "owntracks/jane/phone\ntopic readwrite #",
        "owntracks/jane/phone/extra",
        "owntracks/jane",
        "owntracks/ja:ne/phone",
        "owntracks/%u/phone",
        "owntracks/$SYS/phone",
        "owntracks//phone",
        "notowntracks/jane/phone",
        "owntracks/jane/\x00",
    ],
)
def test_a_hostile_owntracks_id_gets_no_grant(owntracks: str) -> None:
    files = render_access(SERVICES, [BrokerCredential("u1", HASH, {"owntracks": owntracks})])
    assert acl_blocks(files.acl_file)["u1"] == ["topic readwrite serenazgo/units/u1/#"]
    assert len(files.skipped) == 1 and "OwnTracks" in files.skipped[0]
    assert "\x00" not in files.acl_file


@pytest.mark.parametrize("serial", ["SN/../#", "SN+", "SN #", "SN\ntopic readwrite #", "", "x" * 200])
def test_a_hostile_dji_serial_gets_no_grant(serial: str) -> None:
    files = render_access(SERVICES, [BrokerCredential("u1", HASH, {"dji": serial, DJI_GATEWAY: serial})])
    assert acl_blocks(files.acl_file)["u1"] == ["topic readwrite serenazgo/units/u1/#"]
    assert len(files.skipped) == 2


@pytest.mark.parametrize(
    "unit_id",
    ["bad\nid", "u:1", "u 1", "u+1", "u#", "u/1", "", "-dash-first", BRIDGE_USER, SIMULATOR_USER],
)
def test_a_unit_that_cannot_be_written_safely_gets_no_account(unit_id: str) -> None:
    files = render_access(SERVICES, [BrokerCredential(unit_id, HASH, {}), BrokerCredential("ok-1", HASH, {})])
    users = password_lines(files.password_file)
    assert set(users) == {BRIDGE_USER, SIMULATOR_USER, "ok-1"}
    assert users[BRIDGE_USER] == SERVICES[0].password_hash  # a unit named like a service never replaces it
    assert set(acl_blocks(files.acl_file)) == {None, BRIDGE_USER, SIMULATOR_USER, "ok-1"}
    assert len(files.skipped) == 1


def test_a_credential_without_a_mosquitto_hash_or_a_second_one_is_left_out() -> None:
    creds = [
        BrokerCredential("old", "", {}),
        BrokerCredential("forged", "$7$101$abc$def\nroot:$7$1$a$b", {}),
        BrokerCredential("twice", HASH, {}),
        BrokerCredential("twice", mosquitto_hash("other"), {}),
    ]
    files = render_access(SERVICES, creds)
    assert set(password_lines(files.password_file)) == {BRIDGE_USER, SIMULATOR_USER, "twice"}
    assert password_lines(files.password_file)["twice"] == HASH
    assert len(files.skipped) == 3


def test_the_renderers_refuse_what_the_loaders_should_have_caught() -> None:
    with pytest.raises(ConfigError):
        render_password_file([Account("a\nb", HASH, ())])
    with pytest.raises(ConfigError):
        render_password_file([Account("a", "plain-text", ())])
    with pytest.raises(ConfigError):
        render_acl_file([Account("a", HASH, (Grant("read", "a b"),))])
    with pytest.raises(ConfigError):
        render_acl_file([Account("a b", HASH, ())])


def test_unsafe_reason() -> None:
    assert unsafe_reason("patrol-7") is None
    assert unsafe_reason("1581F5BK.A_1-x") is None
    for bad in ("", "a b", "a\tb", "a\nb", "a+b", "a#b", "a/b", "a:b", "%u", "$SYS", "\u2028", "x" * 129):
        assert unsafe_reason(bad) is not None, bad


def test_the_service_accounts_read_and_write_what_the_bridge_and_simulator_use(tmp_path: Path) -> None:
    services = load_service_accounts(tmp_path)
    path = service_accounts_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_service_accounts(tmp_path)
    assert again.passwords == services.passwords  # kept across starts
    assert repr(again).count(services.passwords[BRIDGE_USER]) == 0
    user, password = services.login(BRIDGE_USER)
    bridge = next(a for a in services.accounts() if a.username == user)
    assert verify_mosquitto_hash(password, bridge.password_hash)
    reads = [g.topic for g in bridge.grants if g.access == "read"]
    assert reads == list(SUBSCRIPTION_FILTERS)
    assert {g.topic for g in bridge.grants if g.access == "write"} == {
        "serenazgo/events/#",
        "serenazgo/deadletter",
    }
    sim = next(a for a in services.accounts() if a.username == SIMULATOR_USER)
    assert {g.access for g in sim.grants} == {"write"}
    gateway = next(a for a in services.accounts() if a.username == GATEWAY_USER)
    assert [(g.access, g.topic) for g in gateway.grants] == [
        ("write", "serenazgo/units/+/position"),
        ("write", "serenazgo/units/+/drone"),
    ]
    assert next(a for a in services.accounts() if a.username == HEALTH_USER).grants == ()
    assert len(set(services.passwords.values())) == 4
    # Hashed once: rendering twice gives the same text (no rewrite, no reload when nothing changed).
    assert render_access(services.accounts(), []) == render_access(services.accounts(), [])


def test_write_access_files_is_private_and_reports_changes(tmp_path: Path) -> None:
    files = AccessFiles("u:" + HASH + "\n", "user u\n")
    owned: list[str] = []
    assert write_access_files(tmp_path, files, lambda p: owned.append(p.name))
    for name in (PASSWORD_FILE, ACL_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert len(owned) == 2  # handed to the broker's user before they took their place
    assert not write_access_files(tmp_path, files)
    assert write_access_files(tmp_path, AccessFiles(files.password_file, "user v\n"))
    assert (tmp_path / ACL_FILE).read_text() == "user v\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [ACL_FILE, PASSWORD_FILE]  # no temporary left


def test_the_amqtt_fallback_enforces_access_and_takes_changes_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = EmbeddedBroker(tmp_path / "b", mosquitto=False, access=render_access(SERVICES, []))
    with caplog.at_level(logging.WARNING, logger="mqtt_bridge.broker"):
        broker.start()
    try:
        assert broker.kind == "amqtt"
        assert [r.levelno for r in caplog.records] == [logging.WARNING]  # only "no mosquitto binary found"
        assert not broker.set_access(render_access(SERVICES, []))  # the same accounts: nothing to swap
        assert broker.set_access(render_access(SERVICES, [BrokerCredential("u1", HASH, {})]))
        assert not (tmp_path / "b" / PASSWORD_FILE).exists()  # in memory, no files
    finally:
        broker.stop()


def test_the_embedded_broker_listens_beyond_loopback_only_with_access_control(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no device credentials"):
        EmbeddedBroker(tmp_path / "open", host="0.0.0.0")
    files = AccessFiles(password_file="", acl_file="")
    broker = EmbeddedBroker(
        tmp_path / "guarded", access=files, host="0.0.0.0", mosquitto=Path("/usr/sbin/mosquitto")
    )
    broker.port = 18830
    assert broker.url == "mqtt://127.0.0.1:18830"  # local clients still use loopback
    assert "listener 18830 0.0.0.0\n" in mosquitto_config(18830, tmp_path, host=broker.host, access=files)
