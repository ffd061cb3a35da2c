"""Consumer groups driven in process: a StreamQueue, fake consumers, a fake timer host.

No broker, no socket, no event loop: join/leave/rebalance, commits, lag, describe, the
reset-offsets variants and their refusals, deletion, and committed offsets surviving a
re-open of a durable stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smartbroker.message import Message
from smartbroker.queues.base import Storage
from smartbroker.queues.groups import (
    GroupActive,
    GroupInfo,
    StreamGroups,
    UnknownGroup,
    UnknownPartition,
)
from smartbroker.queues.offsets import OffsetReset
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


# -- membership and rebalancing ------------------------------------------------------------
def test_first_member_owns_every_partition(make: Make) -> None:
    q = make(partitions=3)
    a = join(q, Member("a"))
    info = q.groups.describe("g")
    assert info.active and info.rebalance == "cooperative" and owners(info) == ["a"] * 3
    assert [(m.consumer_tag, m.partitions) for m in info.members] == [("a", (0, 1, 2))]
    publish(q, 1, 2)
    assert a.positions() == [(1, 0), (1, 1)]


def in_flight(q: StreamQueue, *members: Member) -> None:
    """One message into every partition, delivered and left unacked."""
    for p in range(len(q.logs)):
        publish(q, p)
    assert sum(len(m.got) for m in members) == len(q.logs)


def test_cooperative_join_moves_only_what_must_move(make: Make) -> None:
    q = make(partitions=4)
    a, b = join(q, Member("a")), join(q, Member("b"))
    before = owners(q.groups.describe("g"))
    assert sorted(before) == ["a", "a", "b", "b"]
    in_flight(q, a, b)
    c = join(q, Member("c"))
    after = owners(q.groups.describe("g"))
    moved = [p for p in range(4) if before[p] != after[p]]
    assert len(moved) == 1 and after[moved[0]] == "c"  # sticky: one partition changed hands
    assert q.readers[a].cursors.keys() == {p for p in range(4) if after[p] == "a"}
    # only the moved partition's unacked message is delivered again, to its new owner
    assert len(a.got) + len(b.got) == 4 and c.positions() == [(moved[0], 0)]
    assert c.got[0].redelivered


def test_eager_rebalance_revokes_everything(make: Make) -> None:
    q = make(partitions=4)
    a = join(q, Member("a", **{"x-rebalance": "eager"}))
    b = join(q, Member("b"))
    info = q.groups.describe("g")
    assert info.rebalance == "eager" and owners(info) == ["a", "a", "b", "b"]
    in_flight(q, a, b)
    join(q, Member("c"))
    # every partition was revoked and reassigned from its committed offset: all 4 again
    assert sum(len(m.got) for m in q.consumers) == 8
    assert q.groups.live["g"].rebalances == 3


def test_members_beyond_the_partition_count_sit_idle(make: Make) -> None:
    q = make(partitions=2)
    for tag in "abc":
        join(q, Member(tag))
    info = q.groups.describe("g")
    assert sorted(len(m.partitions) for m in info.members) == [0, 1, 1]
    assert None not in owners(info)


def test_leave_hands_partitions_to_survivors(make: Make) -> None:
    q = make(partitions=3)
    a, b = join(q, Member("a")), join(q, Member("b"))
    q.remove_consumer(a)
    info = q.groups.describe("g")
    assert owners(info) == ["b"] * 3 and [m.consumer_tag for m in info.members] == ["b"]
    q.remove_consumer(b)
    info = q.groups.describe("g")
    assert not info.active and owners(info) == [None] * 3 and info.members == ()


def test_a_member_leaving_with_unacked_work_loses_nothing(make: Make) -> None:
    q = make(partitions=1)
    publish(q, 0, 3)
    a = join(q, Member("a", **{"x-stream-offset": "first"}))
    q.ack(a.got[0])
    q.remove_consumer(a)  # 1 and 2 delivered, not acked
    b = join(q, Member("b"))
    assert b.positions() == [(0, 1), (0, 2)] and all(e.redelivered for e in b.got)


def test_static_member_keeps_its_partitions_within_the_session_timeout(make: Make,
                                                                       host: FakeHost) -> None:
    q = make(partitions=2)
    static = {"x-group-instance-id": "worker-1", "x-session-timeout": 30_000}
    a = join(q, Member("a", **static))
    join(q, Member("b"))
    mine = owners(q.groups.describe("g")).index("a")
    rebalances = q.groups.live["g"].rebalances
    q.remove_consumer(a)
    info = q.groups.describe("g")
    assert info.active and info.static_members_away == 1 and info.partitions[mine].owner is None
    join(q, Member("a2", **static))  # back in time: the same partition, no rebalance
    info = q.groups.describe("g")
    assert info.partitions[mine].owner == "a2" and info.static_members_away == 0
    assert q.groups.live["g"].rebalances == rebalances
    assert host.fire(30.0) == 0  # its timer was cancelled


def test_static_member_partitions_move_when_the_session_times_out(make: Make,
                                                                  host: FakeHost) -> None:
    q = make(partitions=2)
    a = join(q, Member("a", **{"x-group-instance-id": "w", "x-session-timeout": 5_000}))
    join(q, Member("b"))
    q.remove_consumer(a)
    assert "b" in owners(q.groups.describe("g")) and None in owners(q.groups.describe("g"))
    assert host.fire(5.0) == 1
    info = q.groups.describe("g")
    assert owners(info) == ["b", "b"] and info.static_members_away == 0


# -- commits and lag -----------------------------------------------------------------------
def test_a_new_group_starts_at_its_first_members_x_stream_offset(make: Make) -> None:
    q = make(partitions=1)
    publish(q, 0, 3)
    late = join(q, Member("a", group="late"))  # default: next
    assert late.got == [] and committed(q, "late") == [3]
    early = join(q, Member("b", group="early", **{"x-stream-offset": "first"}))
    assert early.positions() == [(0, 0), (0, 1), (0, 2)] and committed(q, "early") == [0]


def test_commit_is_the_highest_contiguous_ack_and_lag_follows(make: Make) -> None:
    q = make(partitions=1)
    a = join(q, Member("a", **{"x-stream-offset": "first"}))
    publish(q, 0, 4)
    assert q.groups.lag("g", 0) == 4 and q.groups.describe("g").lag == 4
    q.ack(a.got[1])
    q.ack(a.got[2])
    assert committed(q) == [0]  # 0 is still out: nothing is committed past it
    q.ack(a.got[0])
    assert committed(q) == [3] and q.groups.lag("g", 0) == 1
    q.ack(a.got[3])
    assert q.groups.committed("g", 0) == 4 and q.groups.lag("g", 0) == 0


def test_no_ack_members_commit_at_delivery(make: Make) -> None:
    q = make(partitions=1)
    join(q, Member("a", no_ack=True, **{"x-stream-offset": "first"}))
    publish(q, 0, 3)
    assert committed(q) == [3]


def test_groups_commit_independently(make: Make) -> None:
    q = make(partitions=1)
    publish(q, 0, 2)
    a = join(q, Member("a", group="one", **{"x-stream-offset": "first"}))
    join(q, Member("b", group="two", **{"x-stream-offset": "first"}))
    q.ack(a.got[0])
    assert (committed(q, "one"), committed(q, "two")) == ([1], [0])
    assert q.groups.names() == ["one", "two"]


def test_commit_for_another_front_end(make: Make) -> None:
    q = make(partitions=2)
    publish(q, 1, 5)
    q.groups.commit("kafka-app", 1, 3)
    assert "kafka-app" in q.groups and q.groups.committed("kafka-app", 1) == 3
    assert q.groups.lag("kafka-app", 1) == 2 and q.groups.committed("kafka-app", 0) == 0
    with pytest.raises(UnknownPartition, match="has no partition 2"):
        q.groups.commit("kafka-app", 2, 0)
    info = q.groups.describe("kafka-app")
    assert not info.active and info.rebalance is None and info.members == ()


# -- describe and list ---------------------------------------------------------------------
def test_unknown_group(make: Make) -> None:
    q = make()
    assert "nope" not in q.groups and q.groups.names() == []
    with pytest.raises(UnknownGroup) as caught:
        q.groups.describe("nope")
    assert str(caught.value) == "consumer group 'nope' not found on stream 's' in vhost '/'"
    for call in (lambda: q.groups.reset("nope", OffsetReset("earliest")),
                 lambda: q.groups.delete("nope")):
        with pytest.raises(UnknownGroup):
            call()


def test_describe_all_lists_live_and_committed_only_groups(make: Make) -> None:
    q = make(partitions=1)
    join(q, Member("a", group="live"))
    q.groups.commit("offsets-only", 0, 0)
    listed = {info.name: info.active for info in q.groups.describe_all()}
    assert listed == {"live": True, "offsets-only": False}


# -- reset-offsets -------------------------------------------------------------------------
def stopped_group(q: StreamQueue, per_partition: int = 4) -> None:
    """Every partition filled and fully consumed by group g, whose member then left."""
    for p in range(len(q.logs)):
        publish(q, p, per_partition)
    a = join(q, Member("a", **{"x-stream-offset": "first"}))
    for entry in list(a.got):
        q.ack(entry)
    q.remove_consumer(a)
    assert committed(q) == [per_partition] * len(q.logs)


@pytest.mark.parametrize("to, value, after", [
    ("earliest", None, [0, 0]),
    ("latest", None, [4, 4]),
    ("offset", 1, [1, 1]),
    ("offset", 99, [4, 4]),
    ("shift", -3, [1, 1]),
    ("shift", -9, [0, 0]),
    ("datetime", 0, [0, 0]),
    ("datetime", 2 ** 62, [4, 4]),
])
def test_reset_variants(make: Make, to: str, value: int | None, after: list[int]) -> None:
    q = make(partitions=2)
    stopped_group(q)
    plan = q.groups.reset("g", OffsetReset(to, value))
    assert [(m.partition, m.before, m.after, m.lag_after) for m in plan] == \
        [(p, 4, after[p], 4 - after[p]) for p in range(2)]
    assert committed(q) == after


def test_dry_run_changes_nothing(make: Make) -> None:
    q = make(partitions=2)
    stopped_group(q)
    plan = q.groups.reset("g", OffsetReset("earliest"), dry_run=True)
    assert [m.after for m in plan] == [0, 0] and committed(q) == [4, 4]


def test_a_member_joining_after_a_reset_replays(make: Make) -> None:
    q = make(partitions=1)
    stopped_group(q)
    q.groups.reset("g", OffsetReset("shift", -2))
    b = join(q, Member("b", **{"x-stream-offset": "first"}))  # the group's offsets win
    assert b.positions() == [(0, 2), (0, 3)]


def test_reset_refused_while_the_group_has_members(make: Make) -> None:
    q = make(partitions=1)
    stopped_group(q)
    join(q, Member("b"))
    with pytest.raises(GroupActive) as caught:
        q.groups.reset("g", OffsetReset("earliest"), dry_run=True)
    assert str(caught.value) == ("consumer group 'g' on stream 's' has 1 active member(s): "
                                 "stop its consumers before resetting offsets")
    assert committed(q) == [4]


def test_reset_refused_while_a_static_member_may_come_back(make: Make, host: FakeHost) -> None:
    q = make(partitions=1)
    a = join(q, Member("a", **{"x-group-instance-id": "w"}))
    q.remove_consumer(a)
    with pytest.raises(GroupActive, match=r"has 0 active member\(s\) and 1 static member\(s\) "
                                          r"within their session timeout"):
        q.groups.reset("g", OffsetReset("earliest"))
    host.fire(10.0)  # the default session timeout
    q.groups.reset("g", OffsetReset("earliest"))


def test_a_committed_offset_behind_retention_reads_from_the_first_kept(make: Make) -> None:
    q = make(partitions=1)
    stopped_group(q)
    q.groups.reset("g", OffsetReset("earliest"))
    lg = q.logs[0]
    lg.roll()
    lg.delete_segment(lg.segments()[0].base_offset)  # retention drops offsets 0..3
    assert q.groups.committed("g", 0) == 4 and q.groups.lag("g", 0) == 0


# -- deletion ------------------------------------------------------------------------------
def test_delete_forgets_the_group(make: Make) -> None:
    q = make(partitions=1)
    stopped_group(q)
    q.groups.delete("g")
    assert "g" not in q.groups and q.groups.names() == []
    b = join(q, Member("b"))  # a new group by the same name: x-stream-offset again (next)
    assert b.got == [] and committed(q) == [4]


def test_delete_refused_while_active(make: Make) -> None:
    q = make(partitions=1)
    join(q, Member("a"))
    with pytest.raises(GroupActive, match="stop its consumers before deleting it"):
        q.groups.delete("g")
    assert q.groups.names() == ["g"]


# -- durability ----------------------------------------------------------------------------
def test_committed_offsets_survive_reopening_a_durable_stream(make: Make) -> None:
    q = make(partitions=2, durable=True)
    stopped_group(q, per_partition=3)
    q.groups.reset("g", OffsetReset("offset", 1))
    q.groups.commit("other", 0, 2)
    q.groups.commit("gone", 0, 2)
    q.groups.delete("gone")
    q.close()

    again = make(partitions=2, durable=True)
    assert again.groups.names() == ["g", "other"]
    info = again.groups.describe("g")
    assert not info.active and info.rebalance is None
    assert [(p.committed, p.end, p.lag) for p in info.partitions] == [(1, 3, 2), (1, 3, 2)]
    b = join(again, Member("b"))
    assert sorted(b.positions()) == [(0, 1), (0, 2), (1, 1), (1, 2)]


def test_validate_arguments_is_the_groups_own() -> None:
    assert StreamGroups.validate_arguments({"x-rebalance": "eager"}) is None
    with pytest.raises(Exception, match="invalid x-rebalance"):
        StreamGroups.validate_arguments({"x-rebalance": "sometimes"})
