"""At-least-once dead-lettering's stage (queues/quorum_dlx.py): a message leaves the source
only once every target confirmed its copy; a refused copy waits for a retry, and targets
that confirmed are not sent another; the hold is in a replicated queue's own log, so a new
leader rebuilds it as held, not as a ready message."""

from __future__ import annotations

import asyncio
from typing import Any

from smartbroker.message import Message
from smartbroker.queues.base import NoHost, QueueEntry, QueueSpec, Settle
from smartbroker.queues.quorum import QuorumQueue
from smartbroker.queues.quorum_dlx import DeadLetterWorker
from smartbroker.queues.quorum_log import QuorumLog, directory
from smartbroker.queues.quorum_replicated import lead
from tests.unit.queues.classic_queue_helpers import msg

AT_LEAST_ONCE = {"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once",
                 "x-overflow": "reject-publish", "x-dead-letter-exchange": "dlx"}


class Target:
    def __init__(self, name: str) -> None:
        self.name = name


class Synced:
    def __init__(self) -> None:
        self.calls = 0

    async def sync(self) -> None:
        self.calls += 1


class Vhost:
    """Routes every dead letter to ``targets``; ``refuse`` names the ones that nack."""

    def __init__(self, *targets: str) -> None:
        self.exchanges = {"dlx": object()}
        self.targets = [Target(t) for t in targets]
        self.refuse: set[str] = set()
        self.sent: list[str] = []
        self.log = Synced()

    def route(self, exchange: Any, message: Message, keys: list[str]) -> list[Target]:
        return list(self.targets)

    def enqueue(self, queues: list[Target], message: Message) -> tuple[bool, tuple[Any, ...]]:
        self.sent += [q.name for q in queues]
        return all(q.name not in self.refuse for q in queues), (self.log,)

    def call_later(self, delay: float, callback: Any) -> None:
        return None  # retries are driven by hand


class Source:
    name = "src"
    leads_here = True
    dead_letter_target = ("dlx", None)

    def __init__(self, host: Vhost) -> None:
        self.host = host
        self.released: list[QueueEntry] = []

    def release_discarded(self, entry: QueueEntry) -> None:
        self.released.append(entry)


async def passes() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_held_until_every_target_confirmed() -> None:
    async def run() -> None:
        vhost = Vhost("a", "b")
        vhost.refuse = {"b"}
        source = Source(vhost)
        worker = DeadLetterWorker(source)
        entry = QueueEntry(msg(1))
        worker.discard(entry, "rejected")
        assert (worker.count, worker.bytes) == (1, len(msg(1).body))
        await passes()  # forward at the end of the loop pass, then a's confirm
        assert vhost.sent == ["a", "b"] and source.released == []
        vhost.refuse.clear()
        worker.retry()  # b only: a confirmed already
        await passes()
        assert vhost.sent == ["a", "b", "b"]
        assert source.released == [entry] and (worker.count, worker.bytes) == (0, 0)
    asyncio.run(run())


def test_no_route_waits_and_close_hands_back_the_entries() -> None:
    async def run() -> None:
        vhost = Vhost()
        worker = DeadLetterWorker(Source(vhost))
        entry = QueueEntry(msg(1))
        worker.discard(entry, "expired")
        await asyncio.sleep(0)
        assert worker.count == 1 and vhost.sent == []
        assert worker.close() == [entry] and worker.count == 0
    asyncio.run(run())


def test_a_new_leader_rebuilds_the_hold_from_the_log(tmp_path) -> None:
    async def committed(offset: int) -> None:
        return None

    spec = QueueSpec("q", "/", durable=True, arguments=AT_LEAST_ONCE)
    path = directory(tmp_path, "/", "q")
    qlog = QuorumLog(path, "/", "q", segment_bytes=4096)
    q = QuorumQueue.declare(spec, NoHost())
    lead(q, qlog, committed)
    q.publish(msg(1))
    q.publish(msg(2))
    entry = q.get()
    assert entry is not None
    q.settle(Settle.DISCARD, [entry])  # held (no loop: nothing forwarded)
    assert (q.messages_dlx, q.message_count) == (1, 1)
    qlog.close()

    copy = QuorumLog(path, "/", "q", segment_bytes=4096)  # a follower's identical copy
    new = QuorumQueue.declare(spec, NoHost())
    lead(new, copy, committed)
    assert (new.messages_dlx, new.message_count) == (1, 1)
    got = new.get()
    assert got is not None and got.message.body == msg(2).body
    copy.close()
