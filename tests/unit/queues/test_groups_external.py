"""Members of another front end (Kafka) seen through ``StreamGroups.attach_external``:
listed and described with their partitions and lag, counted as active (a reset or a
delete is refused), and one protocol at a time (an AMQP consumer joining is refused 405;
``amqp_active`` tells the other front end when AMQP consumers hold the group)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from stream_group_helpers import Member, join, publish

from smartbroker.errors import ChannelError
from smartbroker.queues.groups import GroupActive, MemberInfo, UnknownGroup
from smartbroker.queues.offsets import OffsetReset
from smartbroker.queues.stream import StreamQueue
from smartbroker.queues.stream_args import StreamSettings


@pytest.fixture
def q() -> Iterator[StreamQueue]:
    stream = StreamQueue("s", "/", settings=StreamSettings(partitions=3))
    yield stream
    stream.close()


def kafka(member_id: str, *partitions: int) -> MemberInfo:
    return MemberInfo(member_id, None, partitions, "rdkafka", "/127.0.0.1", "kafka")


def test_external_members_are_described_with_owners_and_lag(q: StreamQueue) -> None:
    members = [kafka("m-1", 0, 2), kafka("m-2", 1)]
    q.groups.attach_external("k", lambda: members)
    for p in range(3):
        publish(q, p, 2)
    q.groups.commit("k", 0, 1)
    assert q.groups.names() == ["k"] and "k" in q.groups
    info = q.groups.describe("k")
    assert info.active and info.protocol == "kafka"
    assert info.members == tuple(members)
    assert [(p.partition, p.committed, p.lag, p.owner) for p in info.partitions] == [
        (0, 1, 1, "m-1"), (1, 0, 2, "m-2"), (2, 0, 2, "m-1")]
    assert info.lag == 5


def test_an_empty_external_group_is_known_by_its_offsets_only(q: StreamQueue) -> None:
    members: list[MemberInfo] = []
    q.groups.attach_external("k", lambda: members)
    assert q.groups.names() == [] and "k" not in q.groups
    with pytest.raises(UnknownGroup):
        q.groups.describe("k")
    q.groups.commit("k", 1, 0)
    info = q.groups.describe("k")
    assert not info.active and info.protocol is None and info.members == ()


def test_reset_and_delete_are_refused_while_external_members_exist(q: StreamQueue) -> None:
    members = [kafka("m-1", 0, 1, 2)]
    q.groups.attach_external("k", lambda: members)
    q.groups.commit("k", 0, 0)
    with pytest.raises(GroupActive, match="has 1 active Kafka member"):
        q.groups.reset("k", OffsetReset("latest"))
    with pytest.raises(GroupActive, match="stop its consumers before deleting it"):
        q.groups.delete("k")
    members.clear()  # the Kafka consumer left
    assert [m.after for m in q.groups.reset("k", OffsetReset("latest"))] == [0, 0, 0]
    q.groups.delete("k")
    assert "k" not in q.groups


def test_an_amqp_consumer_may_not_join_a_group_held_by_kafka(q: StreamQueue) -> None:
    q.groups.attach_external("k", lambda: [kafka("m-1", 0)])
    with pytest.raises(ChannelError) as refused:
        q.validate_consumer({"x-consumer-group": "k"}, False, 10)
    assert refused.value.code == 405
    assert "consumer group 'k' on stream 's' in vhost '/' has 1 Kafka member(s)" in str(
        refused.value)
    q.validate_consumer({"x-consumer-group": "other"}, False, 10)  # another group is fine


def test_amqp_active_tells_the_other_front_end_to_keep_out(q: StreamQueue) -> None:
    assert not q.groups.amqp_active("g")
    member = join(q, Member("c1"))
    assert q.groups.amqp_active("g")
    assert q.groups.describe("g").protocol == "amqp"
    q.remove_consumer(member)
    assert not q.groups.amqp_active("g")


def test_detach_forgets_the_provider(q: StreamQueue) -> None:
    q.groups.attach_external("k", lambda: [kafka("m-1")])
    assert q.groups.names() == ["k"]
    q.groups.detach_external("k")
    q.groups.detach_external("k")  # twice is fine
    assert q.groups.names() == [] and q.groups.external_members("k") == ()
    q.validate_consumer({"x-consumer-group": "k"}, False, 10)
