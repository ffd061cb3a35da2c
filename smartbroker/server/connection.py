"""One client connection: the asyncio adapter around the sans-IO protocol.

``data_received`` hands the bytes to ``protocol.Connection`` and acts on each event it
returns: a complete ``Publish`` goes to the broker channel, an ``Ack`` to its ack, any
other method to the handlers; replies and deliveries go to a list written once per loop
pass (``flush.Flusher``). What is left here is I/O: the transport, timers (handshake,
close, linger), heartbeats, pause/resume reading for resource alarms and write
back-pressure. Every error becomes the AMQP reply RabbitMQ gives; unexpected exceptions
become 541 INTERNAL_ERROR, never a crash; how a connection ends is ``server/closing.py``.
Implements ``broker.outbox.ClientConnection``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands

from smartbroker.broker.access import Access
from smartbroker.broker.channel import Channel
from smartbroker.broker.limits import check_channel
from smartbroker.broker.publish import PublishSession
from smartbroker.errors import AMQPError, ChannelError, ConnectionError, not_implemented
from smartbroker.handlers import CHANNEL_HANDLERS
from smartbroker.handlers import connection as connection_class
from smartbroker.protocol.connection import Connection
from smartbroker.protocol.events import (
    NEED_DATA,
    PAUSED,
    Ack,
    BadProtocolHeader,
    ChannelClosed,
    ChannelFailed,
    ChannelOpen,
    Method,
    ProtocolHeader,
    Publish,
)
from smartbroker.protocol.states import State
from smartbroker.server import closing
from smartbroker.server.heartbeat import Heartbeats
from smartbroker.server.held import hold_for_definitions
from smartbroker.server.not_found import method_again, publish_again, retry_after_catch_up
from smartbroker.server.tls import peer_common_name

if TYPE_CHECKING:
    from smartbroker.broker.core import Broker, VirtualHost

log = logging.getLogger("smartbroker.connection")


class AMQPConnection(asyncio.Protocol):
    def __init__(self, broker: Broker, flusher: Any) -> None:
        cfg = broker.config
        self.broker = broker
        self.flusher = flusher
        self.proto = Connection(frame_max=cfg.frame_max, channel_max=cfg.channel_max,
                                heartbeat=cfg.heartbeat, max_message_size=cfg.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.name = "?"
        self.user: Any = None
        self.vhost: VirtualHost = None  # type: ignore[assignment]
        self.client_properties: dict[str, Any] = {}
        # Copies of the protocol's negotiated values (set at tune-ok): deliveries read
        # frame_max once per message, so a plain attribute rather than a property.
        self.frame_max = self.proto.frame_max
        self.channel_max = self.proto.channel_max
        self.heartbeat = 0
        self.channels: dict[int, Channel] = {}
        self.exclusive_queues: set[Any] = set()
        self.writable = True
        self.connected_at = time.time()
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
        self.held: Any = None  # an answer waiting for the disk: input waits (server/held.py)
        recorder = broker.recorder  # a store that commits after the call (etcd): answers wait
        self._commit_wait = recorder if recorder is not None and recorder.commits_later else None
        self.access = Access(broker.permissions, self)
        self.check = self.access.check  # conn.check("write", "exchange", name) in handlers
        self.publishing = PublishSession(broker, self, self.access)  # broker/publish.py
        # serve --workers: the first consume or publish on a queue a sibling worker leads
        # moves the connection there (server/handoff.py); None once decided
        self.handoff = broker.handoff

    @property
    def state(self) -> State:
        """The protocol's connection state (only the protocol's table changes it)."""
        return self.proto.state

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
                                            closing.handshake_timeout, self))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.proto.state is not State.CLOSED:
            self.proto.abort()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._heartbeats is not None:
            self._heartbeats.stop()
        self.broker.connections.discard(self)
        closing.teardown(self)

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

    # -- input: protocol events ------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.received = True
        self.bytes_in += len(data)
        self.proto.receive_data(data)
        self.handle_buffered()

    def handle_buffered(self, first: Callable[[], None] | None = None) -> None:
        """Handle the buffered events, then flush (also when a held answer went out);
        ``first``: a method held for a cluster catch-up (not_found.py), run again first."""
        try:
            if first is not None:
                first()
            self._handle_events()
        except AMQPError as err:
            self._connection_error(err if isinstance(err, ConnectionError)
                                   else ConnectionError(err.code, err.text, err.class_id, err.method_id))
        except Exception:
            log.exception("internal error on connection %s", self.name)
            self._connection_error(ConnectionError(541, "internal error"))
        self.flush()

    def _handle_events(self) -> None:
        if self.held is not None:
            return
        next_event = self.proto.next_event
        channels = self.channels
        handoff = self.handoff
        while True:
            event = next_event()
            kind = type(event)
            if kind is Publish:  # the hot path: one event per message, straight to the channel
                ch = channels[event.channel]
                if handoff is not None:
                    if handoff.moves(self, event):
                        return
                    handoff = None
                try:
                    ch.publish(event.route, event.mandatory, event.header, event.flags, event.body)
                except ChannelError as err:
                    if err.code == 404 and retry_after_catch_up(
                            self, lambda ch=ch, event=event: publish_again(self, ch, event)):
                        return
                    self.channel_failed(ch, err.at(60, 40))
            elif kind is Ack:
                ch = channels[event.channel]
                try:
                    ch.ack(event.tag, event.multiple)
                except ChannelError as err:
                    self.channel_failed(ch, err.at(60, 80))
                except ConnectionError as err:
                    raise err.at(60, 80) from None
            elif event is NEED_DATA or event is PAUSED:
                return
            elif kind is Method:
                if self.handoff is not None and self.handoff.moves(self, event):
                    return
                self._method(event.channel, event.method)
                if self.held is not None:  # its answer waits for the disk
                    return
            elif kind is ChannelOpen:
                check_channel(self.broker, self)
                channels[event.channel] = Channel(self, event.channel, self.publishing, self.vhost)
                self.write(self.proto.send_channel_open_ok(event.channel))
            elif kind is ChannelClosed:
                channels.pop(event.channel, None)
            elif kind is ChannelFailed:
                self.channel_failed(channels[event.channel], event.error)
            elif kind is ProtocolHeader:
                self.write(self.proto.send_start(
                    connection_class.start_method(self.peer_cert_name is not None)))
            elif kind is BadProtocolHeader:
                closing.bad_header(self)
                return
            # Heartbeat: ``received`` is already set; ConnectionClosed: connection_lost follows

    def _method(self, number: int, method: Any, retry: bool = True) -> None:
        ids = method.index >> 16, method.index & 0xFFFF
        if number == 0:
            try:
                connection_class.handle(self, method)
            except AMQPError as err:
                raise err.at(*ids) from None
            return
        ch = self.channels[number]
        recorder = self._commit_wait  # cluster mode only: -ok after etcd took the change
        before = recorder.pending() if recorder is not None else None
        mark = len(self._out)
        try:
            handler = CHANNEL_HANDLERS.get(type(method))
            if handler is None:
                raise not_implemented(f"method {method.name} is not supported")
            handler(self, ch, method)
        except ChannelError as err:
            locked = getattr(method, "queue", None) if err.code == 405 else None
            if (err.code == 404 or locked) and retry and retry_after_catch_up(
                    self, lambda: method_again(self, number, method, ch), locked):
                return
            self.channel_failed(ch, err.at(*ids))
        except ConnectionError as err:
            raise err.at(*ids) from None
        if recorder is not None and self.held is None:
            after = recorder.pending()  # None on a single node: SQLite committed already
            if after is not None and after is not before and len(self._out) >= mark:
                answer, self._out[mark:] = self._out[mark:], []
                hold_for_definitions(self, ch, after, answer, ids,
                                     lambda: method_again(self, number, method, ch))

    def tuned(self) -> None:
        """tune-ok went through the protocol: copy the negotiated values, start heartbeats."""
        proto = self.proto
        self.frame_max = proto.frame_max
        self.channel_max = proto.channel_max
        self.heartbeat = proto.heartbeat
        if proto.heartbeat > 0:
            self._heartbeats = Heartbeats(self, proto.heartbeat)

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
        self.write(self.proto.send_method(channel, method))

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
            self.write(self.proto.send_channel_close_ok(ch.number))

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
        ch.teardown()
        self._confirm_channels.discard(ch)
        self.write(self.proto.send_channel_close(ch.number, err.code, err.reply_text,
                                                 err.class_id, err.method_id))

    # -- connection lifecycle (the close sequences live in server/closing.py) ------------
    def _connection_error(self, err: ConnectionError) -> None:
        closing.connection_error(self, err)

    def server_close(self, code: int = 320, text: str = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'") -> None:
        """Broker-initiated close (shutdown, management API)."""
        closing.server_close(self, code, text)

    def closed_by_client(self) -> None:
        """``connection.close`` from the client (close-ok, then the client hangs up)."""
        closing.closed_by_client(self)

    def close_silently(self) -> None:
        """A failed handshake: no ``connection.close``, the socket dropped later."""
        closing.close_silently(self)

    def refuse(self, code: int, text: str) -> None:
        """``connection.close`` during the handshake (a refused login)."""
        closing.refuse(self, code, text)

    def close_transport(self) -> None:
        self.flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
