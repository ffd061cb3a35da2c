"""The publish session of one connection: checks, routing, mandatory returns, confirms.

A front end assembles ``basic.publish`` + content header + body into one complete message
and calls ``Channel.publish``; the channel runs ``PublishSession.check`` then, unless a
transaction holds the publish, ``PublishSession.route``. Everything RabbitMQ decides about a
publish happens here, in broker/, so no publish crosses back into the server:

- permissions: write on the exchange (the last allowed exchange is cached until any
  permission changes), topic permissions, internal exchanges;
- properties RabbitMQ refuses: expiration, non-array CC/BCC, a foreign user_id;
- routing through the vhost, ``basic.return`` for an unroutable mandatory message,
  publisher confirms (ack, nack, or ack after fsync), idempotent producers;
- resource alarms: a connection is blocked on its first publish while an alarm is on.

Per-connection state (the write cache, the ``Access`` cache) lives here; per-channel state
(confirm sequence numbers, the transaction) stays on the channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartbroker.broker.access import Access
from smartbroker.broker.idempotence import producer_headers
from smartbroker.broker.vhost import Published
from smartbroker.errors import access_refused, not_found, precondition_failed
from smartbroker.message import Message, has_sender_routing
from smartbroker.protocol import codec
from smartbroker.queues.arguments import expiration_error, parse_expiration

if TYPE_CHECKING:
    from smartbroker.broker.channel import Channel
    from smartbroker.broker.core import Broker
    from smartbroker.broker.durable import MessageStore
    from smartbroker.broker.outbox import ClientConnection
    from smartbroker.broker.vhost import VirtualHost

DUPLICATE = Published(routed=True, accepted=True, logs=())  # a producer's retry: confirmed


class PublishSession:
    """One connection's publishes (shared by its channels)."""

    __slots__ = ("broker", "conn", "access", "_write_ok")

    def __init__(self, broker: Broker, conn: ClientConnection, access: Access | None = None) -> None:
        self.broker = broker
        self.conn = conn
        self.access = access if access is not None else Access(broker.permissions, conn)
        self._write_ok: str | None = None  # last exchange we may publish to (fast path)

    @property
    def store(self) -> MessageStore | None:
        return self.conn.vhost.store  # the vhost is set at connection.open, after __init__

    def first_publish(self) -> None:
        """From its first publish on, a connection is blocked while a resource alarm is on
        (RabbitMQ blocks publishers, not consumers)."""
        conn = self.conn
        conn.has_published = True
        alarms = self.broker.alarms
        if alarms:
            conn.block("low on " + "/".join(sorted(alarms)))

    def check(self, msg: Message) -> None:
        """Everything that refuses a publish (a ChannelError, RabbitMQ's code and text);
        the front end adds class/method 60/40 and closes the channel."""
        conn = self.conn
        access = self.access
        exchange = msg.route[0]  # not msg.exchange: a property call less per publish
        if exchange != self._write_ok or access.version != access.permissions.version:
            access.check("write", "exchange", exchange)
            self._write_ok = exchange
        vhost = conn.vhost
        ex = vhost.exchanges.get(exchange)
        if ex is None:
            raise not_found(f"no exchange '{exchange}' in vhost '{vhost.name}'")
        if ex.internal:
            raise access_refused(f"cannot publish to internal exchange '{exchange}' in vhost "
                                 f"'{vhost.name}'")
        if access.permissions.topic:
            access.check_topic("write", ex, msg.routing_key)
        flags = msg.flags
        if flags & codec.FLAG_EXPIRATION:
            expiration = msg.properties.expiration or ""
            if parse_expiration(expiration) is None:  # RabbitMQ's parse, limits and texts
                raise precondition_failed(expiration_error(expiration) or "invalid expiration")
        if flags & codec.FLAG_HEADERS and has_sender_routing(msg.header_payload, loose=True):
            headers = msg.properties.headers or {}
            for name in ("CC", "BCC"):
                if name in headers and not isinstance(headers[name], list):
                    kind = "longstr" if isinstance(headers[name], str | bytes) else type(headers[name]).__name__
                    raise precondition_failed(
                        f'invalid message: {{unacceptable_type_in_header,"{name}",{kind}}}')
        if flags & codec.FLAG_USER_ID:
            user_id = msg.properties.user_id
            if user_id != conn.user.name:
                raise precondition_failed(f"user_id property set to '{user_id}' but authenticated "
                                          f"user was '{conn.user.name}'")

    def route(self, ch: Channel, msg: Message, mandatory: bool) -> Published:
        """Route one checked message, return it if unroutable and mandatory, and settle its
        confirm (if the channel is in confirm mode)."""
        vhost = self.conn.vhost
        if msg.flags & codec.FLAG_HEADERS and (ids := producer_headers(msg)) is not None:
            result = self._idempotent(vhost, msg, *ids)
        else:
            result = vhost.publish(msg)
        if not result.routed and mandatory:
            out = ch.conn
            out.write(codec.return_frame(ch.number, 312, "NO_ROUTE", msg.exchange_rk_ss))
            out.write_many(codec.content_frames(ch.number, msg.header_payload, msg.body, out.frame_max))
        if ch.confirm:
            stored = result.stored
            ch.confirm_settled(ch.publish_seq, result.accepted, stored)
            if stored:
                vhost.store.request_sync(ch, result.logs)  # type: ignore[union-attr]
        return result

    def _idempotent(self, vhost: VirtualHost, msg: Message, pid: str, seq: int) -> Published:
        """A producer id + sequence header: drop retries of what was already accepted."""
        producers = self.broker.producers  # the durable one when the broker persists
        if producers.is_duplicate(vhost.name, pid, seq):
            return DUPLICATE  # a producer's retry: dropped, confirmed as a success
        result = vhost.publish(msg)
        if not result.accepted:
            return result  # nacked: the sequence stays unused, so the retry is accepted
        producers.accepted(vhost.name, pid, seq)
        if vhost.store is None:
            return result
        return Published(result.routed, result.accepted, (*result.logs, producers.log))
