"""Publishing and getting through the API, on the same code paths as AMQP.

``route`` mirrors what ``AMQPConnection.route_publish`` does for a channel (default
exchange shortcut, else ``vhost.route``, then ``queue.publish``) without a channel. If the
core grows a ``VirtualHost.publish(message)`` it is used instead, so there is one routing
entry point. ``get`` takes entries with ``queue.get`` and settles them with the queue's own
ack/reject/requeue, exactly as a channel's basic.get + ack/nack would.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Literal

from smartbroker.errors import access_refused, not_found
from smartbroker.management.formatting import properties_json
from smartbroker.message import Message, has_sender_routing, with_sender_routing
from smartbroker.protocol import codec

if TYPE_CHECKING:
    from smartbroker.broker.vhost import VirtualHost
    from smartbroker.queues.base import QueueEntry

AckMode = Literal["ack_requeue_true", "ack_requeue_false", "reject_requeue_true",
                  "reject_requeue_false"]


def route(vhost: VirtualHost, msg: Message) -> bool:
    """Route ``msg`` into its queues; True if at least one queue took it.

    Same steps as ``AMQPConnection.route_publish`` (minus mandatory returns and confirms,
    which belong to a channel): sender-selected CC/BCC keys, the default-exchange
    shortcut, ``vhost.route`` and ``queue.publish``.
    """
    publish = getattr(vhost, "publish", None)
    if callable(publish):  # a core entry point, when there is one
        return bool(publish(msg))
    ex = vhost.exchanges.get(msg.exchange)
    if ex is None:
        raise not_found(f"no exchange '{msg.exchange}' in vhost '{vhost.name}'")
    if ex.internal:
        raise access_refused(f"cannot publish to internal exchange '{msg.exchange}' in vhost "
                             f"'{vhost.name}'")
    keys = [msg.routing_key]
    if msg.flags & codec.FLAG_HEADERS and has_sender_routing(msg.header_payload):
        msg, keys = with_sender_routing(msg)
    if ex.name == "" and len(keys) == 1:
        q = vhost.queues.get(msg.routing_key)
        queues = {q} if q is not None else set()
    else:
        queues = vhost.route(ex, msg, keys)
    routed = False
    for q in queues:
        if q.publish(msg):
            routed = True
    return routed


def get(vhost: VirtualHost, queue_name: str, count: int, ackmode: AckMode, encoding: str,
        truncate: int | None) -> list[dict[str, Any]]:
    q = vhost.queues.get(queue_name)
    if q is None:
        raise not_found(f"no queue '{queue_name}' in vhost '{vhost.name}'")
    taken: list[tuple[QueueEntry, dict[str, Any]]] = []
    for _ in range(max(count, 0)):
        entry = q.get()
        if entry is None:
            break
        taken.append((entry, message_json(entry, q.message_count, encoding, truncate)))
    entries = [entry for entry, _ in taken]
    if ackmode in ("ack_requeue_true", "reject_requeue_true"):
        if entries:
            q.requeue(entries)
    elif ackmode == "ack_requeue_false":
        for entry in entries:
            q.ack(entry)
    else:
        for entry in entries:
            q.reject(entry)
    return [doc for _, doc in taken]


def message_json(entry: QueueEntry, remaining: int, encoding: str,
                 truncate: int | None) -> dict[str, Any]:
    msg = entry.message
    body = msg.body
    payload_bytes = len(body)
    if truncate is not None and truncate >= 0:
        body = body[:truncate]
    payload_encoding = "base64"
    payload = None
    if encoding == "auto":
        try:
            payload = body.decode()
            payload_encoding = "string"
        except UnicodeDecodeError:
            payload = None
    if payload is None:
        payload = base64.b64encode(body).decode()
    return {
        "payload_bytes": payload_bytes,
        "redelivered": entry.redelivered,
        "exchange": msg.exchange,
        "routing_key": msg.routing_key,
        "message_count": remaining,
        "properties": properties_json(msg.properties),
        "payload": payload,
        "payload_encoding": payload_encoding,
    }
