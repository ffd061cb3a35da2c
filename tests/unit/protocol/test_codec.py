"""The hand-written struct fast path in ``smartbroker.protocol.codec`` against pamqp.

pamqp is the reference codec: every fast-path encoder must produce exactly pamqp's bytes and
every fast-path decoder must read pamqp's bytes back to the same values.
"""

from __future__ import annotations

import copy
import datetime
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, frame
from pamqp.header import ContentHeader

from smartbroker.message import Message
from smartbroker.protocol import codec

# per-test settings (a loaded profile would leak into other modules)
SETTINGS = settings(max_examples=100, deadline=None)

# --------------------------------------------------------------------------- strategies

# pamqp validates exchange names against ^[a-zA-Z0-9-_.:@#,/+ ]*$ and at most 127 chars
PAMQP_NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:@#,/+ "
pamqp_names = st.text(alphabet=PAMQP_NAME_ALPHABET, max_size=127)


def _fit_255(text: str) -> str:
    """Drop trailing characters until the UTF-8 form fits a short string."""
    while len(text.encode()) > 255:
        text = text[:-1]
    return text


utf8_shortstr = st.text(max_size=255).map(_fit_255)
channels = st.integers(0, 0xFFFF)
delivery_tags = st.integers(0, 2**63 - 1)  # pamqp packs long-long as signed
ulongs = st.integers(0, 2**32 - 1)


def ex_rk(exchange: str, routing_key: str) -> bytes:
    return codec.shortstr(exchange) + codec.shortstr(routing_key)


def split_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """Parse a byte stream of frames into (type, channel, payload), checking frame-end."""
    out = []
    pos = 0
    while pos < len(data):
        ftype, channel, size = struct.unpack_from("!BHI", data, pos)
        payload = data[pos + 7 : pos + 7 + size]
        assert len(payload) == size, "truncated frame"
        assert data[pos + 7 + size] == codec.FRAME_END, "missing frame-end octet"
        out.append((ftype, channel, payload))
        pos += 8 + size
    return out


# --------------------------------------------------------------------------- encoders


@SETTINGS
@given(channel=channels, tag=utf8_shortstr, delivery_tag=delivery_tags, redelivered=st.booleans(),
       exchange=pamqp_names, routing_key=utf8_shortstr)
def test_deliver_frame_matches_pamqp(channel, tag, delivery_tag, redelivered, exchange, routing_key):
    ours = codec.deliver_frame(channel, codec.shortstr(tag), delivery_tag, redelivered,
                               ex_rk(exchange, routing_key))
    ref = frame.marshal(commands.Basic.Deliver(tag, delivery_tag, redelivered, exchange,
                                               routing_key), channel)
    assert ours == ref


@SETTINGS
@given(channel=channels, tag=utf8_shortstr, delivery_tag=delivery_tags, redelivered=st.booleans(),
       exchange=utf8_shortstr, routing_key=utf8_shortstr)
def test_deliver_frame_decodes_with_pamqp_for_any_utf8_exchange(channel, tag, delivery_tag,
                                                                redelivered, exchange, routing_key):
    data = codec.deliver_frame(channel, codec.shortstr(tag), delivery_tag, redelivered,
                               ex_rk(exchange, routing_key))
    consumed, ch, method = frame.unmarshal(data)
    assert (consumed, ch) == (len(data), channel)
    assert isinstance(method, commands.Basic.Deliver)
    assert (method.consumer_tag, method.delivery_tag, method.redelivered, method.exchange,
            method.routing_key) == (tag, delivery_tag, redelivered, exchange, routing_key)


@SETTINGS
@given(channel=channels, delivery_tag=delivery_tags, redelivered=st.booleans(),
       exchange=pamqp_names, routing_key=utf8_shortstr, message_count=ulongs)
def test_get_ok_frame_matches_pamqp(channel, delivery_tag, redelivered, exchange, routing_key,
                                    message_count):
    ours = codec.get_ok_frame(channel, delivery_tag, redelivered, ex_rk(exchange, routing_key),
                              message_count)
    ref = frame.marshal(commands.Basic.GetOk(delivery_tag, redelivered, exchange, routing_key,
                                             message_count), channel)
    assert ours == ref


@SETTINGS
@given(channel=channels, reply_code=st.integers(0, 0xFFFF), reply_text=utf8_shortstr,
       exchange=pamqp_names, routing_key=utf8_shortstr)
def test_return_frame_matches_pamqp(channel, reply_code, reply_text, exchange, routing_key):
    ours = codec.return_frame(channel, reply_code, reply_text, ex_rk(exchange, routing_key))
    ref = frame.marshal(commands.Basic.Return(reply_code, reply_text, exchange, routing_key),
                        channel)
    assert ours == ref


