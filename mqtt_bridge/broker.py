"""A private MQTT broker under a data folder: the embedded default and the test fixture.

:class:`EmbeddedBroker` runs the ``mosquitto`` binary when it is installed, with a
configuration generated at every start (``<state_dir>/mosquitto.conf``) so that
"a ping is acknowledged only once stored; restarting anything loses nothing
acknowledged" holds as far as Mosquitto 2.0 can make it hold:

* ``persistence true``: sessions, subscriptions and queued QoS 1 messages are
  written to ``<state_dir>/mosquitto.db`` at every autosave and at a clean stop
  (SIGTERM), and read back at start. A **graceful** restart loses nothing.
* ``autosave_interval`` (:data:`AUTOSAVE_INTERVAL_S` = 5 s, time based): Mosquitto
  2.0 has no write-ahead log, so a ``kill -9`` (or power loss) of the *broker*
  loses what it accepted (PUBACKed to publishers) since the last save and had not
  yet delivered to a bridge that committed it: with the bridge keeping up (lag of
  tens of ms) that is only what is in flight at the crash; during a backlog
  (bridge or database down) up to 5 s of publishes. Acks the bridge sent since
  the last save are forgotten too, so those messages come again (stored once).
  Each save rewrites the whole database and blocks the broker's single thread
  while it does: shorter intervals cost throughput exactly when a backlog is large.
  For zero loss across broker crashes use a replicated broker (EMQX, HiveMQ,
  VerneMQ clusters).
* ``max_queued_messages 0`` + ``max_queued_bytes`` (:data:`MAX_QUEUED_BYTES`, 512 MiB of
  payload per client): Mosquitto's default queues only 1,000 QoS 1 messages for a
  client and *silently drops* the rest. 512 MiB is ~5 million pings: days for a
  district (20 pings/s), ~8 minutes for a metropolis at 10,000 pings/s. Beyond
  it the broker drops messages it has acknowledged to the publisher, so alert on
  the bridge's lag long before. Broker memory is ~2-3x the queued payload.
* ``max_inflight_messages`` (1,000) bounds unacknowledged messages towards MQTT 3
  clients; MQTT 5 clients (our bridge) set their own Receive Maximum.
* ``max_packet_size``: 256 KiB of payload (+4 KiB for topic and headers). The bridge itself
  dead-letters payloads above ``SERENAZGO_MAX_PAYLOAD_BYTES`` (64 KiB), so anything
  between the two limits is visible in the dead letters; the broker refuses
  what is larger (MQTT 5 publishers get a reason code).
* ``persistent_client_expiration 14d``: a session nobody reconnects to is dropped
  after two weeks (bridges ask for a week, see :mod:`mqtt_bridge.ackclient`).
* Access: with ``access`` (:class:`mqtt_bridge.broker_acl.AccessFiles`, what
  ``serenazgo up`` always gives) ``allow_anonymous false``, a ``password_file`` and
  an ``acl_file`` written beside the configuration (mode 0600, owned by the user
  Mosquitto runs as); :meth:`EmbeddedBroker.set_access` rewrites them and sends
  SIGHUP, on which Mosquitto re-reads both. Without it (the test fixtures)
  ``allow_anonymous true``, on 127.0.0.1 only.

As root, Mosquitto runs as the ``mosquitto`` user (it warns against running as
root), which must own the state folder. When that user cannot reach ``data_dir``
(e.g. under ``/root``, mode 700) the broker keeps its state in
``/var/lib/serenazgo/broker-<hash of data_dir>`` instead (:attr:`state_dir`).
The process machinery (user, own session, parent-death signal, log, port retry,
stop, kill) is :mod:`tracker.server_process`: Mosquitto gets SIGTERM (it saves
its state and exits) when the thread that started it exits.

Without a ``mosquitto`` binary the broker falls back to amqtt, in process
(:mod:`mqtt_bridge.amqtt_broker`): good enough to try serenazgo, but it drops
messages not acknowledged within 5 s, so the guarantee does not hold on it;
read its limits there. :meth:`EmbeddedBroker.start` logs a warning when it falls back.
It enforces the same ``access`` as Mosquitto (the accounts of
:class:`~mqtt_bridge.broker_acl.AccessFiles`: logins against their ``$7$`` hashes,
grants per publish, subscribe and delivery), held in memory: :meth:`EmbeddedBroker.set_access`
swaps them at once, no files. Without ``access`` it admits every client, as Mosquitto does.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
from pathlib import Path
from typing import Literal

from mqtt_bridge.broker_acl import ACL_FILE, PASSWORD_FILE, AccessFiles, write_access_files
from tracker.errors import ConfigError, EmbeddedServerError
from tracker.server_process import (
    EmbeddedServer,
    RunUser,
    ServerProcess,
    free_port,
    pick_run_user,
    reachable_dir,
    start_on_port,
)

log = logging.getLogger(__name__)

AUTOSAVE_INTERVAL_S = 5
MAX_QUEUED_BYTES = 512 * 1024 * 1024
MAX_INFLIGHT_MESSAGES_V3 = 1000
MESSAGE_SIZE_LIMIT = 256 * 1024
PERSISTENT_CLIENT_EXPIRATION = "14d"
RUN_USER = "mosquitto"
_MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")

BrokerKind = Literal["mosquitto", "amqtt"]


def find_mosquitto() -> Path | None:
    """The ``mosquitto`` binary: on PATH, else the usual sbin folders; None if not installed."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for candidate in _MOSQUITTO_PATHS:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def mosquitto_config(
    port: int,
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    autosave_interval_s: int = AUTOSAVE_INTERVAL_S,
    max_queued_bytes: int = MAX_QUEUED_BYTES,
    max_inflight_messages: int = MAX_INFLIGHT_MESSAGES_V3,
    message_size_limit: int = MESSAGE_SIZE_LIMIT,
    persistent_client_expiration: str = PERSISTENT_CLIENT_EXPIRATION,
    access: AccessFiles | None = None,
) -> str:
    """The text of the generated ``mosquitto.conf`` (each choice is explained in the module docstring).

    With ``access``, clients log in against ``<state_dir>/password_file`` and are held to ``acl_file``.
    """
    if access is None:
        security = ["allow_anonymous true"]
    else:
        security = [
            f"allow_anonymous {'true' if access.allow_anonymous else 'false'}",
            # No login can take over another's session by sending its client id (see broker_acl).
            "use_username_as_clientid true",
            f"password_file {state_dir / PASSWORD_FILE}",
            f"acl_file {state_dir / ACL_FILE}",
        ]
    return "\n".join(
        [
            "# Generated by serenazgo (mqtt_bridge/broker.py) at every start: edits here are lost.",
            f"listener {port} {host}",
            *security,
            "persistence true",
            f"persistence_location {state_dir}/",
            "persistence_file mosquitto.db",
            "autosave_on_changes false",
            f"autosave_interval {autosave_interval_s}",
            "max_queued_messages 0",
            f"max_queued_bytes {max_queued_bytes}",
            f"max_inflight_messages {max_inflight_messages}",
            # The whole packet: payload limit plus room for the topic and headers.
            f"max_packet_size {message_size_limit + 4096}",
            f"persistent_client_expiration {persistent_client_expiration}",
            "set_tcp_nodelay true",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "",
        ]
    )


