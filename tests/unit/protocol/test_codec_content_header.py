"""Content-header codec: property decoding/encoding and property flags against pamqp; Message accessors.

pamqp is the reference codec: every fast-path encoder must produce exactly pamqp's bytes and
every fast-path decoder must read pamqp's bytes back to the same values.
"""

from __future__ import annotations

import copy
import datetime

import pytest
from codec_helpers import (
    SETTINGS,
    _header_payload,
    ex_rk,
    properties,
    utf8_shortstr,
)
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands
from pamqp.header import ContentHeader

from smartbroker.message import Message
from smartbroker.protocol import codec

# --------------------------------------------------------------------------- content header

body_sizes = st.integers(0, 2**64 - 1)


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
