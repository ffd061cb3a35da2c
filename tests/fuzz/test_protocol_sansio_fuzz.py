"""Fuzzing the sans-IO protocol alone: no broker, no event loop, no transport.

A bare ``protocol.Connection`` gets random bytes and random (mostly well-formed) frame
streams, cut at random points; a scripted server answers every turn as the adapter does
(start, tune, open-ok, close-ok, channel open-ok / close-ok, channel.close for a
``ChannelFailed``). Only ``ConnectionError`` may escape ``next_event``, with RabbitMQ's
reply text; everything the server sends must parse as AMQP frames; a ``Publish`` carries
exactly the body size its header declared; input never piles up beyond one frame. Much
faster than the adapter-level fuzzing in ``test_protocol_fuzz_*.py`` (which keeps the cases
that need the broker: channel and queue cleanup, the 541 path, transport closing).
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from fuzz_harness import CORPUS, PROTOCOL_HEADER, fuzz_settings, handshake_bytes
from fuzz_strategies import publish_sequence, session, splits
from hypothesis import given, note
from hypothesis import strategies as st
from pamqp import commands, frame

from smartbroker.errors import ConnectionError
from smartbroker.protocol import codec
from smartbroker.protocol.connection import Connection
from smartbroker.protocol.events import (
    NEED_DATA,
    PAUSED,
    ChannelFailed,
    ChannelOpen,
    ConnectionClosed,
    Method,
    ProtocolHeader,
    Publish,
)
from smartbroker.protocol.states import CONNECTION, SERVER, State

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pamqp: access.request
START = commands.Connection.Start(server_properties={}, mechanisms="PLAIN", locales="en_US")
C = commands.Connection


class ScriptedServer:
    """The adapter's replies, without a broker: every login and vhost is accepted."""

    def __init__(self) -> None:
        self.conn = Connection(frame_max=131072, channel_max=2047, heartbeat=0,
                               max_message_size=4096)
        self.out: list[bytes] = []
        self.errors: list[ConnectionError] = []
        self.published = 0

    def feed(self, chunk: bytes) -> None:
        conn = self.conn
        conn.receive_data(chunk)
        while True:
            try:
                event = conn.next_event()
            except ConnectionError as err:
                self._refuse(err)
                return
            if event is NEED_DATA or event is PAUSED:
                assert event is NEED_DATA or conn.state in (State.SEND_START, State.SEND_TUNE,
                                                            State.SEND_OPEN_OK, State.SEND_CLOSE_OK)
                if event is PAUSED:
                    raise AssertionError(f"paused in {conn.state} with nothing to answer")
                self._check_buffer()
                return
            self._answer(event)

    def _answer(self, event: Any) -> None:
        conn, out = self.conn, self.out
        if isinstance(event, ProtocolHeader):
            out.append(conn.send_start(START))
        elif isinstance(event, Publish):
            declared = struct.unpack_from("!Q", event.header, 4)[0]
            assert len(event.body) == declared, (len(event.body), declared)
            assert codec.decode_route(event.route[2]) == event.route[:2]
            self.published += 1
        elif isinstance(event, ChannelOpen):
            out.append(conn.send_channel_open_ok(event.channel))
        elif isinstance(event, ChannelFailed):
            err = event.error
            assert err.code == 406 and (err.class_id, err.method_id) == (60, 40)
            out.append(conn.send_channel_close(event.channel, err.code, err.reply_text,
                                               err.class_id, err.method_id))
        elif isinstance(event, Method) and event.channel == 0:
            kind = type(event.method)
            if kind is C.StartOk:
                out.append(conn.send_tune())
            elif kind is C.Open:
                out.append(conn.send_open_ok())
            elif kind is C.Close:
                out.append(conn.send_close_ok())
        elif isinstance(event, Method) and type(event.method) is commands.Channel.Close:
            out.append(conn.send_channel_close_ok(event.channel))
        elif isinstance(event, ConnectionClosed):
            assert conn.state is State.CLOSED

    def _refuse(self, err: ConnectionError) -> None:
        assert 300 <= err.code < 600 and err.reply_text.isascii() and len(err.reply_text) <= 255
        self.errors.append(err)
        conn = self.conn
        assert conn.next_event() in (NEED_DATA, PAUSED)  # the input was dropped
        if (conn.state, SERVER, C.Close) in CONNECTION:
            self.out.append(conn.send_connection_close(err.code, err.reply_text, err.class_id,
                                                       err.method_id))
        elif conn.state not in (State.CLOSING, State.CLOSED):
            conn.abort()

    def _check_buffer(self) -> None:
        pending = len(self.conn._buf) - self.conn._pos
        assert pending <= 7 + self.conn.frame_max, pending  # at most one incomplete frame

    def check_output(self) -> None:
        data = b"".join(self.out)
        while data:
            consumed, _, _ = frame.unmarshal(data)
            data = data[consumed:]


def drive(chunks: list[bytes]) -> ScriptedServer:
    server = ScriptedServer()
    for chunk in chunks:
        if chunk:
            server.feed(chunk)
    server.feed(b"")  # end of input
    server.check_output()
    return server


@fuzz_settings(300)
@given(st.data())
def test_random_bytes(data: st.DataObject) -> None:
    prefix = data.draw(st.sampled_from([b"", PROTOCOL_HEADER, handshake_bytes()]))
    stream = prefix + data.draw(st.binary(max_size=400))
    note(repr(stream))
    drive(data.draw(splits(stream)))


@fuzz_settings(300)
@given(st.data())
def test_random_frames(data: st.DataObject) -> None:
    stream = data.draw(session())
    note(repr(stream))
    drive(data.draw(splits(stream)))


@st.composite
def publishing(draw: st.DrawFn) -> bytes:
    """A session that mostly publishes: channels 1-3 open, then publish sequences (sizes
    mostly consistent, properties sometimes malformed) and acks, on any of them."""
    parts = [handshake_bytes(), *(frame.marshal(commands.Channel.Open(), n) for n in (1, 2, 3))]
    for _ in range(draw(st.integers(1, 15))):
        channel = draw(st.integers(1, 3))
        if draw(st.integers(0, 5)):
            parts.append(draw(publish_sequence(channel)))
        else:
            parts.append(frame.marshal(commands.Basic.Ack(delivery_tag=draw(st.integers(0, 9))),
                                       channel))
    return b"".join(parts)


@fuzz_settings(300)
@given(st.data())
def test_publishing_sessions(data: st.DataObject) -> None:
    stream = data.draw(publishing())
    note(repr(stream))
    drive(data.draw(splits(stream)))


@fuzz_settings(100)
@given(st.data())
def test_chunking_does_not_change_the_outcome(data: st.DataObject) -> None:
    """The same stream, whole or cut anywhere: the same replies and the same first error
    (after it, the connection is closing and later chunks may hold more garbage)."""
    stream = data.draw(st.one_of(session(), publishing()))
    whole = drive([stream])
    cut = drive(data.draw(splits(stream)))
    assert b"".join(cut.out) == b"".join(whole.out)
    assert [(e.code, e.text) for e in cut.errors[:1]] == [(e.code, e.text) for e in whole.errors]
    assert cut.published == whole.published


def test_corpus_replays_without_a_broker() -> None:
    for path in sorted(CORPUS.glob("*.bin")):
        data = path.read_bytes()
        drive([data])
        drive([data[i:i + 1] for i in range(len(data))])
