"""One TCP connection of the cluster link: the asyncio adapter around ``LinkConnection``.

``data_received`` feeds the sans-IO connection and acts on each event (answers calls,
resolves replies, hands channel batches to their handler), then writes once. Sends made
elsewhere mark the connection dirty and one ``call_soon`` writes everything queued in the
loop pass (nats-server's flushClients): a thousand forwarded publishes are one write.
What the link as a whole decides (which peer this is, duplicates, reconnecting, who gets
told a peer is down) is ``link.ClusterLink``'s; this class only reports to it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any

from smartbroker.cluster.link_codec import ChannelSpec, LinkAuthError, LinkProtocolError
from smartbroker.cluster.link_protocol import (
    NEED_DATA,
    Closed,
    LinkConnection,
    Messages,
    Ready,
    Request,
    Response,
    Role,
    State,
    Writable,
)

if TYPE_CHECKING:
    from smartbroker.cluster.link import ClusterLink

log = logging.getLogger("smartbroker.cluster.link")

NOT_IMPLEMENTED = 540  # no handler for the method (AMQP's NOT_IMPLEMENTED)
INTERNAL_ERROR = 541  # the handler failed unexpectedly (AMQP's INTERNAL_ERROR)
STOPPING = "node stopping"
LEFT = "the node left the cluster"
STALLED = "closed unread: its peer may have given this node up (lease lapsed, or stood still)"
ORDERLY = frozenset({STOPPING, LEFT})  # closes that are no one's fault: logged at INFO


class PeerDown(Exception):
    """The link to the peer is down (or was never up): calls to it fail at once, and the
    calls in flight when it went down fail with this."""


class CallError(Exception):
    """An error answer: raised by a call handler to answer with ``code`` and ``text``, and
    by ``ClusterLink.call`` when the peer answered so."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


