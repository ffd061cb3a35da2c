"""A replicated quorum queue's enqueues that its replica set has not committed yet.

RabbitMQ's quorum queue (Raft) applies an enqueue to the queue only once the entry is
committed: a consumer never sees a message that a failover could take back (its
publisher, never confirmed, sends it again, and the consumer gets it twice; or gives up,
and the consumer handled a message the broker "never had"). The leader here appends
each enqueue to the queue's own log at once (its confirm waits for the commit), and this
tail keeps the message out of the ready list until the replica set's high watermark
passes its offset: ``release`` then publishes it into the queue, in log order, as the
state machine would apply it, so TTL, length limits and dispatch see it from then on.

One tail per leading queue object, fed by ``QuorumQueue._publish_own`` and released by
``cluster/quorum_replicas.Replica`` when the high watermark moves (no future per
message). A new leader holds what it rebuilt from its log above the high watermark it
knew (``recovered``): entries the old leader shipped but nobody committed yet.
Unreplicated quorum queues never build one.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from smartbroker.queues.classic import ClassicQueue

if TYPE_CHECKING:
    from smartbroker.broker.durable_recovery import RecoveredEntry
    from smartbroker.message import Message
    from smartbroker.queues.quorum import QuorumQueue


class CommitHold:
    """Held enqueues of ``queue``, by log offset (ascending); counted in its message
    counts, as RabbitMQ counts what it accepted (see ``QuorumQueue.message_count``)."""

    __slots__ = ("queue", "fresh", "recovered", "count", "bytes", "closed")

    def __init__(self, queue: QuorumQueue) -> None:
        self.queue = queue
        self.fresh: deque[tuple[int, Message]] = deque()  # published here, not committed
        self.recovered: deque[RecoveredEntry] = deque()  # rebuilt from the log (lower offsets)
        self.count = 0
        self.bytes = 0
        self.closed = False

    def add(self, offset: int, message: Message) -> None:
        self.fresh.append((offset, message))
        self.count += 1
        self.bytes += len(message.body)

    def hold_recovered(self, records: list[RecoveredEntry]) -> None:
        self.recovered.extend(records)
        self.count += len(records)
        self.bytes += sum(rec.size for rec in records)

    @property
    def first(self) -> int:
        """The lowest offset held (-1: none)."""
        if self.recovered:
            return self.recovered[0].offset
        return self.fresh[0][0] if self.fresh else -1

    @property
    def last(self) -> int:
        if self.fresh:
            return self.fresh[-1][0]
        return self.recovered[-1].offset if self.recovered else -1

    def release(self, committed: int) -> None:
        """Everything below offset ``committed`` is committed: into the queue, in order."""
        if self.closed:
            return
        if self.recovered:
            self._release_recovered(committed)
            if self.recovered:
                return  # the fresh ones come after them
        fresh, q = self.fresh, self.queue
        publish = ClassicQueue.publish  # past QuorumQueue.publish: accepted already
        while fresh and fresh[0][0] < committed:
            offset, message = fresh.popleft()
            self.count -= 1
            self.bytes -= len(message.body)
            publish(q, message, offset)

    def _release_recovered(self, committed: int) -> None:
        recovered, out = self.recovered, []
        while recovered and recovered[0].offset < committed:
            rec = recovered.popleft()
            self.count -= 1
            self.bytes -= rec.size
            out.append(rec)
        if out:
            _restore_flagged(self.queue, out)

    def take(self) -> list[Any]:
        """Purge, delete: every held offset, left (their records forgotten by the caller)."""
        offsets: list[Any] = [rec.offset for rec in self.recovered]
        offsets.extend(offset for offset, _m in self.fresh)
        self.recovered.clear()
        self.fresh.clear()
        self.count = self.bytes = 0
        return offsets

    def close(self) -> None:
        """The queue object stops leading: nothing held is applied here (the log holds
        it; the next leader rebuilds it if it was committed)."""
        self.closed = True
        self.take()


def _restore_flagged(queue: QuorumQueue, records: list[RecoveredEntry]) -> None:
    """Rebuilt entries now committed: into the ready list as ``quorum_replicated.lead``
    puts the others, flagged redelivered (x-delivery-count stays the log's)."""
    entries = queue.pager.restored_entries(records, queue.settings.message_ttl)
    ready, expiry = queue.ready, queue.expiry
    for entry in entries:
        if entry.redelivered:
            entry.delivery_count = 1
        entry.redelivered = True
        if entry.expires_at is not None:
            expiry.track(entry)
        ready.push(entry)
    queue.dispatch()
