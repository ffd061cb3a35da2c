"""Method decoding without patching pamqp: deep and wide tables decode linearly, other
fields come out as pamqp makes them, and bad bytes give RabbitMQ's errors."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, frame
from pamqp import decode as pamqp_decode

from smartbroker.errors import ConnectionError, MalformedFrame
from smartbroker.protocol.methods import decode_method

_name = st.from_regex(r"[a-zA-Z0-9_.:-]{0,20}", fullmatch=True)


def _payload(m: object) -> bytes:
    return frame.marshal(m, 1)[7:-1]


def test_pamqp_is_not_patched() -> None:
    import smartbroker.protocol.codec  # noqa: F401 - importing it must change nothing

    assert pamqp_decode.METHODS["table"] is pamqp_decode.field_table


def test_a_table_nested_a_thousand_deep() -> None:
    table = b""
    for _ in range(1000):
        table = b"\x01kF" + struct.pack("!I", len(table)) + table
    args = struct.pack("!I", len(table)) + table
    payload = b"\x00\x3c\x00\x14" + b"\x00\x00" + b"\x01q" + b"\x00" + b"\x00" + args
    method = decode_method(payload)
    depth, node = 0, method.arguments
    while node:
        node, depth = node["k"], depth + 1
    assert isinstance(method, commands.Basic.Consume) and depth == 1000


@settings(max_examples=50, deadline=None)
@given(st.builds(commands.Queue.Bind, queue=_name, exchange=_name, routing_key=st.text(max_size=20), nowait=st.booleans(),
                 arguments=st.dictionaries(st.text(min_size=1, max_size=8),
                                           st.integers(-2**31, 2**31 - 1) | st.text(max_size=8),
                                           max_size=4)))
def test_fields_match_pamqp(m: commands.Queue.Bind) -> None:
    ours = decode_method(_payload(m))
    _, _, theirs = frame.unmarshal(frame.marshal(m, 1))
    for name in m.__slots__:
        assert getattr(ours, name) == getattr(theirs, name)


def test_unknown_method_is_540() -> None:
    with pytest.raises(ConnectionError) as info:
        decode_method(b"\x00\x3c\x00\x63")
    assert (info.value.code, info.value.text) == (540, "unknown method (class 60, method 99)")


def test_truncated_method_is_502() -> None:
    with pytest.raises(ConnectionError) as info:
        decode_method(_payload(commands.Basic.Qos(prefetch_count=5))[:6])
    assert (info.value.code, info.value.class_id, info.value.method_id) == (502, 60, 10)


def test_shortstr_that_is_not_utf8_is_501() -> None:
    with pytest.raises(MalformedFrame) as info:
        decode_method(b"\x00\x32\x00\x0a\x00\x00\x02\xff\xfe\x00\x00\x00\x00\x00")
    assert (info.value.code, info.value.text) == (501, "Malformed UTF-8 in shortstr")
