"""MQTT load generator that writes pre-encoded QoS 1 PUBLISH packets to a raw socket.

A Python MQTT client tops out near 9,000 QoS 1 publishes/s, far below what the
broker and our bridge can take, so the benchmarks encode every packet up front
and stream the bytes; a reader thread counts the broker's PUBACKs, which is the
publisher's acknowledged rate.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field


def _varint(n: int) -> bytes:
    """Encode an MQTT remaining-length integer."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session."""
    body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive) + _utf8(client_id)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, mid: int) -> bytes:
    """An MQTT 3.1.1 PUBLISH at QoS 1 with packet id ``mid``."""
    body = _utf8(topic) + struct.pack("!H", mid) + payload
    return b"\x32" + _varint(len(body)) + body


@dataclass
class PublishReport:
    """What the load generator achieved."""

    sent: int
    acked: int
    seconds: float
    send_times: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Broker-acknowledged messages per second."""
        return self.acked / self.seconds if self.seconds > 0 else 0.0


def publish(
    host: str,
    port: int,
    messages: Iterable[tuple[str, bytes]],
    *,
    rate: float | None = None,
    chunk: int = 200,
    window: int = 20000,
    client_id: str = "serenazgo-loadgen",
    timeout: float = 120.0,
    clock: Callable[[], float] = time.perf_counter,
) -> PublishReport:
    """Publish ``(topic, payload)`` messages at QoS 1 as fast as possible, or paced at ``rate``/s.

    Packets are encoded before the clock starts. At most ``window`` messages
    are unacknowledged at once (packet ids are 16-bit). Returns when every
    message is acknowledged by the broker or ``timeout`` passes.
    ``send_times`` holds ``clock()`` just before each message's chunk was written:
    pass ``clock=time.time`` to compare them with receive times taken in other processes.
    """
    msgs = list(messages)
    packets = [publish_packet(t, p, (i % 65535) + 1) for i, (t, p) in enumerate(msgs)]
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(client_id))
    connack = _recv_exact(sock, 4)
    if connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"broker refused the connection: CONNACK {connack.hex()}")

    acked = 0
    ack_cond = threading.Condition()
    done = threading.Event()

    def reader() -> None:
        nonlocal acked
        buf = b""
        while not done.is_set():
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            n = len(buf) // 4  # PUBACK is exactly 4 bytes: 0x40 0x02 mid mid
            if n:
                buf = buf[n * 4 :]
                with ack_cond:
                    acked += n
                    ack_cond.notify_all()

    thread = threading.Thread(target=reader, name="loadgen-puback", daemon=True)
    thread.start()
    send_times: list[float] = []
    start = time.perf_counter()
    deadline = start + timeout
    sent = 0
    for block in _chunks(packets, chunk):
        with ack_cond:
            while sent - acked > window - len(block):
                if not ack_cond.wait(timeout=max(0.0, deadline - time.perf_counter())):
                    break
        if rate:
            due = start + sent / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        now = clock()
        sock.sendall(b"".join(block))
        send_times.extend([now] * len(block))
        sent += len(block)
    with ack_cond:
        while acked < sent and time.perf_counter() < deadline:
            ack_cond.wait(timeout=0.5)
    seconds = time.perf_counter() - start
    done.set()
    try:
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    finally:
        sock.close()
    return PublishReport(sent=sent, acked=acked, seconds=seconds, send_times=send_times)


def _chunks(items: list[bytes], n: int) -> Iterator[list[bytes]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("broker closed the connection")
        data += part
    return data
