"""A server-side sans-IO ``Connection`` and a pamqp-speaking client, joined without a
socket or an event loop (as h11's ``ConnectionPair``): tests are bytes in, events and
bytes out, a few lines each."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from pamqp import body as pamqp_body
from pamqp import commands, frame, header

from smartbroker.errors import ConnectionError
from smartbroker.protocol.connection import Connection
from smartbroker.protocol.events import NEED_DATA, PAUSED, Event

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
START = commands.Connection.Start(server_properties={}, mechanisms="PLAIN", locales="en_US")


def method(channel: int, m: Any) -> bytes:
    return frame.marshal(m, channel)


def publish(channel: int, body: bytes = b"hi", exchange: str = "", routing_key: str = "q",
            props: commands.Basic.Properties | None = None, mandatory: bool = False,
            frame_max: int = 131072) -> bytes:
    """basic.publish + content header + body frames split to ``frame_max``."""
    parts = [method(channel, commands.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                     mandatory=mandatory)),
             frame.marshal(header.ContentHeader(0, len(body), props or commands.Basic.Properties()),
                           channel)]
    chunk = frame_max - 8
    for start in range(0, len(body), chunk):
        parts.append(frame.marshal(pamqp_body.ContentBody(body[start:start + chunk]), channel))
    return b"".join(parts)


def read_frames(data: bytes) -> list[tuple[int, Any]]:
    """Every frame in ``data`` as (channel, pamqp frame); fails on trailing garbage."""
    out = []
    while data:
        consumed, channel, value = frame.unmarshal(data)
        out.append((channel, value))
        data = data[consumed:]
    return out


class Pair:
    def __init__(self, **limits: Any) -> None:
        self.server = Connection(**limits)

    def feed(self, data: bytes) -> list[Event]:
        """Give the server ``data``; every event up to NEED_DATA or PAUSED."""
        self.server.receive_data(data)
        return self.drain()

    def drain(self) -> list[Event]:
        events = []
        while (event := self.server.next_event()) is not NEED_DATA and event is not PAUSED:
            events.append(event)
        return events

    def handshake(self, frame_max: int = 131072, channel_max: int = 2047,
                  heartbeat: int = 0) -> None:
        self.feed(PROTOCOL_HEADER)
        self.server.send_start(START)
        self.feed(method(0, commands.Connection.StartOk(
            client_properties={}, mechanism="PLAIN", response="\0guest\0guest")))
        self.server.send_tune()
        self.feed(method(0, commands.Connection.TuneOk(
            channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat)))
        self.feed(method(0, commands.Connection.Open(virtual_host="/")))
        self.server.send_open_ok()

    def open_channel(self, number: int = 1) -> bytes:
        self.feed(method(number, commands.Channel.Open()))
        return self.server.send_channel_open_ok(number)


def open_pair(**limits: Any) -> Pair:
    """A pair past the handshake with channel 1 open."""
    pair = Pair(**limits)
    pair.handshake()
    pair.open_channel(1)
    return pair


def connection_error(pair: Pair, data: bytes) -> ConnectionError:
    """The connection error (a hard error: the connection closes) ``data`` raises."""
    with pytest.raises(ConnectionError) as info:
        pair.feed(data)
    return info.value


def raw_frame(ftype: int, channel: int, payload: bytes, end: bytes = b"\xce") -> bytes:
    """A frame built by hand, so that it can lie (size, end marker, type)."""
    return struct.pack("!BHI", ftype, channel, len(payload)) + payload + end
