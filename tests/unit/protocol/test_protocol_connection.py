"""The sans-IO server connection: handshake, frames and channels, with RabbitMQ's errors
for every illegal move and the frame limits. Bytes in, events and bytes out. (Publish and
content frames: test_protocol_content.py.)"""

from __future__ import annotations

import pytest
from pamqp import commands, frame, heartbeat
from protocol_pair import (
    PROTOCOL_HEADER,
    START,
    Pair,
    connection_error,
    method,
    open_pair,
    publish,
    raw_frame,
    read_frames,
)

from smartbroker.errors import ConnectionError
from smartbroker.protocol.connection import Connection, LocalProtocolError
from smartbroker.protocol.events import (
    NEED_DATA,
    PAUSED,
    BadProtocolHeader,
    ChannelClosed,
    ChannelOpen,
    ConnectionClosed,
    Heartbeat,
    Method,
    ProtocolHeader,
    Publish,
)
from smartbroker.protocol.states import ChannelState, State


# -- handshake ---------------------------------------------------------------------------
def test_handshake_moves_on_both_sides_receiving_and_sending() -> None:
    pair = Pair(frame_max=65536, channel_max=100, heartbeat=30)
    server = pair.server
    assert pair.feed(PROTOCOL_HEADER) == [ProtocolHeader()]
    assert server.state is State.SEND_START
    start = read_frames(server.send_start(START))
    assert isinstance(start[0][1], commands.Connection.Start)
    assert server.state is State.AWAIT_START_OK
    [ok] = pair.feed(method(0, commands.Connection.StartOk(mechanism="PLAIN", response="\0a\0b")))
    assert isinstance(ok, Method) and isinstance(ok.method, commands.Connection.StartOk)
    assert server.state is State.SEND_TUNE
    [(_, tune)] = read_frames(server.send_tune())
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (100, 65536, 30)
    assert server.state is State.AWAIT_TUNE_OK
    pair.feed(method(0, commands.Connection.TuneOk(channel_max=50, frame_max=8192, heartbeat=10)))
    assert (server.channel_max, server.frame_max, server.heartbeat) == (50, 8192, 10)
    assert server.state is State.AWAIT_OPEN
    pair.feed(method(0, commands.Connection.Open(virtual_host="/")))
    assert server.state is State.SEND_OPEN_OK
    [(_, open_ok)] = read_frames(server.send_open_ok())
    assert isinstance(open_ok, commands.Connection.OpenOk)
    assert server.state is State.OPEN


def test_input_waits_while_it_is_the_servers_turn() -> None:
    pair = Pair()
    # start-ok arrives with the header, before connection.start was sent
    data = PROTOCOL_HEADER + method(0, commands.Connection.StartOk(mechanism="PLAIN", response="x"))
    assert pair.feed(data) == [ProtocolHeader()]
    assert pair.server.next_event() is PAUSED
    pair.server.send_start(START)
    [event] = pair.drain()
    assert isinstance(event.method, commands.Connection.StartOk)


def test_bad_protocol_header_is_reported_and_later_input_ignored() -> None:
    pair = Pair()
    assert pair.feed(b"AMQP\x01\x01\x00\x0a") == [BadProtocolHeader(b"AMQP\x01\x01\x00\x0a")]
    assert pair.server.state is State.CLOSED
    assert pair.feed(method(0, commands.Connection.StartOk())) == []


def test_protocol_header_split_over_reads() -> None:
    pair = Pair()
    assert pair.feed(PROTOCOL_HEADER[:3]) == []
    assert pair.feed(PROTOCOL_HEADER[3:]) == [ProtocolHeader()]


@pytest.mark.parametrize(("state_setup", "sent", "text"), [
    (1, commands.Connection.Open(virtual_host="/"), "unexpected method Connection.Open in state await_start_ok"),
    (2, commands.Connection.Open(virtual_host="/"), "unexpected method Connection.Open in state await_tune_ok"),
    (3, commands.Connection.TuneOk(channel_max=1, frame_max=4096), "unexpected method Connection.TuneOk in state await_open"),
    (4, commands.Connection.StartOk(mechanism="PLAIN", response="x"), "unexpected method Connection.StartOk in state open"),
])
def test_connection_method_out_of_order_is_503(state_setup: int, sent: object, text: str) -> None:
    pair = Pair()
    pair.feed(PROTOCOL_HEADER)
    pair.server.send_start(START)
    steps = [
        lambda: (pair.feed(method(0, commands.Connection.StartOk(mechanism="PLAIN", response="x"))),
                 pair.server.send_tune()),
        lambda: pair.feed(method(0, commands.Connection.TuneOk(channel_max=10, frame_max=8192))),
        lambda: (pair.feed(method(0, commands.Connection.Open(virtual_host="/"))),
                 pair.server.send_open_ok()),
    ]
    for step in steps[:state_setup - 1]:
        step()
    err = connection_error(pair, method(0, sent))
    assert (err.code, err.text) == (503, text)
    assert (err.class_id, err.method_id) == (10, sent.index & 0xFFFF)


