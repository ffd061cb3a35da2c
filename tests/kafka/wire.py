"""Kafka's framing on a bare socket, for the tests that speak to the listener without a
client library (pipelining, bounds, abuse, answers a client would hide): a request is its
size then its bytes, and so is an answer."""

from __future__ import annotations

import socket
import struct

from smartbroker.launcher import BrokerProcess


def connect(broker: BrokerProcess, timeout: float = 10.0) -> socket.socket:
    """A plain TCP connection to the broker's Kafka listener."""
    return socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=timeout)


def frame(payload: bytes) -> bytes:
    """A request as it travels: its size, then ``payload`` (header and body)."""
    return struct.pack(">i", len(payload)) + payload


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes, however the peer's writes were split; EOFError if it closes first."""
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(n - len(data), 1 << 20))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def recv_frame(sock: socket.socket) -> bytes:
    """One answer without its size prefix (correlation id first)."""
    return recv_exactly(sock, struct.unpack(">i", recv_exactly(sock, 4))[0])
