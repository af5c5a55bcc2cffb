"""The fallback embedded broker when no ``mosquitto`` binary is installed: amqtt, in process.

amqtt 0.12 (pure Python, asyncio) runs on its own event loop in a background
thread of the serenazgo process. Checked against what the bridge needs
(tests/mqtt_bridge/test_broker.py and by reading amqtt's source):

* It does QoS 1 and persistent sessions (``clean_session=False``): subscriptions
  survive a disconnect and QoS 1 messages published meanwhile are queued and
  delivered on reconnect. amqtt keeps no offline queue for *anonymous*
  sessions and its AnonymousAuthPlugin marks every client anonymous, so
  :class:`OpenAuthPlugin` admits every client as a named one instead.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from tracker.errors import EmbeddedServerError

log = logging.getLogger(__name__)

try:  # amqtt is a dependency, but only this fallback needs it
    from amqtt.broker import Broker
    from amqtt.plugins.base import BaseAuthPlugin
    from amqtt.session import Session
except ImportError:  # pragma: no cover - exercised only without amqtt installed
    Broker = None  # type: ignore[assignment,misc]
    BaseAuthPlugin = object  # type: ignore[assignment,misc]
    Session = Any  # type: ignore[assignment,misc]


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


def broker_config(port: int) -> dict[str, Any]:
    """amqtt configuration: one TCP listener on 127.0.0.1:``port``, open access, no $SYS topics."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 0}},
        "plugins": {f"{__name__}.OpenAuthPlugin": {}},
    }


class InProcessBroker:
    """amqtt on a private event loop in a daemon thread; ``start()`` returns once it listens."""

    def __init__(self, port: int, log_path: Path, *, start_timeout: float = 20.0) -> None:
        if Broker is None:
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
            self._broker = Broker(broker_config(self.port), loop=loop)
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


__all__ = ["InProcessBroker", "OpenAuthPlugin", "broker_config"]