class PeerConnection(asyncio.Protocol):
    """One link connection, dialed (``Role.DIALER``) or accepted."""

    def __init__(self, link: ClusterLink, role: Role, expected: str | None = None) -> None:
        self.link = link
        self.role = role
        self.expected = expected  # the peer a dialer meant to reach
        self.conn = LinkConnection(role, link.node, link.cluster, link.secret, link.channels,
                                   window=link.window)
        self.transport: asyncio.Transport | None = None
        self.address = "?"
        self.calls: dict[int, asyncio.Future[bytes]] = {}
        self.finished: asyncio.Future[str] = link.loop.create_future()  # why it ended
        self.writes = 0
        self.received = True  # bytes arrived since the last heartbeat tick
        self.sent = False  # bytes written since the last heartbeat tick
        self.paused = False  # the transport's buffer is over its high-water mark
        self.last_heard = self.opened_at = link.loop.time()
        self.was_up = False  # it became the link to its peer
        self._dirty = False
        self._waiters: list[asyncio.Future[None]] = []
        self._reason = "connection lost"

    @property
    def peer(self) -> str | None:
        return self.conn.peer

    @property
    def ready(self) -> bool:
        return self.conn.state is State.READY

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername") or ("?", 0)
        self.address = f"{peername[0]}:{peername[1]}"
        self.link.opened(self)
        self.flush()  # our HELLO

    def data_received(self, data: bytes) -> None:
        link = self.link
        quiet = link.loop.time() - self.last_heard
        if quiet > 2 * link.heartbeat and link.given_up(self, quiet):
            self.abort(STALLED, warn=True)
            return
        self.received = True
        conn = self.conn
        conn.receive_data(data)
        try:
            while (event := conn.next_event()) is not NEED_DATA:
                if type(event) is Messages:
                    self._messages(event)
                elif type(event) is Response:
                    self._response(event)
                elif type(event) is Request:
                    self._request(event)
                elif type(event) is Writable:
                    self._wake()
                    self.link.writable_again(self, event.channel)
                elif type(event) is Ready:
                    self.link.ready(self)
                elif type(event) is Closed:
                    self._closed_by_peer(event.reason)
                    return
        except LinkAuthError as exc:
            self.abort(f"refused: {exc}", warn=True)
            return
        except LinkProtocolError as exc:
            self.abort(f"closed: {exc}", warn=True)
            return
        except Exception as exc:  # our bug: one line (and the traceback at DEBUG)
            log.debug("cluster link failure", exc_info=True)
            self.abort(f"closed: internal error {exc!r}", warn=True)
            return
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if exc is not None and self._reason == "connection lost":
            self._reason = f"connection lost ({exc})"
        self.fail_calls()
        self._wake()
        if not self.finished.done():
            self.finished.set_result(self._reason)
        self.link.lost(self)

    def fail_calls(self) -> None:
        """Fail the calls in flight on this connection with ``PeerDown``."""
        failure = PeerDown(f"the link to node {self.peer or self.expected!r} went down: "
                           f"{self._reason}")
        calls, self.calls = self.calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(failure)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()
        self.link.writable_again(self, None)

    # -- events --------------------------------------------------------------------------
    def _messages(self, event: Messages) -> None:
        handler = self.link.channel_handlers[event.channel.number]
        try:
            handler(self.conn.peer, event.items)
        except Exception as exc:  # a handler's bug must not take the link down
            log.warning("channel %s handler failed on items from %s: %r", event.channel.name,
                        self.peer, exc)
            log.debug("channel handler failure", exc_info=True)

    def _response(self, event: Response) -> None:
        future = self.calls.pop(event.call_id, None)
        if future is None or future.done():
            return  # the caller gave up (timeout or cancel)
        if event.code:
            future.set_exception(CallError(event.code, event.payload.decode(errors="replace")))
        else:
            future.set_result(event.payload)

    def _request(self, event: Request) -> None:
        handler = self.link.call_handlers.get(event.method)
        if handler is None:
            self.conn.respond(event.call_id, f"no handler for {event.method!r}".encode(),
                              NOT_IMPLEMENTED)
            return
        try:
            result = handler(self.conn.peer, event.payload)
        except Exception as exc:
            self._answer_error(event, exc)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._answer_later(event, result))
            self.link.tasks.add(task)
            task.add_done_callback(self.link.tasks.discard)
        else:
            self._answer(event, result)

    async def _answer_later(self, event: Request, result: Any) -> None:
        try:
            reply = await result
        except Exception as exc:
            if self.ready:
                self._answer_error(event, exc)
                self.mark()
            return
        if self.ready:
            self._answer(event, reply)
            self.mark()

    def _answer(self, event: Request, reply: Any) -> None:
        if isinstance(reply, bytes | bytearray | memoryview):
            self.conn.respond(event.call_id, bytes(reply))
        else:
            self._answer_error(event, TypeError(f"the handler returned {type(reply).__name__}"
                                                ", not bytes"))

    def _answer_error(self, event: Request, exc: Exception) -> None:
        if isinstance(exc, CallError):
            self.conn.respond(event.call_id, exc.text.encode(), exc.code)
            return
        log.warning("call %s from %s failed: %r", event.method, self.peer, exc)
        log.debug("call handler failure", exc_info=True)
        self.conn.respond(event.call_id, f"internal error: {exc!r}".encode(), INTERNAL_ERROR)

    def _closed_by_peer(self, reason: str) -> None:
        if reason in ORDERLY:
            level = logging.INFO
        else:
            level = logging.WARNING if self.link.loggable(self, reason) else logging.DEBUG
        log.log(level, "cluster link %s %s closed by the peer: %s", self._direction(),
                self._who(), reason)
        self._reason = f"closed by the peer: {reason}"
        if self.transport is not None:
            self.transport.close()

    # -- sending -------------------------------------------------------------------------
    def send(self, spec: ChannelSpec, item: tuple) -> bool:
        try:
            ok = self.conn.send(spec, item)
        except RuntimeError:  # closing (a CLOSE sent or received), not yet lost: down
            raise PeerDown(f"the link to node {self.peer!r} went down: {self._reason}") from None
        self.mark()
        return ok and not self.paused

    def call(self, call_id: int, method: str, payload: bytes) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = self.link.loop.create_future()
        try:
            self.conn.request(call_id, method, payload)
        except RuntimeError:  # as in send
            raise PeerDown(f"the link to node {self.peer!r} went down: {self._reason}") from None
        self.calls[call_id] = future
        self.mark()
        return future

    def mark(self) -> None:
        """Write at the end of this loop pass (once, however many sends came first)."""
        if not self._dirty:
            self._dirty = True
            self.link.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._dirty = False
        if self.transport is None:
            return
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)
            self.writes += 1
            self.sent = True

    def writable(self, spec: ChannelSpec) -> bool:
        return not self.paused and self.conn.writable(spec)

    async def wait_writable(self, spec: ChannelSpec) -> None:
        while self.transport is not None and not self.writable(spec):
            waiter = self.link.loop.create_future()
            self._waiters.append(waiter)
            await waiter
        if self.transport is None:
            raise PeerDown(f"the link to node {self.peer!r} went down: {self._reason}")

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- closing -------------------------------------------------------------------------
    def abort(self, reason: str, warn: bool = False) -> None:
        """Close the link, telling the peer why if we can (a CLOSE frame)."""
        if warn:
            level = logging.WARNING if self.link.loggable(self, reason) else logging.DEBUG
            log.log(level, "cluster link %s %s %s", self._direction(),
                    self._who(), reason)
        self._reason = reason
        if self.transport is None:
            return
        self.conn.close(reason)
        self.flush()
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # a peer that does not read would keep it open forever
        else:
            self.transport.close()

    def _who(self) -> str:
        name = self.peer or self.expected
        return f"{name} ({self.address})" if name else self.address

    def _direction(self) -> str:
        return "to" if self.role is Role.DIALER else "from"
