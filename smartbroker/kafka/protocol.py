"""``KafkaConnection``: the server side of one Kafka connection, sans-IO (no socket, no
asyncio), in the manner of h11 and of ``smartbroker.protocol`` for AMQP.

``receive_data(bytes)`` buffers; ``next_request()`` returns a decoded ``Request`` or
``NEED_DATA``; ``send_response(request, body)`` returns the bytes that may be written now.
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
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smartbroker.kafka import codec
from smartbroker.kafka.codec import DecodeError, Request
from smartbroker.kafka.errors import ErrorCode

MAX_REQUEST_SIZE = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes default
MAX_PRE_AUTH_SIZE = 512 * 1024  # Kafka's sasl.server.max.receive.size default


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

    __slots__ = ("_buffer", "_pos", "_slots", "eof", "supported", "max_request_size",
                 "pre_auth", "raw_tokens")

    def __init__(self, supported: Mapping[int, tuple[int, int]],
                 max_request_size: int = MAX_REQUEST_SIZE) -> None:
        self.supported = supported
        self.max_request_size = max_request_size
        self._buffer = bytearray()
        self._pos = 0  # start of the first unparsed frame in _buffer
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

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the socket; ``b""`` means the peer closed its side."""
        if not data:
            self.eof = True
            return
        if self._pos and self._pos == len(self._buffer):
            self._buffer.clear()  # everything parsed: restart at the front, no copy
            self._pos = 0
        self._buffer += data

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
            buf = self._buffer
            size = codec.frame_size(buf, self._pos)
            if size is None:
                return self._compact()
            limit = self.max_request_size if self.pre_auth is None else MAX_PRE_AUTH_SIZE
            if size < 0 or size > limit:
                raise KafkaProtocolError(f"request of {size} bytes is over the limit of "
                                         f"{limit} bytes")
            start = self._pos + 4
            if len(buf) - start < size:
                return self._compact()
            with memoryview(buf) as view:  # one copy of the request, not two
                payload = bytes(view[start:start + size])
            self._pos = start + size
            if self.raw_tokens:
                token = SaslToken(payload)
                self._slots.append([token, None])
                return token
            request = self._decode(payload)
            if request is not None:
                self._slots.append([request, None])
                return request

    def _compact(self) -> _NeedData:
        if self._pos:  # drop parsed frames before the partial one waits for more bytes
            del self._buffer[:self._pos]
            self._pos = 0
        return NEED_DATA

    def _decode(self, payload: bytes) -> Request | None:
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
