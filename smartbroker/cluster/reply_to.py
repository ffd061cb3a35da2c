"""Direct reply-to across the nodes, as RabbitMQ's (whose reply-to names the channel's
process, and so its node).

On one node a reply to ``amq.rabbitmq.reply-to.<token>`` finds its channel by token in
``vhost.replies``. In cluster mode that registry is a ``ReplyRegistry``: the tokens it
hands out end with ``.<node name>`` (the random part has no dot), so a reply published on
any node names the node whose channel waits for it. A reply whose token is not here
(``vhost._direct_reply``'s miss) is forwarded to that node on the cluster link like a
publish to one of its queues; the node's intake delivers it with ``deliver_forwarded``.
Only the miss path pays: replies to a channel of the same node are unchanged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from smartbroker.broker.direct_reply import PREFIX
from smartbroker.broker.vhost import ROUTED, UNROUTED, Published
from smartbroker.cluster import forwarding_wire as wire
from smartbroker.message import Message

if TYPE_CHECKING:
    from smartbroker.cluster.forwarding_node import QueueForwarding

log = logging.getLogger("smartbroker.cluster")
PREFIX_BYTES = PREFIX.encode()


class ReplyRegistry(dict[str, Any]):
    """``vhost.replies`` in cluster mode: channels' reply consumers by token, tokens
    carrying this node's name (``suffix``), and ``forward`` for the others' tokens."""

    def __init__(self, forwarding: QueueForwarding, existing: dict[str, Any]) -> None:
        super().__init__(existing)
        self.forwarding = forwarding
        self.suffix = "." + forwarding.node

    def forward(self, vhost: Any, msg: Message) -> Published:
        """A reply to a token not here: on to the node it names (dropped, as on one node,
        when that is this node, or it is down)."""
        node = msg.routing_key[len(PREFIX):].partition(".")[2]
        if not node or node == self.forwarding.node:
            return UNROUTED
        forwarder = self.forwarding.forwarder(node)
        if forwarder is None:
            return UNROUTED
        forwarder.forward(vhost.name, msg.routing_key, msg)
        return ROUTED


def install(forwarding: QueueForwarding, vhost: Any) -> None:
    if not isinstance(vhost.replies, ReplyRegistry):
        vhost.replies = ReplyRegistry(forwarding, vhost.replies)


def is_reply(queue_name: bytes) -> bool:
    """A forwarded publish's queue name that is a direct reply-to address."""
    return queue_name.startswith(PREFIX_BYTES)


def deliver_forwarded(vhost: Any, exchange_rk: bytes, properties: bytes, body: bytes) -> None:
    """A reply another node forwarded to a channel of this one (gone: dropped)."""
    try:
        msg = wire.message(exchange_rk, properties, body)
    except (IndexError, UnicodeDecodeError):
        log.warning("dropped a malformed forwarded direct reply")
        return
    vhost.publish(msg)
