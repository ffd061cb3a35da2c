"""A stream whose partitions are spread over the nodes, as AMQP clients use it on any node.

The placement of a stream with several partitions names a leader node per partition
(``placement.spread``). Every node then holds the stream itself (``StreamQueue``, the same
partitions, its files in its own data directory), but a partition's records are only ever
appended on the node the placement names for it: elsewhere that partition's log stays
empty. So a partition's offsets, Kafka batches and AMQP records are one log on one node,
exactly as on a single node, and a node that is down takes only its partitions away.

``PartitionSpread`` is attached to such a stream on every node (``attach``): it replaces
the stream's publish and consumer entry points on that one object (instance attributes),
so streams that are not spread, and a single node, run the unchanged ``StreamQueue`` code:

* **publish**: the partition of the message is chosen as the stream chooses it (the key's
  murmur2, as Kafka clients do); on its node the stream appends it, else it is forwarded
  to that node (a ``RemoteQueue``'s forwarder: batched on the link, the publisher confirm
  waits for that node's fsync), where the same choice lands it locally.
* **consumers**: a consumer reads this node's partitions from the local stream, and every
  other node holding partitions it reads (all of them, or the one ``x-stream-partition``
  names) relays its own through a ``PartitionRelay``: a consumer of the same channel and
  tag subscribed on that node (``remote_consumer``), with the same arguments. Each node
  reads only its partitions (the others are empty there), so records, offsets and
  ``x-stream-offset`` are those of one node; a consumer group (``x-consumer-group``)
  assigns each node's partitions among the group's consumers there, and its committed
  offsets live with the partitions. A consumer another node relays (a ``RelayConsumer``
  here) reads this node's partitions only. Its consume-ok waits until every relay has
  subscribed (``consume_later``), and its prefetch is shared by its local reader and its
  relays (``spread_credit``): N unacked at most, over every node, as on one node.
* **before the placement**: a stream of several partitions known from its definition
  alone holds its publishes until the placement says where they go (``spread_pending``).
* **a node that is down**: a publish keyed to one of its partitions is dropped, a
  consume that needs it is refused with RabbitMQ's 404 for a down home node, and
  consumers reading it are cancelled (``basic.cancel``) when it goes, as for the queues
  of a down node. Its partitions come back with it (their files are its own).
"""

from __future__ import annotations

import asyncio
import dataclasses
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pamqp import commands

from smartbroker.broker.consumer import ChannelConsumer
from smartbroker.cluster import forwarding_wire as wire
from smartbroker.cluster import spread_pending
from smartbroker.cluster.forwarding_wire import Op
from smartbroker.cluster.remote_queue import RemoteQueue
from smartbroker.cluster.spread_carry_on import CarryOn, resume_arguments
from smartbroker.cluster.spread_credit import share, unshare
from smartbroker.cluster.spread_relay import PartitionRelay
from smartbroker.queues.base import REFUSED, PublishResult
from smartbroker.queues.groups import GroupError
from smartbroker.queues.stream import StreamQueue
from smartbroker.queues.stream_records import PARTITION_OF

if TYPE_CHECKING:
    from smartbroker.cluster.forwarding_node import QueueForwarding
    from smartbroker.cluster.placement import Placement
    from smartbroker.message import Message
    from smartbroker.queues.base import Consumer

_REMOTE_CAPABILITIES = dataclasses.replace(StreamQueue.capabilities, offset_log=False,
                                           supports_browse=False)
_SPREADS: weakref.WeakSet[PartitionSpread] = weakref.WeakSet()  # every node's, this process


def spread(placement: Placement | None) -> bool:
    """Whether ``placement`` puts a stream's partitions on more than one node, or copies
    them to several (``spread_replicas``): then every node holds the stream, each
    appending to the partitions it leads only."""
    return placement is not None and (len(set(placement.partitions)) > 1
                                      or any(len(m) > 1 for m in placement.partition_members))


def owner(placement: Placement, partition: int) -> str:
    """The node leading ``partition``; one added after the placement (CreatePartitions on
    the leader) is the stream leader's."""
    parts = placement.partitions
    return parts[partition] if 0 <= partition < len(parts) else placement.leader


