"""A consumer as the queue sees it: credit checks and delivery onto the channel's socket."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartbroker.protocol import codec
from smartbroker.queues.base import QueueEntry

if TYPE_CHECKING:
    from smartbroker.broker.channel import Channel
    from smartbroker.queues.base import Queue


class ChannelConsumer:
    __slots__ = ("channel", "queue", "tag", "tag_ss", "no_ack", "exclusive", "priority",
                 "prefetch", "unacked", "arguments")

    def __init__(self, channel: Channel, queue: Queue, tag: str, *, no_ack: bool,
                 exclusive: bool, prefetch: int, priority: int = 0,
                 arguments: dict | None = None) -> None:
        self.channel = channel
        self.queue = queue
        self.tag = tag
        self.tag_ss = codec.shortstr(tag)
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.priority = priority
        self.prefetch = prefetch
        self.unacked = 0
        self.arguments = arguments or {}

    def can_take(self) -> bool:
        ch = self.channel
        if not ch.deliverable:
            return False
        if self.no_ack:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        return not ch.global_prefetch or ch.unacked_total < ch.global_prefetch

    def deliver(self, queue: Queue, entry: QueueEntry) -> None:
        self.channel.deliver(self, queue, entry)

    def cancelled_by_broker(self) -> None:
        self.channel.consumer_cancelled_by_broker(self)