@pytest.mark.parametrize(("frame_max", "channel_max", "text"), [
    (0, 10, "negotiated frame_max = 0 is higher than the maximum allowed value (131072)"),
    (1000, 10, "negotiated frame_max = 1000 is lower than the minimum allowed value (4096)"),
    (8192, 0, "negotiated channel_max = 0 (no limit) is higher than the maximum allowed value (2047)"),
    (8192, 3000, "negotiated channel_max = 3000 is higher than the maximum allowed value (2047)"),
])
def test_tune_ok_out_of_limits_is_530(frame_max: int, channel_max: int, text: str) -> None:
    pair = Pair()
    pair.feed(PROTOCOL_HEADER)
    pair.server.send_start(START)
    pair.feed(method(0, commands.Connection.StartOk(mechanism="PLAIN", response="x")))
    pair.server.send_tune()
    err = connection_error(pair, method(0, commands.Connection.TuneOk(channel_max=channel_max,
                                                            frame_max=frame_max)))
    assert (err.code, err.text, err.class_id, err.method_id) == (530, text, 10, 31)
    assert pair.server.state is State.AWAIT_TUNE_OK


def test_server_cannot_send_out_of_turn() -> None:
    server = Connection()
    with pytest.raises(LocalProtocolError):
        server.send_tune()


def test_client_close_then_close_ok_ends_the_connection() -> None:
    pair = open_pair()
    [event] = pair.feed(method(0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)))
    assert isinstance(event.method, commands.Connection.Close)
    assert pair.server.state is State.SEND_CLOSE_OK
    assert pair.feed(publish(1)) == []  # paused: nothing is read until close-ok is sent
    pair.server.send_close_ok()
    assert pair.server.state is State.CLOSED
    assert pair.drain() == []


def test_server_close_drops_channel_frames_until_close_ok() -> None:
    pair = open_pair()
    pair.server.send_connection_close(320, "CONNECTION_FORCED - bye")
    assert pair.server.state is State.CLOSING and pair.server.close_sent
    assert pair.feed(publish(1) + method(0, commands.Connection.Open())) == []
    [event] = pair.feed(method(0, commands.Connection.CloseOk()))
    assert isinstance(event.method, commands.Connection.CloseOk)
    assert pair.server.state is State.CLOSED


def test_end_of_input() -> None:
    pair = open_pair()
    pair.server.receive_data(publish(1))
    pair.server.receive_data(b"")
    events = pair.drain()
    assert [type(e) for e in events] == [Publish, ConnectionClosed]
    assert pair.server.state is State.CLOSED


# -- frames --------------------------------------------------------------------------------
def test_frame_larger_than_pre_tune_limit() -> None:
    pair = Pair()
    pair.feed(PROTOCOL_HEADER)
    pair.server.send_start(START)
    err = connection_error(pair, raw_frame(1, 0, b"\0" * 4097))
    assert (err.code, err.text) == (501, "type 1, all octets = <<>>: {frame_too_large,4097,4088}")


def test_frame_larger_than_negotiated_frame_max() -> None:
    pair = Pair()
    pair.handshake(frame_max=8192)
    err = connection_error(pair, raw_frame(3, 1, b"x" * 8193))
    assert err.text == "type 3, all octets = <<>>: {frame_too_large,8193,8184}"


def test_invalid_frame_end_marker() -> None:
    pair = open_pair()
    err = connection_error(pair, raw_frame(8, 0, b"", end=b"\x00"))
    assert (err.code, err.text) == (501, "type 8, all octets = <<>>: {invalid_frame_end_marker,0}")


def test_error_drops_the_buffered_input() -> None:
    pair = open_pair()
    pair.server.receive_data(raw_frame(8, 0, b"", end=b"\x00") + publish(1))
    with pytest.raises(ConnectionError):
        pair.server.next_event()
    assert pair.server.next_event() is NEED_DATA


