"""The cluster link's frames, as bytes: layouts, encoders, and the item codec of a channel.

Sans-IO and stateless (``link_protocol.LinkConnection`` holds the state). Every frame is

    u32 size | u8 type | body            (size counts the type byte and the body)

    HELLO      u8 version | u32 window | 32-byte nonce | str8 cluster | str8 node
    AUTH       32-byte HMAC-SHA256 (``proof``)
    CLOSE      utf-8 reason
    REQUEST    u64 id | str8 method | payload
    RESPONSE   u64 id | u16 code (0: ok, else an error and the payload is its text) | payload
    MESSAGES   u16 channel | u32 count | items
    CREDIT     u16 channel | u32 bytes
    HEARTBEAT  (empty)

A channel carries one kind of item, laid out by its ``ChannelSpec``: fixed-size fields (a
``struct`` format, e.g. a sequence number and flags) then byte strings (exchange, routing
key, AMQP property bytes, body...), each item ``struct(fixed, u32 length per string)`` then
the strings. One ``unpack_from`` and one slice per string decode an item: the link moves
raw AMQP content, it never decodes properties.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from enum import IntEnum

VERSION = 1
NONCE_SIZE = 32
MAC_SIZE = 32
PRE_AUTH_MAX_FRAME = 4096  # before authentication a peer cannot make us allocate more
# the largest frame: one message of the broker's max_message_size (128 MiB) and its names
MAX_FRAME = 128 * 1024 * 1024 + 1024 * 1024
BATCH_BYTES = 256 * 1024  # a channel's batch is cut into frames of about this size
WINDOW = 4 * 1024 * 1024  # bytes a peer may send on one channel before we grant more

SIZE = struct.Struct(">I")
HEAD = struct.Struct(">IB")  # size, type
HELLO_FIXED = struct.Struct(">BI32s")
REQUEST_HEAD = struct.Struct(">IBQB")  # size, type, id, method length
RESPONSE_HEAD = struct.Struct(">IBQH")  # size, type, id, code
MESSAGES_HEAD = struct.Struct(">IBHI")  # size, type, channel, count
CREDIT_FRAME = struct.Struct(">IBHI")  # size, type, channel, bytes
ID = struct.Struct(">Q")
CODE = struct.Struct(">H")
CHANNEL_COUNT = struct.Struct(">HI")


class FrameType(IntEnum):
    HELLO = 1
    AUTH = 2
    CLOSE = 3
    REQUEST = 4
    RESPONSE = 5
    MESSAGES = 6
    CREDIT = 7
    HEARTBEAT = 8


class LinkProtocolError(Exception):
    """The peer broke the link protocol (or sent garbage): close the connection with one
    readable log line, never a traceback."""


class LinkAuthError(LinkProtocolError):
    """The peer's proof does not match: it does not hold this cluster's secret."""


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """A one-way channel: its number on the wire and its item layout. Both nodes must use
    the same specs (they are code constants, like AMQP's method table).

    ``fixed`` is a ``struct`` format without byte order (big-endian is implied), ``blobs``
    how many byte strings follow; an item is a tuple of the fixed values then the strings
    (``str`` is sent as UTF-8, every string is received as ``bytes``)."""

    number: int
    name: str
    fixed: str = ""
    blobs: int = 0
    header: struct.Struct = field(init=False, repr=False, compare=False)
    nfixed: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.number <= 0xFFFF:
            raise ValueError(f"channel number {self.number} is not a u16")
        header = struct.Struct(">" + self.fixed + "I" * self.blobs)
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "nfixed", len(header.unpack(bytes(header.size))) - self.blobs)

    @property
    def width(self) -> int:
        return self.nfixed + self.blobs


def encode_item(spec: ChannelSpec, item: tuple) -> tuple[list, int]:
    """An item as the parts to write (its header, then its strings) and its size."""
    nfixed = spec.nfixed
    if len(item) != nfixed + spec.blobs:
        raise ValueError(f"channel {spec.name} takes {spec.width} fields, not {len(item)}")
    if not spec.blobs:  # fixed fields only (acks, credit, confirms): one pack
        head = spec.header.pack(*item)
        return [head], len(head)
    blobs = item[nfixed:]
    for blob in blobs:
        if type(blob) is str:  # rare on the hot paths (their callers pass bytes)
            blobs = tuple(b.encode() if type(b) is str else b for b in blobs)
            break
    lens = tuple(map(len, blobs))
    head = spec.header.pack(*item[:nfixed], *lens)
    return [head, *blobs], len(head) + sum(lens)


def decode_items(spec: ChannelSpec, data: bytes, pos: int, count: int) -> list[tuple]:
    """``count`` items of ``spec`` from ``data[pos:]``, which they must fill exactly."""
    header = spec.header
    unpack = header.unpack_from
    hsize = header.size
    nfixed = spec.nfixed
    end = len(data)
    items = []
    append = items.append
    try:
        for _ in range(count):
            values = unpack(data, pos)
            pos += hsize
            if nfixed:
                fields = list(values[:nfixed])
                lens = values[nfixed:]
            else:
                fields = []
                lens = values
            for n in lens:
                stop = pos + n
                if stop > end:
                    raise LinkProtocolError(f"channel {spec.name}: an item overruns its frame")
                fields.append(data[pos:stop])
                pos = stop
            append(tuple(fields))
    except struct.error:
        raise LinkProtocolError(f"channel {spec.name}: an item overruns its frame") from None
    if pos != end:
        raise LinkProtocolError(f"channel {spec.name}: {end - pos} bytes after the last item")
    return items


def str8(text: str) -> bytes:
    data = text.encode()
    if len(data) > 255:
        raise ValueError(f"{text[:40]!r}... is over 255 bytes")
    return bytes((len(data),)) + data


def read_str8(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data):
        raise LinkProtocolError("a name overruns its frame")
    stop = pos + 1 + data[pos]
    if stop > len(data):
        raise LinkProtocolError("a name overruns its frame")
    try:
        return data[pos + 1:stop].decode(), stop
    except UnicodeDecodeError:
        raise LinkProtocolError("a name is not UTF-8") from None


def frame(kind: FrameType, body: bytes = b"") -> bytes:
    return HEAD.pack(len(body) + 1, kind) + body


def hello(window: int, nonce: bytes, cluster: str, node: str) -> bytes:
    return frame(FrameType.HELLO,
                 HELLO_FIXED.pack(VERSION, window, nonce) + str8(cluster) + str8(node))


def parse_hello(body: bytes) -> tuple[int, int, bytes, str, str]:
    """(version, window, nonce, cluster, node) of a HELLO body."""
    if len(body) < HELLO_FIXED.size:
        raise LinkProtocolError("a HELLO frame is too short")
    version, window, nonce = HELLO_FIXED.unpack_from(body, 0)
    cluster, pos = read_str8(body, HELLO_FIXED.size)
    node, pos = read_str8(body, pos)
    if pos != len(body):
        raise LinkProtocolError("a HELLO frame has trailing bytes")
    return version, window, nonce, cluster, node


def proof(secret: bytes, cluster: str, prover: str, verifier: str, prover_nonce: bytes,
          verifier_nonce: bytes) -> bytes:
    """What ``prover`` sends to show it holds the secret: an HMAC over both names and both
    nonces, in the prover's order, so a proof cannot be replayed on another connection
    (fresh nonces) nor reflected back to its sender (the order differs)."""
    message = b"".join((b"smartbroker-link/1", str8(cluster), str8(prover), str8(verifier),
                        prover_nonce, verifier_nonce))
    return hmac.new(secret, message, hashlib.sha256).digest()


def request(call_id: int, method: str, payload: bytes) -> bytes:
    name = method.encode()
    if not 0 < len(name) <= 255:
        raise ValueError(f"method name {method!r} must be 1 to 255 bytes")
    return REQUEST_HEAD.pack(len(payload) + len(name) + 10, FrameType.REQUEST, call_id,
                             len(name)) + name + payload


def parse_request(body: bytes) -> tuple[int, str, bytes]:
    """(call id, method, payload) of a REQUEST body."""
    if len(body) < 9 or len(body) < 9 + body[8]:
        raise LinkProtocolError("a REQUEST frame is too short")
    stop = 9 + body[8]
    try:
        method = body[9:stop].decode()
    except UnicodeDecodeError:
        raise LinkProtocolError("a method name is not UTF-8") from None
    return ID.unpack_from(body)[0], method, body[stop:]


def response(call_id: int, code: int, payload: bytes) -> bytes:
    return RESPONSE_HEAD.pack(len(payload) + 11, FrameType.RESPONSE, call_id, code) + payload


def parse_response(body: bytes) -> tuple[int, int, bytes]:
    """(call id, code, payload) of a RESPONSE body."""
    if len(body) < 10:
        raise LinkProtocolError("a RESPONSE frame is too short")
    return ID.unpack_from(body)[0], CODE.unpack_from(body, 8)[0], body[10:]


def credit(channel: int, nbytes: int) -> bytes:
    return CREDIT_FRAME.pack(7, FrameType.CREDIT, channel, nbytes)


HEARTBEAT_FRAME = frame(FrameType.HEARTBEAT)
