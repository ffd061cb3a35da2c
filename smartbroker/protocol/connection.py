"""The server side of one AMQP 0-9-1 connection, sans I/O (as h11 is for HTTP).

Bytes go in with ``receive_data`` (``b""`` is end of input); ``next_event`` returns one
event at a time (``events.py``), ``NEED_DATA`` when it needs more bytes, or ``PAUSED``
while it is the server's turn (after start-ok, open or close, until the reply is sent).
``send_*`` return the bytes to write; the caller writes them when it likes. Nothing here
touches a socket, a clock or an event loop, so tests are bytes in, bytes out.

Connection-level violations raise ``smartbroker.errors.ConnectionError`` with RabbitMQ's
text and class/method ids; the input buffered so far is dropped (the caller answers with
``send_connection_close``, or hangs up during the handshake). States and moves are the
table in ``states.py``.

Hot paths kept inside, and inlined where a profile said so: basic.publish is parsed with
``codec.publish_route``'s slicing (no pamqp) and its route interned; body frames for a
channel awaiting one are joined in ``next_event`` itself; the 13-byte basic.ack becomes an
``Ack`` without pamqp.
"""

from __future__ import annotations

import struct
from typing import Any

from pamqp import commands

from smartbroker.errors import (
    ConnectionError,
    channel_error,
    frame_error,
    not_allowed,
    not_implemented,
    unexpected_frame,
)
from smartbroker.protocol import codec
from smartbroker.protocol.assembler import (
    INTERN_LIMIT,
    ChannelRecord,
    body_too_long,
    content_body_error,
    content_header,
)
from smartbroker.protocol.events import (
    NEED_DATA,
    PAUSED,
    Ack,
    ChannelClosed,
    ChannelOpen,
    ConnectionClosed,
    Event,
    Method,
    Publish,
)
from smartbroker.protocol.handshake import channel0_frame, protocol_header
from smartbroker.protocol.methods import decode_method, ids
from smartbroker.protocol.states import (
    ABORT,
    CHANNEL,
    CLIENT,
    CLOSE,
    CLOSE_OK,
    CONNECTION,
    EOF,
    OPEN_METHOD,
    SERVER,
    SERVER_MOVES,
    SERVER_TURN,
    ChannelState,
    State,
)

PRE_TUNE_FRAME_MAX = 4096  # RabbitMQ's frame_min_size: the cap on every frame before tune-ok
CHANNEL_OPEN = 0x0014000A
CHANNEL_CLOSE = 0x00140028
CHANNEL_CLOSE_OK = 0x00140029

_frame_header = struct.Struct("!BHI")
_ulong = struct.Struct("!I")
_ack = struct.Struct("!HHQB")
_ulonglong = struct.Struct("!Q")
_ZERO_SIZE = bytes(8)
_ACK_PREFIX = b"\x00\x3c\x00\x50"  # basic.ack
_OPEN, _CLOSING, _CLOSED = State.OPEN, State.CLOSING, State.CLOSED
_CH_OPEN, _CH_AWAIT_HEADER = ChannelState.OPEN, ChannelState.AWAIT_HEADER
_CH_AWAIT_BODY, _CH_CLOSING = ChannelState.AWAIT_BODY, ChannelState.CLOSING


class LocalProtocolError(RuntimeError):
    """The server tried a move the table does not allow (a bug in the caller)."""


