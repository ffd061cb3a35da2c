"""Consumer groups driven in process (test_groups.py, test_groups_commits.py,
test_groups_external.py): a fake timer host, fake consumers, and streams to drive.

No broker, no socket, no event loop. ``host`` and ``make`` are fixtures (conftest.py
imports them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smartbroker.message import Message
from smartbroker.queues.base import Storage
from smartbroker.queues.groups import GroupInfo
from smartbroker.queues.partitioner import legacy_partition as partition_for
from smartbroker.queues.stream import StreamEntry, StreamQueue
from smartbroker.queues.stream_args import StreamSettings


class Timer:
    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay, self.callback, self.cancelled = delay, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeHost:
    """The queue's host: timers are kept, and a test fires them (no clock, no sleep)."""

    store = None

    def __init__(self) -> None:
        self.timers: list[Timer] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        self.timers.append(Timer(delay, callback))
        return self.timers[-1]

    def fire(self, delay: float) -> int:
        """Run the live timers of ``delay`` seconds; how many ran."""
        due = [t for t in self.timers if t.delay == delay and not t.cancelled]
        for t in due:
            self.timers.remove(t)
            t.callback()
        return len(due)

    def dead_letter(self, queue: Any, message: Message, reason: str) -> None:
        raise AssertionError("a stream never dead-letters")

    def queue_unused(self, queue: Any) -> None:
        return None


class Member:
    """A consumer of the stream with ``credit`` (None: unlimited); records what it gets."""

    def __init__(self, tag: str, group: str = "g", credit: int | None = None,
                 no_ack: bool = False, **arguments: Any) -> None:
        self.tag = tag
        self.no_ack = no_ack
        self.exclusive = False
        self.priority = 0
        self.parked = False
        self.credit = credit
        self.arguments = {"x-consumer-group": group, **arguments}
        self.got: list[StreamEntry] = []
        self.unacked = 0

    def can_take(self) -> bool:
        return self.credit is None or self.credit > 0

    def deliver(self, queue: Any, entry: StreamEntry) -> None:
        assert self.can_take()
        if self.credit is not None:
            self.credit -= 1
        self.got.append(entry)

    def cancelled_by_broker(self) -> None:
        pass

    def positions(self) -> list[tuple[int, int]]:
        return [(e.partition, e.offset) for e in self.got]


Make = Callable[..., StreamQueue]


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def make(host: FakeHost, tmp_path: Path) -> Iterator[Make]:
    """Build a stream of ``partitions`` (in memory, or on disk under ``tmp_path`` with
    ``durable=True``: the same directory each time, so a second one re-opens the first)."""
    made: list[StreamQueue] = []

    def build(partitions: int = 3, durable: bool = False) -> StreamQueue:
        storage = Storage(store=None, data_dir=tmp_path, fsync="never") if durable else None
        q = StreamQueue("s", "/", settings=StreamSettings(partitions=partitions), host=host,
                        storage=storage)
        made.append(q)
        return q

    yield build
    for q in made:
        q.close()


def key_for(partition: int, partitions: int) -> str:
    return next(k for i in range(1000) if partition_for(k := f"k{i}", partitions) == partition)


def publish(q: StreamQueue, partition: int, n: int = 1) -> None:
    key = key_for(partition, len(q.logs))
    for i in range(n):
        q.publish(Message.build("", key, f"{partition}-{i}".encode()))


def join(q: StreamQueue, member: Member) -> Member:
    q.add_consumer(member)
    return member


def owners(info: GroupInfo) -> list[str | None]:
    return [p.owner for p in info.partitions]


def committed(q: StreamQueue, group: str = "g") -> list[int]:
    return [p.committed for p in q.groups.describe(group).partitions]
