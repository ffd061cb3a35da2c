"""One node's share of a client's consumer of a spread stream (``partition_spread``).

Why a consumer of its own: the other node's partitions reach the client through that
node, as a remote queue's deliveries do (``remote_consumer``), so the relay is a consumer
on the client's channel (same tag, arguments), subscribed there; its credit is the
consumer's prefetch shared with the consumer's other sources (``spread_credit``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smartbroker.broker.consumer import ChannelConsumer

if TYPE_CHECKING:
    from smartbroker.cluster.partition_spread import PartitionSpread
    from smartbroker.cluster.remote_queue import RemoteQueue
    from smartbroker.cluster.spread_credit import CreditShare

_PARKED = ChannelConsumer.__dict__["parked"]  # the slot a relay's ``parked`` keeps


class PartitionRelay(ChannelConsumer):
    """One node's share of a client's consumer: the same channel, tag, prefetch and
    arguments, subscribed on that node (``queue`` is a ``RemoteQueue`` to it), so its
    deliveries, acks and credit go through the channel as any remote queue's do.

    A relay left without credit is parked, and so is its origin: the channel wakes the
    consumers it holds (an ack, qos, flow, writability), and the stream's ``wake`` wakes
    the origin's parked relays (``PartitionSpread.wake``)."""

    __slots__ = ("origin", "spread", "share", "delivered")

    @property  # type: ignore[override]
    def parked(self) -> bool:
        return bool(_PARKED.__get__(self))

    @parked.setter
    def parked(self, value: bool) -> None:
        _PARKED.__set__(self, value)
        origin = getattr(self, "origin", None)  # unset while ChannelConsumer initialises
        if value and origin is not None:
            origin.parked = True

    def __init__(self, origin: Any, queue: RemoteQueue, owner: PartitionSpread,
                 arguments: Any = None) -> None:
        super().__init__(origin.channel, queue, origin.tag, no_ack=origin.no_ack,
                         exclusive=origin.exclusive, prefetch=origin.prefetch,
                         priority=origin.priority,
                         arguments=origin.arguments if arguments is None else arguments)
        self.origin = origin
        self.spread = owner
        self.share: CreditShare | None = None
        self.delivered = 0  # a grant its node sits on is asked back (``spread_credit``)

    def deliver(self, queue: Any, entry: Any) -> None:
        self.delivered += 1
        carry = self.spread.carry  # a replicated stream: where the consumer got to
        if carry is not None:
            carry.delivered(self.origin, entry.message.header_payload)
        self.channel.deliver(self, queue, entry)

    def credit_left(self) -> int:
        """What its node may have been granted in all: within the consumer's prefetch
        with its other sources (``spread_credit``), not a prefetch of its own."""
        n = ChannelConsumer.credit_left(self)
        share = self.share
        return n if share is None else min(n, share.relay_allowance(self))

    def can_take(self) -> bool:
        return self.credit_left() > 0

    def drained(self) -> None:
        """Its node gave unused credit back: the consumer's other sources take it first
        (this relay asks again at the next wake)."""
        share = self.share
        if share is not None:
            share.wake()
            self.parked = True

    def cancelled_by_broker(self) -> None:
        """Its node is down or refused: the client's consumer is cancelled as a whole, as
        a consumer of a down node's queue is."""
        self.spread.lost(self.origin)


__all__ = ["PartitionRelay"]