class Connection:
    """One server-side AMQP connection's protocol state. ``frame_max``, ``channel_max``
    and ``heartbeat`` are what the server offers in tune; after tune-ok the attributes of
    the same names hold the negotiated values."""

    def __init__(self, *, frame_max: int = 131072, channel_max: int = 2047,
                 heartbeat: int = 60, max_message_size: int = 128 * 1024 * 1024) -> None:
        self.offer = (channel_max, frame_max, heartbeat)
        self.max_message_size = max_message_size
        self.state = State.AWAIT_HEADER
        self.frame_max = PRE_TUNE_FRAME_MAX
        self.channel_max = channel_max
        self.heartbeat = 0
        self.close_sent = False  # we sent connection.close (a client close then ends it)
        self.channels: dict[int, ChannelRecord] = {}
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._routes: dict[bytes, tuple[str, str, bytes]] = {}  # interned publish routes
        self._headers: dict[bytes, tuple[bytes, int]] = {}  # interned headers -> flags

    # -- input ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Buffer ``data``; ``b""`` means the peer closed its side."""
        if not data:
            self._eof = True
            return
        if self.state is _CLOSED:
            return
        if self._pos:
            self._buf = self._buf[self._pos:]
            self._pos = 0
        self._buf = self._buf + data if self._buf else data

    def next_event(self) -> Event | Any:
        """The next event, ``NEED_DATA`` or ``PAUSED``. Raises ``ConnectionError`` (and
        then drops the input buffered so far)."""
        try:
            while True:
                state = self.state
                if state is not _OPEN:
                    if state in SERVER_TURN:
                        return PAUSED
                    if state is _CLOSED:
                        self._buf = b""
                        self._pos = 0
                        return NEED_DATA
                    if state is State.AWAIT_HEADER:
                        return protocol_header(self)
                buf = self._buf
                pos = self._pos
                size_all = len(buf)
                if size_all - pos < 7:  # the frame header: its size is checked first
                    return self._need_data()
                ftype, number, size = _frame_header.unpack_from(buf, pos)
                # As rabbit_reader: a payload of up to frame_max octets is accepted (an 8-octet
                # allowance for clients that split bodies at frame_max); the text names frame_max - 8.
                if size > self.frame_max:
                    raise frame_error(f"type {ftype}, all octets = <<>>: {{frame_too_large,{size},"
                                      f"{self.frame_max - codec.FRAME_OVERHEAD}}}")
                end = pos + 7 + size
                if end >= size_all:
                    return self._need_data()
                if buf[end] != 0xCE:
                    raise frame_error(f"type {ftype}, all octets = <<>>: "
                                      f"{{invalid_frame_end_marker,{buf[end]}}}")
                payload = buf[pos + 7:end]
                self._pos = end + 1
                if state is _OPEN and number:
                    # Inlined hot paths (profiled: one call per frame saved), each a copy of
                    # a table move: CHANNEL[(AWAIT_BODY, CLIENT, BODY / BODY_LAST)] and
                    # CHANNEL[(AWAIT_HEADER, CLIENT, HEADER)] for a header seen before; the
                    # 13-byte basic.ack (no move). The slow paths below do the same checks.
                    ch = self.channels.get(number)
                    if ch is not None:
                        if ftype == 3 and ch.state is _CH_AWAIT_BODY:
                            received = ch.received + len(payload)
                            if received < ch.size:
                                ch.parts.append(payload)
                                ch.received = received
                                continue
                            if received > ch.size:
                                raise body_too_long(ch)
                            parts = ch.parts
                            body = b"".join((*parts, payload)) if parts else payload
                            ch.state = _CH_OPEN
                            ch.parts = []
                            route, ch.route = ch.route, None
                            return Publish(number, route, ch.mandatory, ch.header, ch.flags, body)  # type: ignore[arg-type]
                        if ftype == 2 and ch.state is _CH_AWAIT_HEADER:
                            known = self._headers.get(payload)  # validated, class 60, size ok
                            if known is not None and payload[4:12] != _ZERO_SIZE:
                                ch.header, ch.flags = known
                                ch.size = _ulonglong.unpack_from(payload, 4)[0]
                                ch.received = 0
                                ch.state = _CH_AWAIT_BODY
                                continue
                        elif ftype == 1 and size == 13 and ch.state is _CH_OPEN \
                                and payload[:4] == _ACK_PREFIX:
                            _, _, tag, bits = _ack.unpack_from(payload)  # basic.ack, no pamqp
                            return Ack(number, tag, bool(bits & 1))
                event = (self._frame_channel(ftype, number, payload) if number
                         else channel0_frame(self, state, ftype, payload))
                if event is not None:
                    return event
        except Exception:
            self._buf = b""
            self._pos = 0
            raise

    def _need_data(self) -> Any:
        if self._eof:
            self._buf = b""
            self._pos = 0
            self.state = CONNECTION[(self.state, CLIENT, EOF)]
            return ConnectionClosed()
        if self._pos:
            self._buf = self._buf[self._pos:]
            self._pos = 0
        return NEED_DATA

    def _frame_channel(self, ftype: int, number: int, payload: bytes) -> Event | None:
        if self.state is not _OPEN:
            if self.state is _CLOSING:
                return None  # after connection.close only channel 0 matters
            raise unexpected_frame(f"type {ftype} on channel {number} before connection.open")
        ch = self.channels.get(number)
        if ftype == codec.FRAME_METHOD:
            index = _ulong.unpack_from(payload)[0] if len(payload) >= 4 else -1
            if ch is None:
                return self._open_channel(number, payload, index)
            state = ch.state
            if state is _CH_CLOSING:
                if index == CHANNEL_CLOSE:
                    ch.state = CHANNEL[(state, CLIENT, CLOSE)]
                    return Method(number, decode_method(payload))
                if index == CHANNEL_CLOSE_OK:
                    ch.state = CHANNEL[(state, CLIENT, CLOSE_OK)]
                    del self.channels[number]
                    return ChannelClosed(number)
                return None  # dropped until the client answers our channel.close
            if state is not _CH_OPEN:
                raise unexpected_frame("expected content header for class 60, got non content "
                                       "header frame instead").at(*ids(payload))
            if index == codec.BASIC_PUBLISH:
                # Inlined hot path: codec.publish_route, then CHANNEL[(OPEN, CLIENT, PUBLISH)].
                try:
                    rk_end = 8 + payload[6] + payload[7 + payload[6]]
                    key = payload[6:rk_end]
                    bits = payload[rk_end]
                    route = self._routes.get(key)
                    if route is None:  # shared strings: queued messages do not each hold a copy
                        if len(self._routes) >= INTERN_LIMIT:
                            self._routes.clear()
                        route = self._routes[key] = (*codec.decode_route(key), key)
                except (IndexError, UnicodeDecodeError):
                    raise ConnectionError(502, "cannot decode basic.publish", 60, 40) from None
                if bits & 2:
                    raise not_implemented("immediate=true").at(60, 40)
                ch.route = route
                ch.mandatory = bool(bits & 1)
                ch.state = _CH_AWAIT_HEADER
                return None
            if index == codec.BASIC_ACK and len(payload) == 13:
                _, _, tag, bits = _ack.unpack_from(payload)
                return Ack(number, tag, bool(bits & 1))
            method = decode_method(payload)
            if index == CHANNEL_OPEN:
                raise channel_error("second 'channel.open' seen").at(*ids(payload))
            return Method(number, method)
        if ftype == codec.FRAME_HEADER:
            if ch is None:
                raise channel_error(f"unexpected content header on channel {number}")
            if ch.state is _CH_CLOSING:
                return None
            return content_header(ch, number, payload, self._headers, self.max_message_size)
        if ftype == codec.FRAME_BODY:
            if ch is None:
                raise channel_error(f"unexpected content body on channel {number}")
            if ch.state is _CH_CLOSING:
                return None
            raise content_body_error(ch)  # a channel awaiting a body took the fast path
        if ftype == codec.FRAME_HEARTBEAT:
            raise unexpected_frame(f"heartbeat frame on non-zero channel {number}")
        raise frame_error(f"unknown frame type {ftype}")

    def _open_channel(self, number: int, payload: bytes, index: int) -> ChannelOpen:
        if index != CHANNEL_OPEN:
            raise channel_error("expected 'channel.open'").at(*ids(payload))
        if self.channel_max and len(self.channels) >= self.channel_max:
            # as RabbitMQ: the limit is on how many are open, any number may be used
            raise not_allowed(f"number of channels opened ({len(self.channels)}) has reached "
                              f"the negotiated channel_max ({self.channel_max})")
        record = self.channels[number] = ChannelRecord()
        record.state = CHANNEL[(ChannelState.CLOSED, CLIENT, OPEN_METHOD)]
        return ChannelOpen(number)

    # -- output --------------------------------------------------------------------------
    def _server_move(self, what: object) -> None:
        after = CONNECTION.get((self.state, SERVER, what))
        if after is None:
            raise LocalProtocolError(f"cannot send {what!r} in state {self.state.name}")
        self.state = after

    def send_method(self, channel: int, method: Any) -> bytes:
        """Any method as one frame; connection and channel methods that change a state
        (start, tune, open-ok, close, close-ok) move it."""
        kind = type(method)
        if channel == 0:
            if kind in SERVER_MOVES:
                self._server_move(kind)
                if kind is commands.Connection.Close:
                    self.close_sent = True
                    self._buf = b""  # what the client sent meanwhile is not read
                    self._pos = 0
        elif kind is commands.Channel.Close:
            self._channel_move(channel, CLOSE)
        elif kind is commands.Channel.CloseOk:
            self._channel_move(channel, CLOSE_OK)
        return codec.method_frame(channel, method)

    def _channel_move(self, number: int, what: str) -> None:
        ch = self.channels.get(number)
        if ch is None:
            return  # already forgotten (closed from both sides at once)
        after = CHANNEL.get((ch.state, SERVER, what))
        if after is None:
            raise LocalProtocolError(f"cannot send {what} on channel {number} in {ch.state.name}")
        ch.state = after
        ch.reset()
        if after is ChannelState.CLOSED:
            del self.channels[number]

    def send_start(self, method: commands.Connection.Start) -> bytes:
        return self.send_method(0, method)

    def send_tune(self) -> bytes:
        channel_max, frame_max, heartbeat = self.offer
        return self.send_method(0, commands.Connection.Tune(
            channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat))

    def send_open_ok(self) -> bytes:
        return self.send_method(0, commands.Connection.OpenOk())

    def send_close_ok(self) -> bytes:
        return self.send_method(0, commands.Connection.CloseOk())

    def send_connection_close(self, code: int, text: str, class_id: int = 0,
                              method_id: int = 0) -> bytes:
        return self.send_method(0, commands.Connection.Close(
            reply_code=code, reply_text=text, class_id=class_id, method_id=method_id))

    def abort(self) -> None:
        """The server drops the peer without a frame (failed handshake, bad header)."""
        self.state = CONNECTION[(self.state, SERVER, ABORT)]
        self._buf = b""
        self._pos = 0

    def adopt(self, frame_max: int, channel_max: int, heartbeat: int,
              channels: list[int]) -> None:
        """A connection handed over by a sibling worker (server/handoff.py) starts open,
        with what it negotiated there and its channels open."""
        self.state = _OPEN
        self.frame_max, self.channel_max, self.heartbeat = frame_max, channel_max, heartbeat
        self.channels = {number: ChannelRecord() for number in channels}

    def unread(self) -> bytes | None:
        """The input not yet turned into events (what a handover carries), or None when
        it cannot travel: a message half assembled, or the peer's end of input seen."""
        if self._eof or self.state is not _OPEN or any(
                ch.state is not _CH_OPEN for ch in self.channels.values()):
            return None
        return self._buf[self._pos:]

    def send_channel_open_ok(self, channel: int) -> bytes:
        return codec.channel_open_ok_frame(channel)

    def send_channel_close(self, channel: int, code: int, text: str, class_id: int = 0,
                           method_id: int = 0) -> bytes:
        """Marks the channel closing: its frames are dropped until close / close-ok."""
        return self.send_method(channel, commands.Channel.Close(
            reply_code=code, reply_text=text, class_id=class_id, method_id=method_id))

    def send_channel_close_ok(self, channel: int) -> bytes:
        return self.send_method(channel, commands.Channel.CloseOk())

    def send_content(self, channel: int, header: bytes, body: bytes) -> list[bytes]:
        """Content header + body frames, split to the negotiated frame_max."""
        return codec.content_frames(channel, header, body, self.frame_max)

    def send_deliver(self, channel: int, consumer_tag_ss: bytes, delivery_tag: int,
                     redelivered: bool, exchange_rk_ss: bytes) -> bytes:
        return codec.deliver_frame(channel, consumer_tag_ss, delivery_tag, redelivered,
                                   exchange_rk_ss)

    def send_get_ok(self, channel: int, delivery_tag: int, redelivered: bool,
                    exchange_rk_ss: bytes, message_count: int) -> bytes:
        return codec.get_ok_frame(channel, delivery_tag, redelivered, exchange_rk_ss,
                                  message_count)

    def send_return(self, channel: int, reply_code: int, reply_text: str,
                    exchange_rk_ss: bytes) -> bytes:
        return codec.return_frame(channel, reply_code, reply_text, exchange_rk_ss)

    def send_heartbeat(self) -> bytes:
        return codec.HEARTBEAT_FRAME


__all__ = ["PRE_TUNE_FRAME_MAX", "Connection", "LocalProtocolError"]
