"""A consumer as the queue sees it: credit checks and delivery onto the channel's socket.

A classic queue parks a consumer without credit (``parked``); the channel wakes it when
credit may be back, so queues never scan blocked consumers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartbroker.protocol import codec
from smartbroker.queues.base import QueueEntry

if TYPE_CHECKING:
    from smartbroker.broker.channel import Channel
    from smartbroker.queues.base import Queue


class ChannelConsumer:
    __slots__ = ("channel", "queue", "tag", "tag_ss", "no_ack", "exclusive", "priority",
                 "prefetch", "unacked", "arguments", "parked", "shown_prefetch")

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
        self.shown_prefetch = prefetch  # as asked: a quorum queue may raise ``prefetch``
        self.unacked = 0
        self.arguments = arguments or {}
        self.parked = False  # a classic queue left it out of its ring: wake it on credit

    def can_take(self) -> bool:
        ch = self.channel
        if not ch.deliverable:
            return False
        if self.no_ack:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        return not ch.global_prefetch or ch.unacked_total < ch.global_prefetch

    def credit_left(self) -> int:
        """How many deliveries it can take now: ``can_take`` as a count, so a stream
        delivers a run of records without asking before each one."""
        ch = self.channel
        if not ch.deliverable:
            return 0
        if self.no_ack:
            return 1 << 30
        n = self.prefetch - self.unacked if self.prefetch else 1 << 30
        if ch.global_prefetch:
            n = min(n, ch.global_prefetch - ch.unacked_total)
        return max(n, 0)

    def wake(self) -> None:
        """Credit may be back (ack, qos, flow, writable): a parked consumer rejoins its
        queue's round-robin ring; the caller dispatches the queue."""
        if self.parked:
            self.queue.wake(self)  # only classic queues park (Queue.wake)

    def deliver(self, queue: Queue, entry: QueueEntry) -> None:
        self.channel.deliver(self, queue, entry)

    def deliver_run(self, queue: Queue, entries: list) -> None:
        """First deliveries read in a row from a log: see ``Channel.deliver_run``."""
        self.channel.deliver_run(self, queue, entries)

    def cancelled_by_broker(self) -> None:
        self.channel.consumer_cancelled_by_broker(self)
