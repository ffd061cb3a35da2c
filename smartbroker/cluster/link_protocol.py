"""``LinkConnection``: one end of a cluster link, sans-IO (no socket, no asyncio), like h11.

``receive_data(bytes)`` buffers; ``next_event()`` returns an event or ``NEED_DATA``;
``request``/``respond``/``send``/``heartbeat`` queue frames; ``data_to_send()`` returns
everything queued as one ``bytes`` for one write (the adapter calls it once per loop pass,
so a thousand ``send`` calls become a few frames and one write).

Authentication (both ends know the cluster's secret, neither ever sends it): both ends send
HELLO (version, receive window, a fresh nonce, cluster and node names) at once. The dialer
answers the acceptor's HELLO with its proof (``link_codec.proof``); the acceptor checks it
(constant-time) and only then sends its own proof, so an unauthenticated dialer never gets
one. A wrong proof is ``LinkAuthError`` (the acceptor first queues a CLOSE saying why, so
the dialer can log a readable line too). Before both proofs check out, only HELLO, AUTH and
CLOSE are accepted, and no frame may be over ``PRE_AUTH_MAX_FRAME``.

Flow control, per channel, as HTTP/2 does it: a sender may send while it has credit (the
peer's window, then what the peer grants back); items sent without credit wait here and
``send`` returns False, telling the caller to stop producing until a ``Writable`` event.
So a slow peer holds at most one window per channel in flight, and what waits here is
bounded by the callers who honour ``send``'s answer. The receiver grants back what it has
received at a ``data_to_send`` (after its handlers ran) once that is a quarter window
(HTTP/2's WINDOW_UPDATE threshold: a grant per batch was a write, and a wake-up of the
peer, per batch), unless the channel is ``hold``-ed: that is how a receiver pushes back
(a full queue, a blocked connection).
Frames go out in the order they were queued; a channel's items keep their order always.
"""

from __future__ import annotations

import enum
import hmac
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from smartbroker.cluster import link_codec as codec
from smartbroker.cluster.link_codec import (
    ChannelSpec,
    FrameType,
    LinkAuthError,
    LinkProtocolError,
)


class Role(enum.Enum):
    DIALER = "dialer"
    ACCEPTOR = "acceptor"


class State(enum.Enum):
    AWAIT_HELLO = "await-hello"
    AWAIT_AUTH = "await-auth"
    READY = "ready"
    CLOSED = "closed"


_HANDSHAKE = frozenset({FrameType.HELLO, FrameType.AUTH, FrameType.CLOSE})
# Every frame each state accepts; anything else closes the link.
ALLOWED: dict[State, frozenset[FrameType]] = {
    State.AWAIT_HELLO: frozenset({FrameType.HELLO, FrameType.CLOSE}),
    State.AWAIT_AUTH: frozenset({FrameType.AUTH, FrameType.CLOSE}),
    State.READY: frozenset(FrameType) - {FrameType.HELLO, FrameType.AUTH},
    State.CLOSED: frozenset(),
}


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class Ready:
    """Both proofs checked: the link to ``peer`` is up."""

    peer: str


@dataclass(frozen=True, slots=True)
class Request:
    call_id: int
    method: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Response:
    call_id: int
    code: int  # 0: ok; else an error whose text is the payload
    payload: bytes


@dataclass(frozen=True, slots=True)
class Messages:
    channel: ChannelSpec
    items: list[tuple]


