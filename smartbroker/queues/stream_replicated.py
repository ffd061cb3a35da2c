"""A stream partition copied on several nodes (issue 16): what changes on the queue side.

The cluster side (``cluster/replication/stream_replica.py``) opens each partition's log
in the replication core on every member node and tells the stream, through the
functions here, which partitions this node leads and how far they are committed:

* **confirms wait for the replica set.** A partition this node leads returns a
  ``PublishResult`` whose ``sync`` is a ``CommittedSync``: the local fsync AND the
  commit by the in-sync replicas (``ReplicatedLog.committed``), for AMQP confirms
  (``sync``) and Kafka acks=all (``wait_durable``); Kafka acks=1 waits for the local log
  only (``local``). A failed commit (leadership lost, lease lapsed) is a
  ``NotCommitted``: a nack, or a Kafka error, never a confirm.
* **readers stop at the high watermark.** ``StreamQueue.limits[p]`` bounds every read
  (AMQP readers, Kafka Fetch and ListOffsets through ``PartitionLog``): the high
  watermark where this node leads ``p``, 0 where it follows (that node's readers are
  served by the leader, as on a spread stream). ``advance`` moves it and wakes readers.
* **failover is a restart.** ``lead`` (this node just won ``p``) rebuilds the partition's
  Kafka producer state from its copy, exactly as a load does; ``reload_offsets`` reads
  the group offsets log again (the new stream leader's copy).

Size-1 replica sets never get here: ``limits`` and ``replication`` stay None, the hot
paths test one attribute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from smartbroker.queues import producer_state
from smartbroker.queues.base import PublishResult
from smartbroker.queues.offsets import OffsetBook
from smartbroker.queues.partition_producers import PartitionProducers
from smartbroker.store.api import StoreUnavailable

if TYPE_CHECKING:
    from smartbroker.queues.stream import StreamQueue

log = logging.getLogger("smartbroker.stream")
# a relayed reader's starting offsets, per partition ("p:offset,..."): set by the node of
# a consumer that carries on across a failover (cluster/spread_carry_on.py), not clients
RESUME = "x-stream-resume"
Committed = Callable[[int], Awaitable[Any]]  # ReplicatedLog.committed
COMMIT_TIMEOUT = 30.0  # Kafka's request.timeout.ms default: acks=all gives up after it
NO_LIMIT = 1 << 62  # a partition of a replicated stream that has one replica: read freely


class NotCommitted(StoreUnavailable):
    """The replica set did not commit a record: this node no longer leads its partition
    (``leader_lost``: Kafka's NOT_LEADER_OR_FOLLOWER), or too few replicas took it in
    time (NOT_ENOUGH_REPLICAS_AFTER_APPEND). Either way the publisher is nacked."""

    def __init__(self, message: str, leader_lost: bool) -> None:
        super().__init__(message)
        self.leader_lost = leader_lost


class CommittedSync:
    """What a confirm or an acks=all Produce waits for on a replicated partition."""

    __slots__ = ("local", "committed", "name")
    written_only = False  # a transient publish waits for the replicas too (RabbitMQ's)

    def __init__(self, local: Any, committed: Committed, name: str) -> None:
        self.local = local  # the partition's own log: what acks=1 waits for
        self.committed = committed
        self.name = name

    async def sync(self) -> None:
        """AMQP confirms (``MessageStore.request_sync``): everything appended so far."""
        last = self.local.next_offset - 1
        await self._both(self.local.sync(), last, None)

    def begin(self) -> tuple[Awaitable[Any], asyncio.Future[None]]:
        """A confirm round in two parts (``broker/confirm_rounds.py``): the local fsync of
        everything appended so far, and its commit by the replica set, already waited
        for, which the round's release awaits while the next rounds go on."""
        last = self.local.next_offset - 1
        return self.local.sync(), asyncio.ensure_future(self._commit(last, None))

    async def wait_durable(self, offset: int) -> None:
        """Kafka acks=all: up to ``offset``, within ``COMMIT_TIMEOUT``."""
        await self._both(self.local.wait_durable(offset), offset, COMMIT_TIMEOUT)

    async def _both(self, local: Awaitable[Any], offset: int, timeout: float | None) -> None:
        """The local fsync and the replica set's commit, waited for side by side: one
        after the other, a confirm round was the leader's fsync (started only when the
        round began) plus what was left of the followers' round trip, and a channel's
        next round waits for this one (36% more msg/s on three nodes, see
        docs/performance.md)."""
        commit = asyncio.ensure_future(self._commit(offset, timeout))
        try:
            await local
        except BaseException:
            commit.cancel()
            raise
        await commit

    async def _commit(self, offset: int, timeout: float | None) -> None:
        if offset < 0:
            return
        try:
            await asyncio.wait_for(self.committed(offset), timeout)
        except NotCommitted:
            raise
        except TimeoutError:
            raise NotCommitted(f"{self.name}: offset {offset} not held by enough in-sync "
                               f"replicas within {timeout:g} s", leader_lost=False) from None
        except Exception as exc:  # noqa: BLE001 - leadership lost, fenced, closed: a nack
            raise NotCommitted(f"{self.name}: offset {offset} not committed: {exc}",
                               leader_lost=True) from exc


def replicate(stream: StreamQueue, replication: Any, limits: list[int] | None = None) -> None:
    """``stream`` is replicated: every partition unreadable until ``lead`` or ``advance``
    says otherwise (a follower's copy is served by its leader's node), unless ``limits``
    says where each starts (a stream gaining its first replicas: what it served stays
    readable, ``NO_LIMIT`` for a partition still on one node)."""
    if stream.limits is None:
        stream.limits = [0] * len(stream.logs) if limits is None else limits
    stream.replication = replication


def lead(stream: StreamQueue, p: int, committed: Committed, high_watermark: int) -> None:
    """This node now leads partition ``p`` (or led it already, at its first open): its
    publishes wait for the replica set, its producer state is rebuilt from its copy (a
    follower appended raw frames, which nothing observed), and its readers read up to
    ``high_watermark``."""
    confirm_through(stream, p, committed)
    _rebuild_producers(stream, p)
    stream._tails[p].clear()
    stream._chunks.pop(p, None)
    advance(stream, p, high_watermark)


def confirm_through(stream: StreamQueue, p: int, committed: Committed) -> None:
    """Publishes to partition ``p`` are confirmed once ``committed`` says the replica
    set holds them (set before this node knows its role: nothing is confirmed early)."""
    name = f"partition {p} of stream '{stream.name}' in vhost '{stream.vhost}'"
    result = PublishResult(True, CommittedSync(stream.logs[p], committed, name))
    stream._published[p] = stream._written[p] = result


def follow(stream: StreamQueue, p: int) -> None:
    """This node no longer leads partition ``p``: nothing is read from its copy here."""
    limits = stream.limits
    if limits is not None and p < len(limits):
        limits[p] = 0
    stream._tails[p].clear()
    stream._chunks.pop(p, None)


def advance(stream: StreamQueue, p: int, high_watermark: int) -> None:
    """Partition ``p``'s high watermark moved: readers (AMQP, waiting Fetches) read on."""
    limits = stream.limits
    if limits is None or p >= len(limits) or high_watermark <= limits[p]:
        return
    limits[p] = high_watermark
    if stream.on_append:
        stream.appended(p)
    if stream.readers:
        stream.dispatch()


def _rebuild_producers(stream: StreamQueue, p: int) -> None:
    part = PartitionProducers()
    lg = stream.logs[p]
    producer_state.rebuild(part, ((f.base, f.batch) for f in lg.scan_frames(lg.first_offset)), 0)
    state = stream.txns
    if state is None:
        if not part.producers and not part.open:
            return  # no producer id in it: the AMQP-only path stays
        state = stream.txns = producer_state.StreamProducers(len(stream.logs))
        try:  # the snapshot file tells the next load to rebuild the state
            producer_state.save(stream.directory, state, stream.partitions.next_offsets())
        except OSError as exc:
            log.warning("producer state of stream %r not saved: %s", stream.name, exc)
    part.journal, part.index = state.journal, p
    state[p]  # grows the list to ``p`` (a partition added since)
    state.partitions[p] = part


def encode_positions(positions: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


def decode_positions(value: Any) -> dict[int, int]:
    """``RESUME``'s value; whatever does not parse is left out."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    out: dict[int, int] = {}
    for item in value.split(",") if isinstance(value, str) else ():
        p, _, o = item.partition(":")
        if p.isdigit() and o.isdigit():
            out[int(p)] = int(o)
    return out


def resume(reader: Any, value: Any) -> None:
    """A reader relayed for a consumer that carries on starts where it got to."""
    for p, offset in decode_positions(value).items():
        if p in reader.cursors:
            reader.cursors[p] = offset


def reload_offsets(stream: StreamQueue) -> None:
    """The group offsets as this node's copy of the offsets log holds them (it now leads
    the stream: its groups are coordinated here)."""
    book = stream.offsets
    fresh = OffsetBook(book.log)
    book.offsets, book.extra = fresh.offsets, fresh.extra


__all__ = ["NO_LIMIT", "RESUME", "CommittedSync", "NotCommitted", "advance", "confirm_through",
           "decode_positions", "encode_positions", "follow", "lead", "reload_offsets",
           "replicate", "resume"]
