"""Who may connect to the broker and which topics each may use: Mosquitto's password file and ACL.

Every unit with a live device credential (``serenazgo unit credentials UNIT``)
connects as MQTT username = its unit id, password = its device token (the same
token as HTTP ingest), and may publish and read only its own topics:

* ``serenazgo/units/{unit_id}/#`` (native position, status, drone, incident);
* ``owntracks/{user}/{device}/#`` for its OwnTracks external id
  ``owntracks/{user}/{device}`` (``#`` also matches the base topic itself, where
  OwnTracks sends locations). Per device rather than ``owntracks/{user}/#``: two
  phones of one OwnTracks user are two units, and neither may speak for the other;
* ``thing/product/{sn}/#`` for its DJI aircraft serial (external id ``dji``), and
  ``thing/product/{gw}/#`` and ``sys/product/{gw}/#`` for its DJI gateway (the
  dock or remote controller that connects to the broker on the aircraft's behalf,
  external id ``dji_gateway``), since it is the gateway that publishes them.

Service accounts, with random passwords generated at the first start and kept
in ``<data_dir>/broker/service-accounts.json`` (mode 0600, :func:`load_service_accounts`):
``serenazgo-bridge`` reads exactly the filters the bridge subscribes to and
writes events and dead letters; ``serenazgo-sim`` (the demo fleet and its DJI
docks) writes any unit's input topics; ``serenazgo-gateway`` (the demo's MAVLink
gateway) writes native position and drone topics; ``serenazgo-health`` (the
API's ``/healthz``) only connects. Their names are reserved: a unit with the
same id gets no broker access (logged).

One connection per login: the embedded Mosquitto runs with
``use_username_as_clientid true`` (:func:`mqtt_bridge.broker.mosquitto_config`),
so the client id is the username whatever the client sends. Without it, a
device connecting with the client id ``serenazgo-bridge`` would close the
bridge's connection and take over its persistent session (Mosquitto closes an
older connection with the same client id, whoever logged it in). Hence one
account per service process, and the health check's own.

Mosquitto 2.0 reads both files at start and again on SIGHUP: the broker drops
connected clients whose credential is gone from the password file and applies
the new ACL to connected clients at once (checked by
``tests/mqtt_bridge/test_broker_acl.py``). Its ACL does not refuse SUBSCRIBE
packets: a device subscribing to ``#`` is granted, and Mosquitto filters every
message by the device's read grants when it delivers it, so the device receives
its own topics only.

Without Mosquitto, the in-process amqtt broker (:mod:`mqtt_bridge.amqtt_broker`)
enforces the same :class:`Account` objects (carried in :attr:`AccessFiles.accounts`)
through :class:`AccessRules` and :func:`may_write` / :func:`may_read` /
:func:`may_subscribe`: MQTT wildcard matching as Mosquitto's ``topic`` lines have it,
except that a subscription must lie within one readable grant.

Every name written into these files (unit ids, OwnTracks users and devices, DJI
serials) is attacker-influenced text: one with a line break, space, ``:``,
``+``, ``#``, ``/`` or ``%`` would forge a password line or widen a grant, so it is
left out of the files (with a logged reason) instead (:func:`unsafe_reason`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from drones.mavlink_gateway import DRONE_TOPIC, POSITION_TOPIC
from mqtt_bridge.bridge import DEAD_LETTER_TOPIC
from mqtt_bridge.topics import SUBSCRIPTION_FILTERS
from tracker.errors import ConfigError
from tracker.model import Source, is_valid_unit_id
from tracker.mosquitto_hash import mosquitto_hash, verify_mosquitto_hash
from tracker.store.credentials import BrokerCredential, broker_credentials_sync, credentials_fingerprint_sync

log = logging.getLogger(__name__)

BRIDGE_USER = "serenazgo-bridge"
SIMULATOR_USER = "serenazgo-sim"
GATEWAY_USER = "serenazgo-gateway"
HEALTH_USER = "serenazgo-health"
SERVICE_USERS = (BRIDGE_USER, SIMULATOR_USER, GATEWAY_USER, HEALTH_USER)
SERVICE_ACCOUNTS_FILE = "service-accounts.json"
PASSWORD_FILE = "password_file"  # noqa: S105 - a file name, not a password
ACL_FILE = "acl_file"
EVENTS_FILTER = "serenazgo/events/#"
# External id of the DJI gateway (dock or remote controller) that publishes for an aircraft unit.
DJI_GATEWAY = "dji_gateway"
SERVICE_PASSWORD_BYTES = 32

Access = Literal["read", "write", "readwrite"]

# Characters that would break a line of either file, act as an MQTT wildcard or level
# separator, split "user:hash", or be substituted in an ACL pattern line.
_FORBIDDEN = frozenset("+#/:%")
MAX_NAME = 128
_HASH_RE = re.compile(r"\$7\$[0-9]{1,9}\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*")


@dataclass(frozen=True, slots=True)
class Grant:
    """One ACL line: ``topic <access> <topic>``."""

    access: Access
    topic: str


@dataclass(frozen=True, slots=True)
class Account:
    """A broker login: username, its ``$7$`` password hash and the topics it may use."""

    username: str
    password_hash: str
    grants: tuple[Grant, ...]


@dataclass(frozen=True, slots=True)
class AccessFiles:
    """The rendered password file and ACL, whether clients without a login are let in, and the accounts.

    ``accounts`` are what both files were rendered from: the in-process amqtt
    broker enforces them directly (:class:`AccessRules`) instead of parsing the text.
    """

    password_file: str
    acl_file: str
    allow_anonymous: bool = False
    skipped: tuple[str, ...] = field(default=(), compare=False)  # why some credentials were left out
    accounts: tuple[Account, ...] = field(default=(), repr=False)


def unsafe_reason(name: str) -> str | None:
    """Why ``name`` cannot be written into the password file or an ACL topic, or None when it can."""
    if not name:
        return "is empty"
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    if not name.isprintable() or any(c.isspace() for c in name):
        return "contains spaces, line breaks or other non-printable characters"
    bad = sorted(set(name) & _FORBIDDEN)
    if bad:
        return f"contains {' '.join(repr(c) for c in bad)}"
    if name.startswith("$"):
        return "starts with '$' (reserved for the broker's own topics)"
    return None


def bridge_grants() -> tuple[Grant, ...]:
    """The bridge reads what it subscribes to and writes events and dead letters."""
    reads = tuple(Grant("read", f) for f in SUBSCRIPTION_FILTERS)
    return (*reads, Grant("write", EVENTS_FILTER), Grant("write", DEAD_LETTER_TOPIC))


def bridge_account(username: str, password: str, previous: str = "") -> Account:
    """The bridge's account under another name (an external broker's), with the bridge's grants.

    Its hash in ``previous`` (the password file written last time) is kept when it still matches,
    so that rewriting the files with nothing changed leaves them byte for byte the same.
    """
    for line in previous.splitlines():
        user, _, hashed = line.partition(":")
        if user == username and verify_mosquitto_hash(password, hashed):
            return Account(username, hashed, bridge_grants())
    return Account(username, mosquitto_hash(password), bridge_grants())


def simulator_grants() -> tuple[Grant, ...]:
    """The demo fleet publishes as any unit: native, OwnTracks and DJI input topics (and reads none)."""
    return tuple(
        Grant("write", t) for t in ("serenazgo/units/#", "owntracks/#", "thing/product/#", "sys/product/#")
    )


def gateway_grants() -> tuple[Grant, ...]:
    """The demo's MAVLink gateway publishes its aircraft's native position and drone topics."""
    return tuple(Grant("write", t.format(unit_id="+")) for t in (POSITION_TOPIC, DRONE_TOPIC))


def device_grants(cred: BrokerCredential) -> tuple[tuple[Grant, ...], list[str]]:
    """The topics ``cred``'s unit may use, and why any of its external ids gave none."""
    grants = [Grant("readwrite", f"serenazgo/units/{cred.unit_id}/#")]
    problems: list[str] = []
    owntracks = cred.external_ids.get(Source.OWNTRACKS.value)
    if owntracks is not None:
        parts = owntracks.split("/")
        why = (
            "is not owntracks/{user}/{device}"
            if len(parts) != 3 or parts[0] != "owntracks"
            else next((r for r in map(unsafe_reason, parts[1:]) if r is not None), None)
        )
        if why is None:
            grants.append(Grant("readwrite", f"owntracks/{parts[1]}/{parts[2]}/#"))
        else:
            problems.append(f"OwnTracks id {owntracks[:80]!r} {why}")
    for proto, prefixes in ((Source.DJI.value, ("thing",)), (DJI_GATEWAY, ("thing", "sys"))):
        serial = cred.external_ids.get(proto)
        if serial is None:
            continue
        why = unsafe_reason(serial)
        if why is None:
            grants.extend(Grant("readwrite", f"{p}/product/{serial}/#") for p in prefixes)
        else:
            problems.append(f"{proto} serial {serial[:80]!r} {why}")
    return tuple(grants), problems


