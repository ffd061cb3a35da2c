"""A replicated quorum queue delivers an enqueue only once its replica set committed it
(queues/quorum_hold.py): held messages are counted, purged, dropped when the object stops
leading, and a new leader holds what it rebuilt above the high watermark it knew."""

from __future__ import annotations

from smartbroker.queues.base import NoHost, QueueSpec, Settle
from smartbroker.queues.quorum import QuorumQueue
from smartbroker.queues.quorum_log import QuorumLog, directory
from smartbroker.queues.quorum_replicated import lead, release
from tests.unit.queues.classic_queue_helpers import FakeConsumer, msg


def quorum(arguments: dict | None = None) -> QuorumQueue:
    spec = QueueSpec("q", "/", durable=True,
                     arguments={"x-queue-type": "quorum", **(arguments or {})})
    return QuorumQueue.declare(spec, NoHost())


async def committed(offset: int) -> None:
    return None


def test_a_message_is_delivered_once_committed_in_order(tmp_path) -> None:
    qlog = QuorumLog(directory(tmp_path, "/", "q"), "/", "q")
    q = quorum()
    lead(q, qlog, committed, 0)
    consumer = FakeConsumer()
    q.add_consumer(consumer)
    offsets = []
    for n in range(3):
        assert q.publish(msg(n)).accepted
        offsets.append(qlog.next_offset - 1)
    assert consumer.received == [] and q.get() is None
    assert q.message_count == 3 and q.message_bytes == 3  # accepted, counted
    q.hold.release(offsets[1])  # the first one committed
    assert consumer.bodies == [0]
    q.hold.release(offsets[2] + 1)
    assert consumer.bodies == [0, 1, 2] and q.message_count == 0
    qlog.close()


def test_purge_takes_the_held_ones_and_a_released_object_applies_nothing(tmp_path) -> None:
    qlog = QuorumLog(directory(tmp_path, "/", "q"), "/", "q")
    q = quorum()
    lead(q, qlog, committed, 0)
    q.publish(msg(1))
    q.hold.release(qlog.next_offset)
    q.publish(msg(2))
    assert q.purge() == 2 and q.message_count == 0
    q.publish(msg(3))
    hold = q.hold
    release(q)
    assert q.hold is None and q.message_count == 0
    hold.release(qlog.next_offset)  # a late commit: the next leader has it, not this object
    assert q.get() is None
    qlog.close()


def test_a_new_leader_holds_what_it_rebuilt_above_the_known_high_watermark(tmp_path) -> None:
    path = directory(tmp_path, "/", "q")
    qlog = QuorumLog(path, "/", "q")
    q = quorum()
    lead(q, qlog, committed)  # no hold: straight into the queue
    for n in range(4):
        q.publish(msg(n))
    first = q.get()
    q.settle(Settle.ACK, [first])  # 0 settled
    hw = q.get().store_id  # 1 delivered: unacked; 2 and 3 beyond the known hw
    qlog.close()

    copy = QuorumLog(path, "/", "q")
    new = quorum()
    assert lead(new, copy, committed, hw + 1) == 3
    assert new.message_count == 3
    got = new.get()
    assert (int(got.message.body), got.redelivered) == (1, True)
    assert new.get() is None  # 2 and 3 wait for the commit
    new.hold.release(copy.next_offset)
    rest = [new.get(), new.get()]
    assert [(int(e.message.body), e.redelivered, e.delivery_count) for e in rest] == [
        (2, True, 1), (3, True, 1)]
    copy.close()


def test_length_limits_count_the_held_ones(tmp_path) -> None:
    qlog = QuorumLog(directory(tmp_path, "/", "q"), "/", "q")
    q = quorum({"x-max-length": 2, "x-overflow": "reject-publish"})
    lead(q, qlog, committed, 0)
    assert q.publish(msg(1)).accepted and q.publish(msg(2)).accepted
    assert q.publish(msg(3)).accepted  # rabbit_fifo accepts the one crossing the limit
    assert not q.publish(msg(4)).accepted
    qlog.close()
