"""Fast-path decoders (publish, ack/nack/reject, method indexes) reading pamqp-encoded payloads.

pamqp is the reference codec: every fast-path encoder must produce exactly pamqp's bytes and
every fast-path decoder must read pamqp's bytes back to the same values.
"""

from __future__ import annotations

import pytest
from codec_helpers import (
    SETTINGS,
    _payload,
    delivery_tags,
    ex_rk,
    pamqp_names,
    utf8_shortstr,
)
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands, frame

from smartbroker.protocol import codec

# --------------------------------------------------------------------------- decoders

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
