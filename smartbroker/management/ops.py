"""Publishing and getting through the API, on the same code paths as AMQP.

``route`` goes through ``VirtualHost.publish`` like an AMQP publish (CC/BCC, alternate
exchanges, persistence). ``get`` takes entries with ``queue.get`` and settles them with ``queue.settle``, routing
the dead-letters it returns through the vhost, exactly as a channel's basic.get + ack/nack would.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Literal

from smartbroker.errors import access_refused, not_found
from smartbroker.management.formatting import properties_json
from smartbroker.message import Message
from smartbroker.queues.base import Settle

if TYPE_CHECKING:
    from smartbroker.broker.vhost import VirtualHost
    from smartbroker.queues.base import QueueEntry

AckMode = Literal["ack_requeue_true", "ack_requeue_false", "reject_requeue_true",
                  "reject_requeue_false"]


def route(vhost: VirtualHost, msg: Message) -> bool:
    """Route ``msg`` into its queues through ``VirtualHost.publish`` (the entry point AMQP
    publishes use); True if at least one queue took it. Mandatory returns and confirms
    belong to a channel and have no HTTP counterpart."""
    ex = vhost.exchanges.get(msg.exchange)
    if ex is None:
        raise not_found(f"no exchange '{msg.exchange}' in vhost '{vhost.name}'")
    if ex.internal:
        raise access_refused(f"cannot publish to internal exchange '{msg.exchange}' in vhost "
                             f"'{vhost.name}'")
    return bool(vhost.publish(msg).routed)


def get(vhost: VirtualHost, queue_name: str, count: int, ackmode: AckMode, encoding: str,
        truncate: int | None) -> list[dict[str, Any]]:
    q = vhost.queues.get(queue_name)
    if q is None:
        raise not_found(f"no queue '{queue_name}' in vhost '{vhost.name}'")
    taken: list[tuple[QueueEntry, dict[str, Any]]] = []
    try:
        for _ in range(max(count, 0)):
            entry = q.get()
            if entry is None:
                break
            taken.append((entry, {}))
            taken[-1] = (entry, message_json(entry, q.message_count, encoding, truncate))
    except Exception:
        vhost.perform(q.settle(Settle.REQUEUE, [entry for entry, _ in taken]))  # stays queued
        raise
    return _settled(vhost, q, taken, ackmode)


async def get_remote(vhost: VirtualHost, q: Any, count: int, ackmode: AckMode, encoding: str,
                     truncate: int | None) -> list[dict[str, Any]]:
    """``get`` for a queue another node leads (cluster/remote_queue.py): each message
    comes from its leader, and is settled there as ``ackmode`` says."""
    taken: list[tuple[QueueEntry, dict[str, Any]]] = []
    try:
        for _ in range(max(count, 0)):
            entry = await q.get_remote()
            if entry is None:
                break
            taken.append((entry, message_json(entry, q.message_count, encoding, truncate)))
    except BaseException:
        q.settle(Settle.REQUEUE, [entry for entry, _ in taken])  # stays queued
        raise
    return _settled(vhost, q, taken, ackmode)


def _settled(vhost: VirtualHost, q: Any, taken: list[tuple[QueueEntry, dict[str, Any]]],
             ackmode: AckMode) -> list[dict[str, Any]]:
    """The messages taken, settled as ``ackmode`` says (requeued, acked or discarded)."""
    entries = [entry for entry, _ in taken]
    if ackmode in ("ack_requeue_true", "reject_requeue_true"):
        op = Settle.REQUEUE
    else:
        op = Settle.ACK if ackmode == "ack_requeue_false" else Settle.DISCARD
    if entries:
        vhost.perform(q.settle(op, entries))
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