def device_accounts(
    creds: Iterable[BrokerCredential], reserved: Iterable[str] = SERVICE_USERS
) -> tuple[list[Account], list[str]]:
    """One account per credential that can be written safely, and why the others were left out."""
    taken = set(reserved)
    accounts: list[Account] = []
    skipped: list[str] = []
    for cred in creds:
        unit = cred.unit_id
        why = unsafe_reason(unit) or (None if is_valid_unit_id(unit) else "is not a valid unit id")
        if why is None and unit in taken:
            why = "is a service account's name, or has two live credentials"
        if why is None and _HASH_RE.fullmatch(cred.mqtt_hash) is None:
            why = "has a credential without a Mosquitto hash (reissue it)"
        if why is not None:
            skipped.append(f"unit {unit[:80]!r} {why}: no broker access")
            continue
        taken.add(unit)
        grants, problems = device_grants(cred)
        skipped.extend(f"unit {unit}: {p}: no broker access on those topics" for p in problems)
        accounts.append(Account(unit, cred.mqtt_hash, grants))
    return accounts, skipped


def anonymous_grants(allow_anonymous: bool) -> tuple[Grant, ...]:
    """What clients without a login may use: every topic in the lab setting, nothing otherwise."""
    return (Grant("readwrite", "#"),) if allow_anonymous else ()