@pytest.mark.parametrize(("data", "code", "text", "ids"), [
    (raw_frame(2, 0, b"\0" * 14), 505, "content frame of type 2 on channel 0", (0, 0)),
    (raw_frame(3, 0, b"x"), 505, "content frame of type 3 on channel 0", (0, 0)),
    (raw_frame(9, 0, b""), 501, "unknown frame type 9", (0, 0)),
    (method(0, commands.Basic.Qos()), 504, "unexpected method in connection state running", (60, 10)),
    (raw_frame(8, 1, b""), 505, "heartbeat frame on non-zero channel 1", (0, 0)),
    (method(2, commands.Basic.Qos()), 504, "expected 'channel.open'", (60, 10)),
    (method(1, commands.Channel.Open()), 504, "second 'channel.open' seen", (20, 10)),
    (raw_frame(2, 2, b"\0" * 14), 504, "unexpected content header on channel 2", (0, 0)),
    (raw_frame(3, 2, b"x"), 504, "unexpected content body on channel 2", (0, 0)),
    (raw_frame(2, 1, b"\0<" + b"\0" * 12), 505, "expected method frame, got content header", (0, 0)),
    (raw_frame(3, 1, b"x"), 505, "expected content header for class 60, got content body", (0, 0)),
    (raw_frame(1, 1, b"\0\x3c\0\x28\0\0\x05ab"), 502, "cannot decode basic.publish", (60, 40)),
    (method(1, commands.Basic.Publish(immediate=True)), 540, "immediate=true", (60, 40)),
    (raw_frame(1, 1, b"\0\x3c\x01\x00"), 540, "unknown method (class 60, method 256)", (60, 256)),
])
def test_illegal_frames_in_open_state(data: bytes, code: int, text: str, ids: tuple[int, int]) -> None:
    err = connection_error(open_pair(), data)
    assert (err.code, err.text, (err.class_id, err.method_id)) == (code, text, ids)


def test_channel_frame_before_open_is_505() -> None:
    pair = Pair()
    pair.feed(PROTOCOL_HEADER)
    pair.server.send_start(START)
    err = connection_error(pair, method(1, commands.Channel.Open()))
    assert (err.code, err.text) == (505, "type 1 on channel 1 before connection.open")


def test_heartbeat_on_channel_zero() -> None:
    pair = open_pair()
    assert pair.feed(frame.marshal(heartbeat.Heartbeat(), 0)) == [Heartbeat()]


# -- channels --------------------------------------------------------------------------------
def test_channel_open_and_channel_max() -> None:
    pair = Pair()
    pair.handshake(channel_max=2)
    assert pair.feed(method(5, commands.Channel.Open())) == [ChannelOpen(5)]
    [(number, ok)] = read_frames(pair.server.send_channel_open_ok(5))
    assert number == 5 and isinstance(ok, commands.Channel.OpenOk)
    pair.feed(method(7, commands.Channel.Open()))
    err = connection_error(pair, method(9, commands.Channel.Open()))
    assert (err.code, err.text) == (530, "number of channels opened (2) has reached the "
                                         "negotiated channel_max (2)")


def test_server_channel_close_drops_frames_until_close_ok() -> None:
    pair = open_pair()
    pair.feed(method(1, commands.Basic.Publish(routing_key="q")))  # half a message
    pair.server.send_channel_close(1, 404, "NOT_FOUND - x", 60, 40)
    assert pair.server.channels[1].state is ChannelState.CLOSING
    dropped = (frame.marshal(commands.Basic.Qos(), 1) + publish(1)
               + raw_frame(3, 1, b"stray body"))
    assert pair.feed(dropped) == []
    assert pair.feed(method(1, commands.Channel.CloseOk())) == [ChannelClosed(1)]
    assert 1 not in pair.server.channels
    assert pair.feed(method(1, commands.Channel.Open())) == [ChannelOpen(1)]


def test_client_close_of_a_closing_channel_is_passed_on() -> None:
    pair = open_pair()
    pair.server.send_channel_close(1, 406, "PRECONDITION_FAILED - x")
    [event] = pair.feed(method(1, commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0)))
    assert isinstance(event, Method) and isinstance(event.method, commands.Channel.Close)
    pair.server.send_channel_close_ok(1)
    assert 1 not in pair.server.channels


def test_client_channel_close_then_close_ok_frees_the_number() -> None:
    pair = open_pair()
    [event] = pair.feed(method(1, commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0)))
    assert isinstance(event.method, commands.Channel.Close)
    pair.server.send_channel_close_ok(1)
    assert pair.server.channels == {}
