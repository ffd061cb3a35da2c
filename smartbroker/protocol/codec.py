"""Hand-written ``struct`` codec for the hot methods; pamqp encodes and decodes the rest.

Rules: the content-header payload of a published message is kept as raw bytes and forwarded
unchanged to consumers; the exchange and routing-key short strings of ``basic.publish`` are
kept raw too and copied into ``basic.deliver``. ``tests/unit/protocol/test_codec.py`` checks every
function here against pamqp with hypothesis.
"""

from __future__ import annotations

import inspect
import struct
from typing import Any

from pamqp import commands, encode
from pamqp.base import Frame as PamqpMethod

from smartbroker.protocol.methods import decode_method, with_datetimes  # noqa: F401 - re-exported

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
FRAME_OVERHEAD = 8  # 7-byte header + frame-end octet

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

_frame_header = struct.Struct("!BHI")
_method_ids = struct.Struct("!HH")
_deliver_tail = struct.Struct("!QB")
_get_ok_head = struct.Struct("!HHQB")
_ack = struct.Struct("!HHQB")
_ulong = struct.Struct("!I")
_ulonglong = struct.Struct("!Q")
_header_prefix = struct.Struct("!HHQ")

HEARTBEAT_FRAME = _frame_header.pack(FRAME_HEARTBEAT, 0, 0) + FRAME_END_BYTE

# (class_id, method_id) packed as one int, as pamqp's INDEX_MAPPING keys are
BASIC_PUBLISH = 0x003C0028
BASIC_ACK = 0x003C0050
BASIC_NACK = 0x003C0078
BASIC_REJECT = 0x003C005A

_DELIVER_PREFIX = _method_ids.pack(60, 60)
_RETURN_PREFIX = _method_ids.pack(60, 50)
_GET_OK_PREFIX = _method_ids.pack(60, 71)


def shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError("short string longer than 255 bytes")
    return bytes((len(raw),)) + raw


def frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return _frame_header.pack(frame_type, channel, len(payload)) + payload + FRAME_END_BYTE


def channel_open_ok_frame(channel: int) -> bytes:
    """``channel.open-ok`` with an empty reserved longstr, as RabbitMQ sends it (pamqp's
    encoder insists on "0")."""
    return frame(FRAME_METHOD, channel, b"\x00\x14\x00\x0b\x00\x00\x00\x00")


def method_frame(channel: int, method: PamqpMethod) -> bytes:
    """Slow path: any pamqp method object to one frame, without pamqp's client-side name
    validation (RabbitMQ accepts any UTF-8 queue/exchange name up to 255 bytes)."""
    return frame(FRAME_METHOD, channel, _ulong.pack(method.index) + marshal_fields(method))


def marshal_fields(method: PamqpMethod) -> bytes:
    """pamqp's field encoding of a method, without its client-side validation."""
    out: list[bytes] = []
    bits = -1
    for name in method.__slots__:
        kind = method.amqp_type(name)
        value = getattr(method, name, 0)
        if kind == "bit":
            if bits < 0:
                bits, offset = 0, 0
            bits |= (1 << offset) if value else 0
            offset += 1
            if offset == 8:
                out.append(bytes((bits,)))
                bits = -1
            continue
        if bits >= 0:
            out.append(bytes((bits,)))
            bits = -1
        # pamqp encodes long-long signed; on the wire (delivery tags) it is unsigned
        out.append(_ulonglong.pack(value) if kind == "longlong" else encode.by_type(value, kind))
    if bits >= 0:
        out.append(bytes((bits,)))
    return b"".join(out)


def build(cls: type[PamqpMethod], **fields: object) -> PamqpMethod:
    """Make a pamqp method object for sending, skipping its client-side validation."""
    defaults = _defaults.get(cls)
    if defaults is None:
        sig = inspect.signature(cls.__init__)
        defaults = {k: p.default for k, p in sig.parameters.items() if k != "self"}
        _defaults[cls] = defaults
    method = cls.__new__(cls)
    for name in cls.__slots__:
        setattr(method, name, fields.get(name, defaults.get(name)))
    return method


_defaults: dict[type, dict[str, object]] = {}




def content_frames(channel: int, header_payload: bytes, body: bytes, frame_max: int) -> list[bytes]:
    """Content header + body frames, the body split so no frame exceeds ``frame_max``."""
    parts = [_frame_header.pack(FRAME_HEADER, channel, len(header_payload)), header_payload, FRAME_END_BYTE]
    size = len(body)
    if size == 0:
        return parts
    chunk = frame_max - FRAME_OVERHEAD
    if size <= chunk:
        parts += (_frame_header.pack(FRAME_BODY, channel, size), body, FRAME_END_BYTE)
        return parts
    view = memoryview(body)
    for start in range(0, size, chunk):
        piece = view[start : start + chunk]
        parts += (_frame_header.pack(FRAME_BODY, channel, len(piece)), piece, FRAME_END_BYTE)
    return parts