def render_password_file(accounts: Sequence[Account]) -> str:
    """Mosquitto's ``password_file``: one ``username:$7$…`` line per account."""
    lines = []
    for account in accounts:
        why = unsafe_reason(account.username)
        if why is not None:
            raise ConfigError(
                f"refusing to write user {account.username[:80]!r} into the broker's password file: it {why}"
            )
        if _HASH_RE.fullmatch(account.password_hash) is None:
            raise ConfigError(f"the broker password of {account.username!r} is not a Mosquitto $7$ hash")
        lines.append(f"{account.username}:{account.password_hash}\n")
    return "".join(lines)


def render_acl_file(accounts: Sequence[Account], *, allow_anonymous: bool = False) -> str:
    """Mosquitto's ``acl_file``: a ``user`` block of ``topic`` lines per account.

    Lines before the first ``user`` apply to anonymous clients: everything when
    ``allow_anonymous`` (the lab setting), nothing otherwise.
    """
    out = ["# Generated by serenazgo (mqtt_bridge/broker_acl.py): edits here are lost.\n"]
    if allow_anonymous:
        out.append("# SERENAZGO_BROKER__ALLOW_ANONYMOUS: clients without a login may use every topic.\n")
        out.extend(f"topic {g.access} {g.topic}\n" for g in anonymous_grants(allow_anonymous))
    for account in accounts:
        why = unsafe_reason(account.username)
        if why is not None:
            raise ConfigError(
                f"refusing to write user {account.username[:80]!r} into the broker's ACL: it {why}"
            )
        out.append(f"\nuser {account.username}\n")
        for grant in account.grants:
            if any(c.isspace() for c in grant.topic) or not grant.topic.isprintable():
                raise ConfigError(f"refusing to write topic {grant.topic[:80]!r} into the broker's ACL")
            out.append(f"topic {grant.access} {grant.topic}\n")
    return "".join(out)


