"""Kafka records <-> AMQP messages: the one mapping both front ends agree on.

It lives in queues/ (not kafka/) because AMQP readers of a stream decode the Kafka batches
it stores (``kafka_batch.py``); ``kafka/records.py`` is the Kafka side's name for it.

A stream stores AMQP messages (``queues/stream_records.py``: route, content header, body)
with a log timestamp; Produce turns each Kafka record into such a stored message, and Fetch
turns a stored message back into a record. Nothing set on one side is lost on the other:

================================  =============================================================
Kafka record                      AMQP message in the stream
================================  =============================================================
value                             body (a null value is an empty body, the stream's
                                  tombstone; an empty non-null value adds the header
                                  ``x-kafka-empty-value`` = true)
key (bytes; null = no key)        header ``x-message-key``, a long string holding the key's
                                  bytes as they are (the partition and compaction key on both
                                  sides); from AMQP: a string's UTF-8, bytes as they are,
                                  any other type as its text (what the partitioner hashes)
header ``name`` = bytes           header ``name``: long string of those bytes (null: void);
                                  from AMQP: strings and byte arrays as their bytes, void as
                                  null, other types as their text. Repeated names are kept
                                  in order on the wire (AMQP clients see the last one).
header named ``x-message-key``,   stored as ``x-kafka-header:<name>`` (and unescaped on the
``x-stream-offset``,              way back), so a Kafka header can never pose as the key or
``x-stream-partition``,           as a header the stream adds on delivery
``x-kafka-empty-value``, or
``x-kafka-header:...``
header ``x-amqp-<property>``      that AMQP property (``x-amqp-content-type``,
                                  ``-content-encoding``, ``-delivery-mode``, ``-priority``,
                                  ``-correlation-id``, ``-reply-to``, ``-expiration``,
                                  ``-message-id``, ``-timestamp``, ``-type``, ``-user-id``,
                                  ``-app-id``, ``-cluster-id``), as text; a value the
                                  property cannot hold stays a header; on the way back they
                                  follow the other headers, in AMQP's property order
timestamp (ms, CreateTime)        the stream entry's time (ms: what offsets by timestamp,
                                  retention and ListOffsets use) and, for AMQP readers, the
                                  ``timestamp`` property (seconds) unless an
                                  ``x-amqp-timestamp`` header sets it; from AMQP: the entry's
                                  time, and a ``timestamp`` property that differs from it
                                  (in seconds) travels as ``x-amqp-timestamp``
(topic)                           exchange "" and routing key = the topic (as a publish to
                                  the default exchange addressed to the stream)
================================  =============================================================

Records are ``(timestamp_ms, key, value, headers)`` tuples, the shape ``codec.write_batch``
takes. Header values stay raw table entries (``protocol/property_codec``): no AMQP value
is decoded unless it has to become text.
"""

from __future__ import annotations

import struct
from typing import Any

from smartbroker.message import Message
from smartbroker.protocol import codec as amqp
from smartbroker.protocol import property_codec as pc
from smartbroker.protocol.fields import Malformed
from smartbroker.queues.partitioner import key_bytes

KEY_HEADER = "x-message-key"
EMPTY_VALUE_HEADER = "x-kafka-empty-value"
ESCAPE = "x-kafka-header:"
PROPERTY_PREFIX = "x-amqp-"
# Kafka header names that would collide with what the AMQP side gives a meaning to
RESERVED = frozenset({KEY_HEADER, EMPTY_VALUE_HEADER, "x-stream-offset", "x-stream-partition"})

KafkaHeaders = list[tuple[str, bytes | None]]
KafkaRecord = tuple[int, bytes | None, bytes | None, KafkaHeaders]

_PREFIX = struct.Struct("!HHQ")  # class id 60, weight 0, body size
_FLAGS = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_U16_LE = struct.Struct("<H")  # the stored record's own lengths are little-endian
_U32_LE = struct.Struct("<I")
_S, _X, _V = ord("S"), ord("x"), ord("V")
_EMPTY_ENTRY = pc.typed_entry(EMPTY_VALUE_HEADER, b"t", b"\x01")
_KEY_SS = bytes((len(KEY_HEADER),)) + KEY_HEADER.encode()
# AMQP property -> (Kafka header name, flag bit, kind), in the wire order of LAYOUT
_PROPERTIES = {name: (PROPERTY_PREFIX + name.replace("_", "-").replace("message-type", "type"),
                      bit, kind) for name, bit, kind in pc.LAYOUT if name != "headers"}
_BY_HEADER = {header: (name, bit, kind) for name, (header, bit, kind) in _PROPERTIES.items()}


class RecordError(ValueError):
    """A record that no AMQP message can carry (Produce answers INVALID_RECORD)."""


# -- Kafka -> AMQP ---------------------------------------------------------------------------


def route_for(topic: str) -> bytes:
    """The stored route of a record produced to ``topic``: exchange "", routing key topic."""
    return amqp.shortstr("") + amqp.shortstr(topic)