@SETTINGS
@given(channel=channels, delivery_tag=delivery_tags, multiple=st.booleans())
def test_ack_frame_matches_pamqp(channel, delivery_tag, multiple):
    ours = codec.ack_frame(channel, delivery_tag, multiple)
    assert ours == frame.marshal(commands.Basic.Ack(delivery_tag, multiple), channel)


@SETTINGS
@given(channel=channels, delivery_tag=delivery_tags, multiple=st.booleans(), requeue=st.booleans())
def test_nack_frame_matches_pamqp(channel, delivery_tag, multiple, requeue):
    ours = codec.nack_frame(channel, delivery_tag, multiple, requeue)
    assert ours == frame.marshal(commands.Basic.Nack(delivery_tag, multiple, requeue), channel)


def test_nack_frame_default_is_no_requeue():
    assert codec.nack_frame(1, 7, False) == frame.marshal(
        commands.Basic.Nack(7, False, requeue=False), 1)


def test_shortstr_rejects_more_than_255_utf8_bytes():
    assert codec.shortstr("é" * 127) == b"\xfe" + "é".encode() * 127
    with pytest.raises(ValueError):
        codec.shortstr("é" * 128)  # 256 bytes


def test_heartbeat_frame_matches_pamqp():
    from pamqp.heartbeat import Heartbeat

    assert frame.marshal(Heartbeat(), 0) == codec.HEARTBEAT_FRAME


# --------------------------------------------------------------------------- decoders


def _payload(data: bytes) -> bytes:
    [(_, _, payload)] = split_frames(data)
    return payload


@SETTINGS
@given(exchange=pamqp_names, routing_key=utf8_shortstr, mandatory=st.booleans(),
       immediate=st.booleans())
def test_parse_publish_reads_pamqp_publish(exchange, routing_key, mandatory, immediate):
    data = frame.marshal(commands.Basic.Publish(0, exchange, routing_key, mandatory, immediate), 1)
    got = codec.parse_publish(_payload(data))
    assert got == (exchange, routing_key, ex_rk(exchange, routing_key), mandatory, immediate)


@SETTINGS
@given(exchange=utf8_shortstr, routing_key=utf8_shortstr, mandatory=st.booleans(),
       immediate=st.booleans())
def test_parse_publish_any_utf8_names_built_without_validation(exchange, routing_key, mandatory,
                                                               immediate):
    method = codec.build(commands.Basic.Publish, exchange=exchange, routing_key=routing_key,
                         mandatory=mandatory, immediate=immediate)
    got = codec.parse_publish(_payload(codec.method_frame(1, method)))
    assert got == (exchange, routing_key, ex_rk(exchange, routing_key), mandatory, immediate)


@SETTINGS
@given(exchange=pamqp_names, routing_key=utf8_shortstr, tag=utf8_shortstr, delivery_tag=delivery_tags)
def test_publish_raw_names_forwarded_into_deliver_match_pamqp(exchange, routing_key, tag,
                                                             delivery_tag):
    """The raw exchange+rk bytes of a publish, copied into deliver, are pamqp's deliver."""
    publish = frame.marshal(commands.Basic.Publish(0, exchange, routing_key), 3)
    _, _, raw, _, _ = codec.parse_publish(_payload(publish))
    ours = codec.deliver_frame(5, codec.shortstr(tag), delivery_tag, False, raw)
    ref = frame.marshal(commands.Basic.Deliver(tag, delivery_tag, False, exchange, routing_key), 5)
    assert ours == ref


@pytest.mark.parametrize("payload", [
    pytest.param(b"\x00\x3c\x00\x28\x00\x00", id="no-exchange-length"),
    pytest.param(b"\x00\x3c\x00\x28\x00\x00\x05ab", id="exchange-truncated"),
    pytest.param(b"\x00\x3c\x00\x28\x00\x00\x00\x02x", id="routing-key-truncated"),
])
def test_parse_publish_truncated_payload_raises_index_error(payload):
    with pytest.raises(IndexError):
        codec.parse_publish(payload)


def test_parse_publish_keeps_names_that_are_not_utf8():
    """As RabbitMQ, publish does not check its short strings: the bytes survive."""
    payload = b"\x00\x3c\x00\x28\x00\x00\x01\xff\x02a\xfe\x00"
    exchange, routing_key, _mandatory = codec.parse_publish(payload)[:3]
    assert exchange.encode("utf-8", "surrogateescape") == b"\xff"
    assert routing_key.encode("utf-8", "surrogateescape") == b"a\xfe"


