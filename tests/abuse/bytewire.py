"""A minimal blocking AMQP 0-9-1 client that writes every byte itself.

Client libraries encode field tables recursively (pika and pamqp stop a few hundred
levels deep), so tables nested as deep as a frame allows, which RabbitMQ accepts, can
only be sent by hand. Everything here is plain ``struct`` work after the spec; values
are given as already-encoded bytes, and replies are returned as raw payloads.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

FRAME_END = b"\xce"


def shortstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return bytes((len(raw),)) + raw


def longstr(raw: bytes) -> bytes:
    return struct.pack("!I", len(raw)) + raw


def table(*entries: bytes) -> bytes:
    """A field table from raw entries (``entry``)."""
    return longstr(b"".join(entries))


def entry(key: str | bytes, tag: bytes, payload: bytes) -> bytes:
    return shortstr(key) + tag + payload


def nested_table(depth: int, key: str = "a") -> bytes:
    """``{key: {key: ... {"leaf": 1} ...}}`` with ``depth`` levels of nesting."""
    body = entry("leaf", b"b", b"\x01")
    for _ in range(depth):
        body = entry(key, b"F", longstr(body))
    return longstr(body)


def method(class_id: int, method_id: int, args: bytes) -> bytes:
    return struct.pack("!HH", class_id, method_id) + args


@dataclass
class Frame:
    kind: int
    channel: int
    payload: bytes

    @property
    def method_id(self) -> tuple[int, int]:
        return struct.unpack("!HH", self.payload[:4]) if self.kind == 1 else (0, 0)


class RawClient:
    """One connection; ``open()`` logs in (with ``client_properties`` as raw table bytes)."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def send_frame(self, kind: int, channel: int, payload: bytes) -> None:
        self.sock.sendall(struct.pack("!BHI", kind, channel, len(payload)) + payload + FRAME_END)

    def send_method(self, channel: int, payload: bytes) -> None:
        self.send_frame(1, channel, payload)

    def read_frame(self) -> Frame:
        while True:
            if len(self._buf) >= 7:
                kind, channel, size = struct.unpack("!BHI", self._buf[:7])
                if len(self._buf) >= 8 + size:
                    frame = Frame(kind, channel, self._buf[7:7 + size])
                    self._buf = self._buf[8 + size:]
                    if kind == 8:  # heartbeat
                        continue
                    return frame
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed by the broker")
            self._buf += data

    def expect(self, class_id: int, method_id: int) -> Frame:
        frame = self.read_frame()
        if frame.method_id != (class_id, method_id):
            raise AssertionError(f"expected method {class_id}.{method_id}, got "
                                 f"{frame.method_id}: {frame.payload[:120]!r}")
        return frame

    def start_ok(self, client_properties: bytes = b"\x00\x00\x00\x00", mechanism: str = "PLAIN",
                 response: bytes = b"\x00guest\x00guest") -> None:
        """Protocol header, connection.start, and this start-ok (tune comes next)."""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(10, 10)  # start
        self.send_method(0, method(10, 11, client_properties + shortstr(mechanism)
                                   + longstr(response) + shortstr("en_US")))

    def open(self, client_properties: bytes = b"\x00\x00\x00\x00", user: str = "guest",
             password: str = "guest", vhost: str = "/") -> None:
        self.start_ok(client_properties,
                      response=b"\x00" + user.encode() + b"\x00" + password.encode())
        tune = self.expect(10, 30)
        channel_max, frame_max, _heartbeat = struct.unpack("!HIH", tune.payload[4:12])
        self.frame_max = frame_max
        self.send_method(0, method(10, 31, struct.pack("!HIH", channel_max, frame_max, 0)))
        self.send_method(0, method(10, 40, shortstr(vhost) + shortstr("") + b"\x00"))
        self.expect(10, 41)
        self.send_method(1, method(20, 10, shortstr("")))
        self.expect(20, 11)

    def queue_declare(self, name: str, durable: bool = False, arguments: bytes = b"\x00\x00\x00\x00") -> None:
        bits = 0b10 if durable else 0
        self.send_method(1, method(50, 10, b"\x00\x00" + shortstr(name) + bytes((bits,)) + arguments))
        self.expect(50, 11)

    def queue_delete(self, name: str) -> None:
        self.send_method(1, method(50, 40, b"\x00\x00" + shortstr(name) + b"\x00"))
        self.expect(50, 41)

    def exchange_delete(self, name: str) -> None:
        self.send_method(1, method(40, 20, b"\x00\x00" + shortstr(name) + b"\x00"))
        self.expect(40, 21)

    def exchange_declare(self, name: str, kind: str, arguments: bytes = b"\x00\x00\x00\x00") -> None:
        self.send_method(1, method(40, 10, b"\x00\x00" + shortstr(name) + shortstr(kind)
                                   + b"\x00" + arguments))
        self.expect(40, 11)

    def queue_bind(self, queue: str, exchange: str, routing_key: str = "",
                   arguments: bytes = b"\x00\x00\x00\x00") -> None:
        self.send_method(1, method(50, 20, b"\x00\x00" + shortstr(queue) + shortstr(exchange)
                                   + shortstr(routing_key) + b"\x00" + arguments))
        self.expect(50, 21)

    def confirm_select(self) -> None:
        self.send_method(1, method(85, 10, b"\x00"))
        self.expect(85, 11)

    def wait_confirms(self, count: int) -> None:
        """Read basic.acks (single or ``multiple``) until tags 1..count are confirmed; a
        basic.nack fails."""
        confirmed: set[int] = set()
        while len(confirmed) < count:
            frame = self.read_frame()
            assert frame.method_id == (60, 80), f"not confirmed: {frame}"
            tag = struct.unpack("!Q", frame.payload[4:12])[0]
            if frame.payload[12] & 1:
                confirmed.update(range(1, tag + 1))
            else:
                confirmed.add(tag)

    def publish(self, exchange: str, routing_key: str, properties: bytes, body: bytes) -> None:
        """``properties`` = flags + property values, as on the wire."""
        self.send_method(1, method(60, 40, b"\x00\x00" + shortstr(exchange)
                                   + shortstr(routing_key) + b"\x00"))
        self.send_frame(2, 1, struct.pack("!HHQ", 60, 0, len(body)) + properties)
        step = self.frame_max - 8
        for start in range(0, len(body), step):
            self.send_frame(3, 1, body[start:start + step])

    def get(self, queue: str, no_ack: bool = True) -> tuple[int, bytes, bytes] | None:
        """basic.get: (delivery tag, property bytes as on the wire, body), or None."""
        self.send_method(1, method(60, 70, b"\x00\x00" + shortstr(queue) + bytes((int(no_ack),))))
        reply = self.read_frame()
        if reply.method_id == (60, 72):  # get-empty
            return None
        assert reply.method_id == (60, 71), reply
        tag = struct.unpack("!Q", reply.payload[4:12])[0]
        header = self.read_frame()
        size = struct.unpack("!Q", header.payload[4:12])[0]
        body = b""
        while len(body) < size:
            body += self.read_frame().payload
        return tag, header.payload[12:], body

    def reject(self, tag: int, requeue: bool = False) -> None:
        self.send_method(1, method(60, 90, struct.pack("!Q", tag) + bytes((int(requeue),))))


def headers_property(headers: bytes, delivery_mode: int | None = None) -> bytes:
    """Property bytes with a headers table (and delivery mode)."""
    flags = 1 << 13
    values = headers
    if delivery_mode is not None:
        flags |= 1 << 12
        values += bytes((delivery_mode,))
    return struct.pack("!H", flags) + values
