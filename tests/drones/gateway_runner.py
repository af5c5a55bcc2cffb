"""For the gateway integration tests: the gateway in a thread of its own, and an MQTT subscriber."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from drones.mavlink_gateway import GatewayOptions, GatewayStats, run_gateway
from tracker.config import MqttTarget

WAIT_S = 30.0


class GatewayThread:
    """``run_gateway`` on a background loop; :meth:`stop` sets its stop event and joins."""

    def __init__(self, options: GatewayOptions, target: MqttTarget) -> None:
        self.options = options
        self.target = target
        self.stats = GatewayStats()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="mavlink-gateway", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await run_gateway(self.options, self.target, self._stop, self.stats, max_backoff_s=0.5)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc

    def start(self) -> GatewayThread:
        """Start it and wait until its socket is open and the broker has accepted it."""
        self._thread.start()
        deadline = time.monotonic() + WAIT_S
        while not (self.stats.listening and self.stats.connected):
            if self.error is not None or not self._thread.is_alive():
                raise RuntimeError(f"the gateway stopped: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway did not start: {self.stats.last_error}")
            time.sleep(0.02)
        return self

    @property
    def udp_port(self) -> int:
        """The UDP port it listens on (the tests ask for port 0: a free one)."""
        return int(self.stats.listening.rsplit(":", 1)[1])

    def send(self, *datagrams: bytes) -> None:
        """Send each datagram to the gateway from one UDP socket (one sender address)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in datagrams:
                sock.sendto(datagram, ("127.0.0.1", self.udp_port))

    def stop(self, timeout: float = WAIT_S) -> None:
        """Stop it (publishing what it still holds) and wait for the thread to end."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the gateway did not stop")


class Subscriber:
    """Collects every message under serenazgo/units/ on the test's broker."""

    def __init__(self, port: int, client_id: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe("serenazgo/units/#", qos=1)
        self._client.loop_start()

    def _on_message(self, _client: object, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t == topic]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
