"""The fallback embedded broker when no ``mosquitto`` binary is installed: amqtt, in process.

amqtt 0.12 (pure Python, asyncio) runs on its own event loop in a background
thread of the serenazgo process. Checked against what the bridge needs
(tests/mqtt_bridge/test_broker.py and by reading amqtt's source):

* It does QoS 1 and persistent sessions (``clean_session=False``): subscriptions
  survive a disconnect and QoS 1 messages published meanwhile are queued and
  delivered on reconnect. amqtt keeps no offline queue for *anonymous*
  sessions and its AnonymousAuthPlugin marks every client anonymous, so
  :class:`OpenAuthPlugin` admits every client as a named one instead.
* **Access control** (``InProcessBroker(access=...)``, what ``serenazgo up`` gives):
  the same accounts as Mosquitto's password file and ACL, taken from
  :class:`~mqtt_bridge.broker_acl.AccessFiles` and decided by
  :class:`~mqtt_bridge.broker_acl.AccessRules` (no text is parsed).
  :class:`AccountsAuthPlugin` admits a known username whose password verifies
  against its ``$7$`` hash, and a client without a login only when
  ``allow_anonymous``; it refuses a will on a topic the login may not write (as
  Mosquitto 2.0 does), and a login reusing the client id of another login's
  session (that session's queue would be delivered to it). :class:`AccountsTopicPlugin`
  checks every publish (``write``), subscribe and delivery (``read``) against the
  session's grants. A SUBSCRIBE whose filter is not *within* one readable grant is
  refused (SUBACK 0x80): a device's ``#`` or ``owntracks/+/+`` fails, where
  Mosquitto grants it and then delivers only the device's own topics. A denied
  publish is acknowledged and dropped; the connection stays open (Mosquitto
  2.0 closes it). :class:`GuardedBroker` holds retained messages to the same
  read check, which amqtt skips. :meth:`InProcessBroker.set_access` swaps the
  accounts in memory between two packets and closes the connections of logins
  that are gone or whose password changed.

Its limits, which is why Mosquitto is the default and what the tests run on:

* **Ack-after-commit does not hold.** amqtt waits 5 s for a subscriber's PUBACK
  and then *discards* the message (``_handle_qos1_message_flow`` in
  ``amqtt/mqtt/protocol/handler.py``); unacknowledged messages are not sent
  again on reconnect. A database outage longer than a few seconds, or a bridge
  crash, loses what the broker had accepted. Use it to try serenazgo, not to run it.
* **MQTT 3.1.1 only**: no Receive Maximum, no session expiry, no shared
  subscriptions (one bridge only). It does not even answer an MQTT 5 CONNECT;
  the bridge's client gives up waiting after ``connack_timeout_s`` and falls
  back to MQTT 3.1.1 (:class:`mqtt_bridge.ackclient.AckClient`), bounding its
  memory by pausing socket reads.
* **State in memory only**: sessions and queued messages die with the process.
* No per-client queue bound (no ``max_queued_bytes``), and a few thousand
  messages per second at most.
* **Client ids are not tied to logins.** amqtt looks the client id up *before*
  it authenticates the CONNECT, and has nothing like Mosquitto's
  ``use_username_as_clientid``: a CONNECT carrying another client's id, even a
  refused one, closes that client's connection, and with a clean session deletes
  its session (subscriptions and queue). The login check above keeps the other
  session's messages from the intruder, not the disruption: any local program
  can knock the bridge off (it reconnects and resubscribes; what was queued for
  it may be lost). Mosquitto has none of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mqtt_bridge.broker_acl import AccessFiles, AccessRules, Account, may_read, may_subscribe, may_write
from tracker.errors import EmbeddedServerError

log = logging.getLogger(__name__)

try:  # amqtt is a dependency, but only this fallback needs it
    from amqtt.broker import Broker
    from amqtt.contexts import Action
    from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
    from amqtt.session import Session
except ImportError:  # pragma: no cover - exercised only without amqtt installed
    Broker = object  # type: ignore[assignment,misc]
    Action = None  # type: ignore[assignment,misc]
    BaseAuthPlugin = BaseTopicPlugin = object  # type: ignore[assignment,misc]
    Session = Any  # type: ignore[assignment,misc]

# The account a session logged in as (amqtt's namespaced per-session attributes). Kept on the session
# rather than read from ``session.username``: amqtt overwrites that with whatever the next CONNECT with
# the same client id sends, before it authenticates it.
LOGIN_ATTRIBUTE = "serenazgo.login"


class OpenAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """Admit every client (the embedded broker listens on 127.0.0.1 only) as a named, non-anonymous one.

    amqtt queues messages for a disconnected persistent session only when the
    session is not anonymous, and its AnonymousAuthPlugin marks every client
    anonymous; without this, the bridge would lose what is published while it
    restarts.
    """

    async def authenticate(self, *, session: Session) -> bool:
        """Accept the client; its persistent session keeps a queue."""
        session.is_anonymous = False
        return True


class AccessGate:
    """The rules the in-process broker enforces now; :meth:`InProcessBroker.set_access` swaps them whole."""

    files: AccessFiles
    rules: AccessRules

    def __init__(self, files: AccessFiles) -> None:
        self.use(files)

    def use(self, files: AccessFiles) -> None:
        """Enforce ``files`` from now on (the rules are derived once, here)."""
        self.files = files
        self.rules = AccessRules.from_files(files)
        warn_without_accounts(files)

    def admit(self, session: Session) -> Account | None:
        """Check a CONNECT: the account it logs in as (remembered on the session), or None to refuse it."""
        account = self.rules.login(session.username, session.password)
        previous = session.attributes.get(LOGIN_ATTRIBUTE)
        if account is not None and isinstance(previous, Account) and previous.username != account.username:
            # A persistent session (and its queued messages) belongs to the login that made it: another
            # login sending the same client id is refused (Mosquitto makes the client id the username).
            log.warning(
                "broker: %r tried to take over the session of client id %r: refused",
                account.username,
                session.client_id,
            )
            return None
        if (
            account is not None
            and session.will_flag
            and not may_write(account.grants, session.will_topic or "")
        ):
            log.info(
                "broker: %r may not publish its will on %r: refused", account.username, session.will_topic
            )
            return None
        if account is not None:
            session.attributes[LOGIN_ATTRIBUTE] = account
        return account

    def grants_of(self, session: Session | None) -> Account | None:
        """The session's account as the rules have it now, None when it never logged in or was revoked."""
        login = None if session is None else session.attributes.get(LOGIN_ATTRIBUTE)
        return self.rules.current(login) if isinstance(login, Account) else None


