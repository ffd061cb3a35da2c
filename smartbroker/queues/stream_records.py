"""How a stream stores a message: the record bytes in a partition log, and the partition a
message's key goes to. A record is the publish as it arrived (exchange and routing key,
content header, body); reading it back adds ``x-stream-offset`` and ``x-stream-partition``
headers, as RabbitMQ adds ``x-stream-offset``."""

from __future__ import annotations

import struct

import mmh3

from smartbroker.message import Message
from smartbroker.protocol import codec

PARTITION_SEED = 104729
_OFFSET_SS = codec.shortstr("x-stream-offset")
_PARTITION_SS = codec.shortstr("x-stream-partition")
_u16 = struct.Struct("<H")
_u32 = struct.Struct("<I")


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition of a key: the hash RabbitMQ stream clients use for super streams."""
    if partitions == 1:
        return 0
    return mmh3.hash(key, seed=PARTITION_SEED, signed=False) % partitions


def message_key(msg: Message) -> str:
    headers = msg.headers if msg.flags & codec.FLAG_HEADERS else None
    if headers and "x-message-key" in headers:
        key = headers["x-message-key"]
        return key.decode(errors="replace") if isinstance(key, bytes) else str(key)
    return msg.routing_key


def encode_record(msg: Message) -> bytes:
    return b"".join((_u16.pack(len(msg.exchange_rk_ss)), msg.exchange_rk_ss,
                     _u32.pack(len(msg.header_payload)), msg.header_payload, msg.body))


def decode_record(data: bytes, partition: int, offset: int) -> Message:
    (n,) = _u16.unpack_from(data, 0)
    ex_rk = data[2:2 + n]
    (h,) = _u32.unpack_from(data, 2 + n)
    header = data[6 + n:6 + n + h]
    body = data[6 + n + h:]
    flags = codec.property_flags(header)
    extra = codec.table_entry_long(_OFFSET_SS, offset) + codec.table_entry_int(_PARTITION_SS, partition)
    exchange, routing_key = codec.decode_route(ex_rk)
    return Message(exchange, routing_key, ex_rk, codec.add_headers(header, flags, extra), body)