def render_access(
    services: Sequence[Account], creds: Iterable[BrokerCredential], *, allow_anonymous: bool = False
) -> AccessFiles:
    """Both files for ``services`` plus every device credential in ``creds``."""
    devices, skipped = device_accounts(creds, reserved=[s.username for s in services])
    accounts = [*services, *devices]
    return AccessFiles(
        render_password_file(accounts),
        render_acl_file(accounts, allow_anonymous=allow_anonymous),
        allow_anonymous,
        tuple(skipped),
        tuple(accounts),
    )


# -- enforcing them without Mosquitto (the in-process amqtt fallback) -------------------------------

_READS = frozenset({"read", "readwrite"})
_WRITES = frozenset({"write", "readwrite"})


def valid_filter(topic_filter: str) -> bool:
    """True for a well-formed MQTT topic filter: ``+`` and ``#`` fill a whole level, ``#`` only the last."""
    if not topic_filter or "\0" in topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and (level != "#" or i != len(levels) - 1)):
            return False
    return True


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True when the topic name ``topic`` matches ``topic_filter`` (MQTT 3.1.1 section 4.7).

    ``#`` also matches its parent level (``a/#`` matches ``a``); a filter starting with a
    wildcard never matches a ``$`` topic. A malformed filter or a topic containing a
    wildcard matches nothing.
    """
    if not topic or "+" in topic or "#" in topic or "\0" in topic or not valid_filter(topic_filter):
        return False
    if topic.startswith("$") and topic_filter[0] in "+#":
        return False
    pattern, levels = topic_filter.split("/"), topic.split("/")
    for i, want in enumerate(pattern):
        if want == "#":
            return True
        if i >= len(levels) or want not in ("+", levels[i]):
            return False
    return len(pattern) == len(levels)


def filter_within(inner: str, outer: str) -> bool:
    """True when every topic that filter ``inner`` matches is matched by filter ``outer`` too."""
    if not valid_filter(inner) or not valid_filter(outer):
        return False
    if inner.startswith("$") and outer[0] in "+#":
        return False  # ``outer`` matches no $ topic, ``inner`` only those
    sub, sup = inner.split("/"), outer.split("/")
    if sub == ["#"] and sup == ["+", "#"]:
        return True  # topic names have at least one level, so both match every (non-$) topic
    for i, level in enumerate(sub):
        if i < len(sup) and sup[i] == "#":
            return True
        if i >= len(sup) or level == "#" or (level == "+" and sup[i] != "+"):
            return False
        if level != "+" and sup[i] not in ("+", level):
            return False
    # ``inner`` matches exactly len(sub) levels: ``outer`` must match those, as ``a/b`` or ``a/b/#``.
    return len(sup) == len(sub) or (len(sup) == len(sub) + 1 and sup[-1] == "#")


def may_write(grants: Iterable[Grant], topic: str) -> bool:
    """True when a ``write`` or ``readwrite`` grant covers publishing on ``topic``."""
    return any(g.access in _WRITES and topic_matches(g.topic, topic) for g in grants)


def may_read(grants: Iterable[Grant], topic: str) -> bool:
    """True when a ``read`` or ``readwrite`` grant lets a message on ``topic`` be delivered."""
    return any(g.access in _READS and topic_matches(g.topic, topic) for g in grants)


def may_subscribe(grants: Iterable[Grant], topic_filter: str) -> bool:
    """True when ``topic_filter`` lies within one readable grant (everything it can match is readable).

    Stricter than Mosquitto, which grants any SUBSCRIBE and filters delivery: a
    device's ``#`` is refused here. A filter covered only by several grants together
    is refused too (rare, and never too lenient).
    """
    return any(g.access in _READS and filter_within(topic_filter, g.topic) for g in grants)


@dataclass(frozen=True, slots=True)
class AccessRules:
    """Who may log in and with which grants, for a broker that checks each login and topic itself."""

    accounts: dict[str, Account]
    allow_anonymous: bool = False

    @classmethod
    def from_files(cls, files: AccessFiles) -> AccessRules:
        """The rules ``files`` were rendered from (its accounts, not its text)."""
        return cls({a.username: a for a in files.accounts}, files.allow_anonymous)

    def login(self, username: str | None, password: str | None) -> Account | None:
        """The account a CONNECT logs in as (anonymous: an account named ``""``), or None when refused.

        As Mosquitto with a password file: a known username whose password verifies
        against its ``$7$`` hash; no username only when anonymous access is allowed;
        a wrong password is refused even then.
        """
        if username is None:
            return self.anonymous()
        account = self.accounts.get(username)
        if account is None or password is None or not verify_mosquitto_hash(password, account.password_hash):
            return None
        return account

    def anonymous(self) -> Account | None:
        """The pseudo-account of clients without a login, or None when they are refused."""
        return Account("", "", anonymous_grants(True)) if self.allow_anonymous else None

    def current(self, login: Account) -> Account | None:
        """``login`` as the rules have it now: None when its account is gone or its password changed."""
        if not login.username:
            return self.anonymous()
        account = self.accounts.get(login.username)
        return account if account is not None and account.password_hash == login.password_hash else None


# -- service accounts -----------------------------------------------------------------------------


class ServiceAccounts:
    """The service accounts' passwords (kept on disk), where they are kept, and their broker accounts."""

    def __init__(self, passwords: dict[str, str], path: Path | None = None) -> None:
        self.passwords = dict(passwords)
        self.path = path
        grants = {
            BRIDGE_USER: bridge_grants(),
            SIMULATOR_USER: simulator_grants(),
            GATEWAY_USER: gateway_grants(),
            HEALTH_USER: (),  # /healthz only connects
        }
        # Hashed once: a fresh salt at every render would rewrite the password file (and reload the broker)
        # when nothing changed.
        self._accounts = [Account(u, mosquitto_hash(self.passwords[u]), grants[u]) for u in SERVICE_USERS]

    def accounts(self) -> list[Account]:
        """Their broker accounts."""
        return list(self._accounts)

    def login(self, user: str) -> tuple[str, str]:
        """``(username, password)`` of one service account."""
        return user, self.passwords[user]

    def __repr__(self) -> str:
        # Keep the passwords out of logs and tracebacks.
        return f"ServiceAccounts(users={sorted(self.passwords)}, path={self.path})"