def warn_without_accounts(files: AccessFiles) -> None:
    """Log when ``files`` has a password file but not the accounts it came from (every login is refused)."""
    if files.password_file and not files.accounts:
        log.warning(
            "broker access has a password file but no accounts (not made by render_access): "
            "the in-process broker refuses every login"
        )


@dataclass
class GateConfig:
    """The plugins' configuration: the shared gate (None: refuse everything)."""

    gate: AccessGate | None = None


class AccountsAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """Admit a client only with a valid login (or anonymously, when the rules allow it), as a named one.

    Admitted clients are marked non-anonymous for the reason :class:`OpenAuthPlugin` gives.
    """

    Config = GateConfig

    async def authenticate(self, *, session: Session) -> bool:
        """True when the gate admits the CONNECT."""
        gate: AccessGate | None = self.config.gate
        if gate is None or gate.admit(session) is None:
            log.info("broker: refused the login of %r (client id %r)", session.username, session.client_id)
            return False
        session.is_anonymous = False
        return True


class AccountsTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """Hold every publish, subscribe and delivery to the grants of the session's login."""

    Config = GateConfig

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Any = None
    ) -> bool:
        """True when the session's account may do ``action`` (publish, subscribe, receive) on ``topic``."""
        gate: AccessGate | None = self.config.gate
        account = None if gate is None else gate.grants_of(session)
        if account is None or not topic:
            return False
        if action == Action.PUBLISH:
            return may_write(account.grants, topic)
        if action == Action.SUBSCRIBE:
            return may_subscribe(account.grants, topic)
        return action == Action.RECEIVE and may_read(account.grants, topic)


def broker_config(port: int, gate: AccessGate | None = None) -> dict[str, Any]:
    """amqtt configuration: one TCP listener on 127.0.0.1:``port``, no $SYS topics, access by ``gate``.

    Without a gate every client is admitted and may use every topic (the test fixtures).
    """
    plugins: dict[str, Any] = (
        {f"{__name__}.OpenAuthPlugin": {}}
        if gate is None
        else {
            f"{__name__}.AccountsAuthPlugin": {"gate": gate},
            f"{__name__}.AccountsTopicPlugin": {"gate": gate},
        }
    )
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 0}},
        "plugins": plugins,
    }


