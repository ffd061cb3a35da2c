"""``serve --workers``: a connection moves to the sibling worker that leads its queue.

Why: SO_REUSEPORT puts each connection on a random worker, and a message whose publisher
or consumer sits on a worker that does not lead its queue crosses the cluster link (about
3x the CPU of a local one). AMQP 0-9-1 has no redirect, so the only move the client does
not notice is of the socket itself: the client's TCP socket goes to the worker leading the
queue (SCM_RIGHTS over a Unix socket, ``cluster/handoff.py``) with the connection's state,
and nothing is negotiated again.

When: at the first frame that commits the connection to a queue, before it is processed:
basic.consume on a queue a sibling leads, or basic.publish whose route (the default
exchange, or an exchange routing only to queues of one sibling) goes only there. That frame
and every byte read after it travel with the socket, in order. Only when the move is safe
and cheap (``movable``: plain TCP, nothing in flight, nothing half assembled, the output
written), else the connection stays and forwards as before; one decision per connection.
The source keeps the connection and carries on unless the target said it is ready.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from pamqp import commands
from pamqp import decode as pamqp_decode
from pamqp import encode as pamqp_encode

from smartbroker.broker.channel import Channel
from smartbroker.broker.limits import check_connection
from smartbroker.broker.routing import route
from smartbroker.errors import AMQPError
from smartbroker.message import Message, has_sender_routing
from smartbroker.protocol import codec
from smartbroker.protocol.events import Method, Publish
from smartbroker.server.not_found import publish_again

if TYPE_CHECKING:
    from smartbroker.broker.core import Broker
    from smartbroker.server.connection import AMQPConnection

log = logging.getLogger("smartbroker.connection")

VERSION = 1
DRAIN_TIMEOUT = 2.0  # seconds the output may take to reach the socket before a move
_publish_head = struct.Struct("!IH")  # basic.publish's method index and ticket


class HandoffRefused(Exception):
    """The target did not take the connection (one line: why); the source keeps it."""


class Sender(Protocol):
    """Hands ``fd`` with the state to a sibling at ``address``; calls ``release()`` once
    the sibling is ready (from then on the connection is the sibling's). Raises
    ``HandoffRefused``, ``OSError`` or ``TimeoutError`` before ``release`` only."""

    def __call__(self, address: str, state: bytes, carried: bytes, fd: int,
                 release: Callable[[], None]) -> Awaitable[None]: ...


def queue_leader(queue: Any) -> str | None:
    """The node leading ``queue`` when another node does (a ``RemoteQueue``), else None."""
    return getattr(queue, "leader", None) if queue is not None else None


def publish_leader(vhost: Any, event: Publish) -> str | None:
    """The one other node leading every queue this publish goes to, else None (also for
    a message whose headers do not decode: the publish itself then answers as usual)."""
    exchange, key, _ = event.route
    try:
        if event.flags & codec.FLAG_HEADERS and has_sender_routing(event.header):
            return None  # CC/BCC route by headers: not worth a move
        if exchange == "":
            leaders = {queue_leader(vhost.queues.get(key))}
        else:
            ex = vhost.exchanges.get(exchange)
            if ex is None:
                return None
            msg = Message.routed(event.route, event.header, event.body, event.flags)
            leaders = {queue_leader(q) for q in route(vhost, ex, msg, [key])}
    except Exception:  # noqa: BLE001 - routing is only a hint here
        return None
    return leaders.pop() if len(leaders) == 1 else None


def movable(conn: AMQPConnection) -> bool:
    """Safe and cheap to move: plain TCP, no consumer, delivery, unconfirmed publish,
    pending transaction or exclusive queue, nothing held or half assembled."""
    transport = conn.transport
    if transport is None or transport.is_closing() or conn.blocked or conn.exclusive_queues:
        return False
    if transport.get_extra_info("sslcontext") is not None or \
            transport.get_extra_info("ssl_object") is not None or \
            transport.get_extra_info("socket") is None:
        return False
    if conn.proto.unread() is None:
        return False
    for ch in conn.channels.values():
        if ch.consumers or ch.unacked or ch.reply_to is not None or ch.closing \
                or ch.held_cancels is not None or ch.tx:
            return False
        if ch.confirm and (ch.confirm_sent < ch.publish_seq or ch.sync_waiting or ch.nacked):
            return False
    return True


def replay_frames(conn: AMQPConnection, event: Publish | Method) -> bytes:
    """The frames of the event being moved, as the client sent them."""
    if type(event) is Publish:
        method = _publish_head.pack(codec.BASIC_PUBLISH, 0) + event.route[2] + \
            bytes((int(event.mandatory),))
        return codec.frame(codec.FRAME_METHOD, event.channel, method) + b"".join(
            codec.content_frames(event.channel, event.header, event.body, conn.frame_max))
    return codec.method_frame(event.channel, event.method)


def capture(conn: AMQPConnection) -> bytes:
    """What travels besides the bytes: negotiated values, login, channels."""
    channels = [{"number": ch.number, "prefetch": ch.consumer_prefetch,
                 "global_prefetch": ch.global_prefetch, "flow": ch.flow_active,
                 "confirm": ch.confirm, "publish_seq": ch.publish_seq,
                 "delivery_tag": ch.delivery_tag, "last_queue": ch.last_queue,
                 "tx": ch.tx is not None} for ch in conn.channels.values()]
    props = pamqp_encode.field_table(conn.client_properties or {})
    return json.dumps({
        "version": VERSION, "user": conn.user.name, "vhost": conn.vhost.name,
        "frame_max": conn.frame_max, "channel_max": conn.channel_max,
        "heartbeat": conn.heartbeat, "client_properties": base64.b64encode(props).decode(),
        "connected_at": conn.connected_at, "has_published": conn.has_published,
        "bytes_in": conn.bytes_in, "bytes_out": conn.bytes_out, "channels": channels,
    }).encode()


def _replay(conn: AMQPConnection, event: Publish | Method) -> None:
    """The moved frame, handled here after all (the move failed)."""
    if type(event) is Publish:
        ch = conn.channels.get(event.channel)
        if ch is not None:
            publish_again(conn, ch, event)
    elif event.channel in conn.channels or event.channel == 0:
        conn._method(event.channel, event.method)  # noqa: SLF001 - server/'s own dispatch


class Handoff:
    """One worker's moves: ``moves`` on the worker a connection landed on, ``adopt`` and
    ``attach`` on the worker it goes to. ``siblings(node)`` is the handoff address of a
    worker of this machine that is up (None for any other node)."""

    def __init__(self, broker: Broker, flusher: Any, siblings: Callable[[str], str | None],
                 send: Sender) -> None:
        self.broker = broker
        self.flusher = flusher
        self.siblings = siblings
        self.send = send
        self.sent = self.received = self.failed = 0  # counts, for logs and tests
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the worker the connection landed on ------------------------------------------
    def moves(self, conn: AMQPConnection, event: Publish | Method) -> bool:
        """Called for a publish and for a method until the connection is decided: True
        when ``event`` starts a move (the connection's input is held meanwhile)."""
        if conn.handoff is None:
            return False
        if type(event) is Method:
            method = event.method
            if type(method) is not commands.Basic.Consume:
                return False
            conn.handoff = None  # decided, whatever comes of it
            ch = conn.channels.get(event.channel)
            name = (method.queue or (ch.last_queue if ch is not None else None)) or ""
            leader = queue_leader(conn.vhost.queues.get(name))
        else:
            conn.handoff = None
            leader = publish_leader(conn.vhost, event)
        if leader is None:
            return False
        address = self.siblings(leader)
        if address is None or not movable(conn):
            return False
        task = asyncio.ensure_future(self._move(conn, event, leader, address))
        conn.held = task
        conn.transport.pause_reading()  # type: ignore[union-attr]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _move(self, conn: AMQPConnection, event: Publish | Method, leader: str,
                    address: str) -> None:
        transport = conn.transport
        assert transport is not None
        heartbeats = conn._heartbeats  # noqa: SLF001 - none may be written meanwhile
        if heartbeats is not None:
            heartbeats.stop()
        released = False

        def release() -> None:
            nonlocal released
            released = True
            transport.close()  # our copy of the socket only: close, never shutdown

        loop = asyncio.get_running_loop()
        started = time.monotonic()  # the loop's clock counts milliseconds only (uvloop)
        try:
            deadline = loop.time() + DRAIN_TIMEOUT
            await asyncio.sleep(0)  # the answers before this frame are flushed
            while transport.get_write_buffer_size() and loop.time() < deadline:
                await asyncio.sleep(0.002)  # the client reads slowly: rare, bounded
            if conn.transport is not transport or transport.is_closing():
                return
            if transport.get_write_buffer_size() or conn.blocked or conn._out:  # noqa: SLF001
                raise HandoffRefused("output not written yet")
            unread = conn.proto.unread()
            if unread is None:  # end of input seen meanwhile: nothing may be left behind
                raise HandoffRefused("the input cannot travel")
            carried = replay_frames(conn, event) + unread
            fd = transport.get_extra_info("socket").fileno()
            await self.send(address, capture(conn), carried, fd, release)
        except (HandoffRefused, OSError, TimeoutError, ValueError) as exc:
            if released:
                log.warning("connection %s: handed to %s, then: %s", conn.name, leader, exc)
                return
            self._stay(conn, event, leader, f"{type(exc).__name__}: {exc}")
            return
        except Exception as exc:  # never a stuck connection, never a traceback
            if not released:
                self._stay(conn, event, leader, f"{type(exc).__name__}: {exc}")
            return
        self.sent += 1
        log.info("connection %s handed to worker %s, which leads its queue (%.1f ms)",
                 conn.name, leader, (time.monotonic() - started) * 1000)

    def _stay(self, conn: AMQPConnection, event: Publish | Method, leader: str,
              why: str) -> None:
        """The move failed before the target took it: carry on here, forwarding."""
        self.failed += 1
        log.info("connection %s stays (handing it to %s failed: %s)", conn.name, leader, why)
        conn.held = None
        transport = conn.transport
        if transport is None or transport.is_closing():
            return
        conn.tuned()  # heartbeats again
        if not conn.blocked:
            transport.resume_reading()
        conn.handle_buffered(lambda: _replay(conn, event))

    # -- the worker the connection goes to ----------------------------------------------
    def adopt(self, state: bytes, carried: bytes) -> AMQPConnection:
        """A connection object in its open state from a sibling's ``capture``, not yet
        on a socket; HandoffRefused when this worker cannot take it."""
        from smartbroker.server.connection import AMQPConnection

        try:
            doc = json.loads(state)
            if doc.get("version") != VERSION:
                raise HandoffRefused(f"state version {doc.get('version')!r}")
            broker = self.broker
            user = broker.users.users.get(doc["user"])
            vhost = broker.vhosts.get(doc["vhost"])
            if user is None or vhost is None:
                raise HandoffRefused("user or vhost unknown here")
            if not broker.permissions.can_access(vhost.name, user.name):
                raise HandoffRefused("no access to the vhost here")
            if len(broker.connections) >= broker.config.max_connections:
                raise HandoffRefused("max_connections reached")
            conn = AMQPConnection(broker, self.flusher)
            conn.handoff = None  # at most one move
            conn.user, conn.vhost = user, vhost
            check_connection(broker, conn, vhost)
            props = base64.b64decode(doc["client_properties"])
            conn.client_properties = pamqp_decode.field_table(props)[1] if props else {}
            conn.connected_at = float(doc["connected_at"])
            conn.has_published = bool(doc["has_published"])
            conn.bytes_in, conn.bytes_out = int(doc["bytes_in"]), int(doc["bytes_out"])
            channels = doc["channels"]
            conn.proto.adopt(int(doc["frame_max"]), int(doc["channel_max"]),
                             int(doc["heartbeat"]), [int(c["number"]) for c in channels])
            for record in channels:
                ch = Channel(conn, int(record["number"]), conn.publishing, vhost)
                ch.consumer_prefetch = int(record["prefetch"])
                ch.global_prefetch = int(record["global_prefetch"])
                ch.flow_active = bool(record["flow"])
                ch.confirm = bool(record["confirm"])
                ch.publish_seq = ch.routed_upto = ch.confirm_sent = int(record["publish_seq"])
                ch.delivery_tag = int(record["delivery_tag"])
                ch.last_queue = record["last_queue"]
                ch.tx = [] if record["tx"] else None
                conn.channels[ch.number] = ch
        except AMQPError as exc:
            raise HandoffRefused(exc.reply_text) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise HandoffRefused(f"bad state: {type(exc).__name__}: {exc}") from None
        if carried:
            conn.proto.receive_data(carried)
        return conn

    async def attach(self, conn: AMQPConnection, sock: Any) -> None:
        """The adopted connection on the client's socket: the carried bytes are handled
        first (they are buffered before anything read from the socket)."""
        loop = asyncio.get_running_loop()
        conn.tuned()  # copies the negotiated values, starts the heartbeats
        await loop.connect_accepted_socket(lambda: conn, sock)
        self.received += 1
        conn.handle_buffered()

    async def close(self) -> None:
        """Shutdown: moves in flight end (their connections are closed with the rest)."""
        self.siblings = lambda node: None
        for task in list(self._tasks):
            task.cancel()