def _run_user() -> RunUser:
    """The user Mosquitto runs as: ``mosquitto`` when we are root, else ourselves."""
    return pick_run_user(
        "Mosquitto",
        (RUN_USER,),
        hint="install the mosquitto package (it creates the user), or run serenazgo as a normal user",
    )


class EmbeddedBroker(EmbeddedServer):
    """A private broker listening on 127.0.0.1 with its state under ``data_dir``.

    ``start()`` returns once it accepts connections; ``stop()`` is a clean stop
    (state saved), ``kill()`` a SIGKILL (a crash, for fault tests). The port is
    kept across restarts. Use it as a context manager to stop it on exit.
    Mosquitto stops (cleanly) when the thread that started it exits: start it
    from a thread that lives as long as the broker should.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        autosave_interval_s: int = AUTOSAVE_INTERVAL_S,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        mosquitto: Path | Literal[False] | None = None,
        start_timeout: float = 20.0,
        access: AccessFiles | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if access is None and not _loopback(host):
            raise ConfigError(
                f"the embedded broker would listen on {host} with no device credentials: anyone on the "
                "network could publish as any unit; give it access control, or listen on 127.0.0.1"
            )
        self.data_dir = Path(data_dir).absolute()
        # Where Mosquitto listens: 127.0.0.1, or (with access control) the API's address so that
        # phones and trackers on the network reach it (``serenazgo up --host 0.0.0.0``).
        self.host = host
        self._fixed_port = port
        self.port: int = port or 0
        self.autosave_interval_s = autosave_interval_s
        self.max_queued_bytes = max_queued_bytes
        self.start_timeout = start_timeout
        # None: find it; False: do not use it (the in-process amqtt fallback).
        self.binary: Path | None = find_mosquitto() if mosquitto is None else (mosquitto or None)
        self.kind: BrokerKind = "mosquitto" if self.binary is not None else "amqtt"
        self.state_dir = self.data_dir
        self._server = ServerProcess("Mosquitto", death_signal=signal.SIGTERM)
        self._amqtt: object | None = None
        # None: anonymous, no ACL (the test fixtures); else the password file and ACL to enforce.
        self.access = access
        self._user: RunUser | None = None

    # -- public API ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``mqtt://<host>:<port>`` for clients on this machine (what SERENAZGO_MQTT_URL would be)."""
        if not self.port:
            raise EmbeddedServerError("the embedded broker has no port yet: call start() first")
        # amqtt (the fallback) listens on 127.0.0.1 only; a wildcard address is reached locally there too.
        wildcard = self.host in ("0.0.0.0", "::", "")  # noqa: S104
        local = "127.0.0.1" if wildcard or self.kind == "amqtt" else self.host
        return f"mqtt://{'[' + local + ']' if ':' in local else local}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The broker's log file."""
        return self.state_dir / f"{self.kind}.log"

    @property
    def pid(self) -> int | None:
        """Pid of the running Mosquitto, or None (also for the in-process fallback)."""
        return self._server.pid

    @property
    def running(self) -> bool:
        """True while the broker we started is up."""
        if self.kind == "amqtt":
            return self._amqtt is not None
        return self._server.running

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            return
        if self.kind == "amqtt":
            self._start_amqtt()
            return
        user = _run_user()
        self._prepare_state_dir(user)
        self.port = start_on_port(
            "Mosquitto",
            self._fixed_port or self.port,
            lambda port: self._launch(port, user),
            hint="Choose another port (serenazgo up --broker-port), or stop what listens there.",
            tail=self.log_tail,
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Clean stop: Mosquitto saves its state (sessions, queued messages) and exits."""
        if self.kind == "amqtt":
            self._stop_amqtt()
            return
        if not self._server.stop(signal.SIGTERM, timeout):
            raise EmbeddedServerError(
                f"Mosquitto did not stop within {timeout:.0f} s and was killed; messages accepted "
                f"since its last autosave may be lost.\n{self.log_tail()}"
            )

    def set_access(self, access: AccessFiles) -> bool:
        """Enforce ``access`` from now on: rewrite the files and reload Mosquitto; True if they changed.

        Mosquitto re-reads both files on SIGHUP: a client whose credential is gone
        is disconnected, the others keep their connection under the new ACL. The
        ``allow_anonymous`` choice is part of the configuration and is fixed at start.
        The amqtt fallback takes the new accounts in memory (and disconnects revoked
        clients) instead. Before ``start()`` it is only remembered.
        """
        if self.access is None and self.running:
            raise EmbeddedServerError(
                "this broker was started without access control: restart it with access"
            )
        self.access = access
        if self.kind == "amqtt" and self._amqtt is not None:
            from mqtt_bridge.amqtt_broker import InProcessBroker

            assert isinstance(self._amqtt, InProcessBroker)
            return self._amqtt.set_access(access)
        if self.kind != "mosquitto" or not self.running:
            return False
        if not write_access_files(self.state_dir, access, self._owner):
            return False
        self.reload()
        return True

    def reload(self) -> None:
        """Send SIGHUP: Mosquitto re-reads its password file and ACL."""
        pid = self.pid
        if pid is None:
            raise EmbeddedServerError("the embedded Mosquitto is not running")
        os.kill(pid, signal.SIGHUP)

    def _owner(self, path: Path) -> None:
        if self._user is not None:
            self._user.own(path)

    def kill(self) -> None:
        """SIGKILL the broker (a crash, for fault tests): unsaved state is lost, as in production."""
        if self.kind == "amqtt":
            self._stop_amqtt()
            return
        self._server.kill()

    def __repr__(self) -> str:
        return f"EmbeddedBroker({self.kind}, state_dir={str(self.state_dir)!r}, port={self.port})"

    # -- Mosquitto ----------------------------------------------------------------------------

    def _prepare_state_dir(self, user: RunUser) -> None:
        self.state_dir = reachable_dir(self.data_dir, user, server="Mosquitto", prefix="broker")
        if user.switches:
            # Sessions and queued messages are nobody else's business.
            user.own(self.state_dir / "mosquitto.db")
            self.state_dir.chmod(0o700)

    def _launch(self, port: int, user: RunUser) -> None:
        assert self.binary is not None
        self.port = port
        self._user = user
        if self.access is not None:
            # Mosquitto runs as ``user`` (``mosquitto`` when we are root): it must be able to read them.
            write_access_files(self.state_dir, self.access, self._owner)
        conf = self.state_dir / "mosquitto.conf"
        conf.write_text(
            mosquitto_config(
                port,
                self.state_dir,
                host=self.host,
                autosave_interval_s=self.autosave_interval_s,
                max_queued_bytes=self.max_queued_bytes,
                access=self.access,
            )
        )
        conf.chmod(0o644)
        self._server.launch(
            [str(self.binary), "-c", str(conf)],
            port=port,
            user=user,
            log_path=self.log_path,
            # "running" is printed after the persistence file is restored and listeners are open.
            ready=lambda new_log: " running" in new_log and _accepts_tcp(port),
            timeout=self.start_timeout,
            port_taken=("Address already in use",),
            slow_hint="restoring a very large mosquitto.db takes time",
        )

    # -- amqtt fallback ----------------------------------------------------------------------

    def _start_amqtt(self) -> None:
        from mqtt_bridge.amqtt_broker import InProcessBroker

        log.warning(
            "no mosquitto binary found: using the in-process amqtt broker, which drops messages not "
            "acknowledged within 5 s (install mosquitto for the no-loss guarantee)"
        )
        self.state_dir = self.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self._fixed_port or self.port or free_port()
        broker = InProcessBroker(
            self.port, self.log_path, start_timeout=self.start_timeout, access=self.access
        )
        broker.start()
        self._amqtt = broker

    def _stop_amqtt(self) -> None:
        broker, self._amqtt = self._amqtt, None
        if broker is not None:
            from mqtt_bridge.amqtt_broker import InProcessBroker

            assert isinstance(broker, InProcessBroker)
            broker.stop()


def _loopback(host: str) -> bool:
    """True for an address only this machine reaches."""
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def _accepts_tcp(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


__all__ = [
    "AUTOSAVE_INTERVAL_S",
    "MAX_QUEUED_BYTES",
    "EmbeddedBroker",
    "find_mosquitto",
    "mosquitto_config",
]