class GuardedBroker(Broker):  # type: ignore[misc]
    """amqtt's broker, with retained messages held to the reader's grants like every other delivery.

    amqtt 0.12.1 checks the topic plugins when it broadcasts a publish, but not when it
    sends retained messages: at a SUBSCRIBE, and at every CONNECT for *every*
    subscription filter in the broker (anyone's), so a device connecting would get
    each retained OwnTracks location the bridge subscribes to. This override is the
    same loop with the ``receive`` check added.
    """

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = []
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and await self._topic_filtering(
                session, topic, Action.RECEIVE
            ):
                qos_out = min(qos, retained.qos or qos)
                tasks.append(
                    asyncio.ensure_future(handler.mqtt_publish(topic, retained.data, qos_out, retain=True))
                )
        if tasks:
            await asyncio.wait(tasks)


class InProcessBroker:
    """amqtt on a private event loop in a daemon thread; ``start()`` returns once it listens."""

    def __init__(
        self, port: int, log_path: Path, *, start_timeout: float = 20.0, access: AccessFiles | None = None
    ) -> None:
        if Broker is object:
            raise EmbeddedServerError(
                "no MQTT broker available: install Mosquitto (apt-get install mosquitto) or the amqtt "
                "package, or set SERENAZGO_MQTT_URL to an existing broker"
            )
        self.port = port
        self.log_path = log_path
        self.start_timeout = start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._log_handler: logging.Handler | None = None
        # None: open to every client; else the logins and grants it enforces (set_access swaps them).
        self._gate = None if access is None else AccessGate(access)

    def start(self) -> None:
        """Start the broker thread and wait until the listener is open."""
        if self._thread is not None:
            return
        self._log_handler = logging.FileHandler(self.log_path)
        self._log_handler.setLevel(logging.WARNING)
        logging.getLogger("amqtt").addHandler(self._log_handler)
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="amqtt-broker", daemon=True)
        self._thread.start()
        try:
            ready.result(self.start_timeout)
        except Exception as exc:
            self.stop()
            raise EmbeddedServerError(
                f"the in-process amqtt broker did not start on 127.0.0.1:{self.port}: {exc}"
            ) from exc

    def _run(self, ready: Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            self._broker = GuardedBroker(broker_config(self.port, self._gate), loop=loop)
            await self._broker.start()

        try:
            loop.run_until_complete(boot())
        except BaseException as exc:
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def set_access(self, access: AccessFiles, timeout: float = 10.0) -> bool:
        """Enforce ``access`` from now on, and disconnect clients it no longer admits; True if it changed.

        The swap and the disconnects run on the broker's loop, between two of its packets:
        from then on a revoked (or replaced) login may not publish, subscribe nor receive,
        even before its connection is closed, and is refused at its next CONNECT.
        """
        if self._gate is None:
            raise EmbeddedServerError(
                "this broker was started without access control: restart it with access"
            )
        if access == self._gate.files:
            return False
        loop, broker = self._loop, self._broker
        if loop is None or broker is None:
            self._gate.use(access)
            return True
        asyncio.run_coroutine_threadsafe(self._apply(access), loop).result(timeout)
        return True

    def session_state(self, client_id: str, timeout: float = 10.0) -> str | None:
        """The state (``connected``, ``disconnected``) of ``client_id``'s session, None if none is kept."""
        loop, broker = self._loop, self._broker
        if loop is None or broker is None:
            return None

        async def look() -> str | None:
            found = broker.sessions.get(client_id)
            return None if found is None else str(found[0].transitions.state)

        return asyncio.run_coroutine_threadsafe(look(), loop).result(timeout)

    async def _apply(self, access: AccessFiles) -> None:
        gate = self._gate
        assert gate is not None
        gate.use(access)
        for session, handler in list(self._broker.sessions.values()):
            if session.transitions.state == "connected" and gate.grants_of(session) is None:
                log.info("broker: %r's login was revoked: disconnecting it", session.client_id)
                writer = handler.writer
                if writer is not None:
                    # The broker's own loop sees the connection end and cleans up (will message included).
                    with contextlib.suppress(OSError):
                        await writer.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the broker down (its in-memory state is lost) and end the thread."""
        loop, thread, broker = self._loop, self._thread, self._broker
        if loop is not None and thread is not None and thread.is_alive():
            if broker is not None:
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        self._loop = self._thread = self._broker = None
        if self._log_handler is not None:
            logging.getLogger("amqtt").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None


__all__ = [
    "AccessGate",
    "AccountsAuthPlugin",
    "AccountsTopicPlugin",
    "GuardedBroker",
    "InProcessBroker",
    "OpenAuthPlugin",
    "broker_config",
]
