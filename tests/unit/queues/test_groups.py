"""Consumer groups driven in process: join, leave and rebalancing (cooperative, eager,
static members and their session timeout), describe and list.

No broker, no socket, no event loop (stream_group_helpers.py). Commits, lag, reset-offsets,
deletion and durability are in test_groups_commits.py.
"""

from __future__ import annotations

import pytest
from stream_group_helpers import FakeHost, Make, Member, join, owners, publish

from smartbroker.queues.groups import StreamGroups, UnknownGroup
from smartbroker.queues.offsets import OffsetReset
from smartbroker.queues.stream import StreamQueue


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


def test_validate_arguments_is_the_groups_own() -> None:
    assert StreamGroups.validate_arguments({"x-rebalance": "eager"}) is None
    with pytest.raises(Exception, match="invalid x-rebalance"):
        StreamGroups.validate_arguments({"x-rebalance": "sometimes"})
