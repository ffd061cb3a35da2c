"""How a stream stores a message: the record bytes in a partition log, and the partition a
message goes to under each rule of ``partitioner.py``. A record is the publish as it arrived (exchange and routing key,
content header, body); reading it back adds ``x-stream-offset`` and ``x-stream-partition``
headers, as RabbitMQ adds ``x-stream-offset``."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import mmh3

from smartbroker.message import Message
from smartbroker.protocol import codec
from smartbroker.queues.partitioner import LEGACY, LEGACY_SEED, MURMUR2, header_key_partition

_OFFSET_SS = codec.shortstr("x-stream-offset")
_PARTITION_SS = codec.shortstr("x-stream-partition")
_u16 = struct.Struct("<H")
_u32 = struct.Struct("<I")


def murmur2_partition_of(msg: Message, partitions: int) -> int:
    """New streams: Kafka's murmur2 of the ``x-message-key`` header, else (no Kafka key) the
    routing key's legacy hash. mmh3 is called inline, not via ``legacy_partition``: one
    function layer less per publish."""
    if partitions == 1:
        return 0  # nothing to decode: a one-partition stream never reads the headers
    if msg.flags & codec.FLAG_HEADERS:
        headers = msg.properties.headers
        if headers:
            key = headers.get("x-message-key")
            if key is not None:
                return header_key_partition(key, partitions)
    return mmh3.hash(msg.routing_key, seed=LEGACY_SEED, signed=False) % partitions


def legacy_partition_of(msg: Message, partitions: int) -> int:
    """Streams created before issue 14: mmh3 of the header (any value, as text), else of
    the routing key."""
    if partitions == 1:
        return 0
    return mmh3.hash(message_key(msg), seed=LEGACY_SEED, signed=False) % partitions


PARTITION_OF = {MURMUR2: murmur2_partition_of, LEGACY: legacy_partition_of}


def message_key(msg: Message) -> str:
    headers = msg.headers if msg.flags & codec.FLAG_HEADERS else None
    if headers and "x-message-key" in headers:
        key = headers["x-message-key"]
        return key.decode(errors="replace") if isinstance(key, bytes) else str(key)
    return msg.routing_key


_prefixes: dict[tuple[bytes, bytes], bytes] = {}  # (route, content header) -> record prefix
_last_head: list[Any] = [None, None, b""]  # the last publish's route, header and record head


def encode_record(msg: Message) -> bytes:
    """Route and content header length-prefixed, then the body."""
    return record_head(msg) + msg.body


def record_head(msg: Message) -> bytes:
    """A record's bytes before the body: route and content header, length-prefixed.
    Publishers repeat a few routes and headers, so the encoded head is remembered (bounded
    like the splice cuts); a publish hands it and the body to the log separately
    (``append_grouped``'s ``head``), so the body is copied once, into the frame."""
    ex_rk = msg.route[2]
    header = msg.header_payload
    last = _last_head
    if header is last[1] and ex_rk is last[0]:  # a connection interns both: a run of
        return last[2]  # publishes like the last one costs two identity checks
    prefix = _prefixes.get((ex_rk, header))
    if prefix is None:
        prefix = b"".join((_u16.pack(len(ex_rk)), ex_rk, _u32.pack(len(header)), header))
        if len(_prefixes) >= MAX_TEMPLATES:
            _prefixes.clear()
        _prefixes[(ex_rk, header)] = prefix
    last[0], last[1], last[2] = ex_rk, header, prefix
    return prefix


def decode_record(data: bytes, partition: int, offset: int, own_route: bytes | None = None) -> Message:
    """A stored entry as the message a reader gets. A record produced over Kafka is stored
    with an empty route (``kafka_batch.OWN_ROUTE``, 2 bytes): it was sent to the stream
    itself, so it reads as ``own_route`` (exchange "", routing key the stream's name)."""
    (n,) = _u16.unpack_from(data, 0)
    ex_rk = data[2:2 + n] if n != 2 or own_route is None else own_route
    (h,) = _u32.unpack_from(data, 2 + n)
    header = data[6 + n:6 + n + h]
    body = data[6 + n + h:]
    exchange, routing_key = codec.decode_route(ex_rk)
    return delivery_message((exchange, routing_key, ex_rk), header, codec.property_flags(header),
                            body, partition, offset)


_OFFSET_ENTRY = struct.Struct(f"!{len(_OFFSET_SS)}scq")  # name, type 'l', value
_be_u32 = struct.Struct("!I")
_partition_entries: dict[int, bytes] = {}  # partition -> its encoded header entry
# content header -> (bytes before the headers table's size, its size, the table, the rest)
_templates: dict[bytes, tuple[bytes, int, bytes, bytes]] = {}
MAX_TEMPLATES = 256  # publishers mostly repeat a few headers; unique ones just miss
_new_message = Message.__new__


def delivery_headers(offset: int, partition: int) -> bytes:
    """The two table entries a stream delivery carries (the partition's is interned)."""
    part = _partition_entries.get(partition)
    if part is None:
        part = _partition_entries[partition] = codec.table_entry_int(_PARTITION_SS, partition)
    return _OFFSET_ENTRY.pack(_OFFSET_SS, b"l", offset) + part


def _template(header_payload: bytes, flags: int) -> tuple[bytes, int, bytes, bytes]:
    """``header_payload`` cut around its headers table, as ``codec.add_headers`` cuts it
    (a header without a table gets an empty one and the headers flag)."""
    pos = 14
    if flags & (1 << 15):
        pos += 1 + header_payload[pos]
    if flags & (1 << 14):
        pos += 1 + header_payload[pos]
    if flags & codec.FLAG_HEADERS:
        size = _be_u32.unpack_from(header_payload, pos)[0]
        end = pos + 4 + size
        return header_payload[:pos], size, header_payload[pos + 4:end], header_payload[end:]
    new_flags = (flags | codec.FLAG_HEADERS) & 0xFFFF
    head = header_payload[:12] + bytes((new_flags >> 8, new_flags & 0xFF)) + header_payload[14:pos]
    return head, 0, b"", header_payload[pos:]


def delivery_message(route: tuple[str, str, bytes], header_payload: bytes, flags: int,
                     body: bytes, partition: int, offset: int) -> Message:
    """The message as a stream delivers it: the stored header with the offset and
    partition entries spliced into its headers table (nothing else is decoded). The
    same for a record read back and for a publish kept in the tail (stream_tail.py).
    The cut of a header is remembered: a delivery is then one join."""
    t = _templates.get(header_payload)
    if t is None:
        t = _template(header_payload, flags)
        if len(_templates) >= MAX_TEMPLATES:
            _templates.clear()
        _templates[header_payload] = t
    part = _partition_entries.get(partition)
    if part is None:
        part = _partition_entries[partition] = codec.table_entry_int(_PARTITION_SS, partition)
    offset_entry = _OFFSET_ENTRY.pack(_OFFSET_SS, b"l", offset)
    head, size, table, rest = t
    msg = _new_message(Message)
    msg.route = route
    msg.header_payload = b"".join((head, _be_u32.pack(size + len(offset_entry) + len(part)), table,
                                   offset_entry, part, rest))
    msg.body = body
    msg.flags = flags | codec.FLAG_HEADERS
    msg._properties = None
    return msg


Splice = tuple[Callable[[bytes, int, bytes], bytes], bytes, bytes]


def splice_cuts(header_payload: bytes, flags: int, partition: int) -> Splice:
    """``delivery_message``'s splice as one struct: ``pack(before, offset, after)`` is the
    delivery header, ``before`` the header up to the offset entry's value (the table's
    new size, the existing entries, the entry's name and type), ``after`` the partition
    entry and the rest. A tail remembers it per header (``stream_tail.Tail``): a delivery
    header is then one call."""
    head, size, table, rest = _template(header_payload, flags)
    part = _partition_entries.get(partition)
    if part is None:
        part = _partition_entries[partition] = codec.table_entry_int(_PARTITION_SS, partition)
    before = b"".join((head, _be_u32.pack(size + _OFFSET_ENTRY.size + len(part)), table,
                       _OFFSET_SS, b"l"))
    after = part + rest
    return struct.Struct(f"!{len(before)}sq{len(after)}s").pack, before, after
