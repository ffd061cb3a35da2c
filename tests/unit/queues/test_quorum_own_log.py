"""A replicated quorum queue's own log (queues/quorum_log.py, quorum_replicated.py): what
the leader writes is what a new leader rebuilds the queue from (unacked come back
redelivered, settled stay gone), and fully settled head segments are deleted."""

from __future__ import annotations

import asyncio

from smartbroker.queues.base import NoHost, QueueSpec, Settle
from smartbroker.queues.quorum import QuorumQueue
from smartbroker.queues.quorum_log import QuorumLog, directory
from smartbroker.queues.quorum_replicated import lead, release
from smartbroker.queues.stream_replicated import CommittedSync
from smartbroker.store.api import StoreUnavailable
from tests.unit.queues.classic_queue_helpers import FakeConsumer, msg


def quorum(name: str = "q") -> QuorumQueue:
    spec = QueueSpec(name, "/", durable=True, arguments={"x-queue-type": "quorum"})
    return QuorumQueue.declare(spec, NoHost())


async def committed(offset: int) -> None:
    return None


def test_a_new_leader_rebuilds_the_queue_from_the_log(tmp_path) -> None:
    path = directory(tmp_path, "/", "q")
    qlog = QuorumLog(path, "/", "q", segment_bytes=4096)
    q = quorum()
    assert lead(q, qlog, committed) == 0
    for n in range(6):
        result = q.publish(msg(n))
        assert result.accepted and isinstance(result.sync, CommittedSync)
    first, second = q.get(), q.get()  # 0 and 1 delivered, unacked
    q.settle(Settle.ACK, [first])  # 0 acked
    third = q.get(no_ack=True)  # 2 taken for good
    assert third is not None and second is not None
    qlog.close()

    copy = QuorumLog(path, "/", "q", segment_bytes=4096)  # a follower's identical copy
    new = quorum()
    assert lead(new, copy, committed) == 4
    got = [new.get() for _ in range(4)]
    # every message back "maybe delivered" (a delivered mark may not have reached this
    # copy); only the one the log says was delivered counts a delivery
    assert [(int(e.message.body), e.redelivered, e.delivery_count) for e in got] == [
        (1, True, 2), (3, True, 1), (4, True, 1), (5, True, 1)]
    assert new.get() is None
    copy.close()


def test_settled_head_segments_are_deleted(tmp_path) -> None:
    qlog = QuorumLog(directory(tmp_path, "/", "q"), "/", "q", segment_bytes=4096)
    q = quorum()
    lead(q, qlog, committed)
    consumer = FakeConsumer(no_ack=False)
    q.add_consumer(consumer)
    for n in range(200):
        q.publish(msg(n))
    assert qlog.log.segment_count > 3
    q.settle(Settle.ACK, consumer.received)
    assert qlog.log.segment_count == 1  # only the active one is left
    assert qlog.log.first_offset > 0
    qlog.close()


def test_a_queue_that_stops_leading_writes_nothing_more(tmp_path) -> None:
    qlog = QuorumLog(directory(tmp_path, "/", "q"), "/", "q")
    q = quorum()
    lead(q, qlog, committed)
    q.publish(msg(1))
    entry = q.get()
    end = qlog.log.next_offset
    release(q)
    q.settle(Settle.ACK, [entry])  # a late ack of the old leader's object
    assert qlog.log.next_offset == end
    qlog.close()


def test_a_failed_commit_is_a_nack_not_a_confirm(tmp_path) -> None:
    qlog = QuorumLog(directory(tmp_path, "/", "q"), "/", "q")

    async def lapsed(offset: int) -> None:
        raise RuntimeError("lease lapsed")

    async def run() -> None:
        q = quorum()
        lead(q, qlog, lapsed)
        result = q.publish(msg(1))
        try:
            await result.sync.sync()
        except StoreUnavailable:
            return
        raise AssertionError("confirmed without a commit")

    asyncio.run(run())
    qlog.close()