@dataclass(frozen=True, slots=True)
class Writable:
    """``channel``, which answered False to ``send`` or ``writable``, has credit again and
    nothing waiting: its senders may go on (once per False, not at every grant)."""

    channel: ChannelSpec


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer closed the link, saying why."""

    reason: str


Event = Ready | Request | Response | Messages | Writable | Closed


class _Outbound:
    __slots__ = ("spec", "credit", "batch", "batch_bytes", "batch_count", "waiting",
                 "waiting_bytes", "blocked")

    def __init__(self, spec: ChannelSpec, credit: int) -> None:
        self.spec = spec
        self.credit = credit
        self.batch: list = []
        self.batch_bytes = 0
        self.batch_count = 0
        self.waiting: deque[tuple[list, int]] = deque()
        self.waiting_bytes = 0
        self.blocked = False  # a sender was told "not writable": owed a Writable event


class LinkConnection:
    """One end of one link: framing, the handshake's state table, batches and credit."""

    def __init__(self, role: Role, node: str, cluster: str, secret: bytes,
                 channels: Mapping[int, ChannelSpec], window: int = codec.WINDOW,
                 max_frame: int = codec.MAX_FRAME, nonce: bytes | None = None) -> None:
        if not secret:
            raise ValueError("the cluster secret is empty")
        self.role = role
        self.node = node
        self.cluster = cluster
        self.peer: str | None = None
        self.state = State.AWAIT_HELLO
        self.channels = channels
        self.window = window
        self.max_frame = max_frame
        self._secret = secret
        self._nonce = nonce or os.urandom(codec.NONCE_SIZE)
        self._peer_nonce = b""
        self._peer_window = 0
        self._in = bytearray()
        self._pos = 0
        self._events: deque[Event] = deque()
        self._out: list = [codec.hello(window, self._nonce, cluster, node)]
        self._outbound: dict[int, _Outbound] = {}
        self._received: dict[int, int] = {}  # channel -> bytes not yet granted back
        self._held: set[int] = set()

    # -- receiving -----------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._in += data

    def next_event(self) -> Event | _NeedData:
        """The next event, or NEED_DATA; ``LinkProtocolError`` if the peer broke the
        protocol (then close the link, after writing ``data_to_send()``)."""
        while not self._events:
            body_kind = self._next_frame()
            if body_kind is None:
                return NEED_DATA
            self._handle(*body_kind)
        return self._events.popleft()

    def _next_frame(self) -> tuple[FrameType, bytes] | None:
        buf, pos = self._in, self._pos
        if len(buf) - pos < 5:
            self._compact()
            return None
        size, kind = codec.HEAD.unpack_from(buf, pos)
        limit = self.max_frame if self.state is State.READY else codec.PRE_AUTH_MAX_FRAME
        if size < 1 or size > limit:
            raise LinkProtocolError(f"a frame of {size} bytes (the limit is {limit})")
        if kind not in ALLOWED[self.state]:
            name = FrameType(kind).name if kind in FrameType._value2member_map_ else str(kind)
            raise LinkProtocolError(f"unexpected frame {name} in state {self.state.value}")
        end = pos + 4 + size
        if len(buf) < end:
            self._compact()  # else a stream of reads each ending mid-frame grows _in
            return None
        view = memoryview(buf)
        try:
            body = view[pos + 5:end].tobytes()  # one copy (a bytearray slice would be two)
        finally:
            view.release()
        self._pos = end
        return FrameType(kind), body

    def _compact(self) -> None:
        if self._pos:
            del self._in[:self._pos]
            self._pos = 0

    def _handle(self, kind: FrameType, body: bytes) -> None:
        if kind is FrameType.MESSAGES:
            self._messages(body)
        elif kind is FrameType.REQUEST:
            self._events.append(Request(*codec.parse_request(body)))
        elif kind is FrameType.RESPONSE:
            self._events.append(Response(*codec.parse_response(body)))
        elif kind is FrameType.CREDIT:
            self._credit(body)
        elif kind is FrameType.HEARTBEAT:
            pass
        elif kind is FrameType.HELLO:
            self._hello(body)
        elif kind is FrameType.AUTH:
            self._auth(body)
        else:  # CLOSE
            self.state = State.CLOSED
            self._events.append(Closed(body.decode(errors="replace")[:500]))

    def _hello(self, body: bytes) -> None:
        version, window, nonce, cluster, node = codec.parse_hello(body)
        if version != codec.VERSION:
            self._refuse(f"link protocol version {version}, this node speaks {codec.VERSION}")
        if cluster != self.cluster:
            self._refuse(f"node {node!r} is in cluster {cluster!r}, not {self.cluster!r}")
        if node == self.node or not node:
            self._refuse(f"the peer calls itself {node!r}, this node's own name")
        self.peer, self._peer_nonce, self._peer_window = node, nonce, window
        self.state = State.AWAIT_AUTH
        if self.role is Role.DIALER:
            self._out.append(codec.frame(FrameType.AUTH, self._proof()))

    def _auth(self, body: bytes) -> None:
        assert self.peer is not None
        expected = codec.proof(self._secret, self.cluster, self.peer, self.node,
                               self._peer_nonce, self._nonce)
        if not hmac.compare_digest(body, expected):
            self.state = State.CLOSED
            if self.role is Role.ACCEPTOR:
                self._out.append(codec.frame(FrameType.CLOSE, b"authentication failed"))
            raise LinkAuthError(f"node {self.peer!r} failed authentication "
                                "(a different cluster secret?)")
        if self.role is Role.ACCEPTOR:
            self._out.append(codec.frame(FrameType.AUTH, self._proof()))
        self.state = State.READY
        self._events.append(Ready(self.peer))

    def _proof(self) -> bytes:
        assert self.peer is not None
        return codec.proof(self._secret, self.cluster, self.node, self.peer, self._nonce,
                           self._peer_nonce)

    def _refuse(self, reason: str) -> None:
        self.state = State.CLOSED
        self._out.append(codec.frame(FrameType.CLOSE, reason.encode()))
        raise LinkProtocolError(reason)

    def _messages(self, body: bytes) -> None:
        if len(body) < 6:
            raise LinkProtocolError("a MESSAGES frame is too short")
        number, count = codec.CHANNEL_COUNT.unpack_from(body)
        spec = self.channels.get(number)
        if spec is None:
            raise LinkProtocolError(f"messages on unknown channel {number}")
        items = codec.decode_items(spec, body, 6, count)
        self._received[number] = self._received.get(number, 0) + len(body) - 6
        self._events.append(Messages(spec, items))

    def _credit(self, body: bytes) -> None:
        if len(body) != 6:
            raise LinkProtocolError("a CREDIT frame is not 6 bytes")
        number, nbytes = codec.CHANNEL_COUNT.unpack(body)
        out = self._outbound.get(number)
        if out is None:
            raise LinkProtocolError(f"credit for channel {number}, never sent on")
        out.credit += nbytes
        waiting = out.waiting
        while waiting and out.credit > 0:
            parts, size = waiting.popleft()
            out.waiting_bytes -= size
            self._add(number, out, parts, size)
        if out.blocked and not waiting and out.credit > 0:
            out.blocked = False
            self._events.append(Writable(out.spec))

    # -- sending -------------------------------------------------------------------------
    def send(self, spec: ChannelSpec, item: tuple) -> bool:
        """Queue one item on a channel; False once the channel is out of credit (the item
        is kept, but the caller should stop until a ``Writable`` event)."""
        out = self._outbound.get(spec.number)
        if out is None:
            self._ready_to_send()
            out = self._outbound[spec.number] = _Outbound(spec, self._peer_window)
        parts, size = codec.encode_item(spec, item)
        if size > self.max_frame - 16:
            raise ValueError(f"an item of {size} bytes is over the link's frame limit")
        if out.waiting or out.credit <= 0:
            out.waiting.append((parts, size))
            out.waiting_bytes += size
            out.blocked = True
            return False
        self._add(spec.number, out, parts, size)
        if out.credit > 0:
            return True
        out.blocked = True
        return False

    def _add(self, number: int, out: _Outbound, parts: list, size: int) -> None:
        out.credit -= size
        if out.batch_bytes + size > codec.BATCH_BYTES and out.batch_count:
            self._cut(number, out)
        out.batch.extend(parts)
        out.batch_bytes += size
        out.batch_count += 1

    def _cut(self, number: int, out: _Outbound) -> None:
        self._out.append(codec.MESSAGES_HEAD.pack(out.batch_bytes + 7, FrameType.MESSAGES,
                                                  number, out.batch_count))
        self._out.extend(out.batch)
        out.batch = []
        out.batch_bytes = out.batch_count = 0

    def _cut_all(self) -> None:
        for number, out in self._outbound.items():
            if out.batch_count:
                self._cut(number, out)

    def writable(self, spec: ChannelSpec) -> bool:
        out = self._outbound.get(spec.number)
        if out is None or (not out.waiting and out.credit > 0):
            return True
        out.blocked = True
        return False

    def waiting_bytes(self, spec: ChannelSpec) -> int:
        """Bytes of items queued on ``spec`` for want of credit."""
        out = self._outbound.get(spec.number)
        return 0 if out is None else out.waiting_bytes

    def request(self, call_id: int, method: str, payload: bytes) -> None:
        self._control(codec.request(call_id, method, payload))

    def respond(self, call_id: int, payload: bytes, code: int = 0) -> None:
        self._control(codec.response(call_id, code, payload))

    def heartbeat(self) -> None:
        self._control(codec.HEARTBEAT_FRAME)

    def close(self, reason: str) -> None:
        """Queue a CLOSE (write ``data_to_send()``, then close the socket)."""
        if self.state is not State.CLOSED:
            self._cut_all()
            self._out.append(codec.frame(FrameType.CLOSE, reason.encode()[:1000]))
            self.state = State.CLOSED

    def _control(self, data: bytes) -> None:
        self._ready_to_send()
        self._cut_all()  # what was sent before goes before
        self._out.append(data)

    def _ready_to_send(self) -> None:
        if self.state is not State.READY:
            raise RuntimeError(f"the link is not ready ({self.state.value})")

    # -- receive-side flow control -------------------------------------------------------
    def hold(self, spec: ChannelSpec) -> None:
        """Stop granting credit on ``spec``: the peer stops within one window."""
        self._held.add(spec.number)

    def release(self, spec: ChannelSpec) -> None:
        """Grant again (at the next ``data_to_send``) what was received while held."""
        self._held.discard(spec.number)

    def data_to_send(self) -> bytes:
        """All queued frames (and credit grants) as one buffer, or b"" if none."""
        if self._received and self.state is State.READY:
            due = self.window >> 2  # grants of a quarter window: not one frame (and one
            for number, nbytes in self._received.items():  # write) per batch received
                if nbytes >= due and number not in self._held:
                    self._out.append(codec.credit(number, min(nbytes, 0xFFFFFFFF)))
                    self._received[number] = 0
        self._cut_all()
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out = []
        return data

    def has_output(self) -> bool:
        return (bool(self._out) or any(out.batch_count for out in self._outbound.values())
                or any(n >= self.window >> 2 for c, n in self._received.items()
                       if c not in self._held))