@SETTINGS
@given(delivery_tag=delivery_tags, multiple=st.booleans())
def test_parse_ack_reads_pamqp_ack(delivery_tag, multiple):
    payload = _payload(frame.marshal(commands.Basic.Ack(delivery_tag, multiple), 1))
    assert codec.parse_ack(payload) == (delivery_tag, int(multiple))


@SETTINGS
@given(delivery_tag=delivery_tags, multiple=st.booleans(), requeue=st.booleans())
def test_parse_ack_reads_pamqp_nack(delivery_tag, multiple, requeue):
    payload = _payload(frame.marshal(commands.Basic.Nack(delivery_tag, multiple, requeue), 1))
    assert codec.parse_ack(payload) == (delivery_tag, int(multiple) | (int(requeue) << 1))


@SETTINGS
@given(delivery_tag=delivery_tags, requeue=st.booleans())
def test_parse_ack_reads_pamqp_reject(delivery_tag, requeue):
    payload = _payload(frame.marshal(commands.Basic.Reject(delivery_tag, requeue), 1))
    assert codec.parse_ack(payload) == (delivery_tag, int(requeue))


@pytest.mark.parametrize(("method", "index"), [
    pytest.param(commands.Basic.Publish, codec.BASIC_PUBLISH, id="publish"),
    pytest.param(commands.Basic.Ack, codec.BASIC_ACK, id="ack"),
    pytest.param(commands.Basic.Nack, codec.BASIC_NACK, id="nack"),
    pytest.param(commands.Basic.Reject, codec.BASIC_REJECT, id="reject"),
])
def test_method_index_constants_match_pamqp(method, index):
    assert method.index == index


# --------------------------------------------------------------------------- content header

_shortstr_prop = st.one_of(st.none(), st.text(min_size=1, max_size=40).map(_fit_255))
_scalar = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=20),
    st.floats(width=32, allow_nan=False),  # pamqp encodes floats as 32-bit 'f'
    st.none(),
)
_field_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=4),
    ),
    max_leaves=12,
)
_headers = st.one_of(st.none(), st.dictionaries(st.text(min_size=1, max_size=12), _field_value,
                                                min_size=1, max_size=6))
_timestamps = st.one_of(st.none(), st.integers(0, 2**32 - 1).map(
    lambda s: datetime.datetime.fromtimestamp(s, tz=datetime.UTC)))

properties = st.builds(
    commands.Basic.Properties,
    content_type=_shortstr_prop,
    content_encoding=_shortstr_prop,
    headers=_headers,
    delivery_mode=st.one_of(st.none(), st.sampled_from([1, 2])),
    priority=st.one_of(st.none(), st.integers(0, 255)),
    correlation_id=_shortstr_prop,
    reply_to=_shortstr_prop,
    expiration=st.one_of(st.none(), st.integers(0, 10**9).map(str)),
    message_id=_shortstr_prop,
    timestamp=_timestamps,
    message_type=_shortstr_prop,
    user_id=_shortstr_prop,
    app_id=_shortstr_prop,
)
body_sizes = st.integers(0, 2**64 - 1)


def _header_payload(body_size: int, props: commands.Basic.Properties) -> bytes:
    data = frame.marshal(ContentHeader(0, body_size, props), 1)
    [(ftype, _, payload)] = split_frames(data)
    assert ftype == codec.FRAME_HEADER
    return payload


@SETTINGS
@given(body_size=body_sizes, props=properties)
def test_parse_header_and_decode_properties_read_pamqp_header(body_size, props):
    payload = _header_payload(body_size, props)
    assert codec.parse_header(payload) == (60, body_size)
    assert codec.decode_properties(payload) == _as_decoded(props)


@SETTINGS
@given(body_size=body_sizes, props=properties)
def test_encode_header_is_read_back_by_pamqp(body_size, props):
    """Our encoder's bytes decode, in a client's parser, to the properties given (floats
    are written as 64-bit 'd', so they are exact, and pamqp reads them as such)."""
    payload = codec.encode_header(body_size, props)
    header = ContentHeader()
    header.unmarshal(payload)
    assert header.body_size == body_size
    assert header.properties == props


def _as_decoded(props: commands.Basic.Properties) -> commands.Basic.Properties:
    """``props`` as ``codec.decode_properties`` gives them: a timestamp is its raw integer
    (clients put milliseconds and microseconds there too, beyond ``datetime``)."""
    out = copy.copy(props)
    if isinstance(props.timestamp, datetime.datetime):
        out.timestamp = int(props.timestamp.timestamp())
    return out