def record_header(timestamp_ms: int, key: bytes | None, value: bytes | None,
                  headers: KafkaHeaders) -> bytes:
    """The AMQP content-header payload of one record (body size included)."""
    entries: list[bytes] = []
    if key is not None:
        entries.append(_KEY_SS + b"S" + _U32.pack(len(key)) + key)
    if value is not None and not value:
        entries.append(_EMPTY_ENTRY)
    props: dict[int, bytes] = {}
    for name, data in headers:
        if name.startswith(PROPERTY_PREFIX):
            prop = _BY_HEADER.get(name)
            if prop is not None and data is not None:
                encoded = _property_bytes(prop[2], data)
                if encoded is not None and prop[1] not in props:
                    props[prop[1]] = encoded
                    continue
        elif name in RESERVED or name.startswith(ESCAPE):
            name = ESCAPE + name
        raw_name = name.encode("utf-8", "surrogateescape")
        if len(raw_name) > 255:
            raise RecordError(f"header name longer than 255 bytes: {name[:40]!r}...")
        if data is None:
            entries.append(bytes((len(raw_name),)) + raw_name + b"V")
        else:
            entries.append(bytes((len(raw_name),)) + raw_name + b"S" + _U32.pack(len(data)) + data)
    if entries:
        props[13] = pc.join_table(entries)
    if 6 not in props and timestamp_ms >= 0:
        props[6] = _U64.pack(timestamp_ms // 1000)
    flags = 0
    for bit in props:
        flags |= 1 << bit
    body_size = len(value) if value is not None else 0
    return b"".join((_PREFIX.pack(60, 0, body_size), _FLAGS.pack(flags),
                     *(props[bit] for bit in sorted(props, reverse=True))))


def _property_bytes(kind: str, data: bytes) -> bytes | None:
    """An AMQP property's wire bytes from its text in a Kafka header; None if it cannot
    hold that text (the header then stays a header)."""
    if kind == "shortstr":
        return bytes((len(data),)) + data if len(data) <= 255 else None
    try:
        number = int(data)
    except ValueError:
        return None
    if kind == "octet":
        return bytes((number,)) if 0 <= number <= 255 and str(number).encode() == data else None
    if 0 <= number < 1 << 64 and str(number).encode() == data:
        return _U64.pack(number)
    return None


def stored_record(topic_route: bytes, timestamp_ms: int, key: bytes | None,
                  value: bytes | None, headers: KafkaHeaders) -> bytes:
    """A record as a stream log entry (``stream_records.encode_record``'s layout, built
    without a Message: Produce's per-record path)."""
    header = record_header(timestamp_ms, key, value, headers)
    return b"".join((_U16_LE.pack(len(topic_route)), topic_route, _U32_LE.pack(len(header)),
                     header, value or b""))


def record_to_message(topic_route: bytes, timestamp_ms: int, key: bytes | None,
                      value: bytes | None, headers: KafkaHeaders) -> Message:
    """The AMQP message a record becomes (``topic_route`` from ``route_for``)."""
    exchange, routing_key = amqp.decode_route(topic_route)
    return Message(exchange, routing_key, topic_route,
                   record_header(timestamp_ms, key, value, headers), value or b"")


# -- AMQP -> Kafka ---------------------------------------------------------------------------


def message_to_record(message: Message, timestamp_ms: int) -> KafkaRecord:
    """The record a stream message is to a Kafka reader; ``timestamp_ms`` is the time
    stored with its stream entry."""
    return header_to_record(message.header_payload, message.body, timestamp_ms)


def stored_to_record(payload: bytes, timestamp_ms: int) -> KafkaRecord:
    """The record of one stream log entry (``stream_records.encode_record`` bytes) without
    building a Message or adding the delivery headers."""
    (n,) = _U16_LE.unpack_from(payload, 0)
    (h,) = _U32_LE.unpack_from(payload, 2 + n)
    start = 6 + n
    return header_to_record(payload[start:start + h], payload[start + h:], timestamp_ms)


def header_to_record(header_payload: bytes, body: bytes, timestamp_ms: int) -> KafkaRecord:
    """A record from a content header and body (see the table in the module docstring)."""
    value: bytes | None = body if body else None
    if len(header_payload) <= 14 or header_payload[12:14] == b"\x00\x00":
        return timestamp_ms, None, value, []  # no properties: the common unkeyed case
    try:
        raw = pc.split_properties(header_payload)
    except Malformed:
        return timestamp_ms, None, value, []  # never accepted at publish; keep the body
    key: bytes | None = None
    headers: KafkaHeaders = []
    table = raw.get("headers")
    if table is not None:
        for name, entry in pc.table_entries(table):
            kind, data = pc.entry_value(entry)
            if name == KEY_HEADER:
                key = _header_bytes(kind, data)
                if key is None:
                    key = b""  # a void key header: present, so not a null key
            elif name == EMPTY_VALUE_HEADER:
                if not body:
                    value = b""
            else:
                if name.startswith(ESCAPE):
                    name = name[len(ESCAPE):]
                headers.append((name, _header_bytes(kind, data)))
    for name, (header, _bit, kind) in _PROPERTIES.items():
        prop = raw.get(name)
        if prop is None:
            continue
        if kind == "shortstr":
            headers.append((header, prop[1:]))
        elif kind == "octet":
            headers.append((header, str(prop[0]).encode()))
        else:
            seconds = _U64.unpack(prop)[0]
            if timestamp_ms < 0 or seconds != timestamp_ms // 1000:
                headers.append((header, str(seconds).encode()))
    return timestamp_ms, key, value, headers


def _header_bytes(kind: int, data: bytes) -> bytes | None:
    """An AMQP header value as Kafka header bytes: strings and byte arrays as they are,
    void as null, anything else as the text the partitioner would hash."""
    if kind in (_S, _X):
        return data[4:]
    if kind == _V:
        return None
    value: Any = pc.decode_value(kind, data)
    return key_bytes(value)


__all__ = ["EMPTY_VALUE_HEADER", "ESCAPE", "KEY_HEADER", "KafkaHeaders", "KafkaRecord",
           "PROPERTY_PREFIX", "RESERVED", "RecordError", "header_to_record",
           "message_to_record", "record_header", "record_to_message", "route_for",
           "stored_record", "stored_to_record"]
