"""Replicated streams without nodes: the replica sets a placement gets, the log ids,
``x-initial-cluster-size`` refused as RabbitMQ refuses it, and the queue side of a
replicated partition on a real (in-memory) stream: reads stop at the high watermark, a
confirm waits for the replica set, a failed commit is a nack."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from smartbroker.cluster.partition_spread import spread
from smartbroker.cluster.placement import Placement
from smartbroker.cluster.spread_carry_on import delivered_at
from smartbroker.cluster.spread_replicas import (
    OFFSETS,
    cluster_size,
    log_id,
    members_after,
    replicate,
    replicated,
    with_leader,
)
from smartbroker.errors import AMQPError
from smartbroker.message import Message
from smartbroker.queues import stream_replicated
from smartbroker.queues.stream import StreamQueue
from smartbroker.queues.stream_args import StreamSettings
from smartbroker.queues.stream_records import delivery_message
from smartbroker.store.api import StoreUnavailable

UP = ["n1", "n2", "n3"]


def test_members_start_at_the_leader_and_go_round_the_nodes() -> None:
    assert members_after("n2", UP, 3) == ("n2", "n3", "n1")
    assert members_after("n3", UP, 2) == ("n3", "n1")
    assert members_after("n1", UP, 5) == ("n1", "n2", "n3")  # capped at the nodes up


def test_one_partition_gets_partitions_and_partition_members() -> None:
    placed = replicate(Placement("n2"), 1, 3, UP)
    assert placed.partitions == ("n2",)
    assert placed.partition_members == (("n2", "n3", "n1"),)
    assert placed.members == ()
    assert replicated(placed) and spread(placed)
    assert Placement.decode(placed.encode()) == placed


def test_spread_partitions_each_get_their_own_set() -> None:
    placed = replicate(Placement("n1", ("n1", "n2", "n3")), 3, 2, UP)
    assert placed.partition_members == (("n1", "n2"), ("n2", "n3"), ("n3", "n1"))


def test_size_one_or_a_lone_node_changes_nothing() -> None:
    assert replicate(Placement("n1"), 1, 1, UP) == Placement("n1")
    assert replicate(Placement("n1"), 1, 3, ["n1"]) == Placement("n1")
    assert not replicated(Placement("n1")) and not spread(Placement("n1"))


def test_cluster_size_reads_the_argument() -> None:
    assert cluster_size({}) == 1
    assert cluster_size({"x-initial-cluster-size": 3}) == 3
    assert cluster_size({"x-initial-cluster-size": True}) == 1


def test_log_ids_and_leader_changes() -> None:
    assert log_id("/", "a b", 2) == "%2F/a%20b/2"
    assert log_id("v", "s", OFFSETS) == "v/s"  # the group offsets: the stream's own id
    placed = Placement("n1", ("n1", "n2"), partition_members=(("n1", "n2"), ("n2", "n1")))
    assert with_leader(placed, 1, "n1").partitions == ("n1", "n1")
    assert with_leader(placed, OFFSETS, "n2").leader == "n2"


def _parse(value: object) -> StreamSettings:
    return StreamSettings.parse("s", "/", True, False, False, {"x-initial-cluster-size": value})


@pytest.mark.parametrize(("value", "why"), [
    (0, "{value_zero,0}"), (-2, "{value_negative,-2}"),
    ("3", '"expected integer, got longstr"')])
def test_initial_cluster_size_refused_as_rabbitmq_does(value: object, why: str) -> None:
    with pytest.raises(AMQPError) as caught:
        _parse(value)
    assert caught.value.code == 406
    assert caught.value.text == ("invalid arg 'x-initial-cluster-size' "
                                 f"for queue 's' in vhost '/': {why}")


def test_initial_cluster_size_accepted() -> None:
    assert _parse(3).partitions == 1


# -- the queue side (queues/stream_replicated.py), on a real in-memory stream ------------

class Reader:
    """A consumer with plenty of credit that keeps what it is sent."""

    def __init__(self) -> None:
        self.tag, self.no_ack, self.exclusive, self.priority = "r", False, False, 0
        self.parked, self.unacked = False, 0
        self.arguments = {"x-stream-offset": "first"}
        self.got: list[int] = []
        self.cancelled = False

    def can_take(self) -> bool:
        return True

    def deliver(self, queue: StreamQueue, entry: Any) -> None:
        self.got.append(entry.offset)

    def cancelled_by_broker(self) -> None:
        self.cancelled = True


def _stream() -> StreamQueue:
    return StreamQueue("s", "/", settings=StreamSettings(partitions=1))


def _publish(stream: StreamQueue, n: int) -> None:
    for i in range(n):
        stream.publish(Message.build("", "s", f"m{i}".encode()))


def test_readers_and_kafka_bounds_stop_at_the_high_watermark() -> None:
    stream = _stream()
    stream_replicated.replicate(stream, object())
    reader = Reader()
    stream.add_consumer(reader)
    _publish(stream, 5)
    stream.dispatch_now()
    assert reader.got == [] and stream.partitions[0].bounds() == (0, 0)  # a follower's
    committed: list[int] = []
    stream_replicated.lead(stream, 0, _recorder(committed), 3)
    stream.dispatch_now()
    assert reader.got == [0, 1, 2] and stream.partitions[0].next_offset == 3
    grew: list[int] = []
    stream.on_append.append(grew.append)  # a waiting Fetch
    stream_replicated.advance(stream, 0, 5)
    stream.dispatch_now()
    assert reader.got == [0, 1, 2, 3, 4] and grew == [0]
    stream_replicated.advance(stream, 0, 4)  # never backwards
    assert stream.partitions[0].bounds() == (0, 5)
    stream_replicated.follow(stream, 0)
    _publish(stream, 1)
    stream.dispatch_now()
    assert reader.got == [0, 1, 2, 3, 4] and stream.partitions[0].next_offset == 0


def test_a_confirm_waits_for_the_replica_set_and_acks_1_for_the_log() -> None:
    stream = _stream()
    stream_replicated.replicate(stream, object())
    committed: list[int] = []
    stream_replicated.lead(stream, 0, _recorder(committed), 0)
    _publish(stream, 3)
    result = stream.publish(Message.build("", "s", b"last"))
    sync = result.sync
    assert isinstance(sync, stream_replicated.CommittedSync) and not sync.written_only
    asyncio.run(sync.sync())
    assert committed == [3]  # everything appended before the call
    asyncio.run(sync.wait_durable(1))
    assert committed == [3, 1]
    assert sync.local is stream.logs[0]  # what Kafka's acks=1 waits for


def test_a_failed_commit_is_a_nack_never_a_confirm() -> None:
    stream = _stream()
    stream_replicated.replicate(stream, object())

    async def lost(offset: int) -> None:
        raise RuntimeError("no longer leads")

    stream_replicated.lead(stream, 0, lost, 0)
    _publish(stream, 1)
    sync = stream.publish(Message.build("", "s", b"x")).sync
    with pytest.raises(stream_replicated.NotCommitted) as caught:
        asyncio.run(sync.sync())
    assert caught.value.leader_lost and isinstance(caught.value, StoreUnavailable)


def test_a_single_node_stream_has_no_replication() -> None:
    stream = _stream()
    assert stream.limits is None and stream.replication is None
    _publish(stream, 2)
    assert stream.partitions[0].next_offset == 2


def _recorder(committed: list[int]) -> Any:
    async def committed_at(offset: int) -> None:
        committed.append(offset)
    return committed_at


def test_where_a_relayed_delivery_is_found_in_its_header() -> None:
    published = Message.build("", "s", b"body")
    delivered = delivery_message(published.route, published.header_payload, published.flags,
                                 b"body", 2, 12345678901)
    assert delivered_at(delivered.header_payload) == (2, 12345678901)
    assert delivered.headers["x-stream-offset"] == 12345678901  # what the client sees
    assert delivered_at(published.header_payload) is None


def test_resume_positions_survive_their_argument() -> None:
    encoded = stream_replicated.encode_positions({3: 10, 0: 7})
    assert encoded == "0:7,3:10"
    assert stream_replicated.decode_positions(encoded.encode()) == {0: 7, 3: 10}
    assert stream_replicated.decode_positions("x:1,2:-1,4:5") == {4: 5}  # bad items left out
    assert stream_replicated.decode_positions(42) == {}


def test_a_relayed_reader_starts_where_its_consumer_got_to() -> None:
    stream = StreamQueue("s", "/", settings=StreamSettings(partitions=2))
    for i in range(12):  # keyed by routing key: both partitions get some
        stream.publish(Message.build("", f"k{i}", f"m{i}".encode()))
    ends = [lg.next_offset for lg in stream.logs]
    assert min(ends) >= 3  # both partitions hold some
    got: list[tuple[int, int]] = []
    reader = Reader()
    reader.deliver = lambda queue, entry: got.append((entry.partition, entry.offset))  # type: ignore[method-assign]
    reader.arguments = {"x-stream-offset": "first", stream_replicated.RESUME: "1:2,9:1"}
    stream.add_consumer(reader)
    assert sorted(o for p, o in got if p == 0) == list(range(ends[0]))  # from first
    assert sorted(o for p, o in got if p == 1) == list(range(2, ends[1]))  # from 2
