"""``KafkaConnection``: the server side of one Kafka connection, sans-IO (no socket, no
asyncio), in the manner of h11 and of ``smartbroker.protocol`` for AMQP.

``get_buffer()`` / ``buffer_updated(n)`` let the socket read straight into the
connection's buffers (``asyncio.BufferedProtocol``), ``receive_data(bytes)`` copies bytes in;
``next_request()`` returns a decoded ``Request`` or ``NEED_DATA``;
``send_response(request, body)`` returns the bytes that may be written now.

Receiving costs one copy of a request's bytes, made by the kernel: small frames are read
many at a time into a scratch buffer (reused: the decoded request holds copies of what it
needs, never a view of it), a large one (a Produce) into a buffer of its own size, freed
with the request (``allocator.py`` lets glibc reuse those pages; a buffer kept per
connection would hold megabytes for every idle producer). The scratch is never resized
while a view of it may be alive: a bigger one is allocated instead.
Kafka answers a connection's requests in the order they came (clients pipeline and match
by correlation id, some by order), so a response that is ready before an earlier one (a
Fetch still waiting, later) is held back until the earlier one is sent.

What Kafka does with bad input, we do: a frame over ``socket.request.max.bytes`` (100 MiB
by default), a negative size, an unknown api key or version, or bytes that do not decode
close the connection (``KafkaProtocolError``); an ApiVersions newer than we know is
answered with UNSUPPORTED_VERSION in a v0 response (KIP-511) so the client can retry.

Before SASL authentication (``pre_auth`` set by the adapter) only the api keys in it are
served, anything else closes the connection, and a frame may be at most
``sasl.server.max.receive.size`` (512 KiB), as in Kafka. After a SaslHandshake v0 the
client sends raw SASL tokens (a size, no request header): ``expect_raw_tokens`` makes
``next_request`` return them as ``SaslToken``, answered with ``send_token``.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smartbroker.kafka import codec
from smartbroker.kafka.codec import DecodeError, Request
from smartbroker.kafka.errors import ErrorCode

MAX_REQUEST_SIZE = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes default
MAX_PRE_AUTH_SIZE = 512 * 1024  # Kafka's sasl.server.max.receive.size default
SCRATCH = 16 * 1024  # the connection's read buffer: many small frames per read
LARGE = 32 * 1024  # a frame over this is read into a buffer of its own, not the scratch
MIN_ROOM = 4 * 1024  # the scratch is compacted (or replaced) when less is free
_SIZE = struct.Struct(">i")


class KafkaProtocolError(Exception):
    """The client broke the protocol: close the connection, as Kafka does (one log line,
    never a traceback)."""


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _NeedData.NEED_DATA


@dataclass(frozen=True, slots=True, eq=False)
class SaslToken:
    """A raw SASL token (after a SaslHandshake v0): no header, no correlation id."""

    token: bytes


class KafkaConnection:
    """One connection's framing, decoding and response order.

    ``supported`` maps each api key the broker implements to its (min, max) version: a
    request outside it is refused here, so the handlers only see what they advertised."""

    __slots__ = ("_buffer", "_pos", "_end", "_frame", "_filled", "_want", "_done", "_slots", "eof", "supported", "max_request_size", "pre_auth", "raw_tokens")

    def __init__(self, supported: Mapping[int, tuple[int, int]],
                 max_request_size: int = MAX_REQUEST_SIZE) -> None:
        self.supported = supported
        self.max_request_size = max_request_size
        self._buffer = bytearray(SCRATCH)  # scratch: small frames, a large one's prefix
        self._pos = 0  # start of the first unparsed frame in _buffer
        self._end = 0  # end of the bytes read into _buffer
        self._frame: bytearray | None = None  # a large frame being read, no size prefix
        self._filled = 0  # bytes of it read
        self._want = 0  # its size
        self._done: memoryview | None = None  # a large frame read whole, not yet parsed
        # responses owed, in request order: [request, frame or None until it is ready]
        self._slots: deque[list[Any]] = deque()
        self.eof = False  # the peer closed its side
        self.pre_auth: frozenset[int] | None = None  # api keys served before authentication
        self.raw_tokens = False  # after a SaslHandshake v0, until authenticated

    @property
    def in_flight(self) -> int:
        """Requests received and not yet answered (the adapter may stop reading above a
        bound, as Kafka mutes a connection until it has answered)."""
        return len(self._slots)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the socket; ``b""`` means the peer closed its side."""
        if not data:
            self.eof = True
            return
        view = memoryview(data)
        while view:
            room = self.get_buffer(len(view))
            n = min(len(room), len(view))
            room[:n] = view[:n]
            self.buffer_updated(n)
            view = view[n:]

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next read goes (never empty): the rest of a large frame, else the
        scratch's free end. A frame over LARGE whose size prefix is in gets its own buffer
        here, once every frame before it was parsed."""
        if self._frame is not None:
            return memoryview(self._frame)[self._filled:self._want]
        buf, pos, end = self._buffer, self._pos, self._end
        if pos == end:
            self._pos = self._end = pos = end = 0
        elif end - pos >= 4 and self._done is None:
            size = _SIZE.unpack_from(buf, pos)[0]
            have = end - pos - 4
            if LARGE < size <= self._limit() and have < size:
                return self._start_frame(size, memoryview(buf)[pos + 4:end])
        if len(buf) - end < MIN_ROOM:
            kept = end - pos  # unparsed frames (reading is paused then) or a partial one
            if kept + MIN_ROOM > len(buf):
                new = bytearray(2 * kept + MIN_ROOM)
                new[:kept] = buf[pos:end]
                self._buffer = buf = new
            else:
                buf[:kept] = buf[pos:end]
            self._pos = 0
            self._end = end = kept
        return memoryview(buf)[end:]

    def _start_frame(self, size: int, head: memoryview) -> memoryview:
        frame = bytearray(size)
        frame[:len(head)] = head
        self._frame, self._filled, self._want = frame, len(head), size
        self._pos = self._end = 0
        return memoryview(frame)[self._filled:size]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were read into the view ``get_buffer`` returned."""
        if self._frame is None:
            self._end += nbytes
            return
        self._filled += nbytes
        if self._filled >= self._want:
            self._done = memoryview(self._frame)[:self._want]
            self._frame = None

    def _limit(self) -> int:
        return self.max_request_size if self.pre_auth is None else MAX_PRE_AUTH_SIZE

    def expect_raw_tokens(self, on: bool) -> None:
        """The frames that follow are raw SASL tokens (``on``), or requests again."""
        self.raw_tokens = on

    def authenticated(self) -> None:
        """SASL succeeded (or was never needed): every supported request is served."""
        self.pre_auth = None
        self.raw_tokens = False

    def next_request(self) -> Request | SaslToken | _NeedData:
        """The next complete request, decoded; NEED_DATA until one is in. Raises
        KafkaProtocolError when the connection must be closed."""
        while True:
            payload = self._done
            if payload is not None:  # its size was checked when its buffer was made
                self._done = None
            else:
                buf, pos = self._buffer, self._pos
                if self._end - pos < 4:
                    return NEED_DATA
                size = _SIZE.unpack_from(buf, pos)[0]
                limit = self._limit()
                if size < 0 or size > limit:
                    raise KafkaProtocolError(f"request of {size} bytes is over the limit of "
                                             f"{limit} bytes")
                start = pos + 4
                if self._end - start < size:
                    return NEED_DATA
                payload = memoryview(buf)[start:start + size]  # decoded before it is reused
                self._pos = start + size
            if self.raw_tokens:
                token = SaslToken(bytes(payload))
                self._slots.append([token, None])
                return token
            request = self._decode(payload)
            if request is not None:
                self._slots.append([request, None])
                return request

    def _decode(self, payload: memoryview) -> Request | None:
        """A request for the handlers, or None when it was answered here (KIP-511)."""
        try:
            api_key, api_version, correlation_id = codec.peek_header(payload)
        except DecodeError as exc:
            raise KafkaProtocolError(str(exc)) from None
        if self.pre_auth is not None and api_key not in self.pre_auth:
            raise KafkaProtocolError(f"request with api_key {api_key} before SASL "
                                     f"authentication")
        versions = self.supported.get(api_key)
        if api_key == codec.API_VERSIONS and versions is not None and api_version > versions[1]:
            lo, hi = versions
            frame = codec.api_versions_error(correlation_id, ErrorCode.UNSUPPORTED_VERSION,
                                             [(codec.API_VERSIONS, lo, hi)])
            self._slots.append([None, frame])
            return None
        if versions is None or not versions[0] <= api_version <= versions[1]:
            raise KafkaProtocolError(f"unsupported request: api_key {api_key} "
                                     f"version {api_version}")
        try:
            return codec.decode_request(payload)
        except DecodeError as exc:
            raise KafkaProtocolError(str(exc)) from None

    def send_response(self, request: Request, body: Any) -> bytes:
        """Encode ``body`` (the library's response object) for ``request``'s version;
        returns the bytes that may go on the wire now, in request order."""
        frame = codec.encode_response(request.api_key, request.api_version,
                                      request.header.correlation_id, body)
        self._slot(request)[1] = frame
        return self.data_to_send()

    def send_token(self, token: SaslToken, data: bytes) -> bytes:
        """The server's raw SASL token in answer to ``token`` (a size, then the bytes)."""
        self._slot(token)[1] = len(data).to_bytes(4, "big") + data
        return self.data_to_send()

    def no_response(self, request: Request) -> bytes:
        """``request`` gets no answer (Produce with acks=0): later ones may go."""
        self._slots.remove(self._slot(request))
        return self.data_to_send()

    def data_to_send(self) -> bytes:
        """The ready responses at the head of the order (b"" when the first is pending)."""
        slots = self._slots
        out = []
        while slots and slots[0][1] is not None:
            out.append(slots.popleft()[1])
        return b"".join(out)

    def _slot(self, request: Request | SaslToken) -> list[Any]:
        for slot in reversed(self._slots):  # most often the newest (answered at once)
            if slot[0] is request:
                return slot
        raise ValueError("response to a request that was not received or already answered")