class RemotePartition:
    """Another node's partition as the group views read it (``queues/groups.py``)."""

    __slots__ = ("index", "first_offset", "next_offset")

    def __init__(self, index: int, first_offset: int, next_offset: int) -> None:
        self.index = index
        self.first_offset = first_offset
        self.next_offset = next_offset

    def offset_for_timestamp(self, timestamp_ms: int) -> int:
        raise GroupError(f"partition {self.index} is led by another node: resetting it to "
                         "a time is not supported yet (reset it with a Kafka client)")


class PartitionSpread:
    """The publish and consumer entry points of one node's copy of a spread stream."""

    def __init__(self, stream: StreamQueue, forwarding: QueueForwarding,
                 placement: Placement) -> None:
        self.stream = stream
        self.forwarding = forwarding
        self.node = forwarding.node
        self.placement = placement
        self.remotes: dict[str, RemoteQueue] = {}
        self.relays: dict[Any, list[PartitionRelay]] = {}
        self._subscribed: dict[Any, list[PartitionRelay]] = {}  # consume-ok sent, not yet added
        self._partition_of = PARTITION_OF[stream.partitioner]
        self.replicated = any(len(m) > 1 for m in placement.partition_members)
        self.carry = CarryOn(self) if self.replicated else None
        # the other nodes' partitions' (first, next) offsets, as they last told them
        # (``partition_bounds``: the group views of the stream leader read them)
        self.bounds: dict[int, tuple[int, int]] = {}

    @property
    def leader(self) -> str:
        return self.placement.leader

    def owners(self) -> set[str]:
        """Every node whose partitions hold records."""
        nodes = set(self.placement.partitions)
        if len(self.stream.logs) > len(self.placement.partitions):
            nodes.add(self.placement.leader)
        return nodes

    def remote(self, node: str) -> RemoteQueue:
        """The stream as another node holds it: publishes forwarded to it, consumers
        subscribed on it (its partitions only)."""
        found = self.remotes.get(node)
        if found is None:
            s = self.stream
            found = self.remotes[node] = RemoteQueue(
                s.name, s.vhost, node, self.forwarding, durable=True, arguments=s.arguments,
                capabilities=_REMOTE_CAPABILITIES, type_name="stream")
            # an ack of its delivery gives the channel's credit back to the local readers
            # too (a channel prefetch is shared): the channel dispatches the acked queue
            found.dispatch = s.dispatch  # type: ignore[method-assign]
            found.wake = self._wake_relay  # type: ignore[method-assign]
        return found

    def learn(self, node: str, bounds: list[Any]) -> None:
        """``node``'s copy's bounds, one ``[first, next]`` per partition: kept for the
        partitions it leads."""
        for index, pair in enumerate(bounds):
            if owner(self.placement, index) == node and node != self.node:
                try:
                    self.bounds[index] = (int(pair[0]), int(pair[1]))
                except (IndexError, TypeError, ValueError):
                    continue

    def group_views(self) -> list[Any]:
        """The partitions as this copy's consumer groups read their bounds: this node's
        logs, and the others' bounds as last told (``queues/groups.py`` asks for them)."""
        views: list[Any] = []
        for index, lg in enumerate(self.stream.logs):
            if owner(self.placement, index) == self.node:
                views.append(lg)
            else:
                views.append(RemotePartition(index, *self.bounds.get(index, (0, 0))))
        return views

    def describe(self, partitions: list[dict[str, Any]]) -> None:
        """The management API's partitions of this copy (``partition_json``): each gets
        its ``leader``; one led elsewhere, its offsets as its node last told them (known on
        the stream leader, which asks for them)."""
        for part in partitions:
            index = part.get("partition")
            if not isinstance(index, int):
                continue
            node = part["leader"] = owner(self.placement, index)
            known = self.bounds.get(index) if node != self.node else None
            if known is not None:
                first, end = known
                part.update(first_offset=first, next_offset=end, messages=end - first,
                            last_offset=end - 1 if end > first else None)

    # -- publish -------------------------------------------------------------------------
    def publish(self, message: Message, store_id: int | None = None) -> PublishResult:
        stream = self.stream
        p = self._partition_of(message, len(stream.logs))
        node = owner(self.placement, p)
        if node == self.node:
            if self.replicated and stepped_down(stream, p):
                return REFUSED  # see ``stepped_down``
            return StreamQueue.publish(stream, message, store_id)
        if self.replicated and self.forwarding.forwarder(node) is None:
            return REFUSED  # its leader is down: nacked (sent again once one is elected)
        return self.remote(node).publish(message)  # dropped while its node is down

    # -- consumers -----------------------------------------------------------------------
    def needed(self, arguments: Mapping[str, Any]) -> set[str]:
        """The other nodes a consumer with ``arguments`` reads from."""
        only = arguments.get("x-stream-partition")
        nodes = {owner(self.placement, only)} if isinstance(only, int) else self.owners()
        nodes.discard(self.node)
        return nodes

    def validate_consumer(self, arguments: Mapping[str, Any], no_ack: bool,
                          prefetch: int) -> None:
        StreamQueue.validate_consumer(self.stream, arguments, no_ack, prefetch)
        for node in sorted(self.needed(arguments)):
            self.remote(node).check_available()  # 404: home node down

    def _relays(self, consumer: ChannelConsumer,
                positions: dict[int, int] | None = None) -> list[PartitionRelay]:
        """Its relays, one per other node it reads, sharing its prefetch; ``positions``:
        where a consumer carrying on got to (``spread_carry_on``)."""
        relays = [PartitionRelay(consumer, self.remote(node), self, resume_arguments(
                      consumer.arguments, positions, self.led_by(node)) if positions else None)
                  for node in sorted(self.needed(consumer.arguments))]
        if relays:
            found = share(consumer, self.forwarding.subscriptions, self.stream.dispatch)
            if found is not None:
                found.set_relays(relays)
                for relay in relays:
                    relay.share = found
        return relays

    relays_for = _relays

    def led_by(self, node: str) -> set[int]:
        return {i for i in range(len(self.stream.logs)) if owner(self.placement, i) == node}

    def consume_later(self, conn: Any, ch: Any, consumer: Any, nowait: bool) -> None:
        """basic.consume: consume-ok once every other node it reads has subscribed its
        relay (the connection reads nothing meanwhile, ``QueueForwarding.spawn``), so a
        reader attached at ``next`` gets what any node appends after its consume-ok;
        what a relay delivers before that waits for it (``Subscription.early``)."""
        if not isinstance(consumer, ChannelConsumer) or not self.needed(consumer.arguments):
            if not nowait:
                conn.send_method(ch.number, commands.Basic.ConsumeOk(consumer_tag=consumer.tag))
            ch.add_consumer(consumer)
            return
        for node in sorted(self.needed(consumer.arguments)):
            self.remote(node).check_available()
        subscriptions = self.forwarding.subscriptions
        relays = self._relays(consumer)
        opened = []
        for relay in relays:
            sub, payload = subscriptions.open(relay.queue, relay)
            sub.early = []
            opened.append((relay, sub, payload))

        def abandon() -> None:
            unshare(consumer)
            for relay, sub, _ in opened:
                subscriptions.drop(sub)
                self.forwarding.send_op(relay.queue.leader, Op.CANCEL, sub.sub, 0, 1)

        async def consume() -> None:
            answers = await asyncio.gather(
                *(relay.queue._call_raw(wire.CONSUME, payload) for relay, _, payload in opened),
                return_exceptions=True)
            failed = next((a for a in answers if isinstance(a, BaseException)), None)
            if failed is not None or ch.closing or ch.torn_down:
                abandon()
                if failed is not None:
                    raise failed
                return
            if not nowait:
                conn.send_method(ch.number, commands.Basic.ConsumeOk(consumer_tag=consumer.tag))
            self._subscribed[consumer] = relays
            ch.add_consumer(consumer)
            for _, sub, _ in opened:
                subscriptions.started(sub)

        self.forwarding.spawn(consume(), conn, ch, (60, 20))

    def add_consumer(self, consumer: Consumer) -> None:
        relays = self._subscribed.pop(consumer, None)
        if relays is None and isinstance(consumer, ChannelConsumer):
            relays = self._relays(consumer)  # added without consume_later: subscribed here
        StreamQueue.add_consumer(self.stream, consumer)  # this node's partitions
        if not relays:
            return  # relayed from another node: that node asks each owner itself
        self.relays[consumer] = relays
        for relay in relays:
            relay.queue.add_consumer(relay)  # subscribed there (unless already); a refusal cancels it

    def remove_consumer(self, consumer: Consumer) -> None:
        StreamQueue.remove_consumer(self.stream, consumer)
        if self.carry is not None:
            self.carry.forget(consumer)
        for relay in self.relays.pop(consumer, ()):
            relay.queue.remove_consumer(relay)
        unshare(consumer)

    def _wake_relay(self, relay: Consumer) -> None:
        """The channel gives a relay credit back (its delivery was acked): when the
        consumer's prefetch is shared, each of its sources in turn may take it."""
        found = getattr(relay, "share", None)
        if found is not None:
            found.wake()
        else:
            self.forwarding.subscriptions.wake(relay)

    def wake(self, consumer: Consumer) -> None:
        """The channel gives ``consumer`` credit back: its parked relays ask for it (the
        local stream never parks a reader)."""
        relays = self.relays.get(consumer)
        found = relays[0].share if relays else None
        if found is not None:
            found.wake()
            return
        consumer.parked = False
        for relay in self.relays.get(consumer, ()):
            if relay.parked:
                relay.queue.wake(relay)
        self.stream.dispatch()  # and its local reader (once per loop pass)

    def lost(self, consumer: Consumer) -> None:
        """A node this consumer reads from went down (or refused it): cancelled, unless
        the stream is replicated (the consumer carries on at the next leader)."""
        if self.carry is not None and self.carry.keep(consumer):
            return
        if consumer in self.relays:
            self.remove_consumer(consumer)
            consumer.cancelled_by_broker()


