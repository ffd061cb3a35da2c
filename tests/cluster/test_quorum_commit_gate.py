"""CommitGate (cluster/quorum_commits.py): held quorum enqueues go into the queue when the
leader's high watermark is a commit (enough in sync, lease valid); a high watermark
without one (the leader alone in sync) leaves them held, with one waiter on the commit."""

from __future__ import annotations

import asyncio

from smartbroker.cluster.quorum_commits import CommitGate
from smartbroker.queues.base import NoHost, QueueSpec
from smartbroker.queues.quorum import QuorumQueue
from smartbroker.queues.quorum_log import QuorumLog, directory
from smartbroker.queues.quorum_replicated import lead
from tests.unit.queues.classic_queue_helpers import FakeConsumer, msg


class FakeLeader:
    def __init__(self) -> None:
        self.hw = 0
        self.committing = True  # enough in sync and a valid lease
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    def ready(self, offset: int) -> bool:
        return self.committing and offset < self.hw

    def wait(self, offset: int) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append((offset, fut))
        return fut


class FakeReplicated:
    def __init__(self) -> None:
        self.leading = FakeLeader()
        self.high_watermark = 0
        self.on_high_watermark: list = []

    def advance(self, hw: int) -> None:
        self.leading.hw = self.high_watermark = hw
        for callback in self.on_high_watermark:
            callback(hw)


async def committed(offset: int) -> None:
    return None


def test_held_enqueues_follow_the_commits(tmp_path) -> None:
    async def run() -> None:
        qlog = QuorumLog(directory(tmp_path, "/", "q"), "/", "q")
        gate, replicated = CommitGate(), FakeReplicated()
        gate.opened(replicated)
        q = QuorumQueue.declare(QueueSpec("q", "/", durable=True,
                                          arguments={"x-queue-type": "quorum"}), NoHost())
        lead(q, qlog, committed, gate.committed_end)
        gate.held(q.hold)
        consumer = FakeConsumer()
        q.add_consumer(consumer)
        for n in range(3):
            q.publish(msg(n))
        replicated.advance(1)
        assert consumer.bodies == [0]
        replicated.leading.committing = False  # alone in sync: the hw is no commit
        replicated.advance(3)
        replicated.advance(3)
        assert consumer.bodies == [0] and len(replicated.leading.waiters) == 1
        assert gate.committed_end == 1
        offset, fut = replicated.leading.waiters[0]
        assert offset == 2  # the last one held
        replicated.leading.committing = True
        fut.set_result(None)
        await asyncio.sleep(0)
        assert consumer.bodies == [0, 1, 2] and gate.committed_end == 3
        qlog.close()

    asyncio.run(run())