def deliver_frame(channel: int, consumer_tag_ss: bytes, delivery_tag: int, redelivered: bool,
                  exchange_rk_ss: bytes) -> bytes:
    """``basic.deliver``: consumer tag and exchange/routing-key short strings pre-encoded."""
    payload_size = 4 + len(consumer_tag_ss) + 9 + len(exchange_rk_ss)
    return b"".join((
        _frame_header.pack(FRAME_METHOD, channel, payload_size),
        _DELIVER_PREFIX,
        consumer_tag_ss,
        _deliver_tail.pack(delivery_tag, redelivered),
        exchange_rk_ss,
        FRAME_END_BYTE,
    ))


def first_deliveries(out: list[bytes], channel: int, consumer_tag_ss: bytes, first_tag: int,
                     messages: list[Any], frame_max: int) -> None:
    """Append to ``out`` the ``basic.deliver`` and content frames of ``messages`` (each with
    ``route``, ``header_payload`` and ``body``), tags ``first_tag`` on, none redelivered: a
    log's run of deliveries, without a call and a join per frame."""
    pack = _frame_header.pack
    tail = _deliver_tail.pack
    chunk = frame_max - FRAME_OVERHEAD
    method_size = 4 + len(consumer_tag_ss) + 9
    tag = first_tag
    for msg in messages:
        rk = msg.route[2]
        header = msg.header_payload
        body = msg.body
        out += (pack(FRAME_METHOD, channel, method_size + len(rk)), _DELIVER_PREFIX,
                consumer_tag_ss, tail(tag, 0), rk, FRAME_END_BYTE,
                pack(FRAME_HEADER, channel, len(header)), header, FRAME_END_BYTE)
        if len(body) > chunk:
            out += content_frames(channel, b"", body, frame_max)[3:]  # the body frames
        elif body:
            out += (pack(FRAME_BODY, channel, len(body)), body, FRAME_END_BYTE)
        tag += 1


def get_ok_frame(channel: int, delivery_tag: int, redelivered: bool, exchange_rk_ss: bytes,
                 message_count: int) -> bytes:
    payload = b"".join((
        _GET_OK_PREFIX,
        _deliver_tail.pack(delivery_tag, redelivered),
        exchange_rk_ss,
        _ulong.pack(message_count),
    ))
    return frame(FRAME_METHOD, channel, payload)


def return_frame(channel: int, reply_code: int, reply_text: str, exchange_rk_ss: bytes) -> bytes:
    payload = _RETURN_PREFIX + struct.pack("!H", reply_code) + shortstr(reply_text) + exchange_rk_ss
    return frame(FRAME_METHOD, channel, payload)