def service_accounts_path(data_dir: Path) -> Path:
    """``<data_dir>/broker/service-accounts.json``."""
    return data_dir / "broker" / SERVICE_ACCOUNTS_FILE


def load_service_accounts(data_dir: Path) -> ServiceAccounts:
    """The service accounts' passwords, generated (and saved, mode 0600) for any account that has none."""
    path = service_accounts_path(data_dir)
    passwords: dict[str, str] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the broker's service accounts {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} is not a JSON object of username -> password: delete it to regenerate")
        passwords = {str(k): str(v) for k, v in loaded.items() if isinstance(v, str) and v}
    missing = [user for user in SERVICE_USERS if user not in passwords]
    if missing:
        for user in missing:
            passwords[user] = secrets.token_urlsafe(SERVICE_PASSWORD_BYTES)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_private(path, json.dumps(passwords, indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot save the broker's service accounts {path}: {exc.strerror}") from exc
        log.info("generated broker passwords for %s in %s", ", ".join(missing), path)
    return ServiceAccounts(passwords, path)


# -- files on disk ---------------------------------------------------------------------------------


def _write_private(path: Path, text: str, owner: Callable[[Path], None] | None = None) -> None:
    """Write ``text`` to ``path`` atomically (a 0600 temporary file, handed to ``owner``, renamed over it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if owner is not None:
            owner(tmp)
        tmp.replace(path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_access_files(folder: Path, files: AccessFiles, owner: Callable[[Path], None] | None = None) -> bool:
    """Write ``password_file`` and ``acl_file`` into ``folder`` (0600, handed to ``owner``); True if changed.

    A reader sees the old or the new version of each file, never half of one.
    """
    changed = False
    for name, text in ((PASSWORD_FILE, files.password_file), (ACL_FILE, files.acl_file)):
        path = folder / name
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == text:
                continue
        _write_private(path, text, owner)
        changed = True
    return changed


# -- keeping them current -------------------------------------------------------------------------


class AccessRefresher:
    """Renders the files from the database when the credentials changed since the last look.

    ``check(apply)`` runs one cheap fingerprint query; only when it differs from
    the last one does it load the credentials and call ``apply(files)`` (the
    embedded broker's :meth:`~mqtt_bridge.broker.EmbeddedBroker.set_access`
    writes them and reloads when their text changed). :meth:`render` counts as a
    look: the first ``check`` after the broker starts with its files loads nothing.
    """

    def __init__(self, conninfo: str, services: Sequence[Account], *, allow_anonymous: bool = False) -> None:
        self.conninfo = conninfo
        self.services = list(services)
        self.allow_anonymous = allow_anonymous
        self._fingerprint: tuple[object, ...] | None = None
        self._reported: tuple[str, ...] = ()

    def render(self) -> AccessFiles:
        """The files as the database has them now (each reason a credential is left out logged once)."""
        # The fingerprint is read first: a change made while rendering is seen by the next check.
        fingerprint = credentials_fingerprint_sync(self.conninfo)
        files = self._render()
        self._fingerprint = fingerprint
        return files

    def _render(self) -> AccessFiles:
        files = render_access(
            self.services, broker_credentials_sync(self.conninfo), allow_anonymous=self.allow_anonymous
        )
        if files.skipped != self._reported:
            for why in files.skipped:
                log.warning("broker ACL: %s", why)
            self._reported = files.skipped
        return files

    def check(self, apply: Callable[[AccessFiles], object]) -> bool:
        """Render and ``apply`` the files if the credentials changed since the last check; True if so."""
        fingerprint = credentials_fingerprint_sync(self.conninfo)
        if fingerprint == self._fingerprint:
            return False
        apply(self._render())
        self._fingerprint = fingerprint
        return True


__all__ = [
    "ACL_FILE",
    "BRIDGE_USER",
    "DJI_GATEWAY",
    "GATEWAY_USER",
    "HEALTH_USER",
    "PASSWORD_FILE",
    "SERVICE_USERS",
    "SIMULATOR_USER",
    "AccessFiles",
    "AccessRefresher",
    "AccessRules",
    "Account",
    "Grant",
    "ServiceAccounts",
    "anonymous_grants",
    "bridge_account",
    "bridge_grants",
    "device_accounts",
    "device_grants",
    "filter_within",
    "gateway_grants",
    "load_service_accounts",
    "may_read",
    "may_subscribe",
    "may_write",
    "render_access",
    "render_acl_file",
    "render_password_file",
    "service_accounts_path",
    "simulator_grants",
    "topic_matches",
    "unsafe_reason",
    "valid_filter",
    "write_access_files",
]
