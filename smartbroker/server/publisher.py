"""Content assembly for one connection: basic.publish + content header + body frames.

``basic.publish`` + content header + body frames arrive here from the connection's frame
loop. Routes and content headers are interned per connection (queued messages share
them) and properties are validated once per distinct header; the complete message goes to
``Channel.publish`` (broker/publish.py: checks, routing, confirms).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartbroker.broker.direct_reply import RAW_MARKER
from smartbroker.errors import (
    ChannelError,
    ConnectionError,
    frame_error,
    not_implemented,
    precondition_failed,
    unexpected_frame,
)
from smartbroker.protocol import codec
from smartbroker.protocol.properties import Malformed
from smartbroker.protocol.properties import validate as validate_properties
from smartbroker.protocol.property_codec import split_properties

if TYPE_CHECKING:
    from smartbroker.broker.channel import Channel
    from smartbroker.server.connection import AMQPConnection

INTERN_LIMIT = 4096  # distinct routes/content headers remembered per connection


class Publisher:
    def __init__(self, conn: AMQPConnection) -> None:
        self.conn = conn
        self._routes: dict[bytes, tuple[str, str, bytes]] = {}  # interned publish routing
        self._headers: dict[bytes, tuple[bytes, int]] = {}  # interned headers and their flags

    def publish_method(self, ch: Channel, payload: bytes) -> None:
        try:
            ex_rk_ss, bits = codec.publish_route(payload)
            route = self._routes.get(ex_rk_ss)
            if route is None:  # shared strings: queued messages do not each hold a copy
                if len(self._routes) >= INTERN_LIMIT:
                    self._routes.clear()
                route = self._routes[ex_rk_ss] = (*codec.decode_route(ex_rk_ss), ex_rk_ss)
        except (IndexError, UnicodeDecodeError):
            raise ConnectionError(502, "cannot decode basic.publish", 60, 40) from None
        if bits & 2:
            raise not_implemented("immediate=true").at(60, 40)
        ch.pending = (route, bool(bits & 1))

    def content_header(self, ch: Channel, payload: bytes) -> None:
        conn = self.conn
        if ch.pending is None or ch.pending_header is not None:
            raise unexpected_frame("expected method frame, got content header")
        if len(payload) < 14:
            raise frame_error("content header too short")
        class_id, body_size = codec.parse_header(payload)
        if class_id != 60:
            raise unexpected_frame(f"expected content header for class 60, got one for class {class_id} instead").at(60, 40)
        if body_size > conn.broker.config.max_message_size:
            ch.pending = None
            conn.channel_failed(ch, precondition_failed(
                f"message size {body_size} is larger than configured max size "
                f"{conn.broker.config.max_message_size}").at(60, 40))
            return
        known = self._headers.get(payload)
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
                    ch.pending = None
                    conn.channel_failed(ch, precondition_failed(
                        f"invalid message: {{delivery_mode_unknown,{mode[0]}}}").at(60, 40))
                    return
            if len(self._headers) >= INTERN_LIMIT:
                self._headers.clear()
            flags = codec.property_flags(payload)
            if RAW_MARKER in payload:  # reply_to may be amq.rabbitmq.reply-to
                flags |= codec.FLAG_REPLY_TO_PSEUDO
            self._headers[payload] = (payload, flags)
        if body_size == 0:
            self.complete(ch, payload, flags, b"")
            return
        ch.pending_header = payload
        ch.pending_flags = flags
        ch.pending_size = body_size
        ch.pending_received = 0
        ch.pending_body = []

    def content_body(self, ch: Channel, payload: bytes) -> None:
        header = ch.pending_header
        if header is None:
            raise unexpected_frame("expected content header for class 60, got content body")
        received = ch.pending_received + len(payload)
        if received > ch.pending_size:
            raise frame_error(f"content body exceeds declared size {ch.pending_size}").at(60, 40)
        if received == ch.pending_size:
            body = b"".join((*ch.pending_body, payload)) if ch.pending_body else payload
            ch.pending_header = None
            ch.pending_body = []
            self.complete(ch, header, ch.pending_flags, body)
        else:
            ch.pending_body.append(payload)
            ch.pending_received = received

    def complete(self, ch: Channel, header: bytes, flags: int, body: bytes) -> None:
        route, mandatory = ch.pending  # type: ignore[misc]
        ch.pending = None
        try:
            ch.publish(route, mandatory, header, flags, body)
        except ChannelError as err:
            self.conn.channel_failed(ch, err.at(60, 40))