def ack_frame(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    return frame(FRAME_METHOD, channel, _ack.pack(60, 80, delivery_tag, multiple))


def nack_frame(channel: int, delivery_tag: int, multiple: bool, requeue: bool = False) -> bytes:
    bits = (1 if multiple else 0) | (2 if requeue else 0)
    return frame(FRAME_METHOD, channel, _ack.pack(60, 120, delivery_tag, bits))


def parse_publish(payload: bytes) -> tuple[str, str, bytes, bool, bool]:
    """``basic.publish`` payload -> (exchange, routing_key, raw exchange+rk short strings,
    mandatory, immediate). Raises ``IndexError`` on malformed input; names that are not
    UTF-8 are kept (see ``decode_route``)."""
    exchange_rk_ss, bits = publish_route(payload)
    exchange, routing_key = decode_route(exchange_rk_ss)
    return exchange, routing_key, exchange_rk_ss, bool(bits & 1), bool(bits & 2)


def publish_route(payload: bytes) -> tuple[bytes, int]:
    """``basic.publish`` payload -> (raw exchange + routing-key short strings, flag bits)."""
    ex_end = 7 + payload[6]
    rk_end = ex_end + 1 + payload[ex_end]
    return payload[6:rk_end], payload[rk_end]


def decode_route(exchange_rk_ss: bytes) -> tuple[str, str]:
    """The two short strings of ``publish_route`` -> (exchange, routing key). As RabbitMQ,
    publish does not check them for UTF-8: other bytes survive as surrogates (deliveries
    carry the original bytes, ``exchange_rk_ss``)."""
    ex_end = 1 + exchange_rk_ss[0]
    exchange = exchange_rk_ss[1:ex_end].decode("utf-8", "surrogateescape")
    rk_len = exchange_rk_ss[ex_end]
    routing_key = exchange_rk_ss[ex_end + 1:ex_end + 1 + rk_len].decode("utf-8", "surrogateescape")
    if len(exchange_rk_ss) != ex_end + 1 + rk_len:
        raise IndexError("short string overruns the method")
    return exchange, routing_key


def parse_ack(payload: bytes) -> tuple[int, int]:
    """``basic.ack``/``nack``/``reject`` payload -> (delivery_tag, bits)."""
    _, _, tag, bits = _ack.unpack_from(payload)
    return tag, bits


def parse_header(payload: bytes) -> tuple[int, int]:
    """Content header payload -> (class_id, body_size); properties stay raw."""
    class_id, _weight, body_size = _header_prefix.unpack_from(payload)
    return class_id, body_size


def encode_header(body_size: int, properties: commands.Basic.Properties) -> bytes:
    """Content header payload for re-encoded properties (dead-lettering, stream headers)."""
    from smartbroker.protocol.property_codec import encode_properties

    return _header_prefix.pack(60, 0, body_size) + encode_properties(properties)


def decode_properties(header_payload: bytes) -> commands.Basic.Properties:
    """Lazily decode the properties of a content header payload, defensively: never
    raises for a header ``properties.validate`` accepted (see ``property_codec``)."""
    from smartbroker.protocol.property_codec import decode_properties as decode

    return decode(header_payload)


# Property flag bits (AMQP 0-9-1 basic class), checked without decoding the properties
FLAG_HEADERS = 1 << 13
FLAG_DELIVERY_MODE = 1 << 12
FLAG_PRIORITY = 1 << 11
FLAG_EXPIRATION = 1 << 8
FLAG_USER_ID = 1 << 4
# Bits above the 16 wire bits: facts about a header worked out once per distinct header
# (``property_flags``) so the hot path tests a bit instead of parsing. Never encoded.
FLAG_PERSISTENT = 1 << 16  # delivery-mode 2
FLAG_REPLY_TO_PSEUDO = 1 << 17  # the header holds "amq.rabbitmq.reply-to" (set by the publisher)


def delivery_mode(header_payload: bytes, flags: int) -> int:
    """The delivery-mode property without decoding the others: it follows only
    content-type, content-encoding (short strings) and headers (a length-prefixed table)."""
    if not flags & FLAG_DELIVERY_MODE:
        return 0
    pos = 14
    if flags & (1 << 15):
        pos += 1 + header_payload[pos]
    if flags & (1 << 14):
        pos += 1 + header_payload[pos]
    if flags & FLAG_HEADERS:
        pos += 4 + _ulong.unpack_from(header_payload, pos)[0]
    return header_payload[pos]


def add_headers(header_payload: bytes, flags: int, extra: bytes) -> bytes:
    """Append encoded table entries (``extra``) to a content header's ``headers`` table
    without decoding anything else: the table sits after content-type and
    content-encoding (short strings) and is a u32-length-prefixed run of entries."""
    pos = 14
    if flags & (1 << 15):
        pos += 1 + header_payload[pos]
    if flags & (1 << 14):
        pos += 1 + header_payload[pos]
    if flags & FLAG_HEADERS:
        size = _ulong.unpack_from(header_payload, pos)[0]
        end = pos + 4 + size
        return b"".join((header_payload[:pos], _ulong.pack(size + len(extra)),
                         header_payload[pos + 4:end], extra, header_payload[end:]))
    new_flags = (flags | FLAG_HEADERS) & 0xFFFF
    return b"".join((header_payload[:12], bytes((new_flags >> 8, new_flags & 0xFF)),
                     header_payload[14:pos], _ulong.pack(len(extra)), extra, header_payload[pos:]))


_long_long = struct.Struct("!q")
_long = struct.Struct("!i")


def table_entry_long(name_ss: bytes, value: int) -> bytes:
    """One field-table entry of type ``l`` (signed 64-bit), name pre-encoded."""
    return name_ss + b"l" + _long_long.pack(value)


def table_entry_int(name_ss: bytes, value: int) -> bytes:
    """One field-table entry of type ``I`` (signed 32-bit), name pre-encoded."""
    return name_ss + b"I" + _long.pack(value)


def property_flags(header_payload: bytes) -> int:
    """The wire property flags, plus ``FLAG_PERSISTENT`` when delivery-mode is 2."""
    if len(header_payload) < 14:
        return 0
    flags = (header_payload[12] << 8) | header_payload[13]
    if flags & FLAG_DELIVERY_MODE:
        try:
            if delivery_mode(header_payload, flags) == 2:
                flags |= FLAG_PERSISTENT
        except (IndexError, struct.error):  # truncated block: validation reports it
            pass
    return flags


__all__ = [name for name in dir() if not name.startswith("_") and name not in {"annotations", "struct"}]
