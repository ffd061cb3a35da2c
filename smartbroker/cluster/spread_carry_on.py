"""A consumer of a replicated stream carries on when a partition's leader changes.

On a spread stream a consumer reads its node's partitions locally and the others through
relays (``partition_spread``); when a node it reads from goes down it is cancelled,
since that node's partitions went with it. A replicated stream's partitions come back
on another member within seconds (``docs/replication.md``), so its consumers carry on
instead, as RabbitMQ's do:

* **where it got to.** Each relay's deliveries say their partition and offset (the
  ``x-stream-partition`` and ``x-stream-offset`` entries the stream splices into their
  headers, found without decoding the table); the consumer's position in a partition
  read here is its local cursor.
* **a source lost** (its node went down, or it stopped leading what it relayed): the
  consumer keeps its ``basic.consume``; its relays go, and it waits until every node
  holding partitions it reads is up in the placement, then subscribes new relays whose
  readers start at its positions (``stream_replicated.RESUME``). A partition that moved
  here is read on from its position by the local reader (``reposition``). Its unacked
  deliveries stay the client's to ack. After ``WAIT`` seconds without a leader for what
  it reads it is cancelled, as before.

Only streams with replica sets get a ``CarryOn``; the others keep the spread's rule.
"""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING, Any

from smartbroker.broker.consumer import ChannelConsumer
from smartbroker.cluster.spread_credit import unshare
from smartbroker.queues import stream_replicated

if TYPE_CHECKING:
    from smartbroker.cluster.partition_spread import PartitionSpread

WAIT = 30.0  # seconds a consumer waits for a leader of every partition it reads
RETRY = 0.25  # seconds between looks while one waits
_OFFSET_KEY = b"\x0fx-stream-offsetl"  # shortstr name, type 'l' (stream_records.py)
_PARTITION_KEY = b"\x12x-stream-partitionI"
_offset = struct.Struct("!q")
_partition = struct.Struct("!i")


def delivered_at(header_payload: bytes) -> tuple[int, int] | None:
    """(partition, offset) of a stream delivery's content header, None if not one."""
    at = header_payload.rfind(_OFFSET_KEY)
    if at < 0:
        return None
    at += len(_OFFSET_KEY)
    end = at + _offset.size
    if header_payload[end:end + len(_PARTITION_KEY)] != _PARTITION_KEY:
        return None
    start = end + len(_PARTITION_KEY)
    if len(header_payload) < start + _partition.size:
        return None
    return _partition.unpack_from(header_payload, start)[0], _offset.unpack_from(header_payload, at)[0]


class CarryOn:
    """The positions and waiting consumers of one node's copy of a replicated stream."""

    def __init__(self, spread: PartitionSpread) -> None:
        self.spread = spread
        self.positions: dict[Any, dict[int, int]] = {}  # consumer -> partition -> next
        self.waiting: dict[Any, float] = {}  # consumer -> when it gives up
        self._timer: asyncio.TimerHandle | None = None

    def delivered(self, origin: Any, header_payload: bytes) -> None:
        """A relay delivered this to ``origin``: its position moves past it."""
        found = delivered_at(header_payload)
        if found is not None:
            self.positions.setdefault(origin, {})[found[0]] = found[1] + 1

    def _where(self, consumer: Any) -> dict[int, int]:
        """Where ``consumer`` got to: its relays' positions, and its local cursors in
        the partitions readable here (their truth while they are)."""
        out = dict(self.positions.get(consumer, {}))
        stream = self.spread.stream
        reader = stream.readers.get(consumer)
        limits = stream.limits
        if reader is not None and limits is not None:
            for p, cursor in reader.cursors.items():
                if p < len(limits) and limits[p] > 0:
                    out[p] = cursor
        return out

    def keep(self, consumer: Any) -> bool:
        """A source of ``consumer`` is lost: it waits for the leaders instead of being
        cancelled (False: not ours to keep, a relayed reader of another node's)."""
        spread = self.spread
        if not isinstance(consumer, ChannelConsumer) or consumer not in spread.stream.readers:
            return False
        self.positions[consumer] = self._where(consumer)
        for relay in spread.relays.pop(consumer, ()):
            relay.queue.remove_consumer(relay)
        unshare(consumer)
        self.waiting.setdefault(consumer, asyncio.get_running_loop().time() + WAIT)
        self._schedule(0.0)
        return True

    def reposition(self, consumer: Any, p: int) -> bool:
        """Partition ``p`` becomes readable here: ``consumer`` (whose relay served it)
        reads it on from its position. False for a reader that is not ours to move."""
        if not isinstance(consumer, ChannelConsumer):
            return False  # a reader another node relays: its node carries it on
        reader = self.spread.stream.readers.get(consumer)
        if reader is None or p not in reader.cursors:
            return False
        at = self.positions.get(consumer, {}).pop(p, None)  # the local cursor from now on
        reader.cursors[p] = at if at is not None else self.spread.stream.start_offset(
            p, reader.start)
        return True

    def forget(self, consumer: Any) -> None:
        self.positions.pop(consumer, None)
        self.waiting.pop(consumer, None)

    def _led_here(self, consumer: Any) -> bool:
        """Whether the partitions ``consumer`` reads that the placement here puts on
        this node are led by this node's copies. One that stepped down (a leader paused
        or cut off past its lease) is still named here until etcd's watch brings the new
        leader: the consumer waits for that, then reads on through a relay to it (taken
        for rejoined at once, it stayed a local reader of a copy that serves nothing)."""
        spread = self.spread
        copies = getattr(spread.stream.replication, "copies", None)
        if not copies:
            return True
        mine = spread.led_by(spread.node)
        only = consumer.arguments.get("x-stream-partition")
        for p in ([only] if isinstance(only, int) else mine):
            copy = copies.get(p)
            if p in mine and copy is not None and not copy.leading:
                return False
        return True

    def _schedule(self, delay: float) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(delay, self.rejoin)

    def rejoin(self) -> None:
        """Every waiting consumer whose sources all have a leader up subscribes again."""
        self._timer = None
        spread = self.spread
        now = asyncio.get_running_loop().time()
        for consumer, deadline in list(self.waiting.items()):
            if consumer not in spread.stream.readers:  # cancelled or closed meanwhile
                self.forget(consumer)
                continue
            nodes = spread.needed(consumer.arguments)
            if any(spread.forwarding.forwarder(n) is None for n in nodes) \
                    or not self._led_here(consumer):
                if now > deadline:  # no leader for what it reads: cancelled, as before
                    self.forget(consumer)
                    spread.remove_consumer(consumer)
                    consumer.cancelled_by_broker()
                continue
            del self.waiting[consumer]
            # partitions that moved here were repositioned when this node took them
            relays = spread.relays_for(consumer, self.positions.get(consumer, {}))
            if relays:
                spread.relays[consumer] = relays
                for relay in relays:
                    relay.queue.add_consumer(relay)  # a refusal: lost again, waits again
            spread.stream.dispatch()
        if self.waiting:
            self._schedule(RETRY)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def resume_arguments(arguments: dict[str, Any], positions: dict[int, int],
                     partitions: set[int]) -> dict[str, Any]:
    """A relay's arguments: the consumer's, with where it got to in ``partitions``."""
    mine = {p: o for p, o in positions.items() if p in partitions}
    if not mine:
        return arguments
    return {**arguments, stream_replicated.RESUME: stream_replicated.encode_positions(mine)}


__all__ = ["WAIT", "CarryOn", "delivered_at", "resume_arguments"]
