"""Fast-path frame encoders (deliver, get-ok, return, ack, nack, heartbeat) byte-for-byte against pamqp.

pamqp is the reference codec: every fast-path encoder must produce exactly pamqp's bytes and
every fast-path decoder must read pamqp's bytes back to the same values.
"""

from __future__ import annotations

import pytest
from codec_helpers import (
    SETTINGS,
    channels,
    delivery_tags,
    ex_rk,
    pamqp_names,
    ulongs,
    utf8_shortstr,
)
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands, frame

from smartbroker.protocol import codec

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
@given(channel=channels, tag=utf8_shortstr, first=st.integers(1, 2**40),
       bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
       exchange=pamqp_names, routing_key=utf8_shortstr)
def test_first_deliveries_are_deliver_and_content_frames_back_to_back(
        channel, tag, first, bodies, exchange, routing_key):
    """A log's run of deliveries is byte for byte what one deliver_frame and
    content_frames per message make (frame_max 100: bodies split over frames too)."""
    route = (exchange, routing_key, ex_rk(exchange, routing_key))
    header = b"\x00\x3c\x00\x00" + b"\x00" * 8 + b"\x00\x00"

    class Msg:
        def __init__(self, body: bytes) -> None:
            self.route, self.header_payload, self.body = route, header, body

    out: list[bytes] = []
    codec.first_deliveries(out, channel, codec.shortstr(tag), first, [Msg(b) for b in bodies], 100)
    expected = b"".join(
        codec.deliver_frame(channel, codec.shortstr(tag), first + i, False, route[2])
        + b"".join(codec.content_frames(channel, header, body, 100))
        for i, body in enumerate(bodies))
    assert b"".join(out) == expected


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
