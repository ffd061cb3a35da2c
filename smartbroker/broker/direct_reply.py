"""RabbitMQ's direct reply-to: RPC replies straight to a channel, no reply queue.

A client consumes from the pseudo-queue ``amq.rabbitmq.reply-to`` (no_ack only) and
publishes requests with ``reply_to: amq.rabbitmq.reply-to``; the broker rewrites that to
``amq.rabbitmq.reply-to.<token>``, and a reply published to the default exchange with that
routing key is delivered to the consumer directly (dropped if it is gone).
"""

from __future__ import annotations

import base64
import copy
import os
from typing import TYPE_CHECKING, Any, ClassVar

from smartbroker.errors import precondition_failed
from smartbroker.message import Message
from smartbroker.queues.base import QueueEntry
from smartbroker.queues.capabilities import Capabilities

if TYPE_CHECKING:
    from smartbroker.broker.channel import Channel

PSEUDO_QUEUE = "amq.rabbitmq.reply-to"
PREFIX = PSEUDO_QUEUE + "."
RAW_MARKER = b"\x15" + PSEUDO_QUEUE.encode()  # the reply-to short string, in header bytes


class ReplyTo:
    """A channel's reply consumer, standing where a queue would (for the channel)."""

    capabilities: ClassVar[Capabilities] = Capabilities(arguments=frozenset())
    type_name: ClassVar[str] = "direct-reply-to"

    def __init__(self, channel: Channel, registry: dict[str, ReplyTo]) -> None:
        self.channel = channel
        self.registry = registry
        # a cluster's registry adds ".<node>": a reply published on any node finds it
        self.token = base64.urlsafe_b64encode(os.urandom(18)).decode() + \
            getattr(registry, "suffix", "")
        self.name = PREFIX + self.token
        self.consumers: list[Any] = []
        registry[self.token] = self

    def deliver(self, message: Message) -> None:
        for consumer in self.consumers:
            entry = QueueEntry(message)
            entry.delivery_count = 1
            consumer.deliver(self, entry)

    def delivery_message(self, entry: QueueEntry, on_get: bool = False) -> Message:
        return entry.message

    def add_consumer(self, consumer: Any) -> None:
        self.consumers.append(consumer)

    def remove_consumer(self, consumer: Any) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        if not self.consumers:
            self.registry.pop(self.token, None)
            if self.channel.reply_to is self:
                self.channel.reply_to = None

    def dispatch(self) -> None:
        return None


def rewrite_reply_to(channel: Channel, message: Message) -> Message:
    """A request asking for a direct reply: point ``reply_to`` at this channel."""
    if message.properties.reply_to != PSEUDO_QUEUE:
        return message
    reply = channel.reply_to
    if reply is None:
        raise precondition_failed("fast reply consumer does not exist")
    props = copy.copy(message.properties)
    props.reply_to = reply.name
    return message.with_properties(props)
