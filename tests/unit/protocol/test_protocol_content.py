"""The sans-IO server connection's content: a publish (method, header, body frames) as one
event, the ack fast path, content limits and RabbitMQ's errors for content out of place,
and the content frames the server sends. Bytes in, events and bytes out."""

from __future__ import annotations

import struct

from pamqp import commands, frame, header
from protocol_pair import (
    Pair,
    connection_error,
    method,
    open_pair,
    publish,
    raw_frame,
    read_frames,
)

from smartbroker.protocol.events import (
    Ack,
    ChannelFailed,
    Publish,
)
from smartbroker.protocol.states import ChannelState


# -- publish -------------------------------------------------------------------------------------
def test_publish_becomes_one_event() -> None:
    pair = open_pair()
    props = commands.Basic.Properties(content_type="text/plain", delivery_mode=2)
    [event] = pair.feed(publish(1, b"hello", exchange="amq.direct", routing_key="k",
                                props=props, mandatory=True))
    assert isinstance(event, Publish)
    assert (event.channel, event.route[:2], event.mandatory, event.body) == (
        1, ("amq.direct", "k"), True, b"hello")
    assert event.route[2] == b"\x0aamq.direct\x01k"
    assert event.flags & (1 << 16)  # FLAG_PERSISTENT
    assert pair.server.channels[1].state is ChannelState.OPEN


def test_empty_body_publish_completes_at_the_header() -> None:
    [event] = open_pair().feed(publish(1, b""))
    assert isinstance(event, Publish) and event.body == b""


def test_body_split_over_frames_is_joined() -> None:
    pair = Pair()
    pair.handshake(frame_max=4096)
    pair.open_channel(1)
    body = bytes(range(256)) * 40
    [event] = pair.feed(publish(1, body, frame_max=4096))
    assert event.body == body


def test_routes_and_headers_are_interned() -> None:
    pair = open_pair()
    props = commands.Basic.Properties(content_type="a")
    first, second = pair.feed(publish(1, props=props) + publish(1, props=props))
    assert first.route is second.route
    assert first.header is second.header


def test_ack_fast_path() -> None:
    pair = open_pair()
    data = method(1, commands.Basic.Ack(delivery_tag=2**40, multiple=True))
    assert pair.feed(data) == [Ack(1, 2**40, True)]


def test_message_over_max_size_fails_the_channel_only() -> None:
    pair = open_pair(max_message_size=10)
    events = pair.feed(method(1, commands.Basic.Publish(routing_key="q"))
                       + frame.marshal(header.ContentHeader(
                           0, 11, commands.Basic.Properties()), 1))
    [failed] = events
    assert isinstance(failed, ChannelFailed) and failed.channel == 1
    err = failed.error
    assert (err.code, err.text, err.class_id, err.method_id) == (
        406, "message size 11 is larger than configured max size 10", 60, 40)
    pair.server.send_channel_close(1, err.code, err.reply_text, err.class_id, err.method_id)
    assert pair.feed(raw_frame(3, 1, b"x" * 11)) == []  # the body is dropped


def test_unknown_delivery_mode_fails_the_channel() -> None:
    header = b"\x00\x3c\x00\x00" + struct.pack("!Q", 1) + b"\x10\x00" + b"\x03"
    data = method(1, commands.Basic.Publish(routing_key="q")) + raw_frame(2, 1, header)
    [failed] = open_pair().feed(data)
    assert failed.error.text == "invalid message: {delivery_mode_unknown,3}"


def test_malformed_properties_are_502() -> None:
    header = b"\x00\x3c\x00\x00" + struct.pack("!Q", 1) + b"\x80\x00" + b"\x09abc"
    err = connection_error(open_pair(), method(1, commands.Basic.Publish()) + raw_frame(2, 1, header))
    assert (err.code, err.class_id, err.method_id) == (502, 60, 40)
    assert err.text.startswith("unable to decode content properties: ")


def test_body_longer_than_declared_is_501() -> None:
    data = publish(1, b"abc")[:-11] + raw_frame(3, 1, b"abcd")
    err = connection_error(open_pair(), data)
    assert (err.code, err.text, err.class_id) == (501, "content body exceeds declared size 3", 60)


def test_method_while_awaiting_content_is_505() -> None:
    pair = open_pair()
    pair.feed(method(1, commands.Basic.Publish()))
    err = connection_error(pair, method(1, commands.Basic.Qos()))
    assert (err.code, err.text, err.class_id, err.method_id) == (
        505, "expected content header for class 60, got non content header frame instead", 60, 10)


def test_content_header_for_another_class_is_505() -> None:
    header = b"\x00\x32\x00\x00" + struct.pack("!Q", 1) + b"\x00\x00"
    err = connection_error(open_pair(), method(1, commands.Basic.Publish()) + raw_frame(2, 1, header))
    assert (err.code, err.text) == (505, "expected content header for class 60, got one for "
                                         "class 50 instead")


def test_send_content_splits_to_the_negotiated_frame_max() -> None:
    pair = Pair()
    pair.handshake(frame_max=4096)
    frames = read_frames(b"".join(pair.server.send_content(1, b"\x00\x3c\x00\x00" + struct.pack("!Q", 10000) + b"\x00\x00", b"x" * 10000)))
    sizes = [len(f.value) for _, f in frames[1:]]
    assert sizes == [4088, 4088, 1824]


def test_other_methods_are_decoded_with_pamqp_classes() -> None:
    args = {"x-max-length": 10, "nested": {"deep": [1, "two"]}}
    [event] = open_pair().feed(method(1, commands.Queue.Declare(queue="q", durable=True,
                                                                arguments=args)))
    assert isinstance(event.method, commands.Queue.Declare)
    assert (event.method.queue, event.method.durable, event.method.arguments) == ("q", True, args)


def test_a_13_byte_content_header_that_looks_like_an_ack_is_a_header() -> None:
    looks_like_ack = b"\x00\x3c\x00\x50" + b"\x00" * 9  # class 60, weight 0x50, truncated
    err = connection_error(open_pair(), raw_frame(2, 1, looks_like_ack))  # no publish before it
    assert (err.code, err.text) == (505, "expected method frame, got content header")


def test_ack_in_the_middle_of_a_message_is_505() -> None:
    pair = open_pair()
    pair.feed(method(1, commands.Basic.Publish()))
    err = connection_error(pair, method(1, commands.Basic.Ack(delivery_tag=1)))
    assert err.code == 505


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    pair = Pair()
    pair.handshake(frame_max=4096)
    err = connection_error(pair, struct.pack("!BHI", 1, 1, 5000))
    assert err.text == "type 1, all octets = <<>>: {frame_too_large,5000,4088}"


def test_deliver_get_ok_return_and_heartbeat_frames() -> None:
    server = open_pair().server
    route = b"\x0aamq.direct\x01k"
    frames = read_frames(server.send_deliver(1, b"\x03ctg", 5, True, route)
                         + server.send_get_ok(1, 6, False, route, 3)
                         + server.send_return(1, 312, "NO_ROUTE", route)
                         + server.send_heartbeat())
    deliver, get_ok, returned, beat = (f for _, f in frames)
    assert (deliver.consumer_tag, deliver.delivery_tag, deliver.redelivered,
            deliver.exchange, deliver.routing_key) == ("ctg", 5, True, "amq.direct", "k")
    assert (get_ok.delivery_tag, get_ok.message_count) == (6, 3)
    assert (returned.reply_code, returned.reply_text, returned.routing_key) == (312, "NO_ROUTE", "k")
    assert type(beat).__name__ == "Heartbeat"