def stepped_down(stream: StreamQueue, p: int) -> bool:
    """Whether this node's copy of replicated partition ``p`` led and no longer does
    while the placement here still names this node (a leader cut off from etcd, or
    paused past its lease, does not hear the election elsewhere). A publish is then
    nacked at once: appended, it would sit in a copy only the new leader's frames may
    fill, its confirm waiting for an election this node cannot win. A copy that has
    not had a role yet (just opened) takes publishes: they wait for its election."""
    copies = getattr(getattr(stream, "replication", None), "copies", None)
    copy = copies.get(p) if copies else None
    return copy is not None and copy.settled and not copy.leading


def attach(forwarding: QueueForwarding, q: Any) -> Any:
    """Give this node's stream ``q`` the entry points of its spread placement (when it has
    one); returns ``q``. Idempotent: a placement seen again only updates it. A stream of
    several partitions without a placement yet holds its publishes until it has one
    (``spread_pending``); then they go to this name's object, ``q``."""
    if not getattr(getattr(q, "capabilities", None), "offset_log", False) \
            or isinstance(q, RemoteQueue) or not isinstance(q, StreamQueue):
        spread_pending.release(forwarding, q)
        return q
    placement = forwarding.placement.get(q.vhost, q.name)
    if placement is None:
        spread_pending.hold(forwarding, q)
        return q
    if spread(placement):
        _spread(forwarding, q, placement)
    spread_pending.release(forwarding, q)
    return q


