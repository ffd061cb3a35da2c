"""Consumer groups driven in process: commits and lag, the reset-offsets variants and
their refusals, deletion, and committed offsets surviving a re-open of a durable stream.

No broker, no socket, no event loop (stream_group_helpers.py). Membership and rebalancing are in
test_groups.py.
"""

from __future__ import annotations

import pytest
from stream_group_helpers import FakeHost, Make, Member, committed, join, publish

from smartbroker.queues.groups import GroupActive, UnknownPartition
from smartbroker.queues.offsets import OffsetReset
from smartbroker.queues.stream import StreamQueue


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
