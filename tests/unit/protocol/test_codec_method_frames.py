"""Slow-path method frames built generically, against pamqp: defaults, names, bit packing.

pamqp is the reference codec: every fast-path encoder must produce exactly pamqp's bytes and
every fast-path decoder must read pamqp's bytes back to the same values.
"""

from __future__ import annotations

import pytest
from codec_helpers import (
    SETTINGS,
    _payload,
    utf8_shortstr,
)
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands, frame

from smartbroker.protocol import codec

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