def _spread(forwarding: QueueForwarding, q: StreamQueue, placement: Placement) -> None:
    current = q.__dict__.get("spread")
    if isinstance(current, PartitionSpread):
        current.placement = placement
        current.replicated = any(len(m) > 1 for m in placement.partition_members)
        if current.replicated and current.carry is None:  # its first replicas added
            current.carry = CarryOn(current)
        if current.carry is not None:
            current.carry.rejoin()  # consumers waiting for a new leader
        return
    router = PartitionSpread(q, forwarding, placement)
    # instance attributes: only this object takes the spread paths, every other stream
    # keeps the class's methods (nothing added to the hot paths of the others)
    q.spread = router
    q.publish = router.publish
    q.validate_consumer = router.validate_consumer
    q.add_consumer = router.add_consumer
    q.consume_later = router.consume_later
    q.remove_consumer = router.remove_consumer
    q.wake = router.wake
    q.group_views = router.group_views
    _SPREADS.add(router)


def led_by(forwarding: QueueForwarding) -> Iterator[PartitionSpread]:
    """The spread streams whose stream leader is ``forwarding``'s node."""
    for found in list(_SPREADS):
        if found.forwarding is forwarding and found.leader == forwarding.node \
                and not found.stream.deleted and not found.stream.closed:
            yield found


def spread_of(q: Any) -> PartitionSpread | None:
    """The spread of a stream on this node, None when it is not spread."""
    found = getattr(q, "__dict__", {}).get("spread")
    return found if isinstance(found, PartitionSpread) else None


__all__ = ["PartitionRelay", "PartitionSpread", "RemotePartition", "attach", "led_by", "owner",
           "spread", "spread_of", "stepped_down"]
