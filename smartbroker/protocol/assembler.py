"""Content assembly for one channel: basic.publish -> content header -> body frames.

As RabbitMQ's ``rabbit_command_assembler``: properties stay raw bytes, the body is kept as
fragments and joined once. Routes and content headers are interned per connection (the
queued messages share one copy), and a header's properties are validated once, the first
time that exact header is seen. The body-frame fast path is inlined in
``Connection.next_event``; this module holds the per-channel record and the header step.
"""

from __future__ import annotations

import struct

from smartbroker.errors import (
    ChannelError,
    ConnectionError,
    frame_error,
    precondition_failed,
    unexpected_frame,
)
from smartbroker.protocol import codec
from smartbroker.protocol.events import ChannelFailed, Publish
from smartbroker.protocol.properties import Malformed
from smartbroker.protocol.properties import validate as validate_properties
from smartbroker.protocol.property_codec import split_properties
from smartbroker.protocol.states import ChannelState

INTERN_LIMIT = 4096  # distinct routes/content headers remembered per connection
# The reply-to short string "amq.rabbitmq.reply-to" as it sits in header bytes (direct
# reply-to); equal to broker.direct_reply.RAW_MARKER (a test checks it).
REPLY_TO_MARKER = b"\x15amq.rabbitmq.reply-to"

_header_prefix = struct.Struct("!HHQ")
AWAIT_HEADER, AWAIT_BODY, OPEN = ChannelState.AWAIT_HEADER, ChannelState.AWAIT_BODY, ChannelState.OPEN


class ChannelRecord:
    """What the protocol knows of one open channel number: its state and the message
    being assembled (route, mandatory, then header, flags, size and body fragments)."""

    __slots__ = ("state", "route", "mandatory", "header", "flags", "size", "received", "parts")

    def __init__(self) -> None:
        self.state = ChannelState.OPEN
        self.route: tuple[str, str, bytes] | None = None
        self.mandatory = False
        self.header = b""
        self.flags = 0
        self.size = 0
        self.received = 0
        self.parts: list[bytes] = []

    def reset(self) -> None:
        """Forget a partly assembled message (channel closed or failed)."""
        self.route = None
        self.parts = []


def content_header(ch: ChannelRecord, number: int, payload: bytes,
                   headers: dict[bytes, tuple[bytes, int]], max_size: int
                   ) -> Publish | ChannelFailed | None:
    """The content header of the message ``ch`` awaits: a ``Publish`` when the body is
    empty, ``ChannelFailed`` for a message RabbitMQ refuses on this channel, else ``None``
    (body frames follow). Table moves: AWAIT_HEADER -> AWAIT_BODY / OPEN."""
    if ch.state is not AWAIT_HEADER:
        raise unexpected_frame("expected method frame, got content header")
    if len(payload) < 14:
        raise frame_error("content header too short")
    class_id, _weight, body_size = _header_prefix.unpack_from(payload)
    if class_id != 60:
        raise unexpected_frame(f"expected content header for class 60, got one for class "
                               f"{class_id} instead").at(60, 40)
    if body_size > max_size:
        return _failed(ch, number, precondition_failed(
            f"message size {body_size} is larger than configured max size {max_size}"))
    known = headers.get(payload)
    if known is not None:
        payload, flags = known  # seen (and validated) before: share one copy
    else:
        if payload[12] or payload[13]:  # properties: clients must be able to decode them
            try:
                validate_properties(payload)
            except Malformed as exc:
                raise ConnectionError(502, f"unable to decode content properties: {exc}",
                                      60, 40) from None
            mode = split_properties(payload).get("delivery_mode")
            if mode is not None and mode[0] not in (1, 2):  # as RabbitMQ 3.10
                return _failed(ch, number, precondition_failed(
                    f"invalid message: {{delivery_mode_unknown,{mode[0]}}}"))
        if len(headers) >= INTERN_LIMIT:
            headers.clear()
        flags = codec.property_flags(payload)
        if REPLY_TO_MARKER in payload:  # reply_to may be amq.rabbitmq.reply-to
            flags |= codec.FLAG_REPLY_TO_PSEUDO
        headers[payload] = (payload, flags)
    if body_size == 0:  # (AWAIT_HEADER, CLIENT, HEADER_EMPTY) -> OPEN
        ch.state = OPEN
        route, ch.route = ch.route, None
        return Publish(number, route, ch.mandatory, payload, flags, b"")  # type: ignore[arg-type]
    ch.state = AWAIT_BODY  # (AWAIT_HEADER, CLIENT, HEADER) -> AWAIT_BODY
    ch.header = payload
    ch.flags = flags
    ch.size = body_size
    ch.received = 0
    ch.parts = []
    return None


def content_body_error(ch: ChannelRecord) -> ConnectionError:
    """A body frame on a channel that awaits none."""
    return unexpected_frame("expected content header for class 60, got content body")


def body_too_long(ch: ChannelRecord) -> ConnectionError:
    return frame_error(f"content body exceeds declared size {ch.size}").at(60, 40)  # type: ignore[return-value]


def _failed(ch: ChannelRecord, number: int, error: ChannelError) -> ChannelFailed:
    ch.state = OPEN  # (AWAIT_HEADER, CLIENT, FAIL) -> OPEN; the server closes it next
    ch.reset()
    error.at(60, 40)
    return ChannelFailed(number, error)


__all__ = ["INTERN_LIMIT", "REPLY_TO_MARKER", "ChannelRecord", "content_header"]
