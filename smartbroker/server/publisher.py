"""The publish path of one connection: content assembly, checks, routing, confirms.

``basic.publish`` + content header + body frames arrive here from the connection's frame
loop. Routes and content headers are interned per connection (queued messages share
them), properties are validated once per distinct header, and the result of routing
settles the publisher confirm. Kept apart from the connection so the hot path reads as
one piece.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartbroker.broker.direct_reply import RAW_MARKER, rewrite_reply_to
from smartbroker.broker.idempotence import producer_headers
from smartbroker.broker.vhost import Published
from smartbroker.errors import (
    ChannelError,
    ConnectionError,
    access_refused,
    frame_error,
    not_found,
    not_implemented,
    precondition_failed,
    unexpected_frame,
)
from smartbroker.message import Message, has_sender_routing
from smartbroker.protocol import codec
from smartbroker.protocol.properties import Malformed
from smartbroker.protocol.properties import validate as validate_properties
from smartbroker.protocol.property_codec import split_properties
from smartbroker.queues.arguments import expiration_error, parse_expiration

if TYPE_CHECKING:
    from smartbroker.broker.channel import Channel
    from smartbroker.server.connection import AMQPConnection

INTERN_LIMIT = 4096  # distinct routes/content headers remembered per connection
DUPLICATE = Published(routed=True, accepted=True, logs=())


class Publisher:
    def __init__(self, conn: AMQPConnection) -> None:
        self.conn = conn
        self._write_ok: str | None = None  # last exchange we may publish to (fast path)
        self._routes: dict[bytes, tuple[str, str, bytes]] = {}  # interned publish routing
        self._headers: dict[bytes, tuple[bytes, int]] = {}  # interned headers and their flags

    def publish_method(self, ch: Channel, payload: bytes) -> None:
        conn = self.conn
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
        if not conn.has_published:
            conn.has_published = True
            if conn.broker.alarms:
                conn.block("low on " + "/".join(sorted(conn.broker.alarms)))

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
        conn = self.conn
        route, mandatory = ch.pending  # type: ignore[misc]
        ch.pending = None
        msg = Message.routed(route, header, body, flags)
        try:
            if flags & codec.FLAG_REPLY_TO_PSEUDO:  # direct reply-to
                msg = rewrite_reply_to(ch, msg)
            self.check_publish(msg)
            ch.publish(msg, mandatory)
        except ChannelError as err:
            conn.channel_failed(ch, err.at(60, 40))

    def check_publish(self, msg: Message) -> None:
        conn = self.conn
        if msg.exchange != self._write_ok or conn.access.version != conn.broker.permissions.version:
            conn.check("write", "exchange", msg.exchange)
            self._write_ok = msg.exchange
        ex = conn.vhost.exchanges.get(msg.exchange)
        if ex is None:
            raise not_found(f"no exchange '{msg.exchange}' in vhost '{conn.vhost.name}'")
        if ex.internal:
            raise access_refused(f"cannot publish to internal exchange '{msg.exchange}' in vhost "
                                 f"'{conn.vhost.name}'")
        if conn.broker.permissions.topic:
            conn.access.check_topic("write", ex, msg.routing_key)
        if msg.flags & codec.FLAG_EXPIRATION:
            expiration = msg.properties.expiration or ""
            if parse_expiration(expiration) is None:  # RabbitMQ's parse, limits and texts
                raise precondition_failed(expiration_error(expiration) or "invalid expiration")
        if msg.flags & codec.FLAG_HEADERS and has_sender_routing(msg.header_payload, loose=True):
            headers = msg.properties.headers or {}
            for name in ("CC", "BCC"):
                if name in headers and not isinstance(headers[name], list):
                    kind = "longstr" if isinstance(headers[name], str | bytes) else type(headers[name]).__name__
                    raise precondition_failed(
                        f'invalid message: {{unacceptable_type_in_header,"{name}",{kind}}}')
        if msg.flags & codec.FLAG_USER_ID:
            user_id = msg.properties.user_id
            if user_id != conn.user.name:
                raise precondition_failed(f"user_id property set to '{user_id}' but authenticated "
                                          f"user was '{conn.user.name}'")

    def route_publish(self, ch: Channel, msg: Message, mandatory: bool) -> Published:
        """Route one complete message, deliver it, and settle its confirm (if any)."""
        conn = self.conn
        if msg.flags & codec.FLAG_HEADERS and (ids := producer_headers(msg)) is not None:
            result = self._idempotent_publish(msg, *ids)
        else:
            result = conn.vhost.publish(msg)
        if not result.routed and mandatory:
            conn.write(codec.return_frame(ch.number, 312, "NO_ROUTE", msg.exchange_rk_ss))
            conn.write_many(codec.content_frames(ch.number, msg.header_payload, msg.body, conn.frame_max))
        if ch.confirm:
            stored = result.stored
            ch.confirm_settled(ch.publish_seq, result.accepted, stored)
            if stored:
                conn.vhost.store.request_sync(ch, result.logs)
        return result

    def _idempotent_publish(self, msg: Message, pid: str, seq: int) -> Published:
        conn = self.conn
        producers = conn.broker.producers
        vhost = conn.vhost.name
        if producers.is_duplicate(vhost, pid, seq):
            return DUPLICATE  # a producer's retry: dropped, confirmed as a success
        result = conn.vhost.publish(msg)
        if not result.accepted:
            return result  # nacked: the sequence stays unused, so the retry is accepted
        producers.accepted(vhost, pid, seq)
        if conn.vhost.store is None:
            return result
        return Published(result.routed, result.accepted, (*result.logs, producers.log))