@SETTINGS
@given(props=properties)
def test_property_flags_bits_match_present_properties(props):
    flags = codec.property_flags(_header_payload(0, props))
    for name, bit in commands.Basic.Properties.flags.items():
        value = getattr(props, name)
        present = value is not None and value != ""
        assert bool(flags & bit) == present, name


@pytest.mark.parametrize(("constant", "name"), [
    pytest.param(codec.FLAG_HEADERS, "headers", id="headers"),
    pytest.param(codec.FLAG_DELIVERY_MODE, "delivery_mode", id="delivery_mode"),
    pytest.param(codec.FLAG_PRIORITY, "priority", id="priority"),
    pytest.param(codec.FLAG_EXPIRATION, "expiration", id="expiration"),
    pytest.param(codec.FLAG_USER_ID, "user_id", id="user_id"),
])
def test_flag_constants_match_pamqp(constant, name):
    assert constant == commands.Basic.Properties.flags[name]


def test_property_flags_of_short_payload_is_zero():
    assert codec.property_flags(b"\x00\x3c" + b"\x00" * 10) == 0


@SETTINGS
@given(props=properties, body=st.binary(max_size=64))
def test_message_accessors_agree_with_properties(props, body):
    msg = Message("ex", "rk", ex_rk("ex", "rk"), _header_payload(len(body), props), body)
    assert msg.headers == props.headers
    assert msg.persistent == (props.delivery_mode == 2)
    assert msg.priority == (props.priority or 0)
    assert msg.expiration == props.expiration
    assert msg.body_size == len(body)


@SETTINGS
@given(props=properties, exchange=utf8_shortstr, routing_key=utf8_shortstr)
def test_message_build_round_trips(props, exchange, routing_key):
    msg = Message.build(exchange, routing_key, b"abc", props)
    assert msg.exchange_rk_ss == ex_rk(exchange, routing_key)
    assert codec.parse_header(msg.header_payload) == (60, 3)
    assert codec.decode_properties(msg.header_payload) == _as_decoded(props)
    assert msg.flags == codec.property_flags(msg.header_payload)


# --------------------------------------------------------------------------- content frames


@SETTINGS
@given(channel=channels, props=properties, frame_max=st.integers(9, 5000),
       size=st.integers(0, 20000), seed=st.integers(0, 2**32))
