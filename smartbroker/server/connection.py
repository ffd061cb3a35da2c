"""One client connection: frame loop, channel dispatch, output buffer, heartbeats.

An ``asyncio.Protocol`` that stays thin on I/O: ``data_received`` splits frames and feeds
them synchronously through handlers; output goes to a list that is written once per loop
pass. Hot path: ``basic.publish`` + header + body frames are parsed with ``struct`` and
routed without pamqp; pamqp decodes every other method. Every error becomes the AMQP reply
RabbitMQ gives, and unexpected exceptions become 541 INTERNAL_ERROR, never a crash.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import TYPE_CHECKING, Any

from pamqp import commands

from smartbroker.broker.access import Access
from smartbroker.broker.channel import Channel
from smartbroker.broker.limits import check_channel
from smartbroker.broker.publish import PublishSession
from smartbroker.errors import (
    AMQPError,
    ChannelError,
    ConnectionError,
    MalformedFrame,
    channel_error,
    frame_error,
    not_allowed,
    not_implemented,
    unexpected_frame,
)
from smartbroker.handlers import CHANNEL_HANDLERS
from smartbroker.handlers import connection as connection_class
from smartbroker.handlers.connection import State
from smartbroker.protocol import codec
from smartbroker.server.heartbeat import Heartbeats
from smartbroker.server.publisher import Publisher
from smartbroker.server.tls import peer_common_name

if TYPE_CHECKING:
    from smartbroker.broker.core import Broker, VirtualHost

log = logging.getLogger("smartbroker.connection")

_frame_header = struct.Struct("!BHI")
_method_index = struct.Struct("!I")
_PRE_TUNE_FRAME_MAX = 4096  # RabbitMQ's frame_min_size: the cap on every frame before tune-ok
_HANDSHAKE_STATES = (State.AWAIT_START_OK, State.AWAIT_TUNE_OK)
CLOSE_TIMEOUT = 3.0
SILENT_CLOSE_DELAY = 3.0  # RabbitMQ's ?SILENT_CLOSE_DELAY: a failed handshake waits, then hangs up
CLOSED_LINGER = 30.0  # after close-ok, the client closes the socket (RabbitMQ's ?CLOSING_TIMEOUT)


class AMQPConnection(asyncio.Protocol):
    def __init__(self, broker: Broker, flusher: Any) -> None:
        self.broker = broker
        self.flusher = flusher
        self.state = State.AWAIT_HEADER
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.name = "?"
        self.user: Any = None
        self.vhost: VirtualHost = None  # type: ignore[assignment]
        self.client_properties: dict[str, Any] = {}
        self.frame_max = _PRE_TUNE_FRAME_MAX
        self.channel_max = broker.config.channel_max
        self.heartbeat = 0
        self.channels: dict[int, Channel] = {}
        self.exclusive_queues: set[Any] = set()
        self.writable = True
        self.connected_at = time.time()
        self._buf = b""
        self._out: list[bytes] = []
        self._dirty = False
        self._confirm_channels: set[Channel] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._heartbeats: Heartbeats | None = None
        self.received = True  # any byte since the last heartbeat tick
        self.sent = False  # any byte written since the last heartbeat tick
        self.bytes_in = 0
        self.bytes_out = 0
        self.has_published = False
        self.peer_cert_name: str | None = None  # CN of a verified TLS client certificate
        self.blocked = False
        self.access = Access(broker.permissions, self)
        self.check = self.access.check  # conn.check("write", "exchange", name) in handlers
        self.publishing = PublishSession(broker, self, self.access)  # broker/publish.py
        self.publisher = Publisher(self)  # content assembly

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("?", 0)
        sock = transport.get_extra_info("sockname") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        self.name = f"{peer[0]}:{peer[1]} -> {sock[0]}:{sock[1]}"
        if len(self.broker.connections) >= self.broker.config.max_connections:
            log.warning("refusing %s: max_connections (%d) reached", self.name,
                        self.broker.config.max_connections)
            transport.close()
            return
        self.broker.connections.add(self)
        self.peer_cert_name = peer_common_name(transport)
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.broker.config.handshake_timeout,
                                            self._handshake_timeout))

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = State.CLOSED
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._heartbeats is not None:
            self._heartbeats.stop()
        self.broker.connections.discard(self)
        self._teardown()

    # -- flow control (resource alarms) ----------------------------------------------------
    def block(self, reason: str) -> None:
        if self.blocked or self.transport is None:
            return
        self.blocked = True
        if self.client_capability("connection.blocked"):
            self.send_method(0, commands.Connection.Blocked(reason=reason))
            self.flush()
        self.transport.pause_reading()

    def unblock(self) -> None:
        if not self.blocked or self.transport is None:
            return
        self.blocked = False
        if self.client_capability("connection.blocked"):
            self.send_method(0, commands.Connection.Unblocked())
            self.flush()
        self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        for ch in list(self.channels.values()):
            ch.redispatch_all()

    def data_received(self, data: bytes) -> None:
        self.received = True
        self.bytes_in += len(data)
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos = 0
        try:
            if self.state is State.AWAIT_HEADER:
                if len(data) < 8:
                    self._buf = data
                    return
                if data[:8] != codec.PROTOCOL_HEADER:
                    self._bad_header()
                    return
                pos = 8
                self.state = State.AWAIT_START_OK
                self.send_method(0, connection_class.start_method(self.peer_cert_name is not None))
            pos = self._frames(data, pos)
        except AMQPError as err:
            self._connection_error(err if isinstance(err, ConnectionError)
                                   else ConnectionError(err.code, err.text, err.class_id, err.method_id))
            pos = len(data)
        except Exception:
            log.exception("internal error on connection %s", self.name)
            self._connection_error(ConnectionError(541, "internal error"))
            pos = len(data)
        if pos < len(data) and self.state is not State.CLOSED:
            self._buf = data[pos:]
        self.flush()

    # -- frames --------------------------------------------------------------------------
    def _frames(self, data: bytes, pos: int) -> int:
        size_all = len(data)
        # As rabbit_reader: a payload of up to frame_max octets is accepted (an 8-octet
        # allowance for clients that split bodies at frame_max); the text names frame_max - 8.
        limit = self.frame_max
        unpack = _frame_header.unpack_from
        while size_all - pos >= 7:
            ftype, number, size = unpack(data, pos)
            if size > limit:
                raise frame_error(f"type {ftype}, all octets = <<>>: "
                                  f"{{frame_too_large,{size},{limit - codec.FRAME_OVERHEAD}}}")
            end = pos + 7 + size
            if end >= size_all:
                break
            if data[end] != codec.FRAME_END:
                raise frame_error(f"type {ftype}, all octets = <<>>: {{invalid_frame_end_marker,{data[end]}}}")
            payload = data[pos + 7:end]
            pos = end + 1
            if ftype == 3:  # fast path: a body frame for a channel awaiting one
                ch = self.channels.get(number)
                if ch is not None and ch.pending_header is not None and not ch.closing \
                        and self.state is State.OPEN:
                    self.publisher.content_body(ch, payload)
                    continue
            if self.state is State.CLOSED:
                break
            if number == 0:
                self._frame_channel0(ftype, payload)
            elif self.state is State.OPEN:
                self._frame_channel(ftype, number, payload)
            elif self.state is not State.CLOSING:
                raise unexpected_frame(f"type {ftype} on channel {number} before connection.open")
        return pos

    def _frame_channel0(self, ftype: int, payload: bytes) -> None:
        if ftype == codec.FRAME_HEARTBEAT:
            return
        if ftype not in (codec.FRAME_METHOD, codec.FRAME_HEADER, codec.FRAME_BODY):
            raise frame_error(f"unknown frame type {ftype}")
        if ftype != codec.FRAME_METHOD:
            raise unexpected_frame(f"content frame of type {ftype} on channel 0")
        if len(payload) >= 2 and payload[1] != 10:  # only class connection lives on channel 0
            raise channel_error("unexpected method in connection state running").at(*_ids(payload))
        try:
            method = codec.decode_method(payload)
        except MalformedFrame as err:  # RabbitMQ's reader names connection methods
            raise ConnectionError(err.code, err.text, *_ids(payload)) from None
        try:
            connection_class.handle(self, method)
        except AMQPError as err:
            raise err.at(*_ids(payload)) from None

    def _frame_channel(self, ftype: int, number: int, payload: bytes) -> None:
        ch = self.channels.get(number)
        if ftype == codec.FRAME_METHOD:
            index = _method_index.unpack_from(payload)[0] if len(payload) >= 4 else -1
            if ch is None:
                self._open_channel(number, payload, index)
                return
            if ch.closing:
                if index in (0x00140028, 0x00140029):  # channel.close / close-ok
                    self._channel_method(ch, payload, index)
                return
            if ch.pending is not None:
                raise unexpected_frame("expected content header for class 60, got non content "
                                       "header frame instead").at(*_ids(payload))
            self._channel_method(ch, payload, index)
        elif ftype == codec.FRAME_HEADER:
            if ch is None:
                raise channel_error(f"unexpected content header on channel {number}")
            if ch.closing:
                return
            self.publisher.content_header(ch, payload)
        elif ftype == codec.FRAME_BODY:
            if ch is None:
                raise channel_error(f"unexpected content body on channel {number}")
            if ch.closing:
                return
            self.publisher.content_body(ch, payload)
        elif ftype == codec.FRAME_HEARTBEAT:
            raise unexpected_frame(f"heartbeat frame on non-zero channel {number}")
        else:
            raise frame_error(f"unknown frame type {ftype}")

    def _open_channel(self, number: int, payload: bytes, index: int) -> None:
        if index != 0x0014000A:  # channel.open
            raise channel_error("expected 'channel.open'").at(*_ids(payload))
        if self.channel_max and len(self.channels) >= self.channel_max:
            # as RabbitMQ: the limit is on how many are open, any number may be used
            raise not_allowed(f"number of channels opened ({len(self.channels)}) has reached "
                              f"the negotiated channel_max ({self.channel_max})")
        check_channel(self.broker, self)
        self.channels[number] = Channel(self, number, self.publishing)
        self.write(codec.channel_open_ok_frame(number))

    def _channel_method(self, ch: Channel, payload: bytes, index: int) -> None:
        try:
            if index == codec.BASIC_PUBLISH:
                self.publisher.publish_method(ch, payload)
                return
            if index == codec.BASIC_ACK and len(payload) == 13:
                tag, bits = codec.parse_ack(payload)
                ch.ack(tag, bool(bits & 1))
                return
            method = codec.decode_method(payload)
            if index == 0x0014000A:
                raise channel_error("second 'channel.open' seen")
            handler = CHANNEL_HANDLERS.get(type(method))
            if handler is None:
                raise not_implemented(f"method {method.name} is not supported")
            handler(self, ch, method)
        except ChannelError as err:
            self.channel_failed(ch, err.at(*_ids(payload)))
        except ConnectionError as err:
            raise err.at(*_ids(payload)) from None

    # -- output --------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._dirty:
            self._dirty = True
            self.flusher.mark(self)

    def write_many(self, parts: list[bytes]) -> None:
        self._out.extend(parts)
        if not self._dirty:
            self._dirty = True
            self.flusher.mark(self)

    def send_method(self, channel: int, method: Any) -> None:
        self.write(codec.method_frame(channel, method))

    def confirms_pending(self, ch: Channel) -> None:
        self._confirm_channels.add(ch)
        if not self._dirty:
            self._dirty = True
            self.flusher.mark(self)

    def flush(self) -> None:
        if self._confirm_channels:
            chans, self._confirm_channels = self._confirm_channels, set()
            for ch in chans:
                ch.flush_confirms()
        self._dirty = False
        if not self._out:
            return
        out, self._out = self._out, []
        store = self.vhost.store if self.vhost is not None else None
        if store is not None and store.write_out_pending:
            store.write_out_now()  # delivery marks reach the OS before the deliveries leave
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        data = b"".join(out)
        self.bytes_out += len(data)
        self.sent = True
        transport.write(data)

    def client_capability(self, name: str) -> bool:
        caps = self.client_properties.get("capabilities") if isinstance(self.client_properties, dict) else None
        return isinstance(caps, dict) and caps.get(name) is True

    # -- channels ------------------------------------------------------------------------
    def close_channel(self, ch: Channel, reply: bool) -> None:
        """Client sent channel.close: release everything, answer close-ok."""
        ch.teardown()
        self.channels.pop(ch.number, None)
        self._confirm_channels.discard(ch)
        if reply:
            self.send_method(ch.number, commands.Channel.CloseOk())

    def forget_channel(self, ch: Channel) -> None:
        if ch.closing:
            self.channels.pop(ch.number, None)

    def fail_channel(self, ch: Channel, err: AMQPError) -> None:
        """Close a channel from outside a frame handler (e.g. a failed fsync)."""
        self.channel_failed(ch, err)
        self.flush()

    def channel_failed(self, ch: Channel, err: AMQPError) -> None:
        log.info("channel %d on %s closed: %s", ch.number, self.name, err.reply_text)
        ch.flush_confirms()
        ch.closing = True
        ch.pending = None
        ch.pending_header = None
        ch.teardown()
        self._confirm_channels.discard(ch)
        self.send_method(ch.number, commands.Channel.Close(
            reply_code=err.code, reply_text=err.reply_text, class_id=err.class_id,
            method_id=err.method_id))

    # -- connection lifecycle ------------------------------------------------------------
    def _connection_error(self, err: ConnectionError) -> None:
        if self.state in (State.CLOSING, State.CLOSED):
            return
        log.warning("closing connection %s: %s (class %d, method %d)", self.name, err.reply_text,
                    err.class_id, err.method_id)
        if self.state in (State.AWAIT_HEADER,):
            self.close_transport()
            return
        if self.state in _HANDSHAKE_STATES:
            self.close_silently()
            return
        self._teardown()
        self.send_method(0, commands.Connection.Close(
            reply_code=err.code, reply_text=err.reply_text, class_id=err.class_id,
            method_id=err.method_id))
        self.state = State.CLOSING
        self._buf = b""
        self._timers.append(asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.close_transport))

    def server_close(self, code: int = 320, text: str = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'") -> None:
        """Broker-initiated close (shutdown, management API)."""
        if self.state is State.OPEN:
            self._teardown()
            self.send_method(0, commands.Connection.Close(reply_code=code, reply_text=text,
                                                          class_id=0, method_id=0))
            self.state = State.CLOSING
            self.flush()
            self._timers.append(asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.close_transport))
        else:
            self.close_transport()

    def closed_by_client(self) -> None:
        """``connection.close`` from the client: release channels and exclusive queues now,
        answer close-ok, then leave the socket to the client as RabbitMQ does (closed here
        only after the heartbeat timeout, at most 30 s). A client that reads close-ok before
        EOF shuts down cleanly instead of seeing a lost connection."""
        self._teardown()
        self.send_method(0, commands.Connection.CloseOk())
        self.state = State.CLOSED
        self._buf = b""
        if self._heartbeats is not None:
            self._heartbeats.stop()
        linger = self.heartbeat if 0 < self.heartbeat < CLOSED_LINGER else CLOSED_LINGER
        self._timers.append(asyncio.get_running_loop().call_later(linger, self.close_transport))

    def close_silently(self) -> None:
        """A failed handshake (before tune-ok, or a login refused to a client without
        ``authentication_failure_close``): as RabbitMQ, no ``connection.close``; input is
        ignored and the socket dropped after SILENT_CLOSE_DELAY, which also slows down
        password guessing."""
        self.state = State.CLOSED
        self._buf = b""
        self._timers.append(asyncio.get_running_loop().call_later(SILENT_CLOSE_DELAY,
                                                                  self.close_transport))

    def refuse(self, code: int, text: str) -> None:
        """``connection.close`` during the handshake (a refused login): the client reads it,
        answers close-ok (then we hang up) or is dropped after CLOSE_TIMEOUT."""
        self.send_method(0, commands.Connection.Close(reply_code=code, reply_text=text,
                                                      class_id=0, method_id=0))
        self.state = State.CLOSING
        self._buf = b""
        self._timers.append(asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.close_transport))

    def close_transport(self) -> None:
        self.flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _bad_header(self) -> None:
        if self.transport is not None:
            self.transport.write(codec.PROTOCOL_HEADER)
        self.state = State.CLOSED
        self.close_transport()

    def start_heartbeat(self, interval: int) -> None:
        self.heartbeat = interval
        if interval > 0:
            self._heartbeats = Heartbeats(self, interval)

    def _handshake_timeout(self) -> None:
        if self.state not in (State.OPEN, State.CLOSING, State.CLOSED):
            log.warning("handshake timeout on %s", self.name)
            self.close_transport()

    def _teardown(self) -> None:
        channels, self.channels = self.channels, {}
        for ch in channels.values():
            ch.teardown()
        self._confirm_channels.clear()
        queues, self.exclusive_queues = self.exclusive_queues, set()
        for q in queues:
            self.vhost.drop_queue(q)


def _ids(payload: bytes) -> tuple[int, int]:
    if len(payload) >= 4:
        return struct.unpack_from("!HH", payload)
    return 0, 0