def test_content_frames_split_and_reassemble(channel, props, frame_max, size, seed):
    body = random.Random(seed).randbytes(size)
    header = _header_payload(size, props)
    parts = codec.content_frames(channel, header, body, frame_max)
    frames = split_frames(b"".join(parts))
    assert frames[0] == (codec.FRAME_HEADER, channel, header)
    body_frames = frames[1:]
    assert all(t == codec.FRAME_BODY and ch == channel for t, ch, _ in body_frames)
    assert all(len(p) + codec.FRAME_OVERHEAD <= frame_max for _, _, p in body_frames)
    assert all(p for _, _, p in body_frames), "no empty body frames"
    assert b"".join(p for _, _, p in body_frames) == body
    chunk = frame_max - codec.FRAME_OVERHEAD
    assert len(body_frames) == -(-size // chunk)  # ceil: minimal number of frames


@pytest.mark.parametrize(("size", "frame_max", "expected_sizes"), [
    pytest.param(0, 4096, [], id="empty-body-no-body-frame"),
    pytest.param(4088, 4096, [4088], id="exactly-one-full-frame"),
    pytest.param(4089, 4096, [4088, 1], id="one-byte-over"),
    pytest.param(8176, 4096, [4088, 4088], id="two-full-frames"),
    pytest.param(10, 131072, [10], id="small-body"),
])
def test_content_frames_boundaries(size, frame_max, expected_sizes):
    body = bytes(range(256)) * (size // 256 + 1)
    body = body[:size]
    frames = split_frames(b"".join(codec.content_frames(1, b"H" * 14, body, frame_max)))
    assert [len(p) for _, _, p in frames[1:]] == expected_sizes
    assert all(len(p) + 8 <= frame_max for _, _, p in frames)


@SETTINGS
@given(channel=channels, body=st.binary(max_size=300))
def test_content_body_frames_match_pamqp(channel, body):
    from pamqp.body import ContentBody

    header = _header_payload(len(body), commands.Basic.Properties())
    parts = b"".join(codec.content_frames(channel, header, body, 4096))
    ref = frame.marshal(ContentHeader(0, len(body), commands.Basic.Properties()), channel)
    if body:
        ref += frame.marshal(ContentBody(body), channel)
    assert parts == ref


# --------------------------------------------------------------------------- slow path

VALID_METHODS = [
    pytest.param(commands.Queue.Declare(queue="orders q", durable=True, auto_delete=True,
                                        arguments={"x-max-length": 10, "x-queue-type": "classic"}),
                 id="queue.declare"),
    pytest.param(commands.Queue.DeclareOk("q.1", 5, 2), id="queue.declare-ok"),
    pytest.param(commands.Exchange.Declare(exchange="ex-1", exchange_type="topic", passive=True,
                                           internal=True, nowait=True), id="exchange.declare"),
    pytest.param(commands.Queue.Bind(queue="q", exchange="amq.topic", routing_key="a.*.#",
                                     arguments={"k": [1, "two", {"n": True}]}), id="queue.bind"),
    pytest.param(commands.Basic.Consume(queue="q", consumer_tag="ctag", no_ack=True,
                                        exclusive=True, arguments={"x-priority": 3}),
                 id="basic.consume"),
    pytest.param(commands.Basic.Qos(prefetch_size=0, prefetch_count=100, global_=True),
                 id="basic.qos"),
    pytest.param(commands.Channel.Close(404, "NOT_FOUND - no queue 'x'", 50, 10),
                 id="channel.close"),
    pytest.param(commands.Connection.Tune(2047, 131072, 60), id="connection.tune"),
    pytest.param(commands.Basic.Cancel("ctag", nowait=True), id="basic.cancel"),
    pytest.param(commands.Queue.Delete(queue="q", if_unused=True, if_empty=False, nowait=True),
                 id="queue.delete"),
]


@pytest.mark.parametrize("method", VALID_METHODS)
def test_method_frame_matches_pamqp(method):
    assert codec.method_frame(7, method) == frame.marshal(method, 7)


@pytest.mark.parametrize("method", VALID_METHODS)
def test_build_copy_method_frame_matches_pamqp(method):
    fields = {name: getattr(method, name) for name in method.__slots__}
    built = codec.build(type(method), **fields)
    assert codec.method_frame(7, built) == frame.marshal(method, 7)


@pytest.mark.parametrize("cls", [commands.Queue.Declare, commands.Exchange.Declare,
                                 commands.Basic.Consume, commands.Queue.Unbind],
                         ids=lambda c: c.name)
def test_build_fills_pamqp_defaults(cls):
    assert codec.method_frame(1, codec.build(cls)) == frame.marshal(cls(), 1)


@pytest.mark.parametrize("name", [
    pytest.param("with [brackets]", id="brackets"),
    pytest.param("ünïcødé", id="unicode"),
    pytest.param("star*and?query", id="wildcards"),
    pytest.param("semi;colon=1", id="semicolon"),
    pytest.param("€" * 85, id="255-bytes"),
])
def test_method_frame_sends_names_pamqp_would_reject(name):
    with pytest.raises(ValueError):
        commands.Queue.Declare(queue=name)
    built = codec.build(commands.Queue.Declare, queue=name, durable=True)
    data = codec.method_frame(2, built)
    consumed, channel, decoded = frame.unmarshal(data)
    assert (consumed, channel) == (len(data), 2)
    assert isinstance(decoded, commands.Queue.Declare)
    assert decoded.queue == name
    assert decoded.durable is True
    assert decoded.passive is False
    # bytes identical to a valid same-shape declare with only the name swapped
    placeholder = frame.marshal(commands.Queue.Declare(queue="", durable=True), 2)
    ref_payload = placeholder[7:-1]
    expected_payload = ref_payload[:6] + codec.shortstr(name) + ref_payload[7:]
    assert data[7:-1] == expected_payload


@SETTINGS
@given(queue=utf8_shortstr, exchange=utf8_shortstr, routing_key=utf8_shortstr,
       nowait=st.booleans())
def test_method_frame_round_trips_any_utf8_names(queue, exchange, routing_key, nowait):
    built = codec.build(commands.Queue.Bind, queue=queue, exchange=exchange,
                        routing_key=routing_key, nowait=nowait, arguments={"a": 1})
    decoded = codec.decode_method(_payload(codec.method_frame(1, built)))
    assert isinstance(decoded, commands.Queue.Bind)
    assert (decoded.queue, decoded.exchange, decoded.routing_key, decoded.nowait,
            decoded.arguments) == (queue, exchange, routing_key, nowait, {"a": 1})


def test_method_frame_bit_packing_order():
    """Consecutive bits share one octet, first field in the lowest bit."""
    method = commands.Queue.Declare(queue="q", passive=True, durable=False, exclusive=True,
                                    auto_delete=False, nowait=True)
    payload = _payload(codec.method_frame(1, method))
    assert payload[-5] == 0b10101  # bits follow the name, then the 4-byte empty table
    assert payload == _payload(frame.marshal(method, 1))
