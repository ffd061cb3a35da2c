"""FindCoordinator, OffsetCommit and OffsetFetch against an in-memory broker: a Kafka
commit lands in the topic's StreamGroups book (visible to AMQP groups and describe), and
what AMQP groups committed is what OffsetFetch answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from smartbroker.broker.core import Broker
from smartbroker.kafka import codec
from smartbroker.kafka.codec import Header, Request
from smartbroker.kafka.groups import FIND_COORDINATOR, OFFSET_COMMIT, OFFSET_FETCH
from smartbroker.kafka.handlers import KafkaHandlers, Node, Session
from tests.unit.kafka.kafka_fixtures import ONE_PARTITION, THREE_PARTITIONS, broker_with

SESSION = Session("127.0.0.1:50000", "10.0.0.7")  # the address the client reached us on


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from broker_with({"orders": THREE_PARTITIONS, "single": ONE_PARTITION})


@pytest.fixture
def h(broker: Broker) -> KafkaHandlers:
    return KafkaHandlers(broker, Node(None, 19092, Node.cluster_id_for("x"), "/"))


def call(h: KafkaHandlers, api_key: int, version: int, **fields: Any) -> Any:
    """The handler's answer, encoded and decoded back as a client reads it."""
    body = codec.REQUESTS[api_key](version=version, **fields)
    resp = h.handle(Request(Header(api_key, version, 7, "t"), body), SESSION)
    wire = codec.encode_response(api_key, version, 7, resp)
    return codec.response_class(api_key).decode(wire[4:], version=version, header=True)


def commit(h: KafkaHandlers, group: str, offsets: dict[str, dict[int, int]], version: int = 8,
           generation: int = -1, member: str = "") -> dict[tuple[str, int], int]:
    cls = codec.REQUESTS[OFFSET_COMMIT]
    topic_cls = cls.OffsetCommitRequestTopic
    part_cls = topic_cls.OffsetCommitRequestPartition
    resp = call(h, OFFSET_COMMIT, version, group_id=group, generation_id_or_member_epoch=generation,
                member_id=member, group_instance_id=None, retention_time_ms=-1, topics=[
                    topic_cls(name=t, partitions=[
                        part_cls(partition_index=p, committed_offset=o, committed_leader_epoch=-1,
                                 committed_metadata="m") for p, o in parts.items()])
                    for t, parts in offsets.items()])
    return {(t.name, p.partition_index): p.error_code for t in resp.topics for p in t.partitions}


def fetch(h: KafkaHandlers, group: str, topics: dict[str, list[int]] | None,
          version: int = 7) -> dict[tuple[str, int], tuple[int, int]]:
    cls = codec.REQUESTS[OFFSET_FETCH]
    wanted = None if topics is None else [
        cls.OffsetFetchRequestTopic(name=t, partition_indexes=ps) for t, ps in topics.items()]
    resp = call(h, OFFSET_FETCH, version, group_id=group, topics=wanted, require_stable=False)
    assert resp.error_code == 0
    return {(t.name, p.partition_index): (p.committed_offset, p.error_code)
            for t in resp.topics for p in t.partitions}


def test_find_coordinator_is_this_node(h: KafkaHandlers) -> None:
    resp = call(h, FIND_COORDINATOR, 3, key="g", key_type=0)
    assert (resp.error_code, resp.node_id, resp.host, resp.port) == (0, 0, "10.0.0.7", 19092)
    resp = call(h, FIND_COORDINATOR, 0, key="g")
    assert (resp.error_code, resp.node_id, resp.port) == (0, 0, 19092)
    resp = call(h, FIND_COORDINATOR, 4, key_type=0, coordinator_keys=["a", "b"])
    assert [(c.key, c.error_code, c.node_id, c.host) for c in resp.coordinators] == [
        ("a", 0, 0, "10.0.0.7"), ("b", 0, 0, "10.0.0.7")]


def test_find_coordinator_for_transactions_is_this_node(h: KafkaHandlers) -> None:
    resp = call(h, FIND_COORDINATOR, 4, key_type=1, coordinator_keys=["tx"])
    assert [(c.error_code, c.node_id) for c in resp.coordinators] == [(0, 0)]
    assert call(h, FIND_COORDINATOR, 1, key="tx", key_type=1).error_code == 0


@pytest.mark.parametrize("version", [2, 5, 8])
def test_commit_then_fetch_shares_the_stream_book(broker: Broker, h: KafkaHandlers,
                                                  version: int) -> None:
    orders = broker.vhosts["/"].queues["orders"]
    for i in range(10):
        orders.logs[1].append(b"x%d" % i, None, None)
    codes = commit(h, "billing", {"orders": {1: 4, 2: 0}}, version=version)
    assert codes == {("orders", 1): 0, ("orders", 2): 0}
    assert orders.groups.book.get("billing", 1) == 4
    info = orders.groups.describe("billing")  # what groups describe and /api/groups show
    assert not info.active and info.members == ()
    assert [p.committed for p in info.partitions][1] == 4
    assert fetch(h, "billing", {"orders": [0, 1, 2]}) == {
        ("orders", 0): (-1, 0), ("orders", 1): (4, 0), ("orders", 2): (0, 0)}
    assert "billing" not in broker.vhosts["/"].queues["single"].groups


def test_fetch_sees_what_amqp_groups_committed(broker: Broker, h: KafkaHandlers) -> None:
    single = broker.vhosts["/"].queues["single"]
    single.groups.book.commit("reporting", 0, 3)  # as an AMQP group member's acks do
    assert fetch(h, "reporting", {"single": [0]}) == {("single", 0): (3, 0)}
    assert fetch(h, "reporting", None) == {("single", 0): (3, 0)}  # null topics: all


def test_fetch_all_topics_and_unknown(h: KafkaHandlers) -> None:
    commit(h, "g", {"orders": {0: 5}, "single": {0: 2}})
    assert fetch(h, "g", None) == {("orders", 0): (5, 0), ("single", 0): (2, 0)}
    assert fetch(h, "nobody", None) == {}
    assert fetch(h, "g", {"missing": [0], "orders": [9]}) == {
        ("missing", 0): (-1, 0), ("orders", 9): (-1, 0)}


def test_fetch_v8_batched_groups(h: KafkaHandlers) -> None:
    commit(h, "a", {"orders": {0: 1}})
    commit(h, "b", {"orders": {0: 2}})
    cls = codec.REQUESTS[OFFSET_FETCH]
    g = cls.OffsetFetchRequestGroup
    resp = call(h, OFFSET_FETCH, 8, require_stable=False, groups=[
        g(group_id="a", topics=[g.OffsetFetchRequestTopics(name="orders", partition_indexes=[0])]),
        g(group_id="b", topics=None)])
    got = {grp.group_id: [(t.name, p.partition_index, p.committed_offset)
                          for t in grp.topics for p in t.partitions] for grp in resp.groups}
    assert got == {"a": [("orders", 0, 1)], "b": [("orders", 0, 2)]}


def test_commit_unknown_topic_or_partition(h: KafkaHandlers) -> None:
    assert commit(h, "g", {"missing": {0: 1}, "orders": {3: 1, 0: 1}}) == {
        ("missing", 0): 3, ("orders", 3): 3, ("orders", 0): 0}


def test_commit_from_a_member_nobody_knows(broker: Broker, h: KafkaHandlers) -> None:
    # Kafka: a generation of a group it does not know is ILLEGAL_GENERATION
    assert commit(h, "g", {"orders": {0: 1}}, generation=3, member="m-1") == {("orders", 0): 22}
    assert commit(h, "g", {"orders": {0: 1}}, generation=-1, member="m-1") == {("orders", 0): 25}
    assert commit(h, "", {"orders": {0: 1}}) == {("orders", 0): 24}
    assert broker.vhosts["/"].queues["orders"].groups.book.get("g", 0) is None


def test_simple_commit_to_a_group_with_amqp_members(broker: Broker, h: KafkaHandlers) -> None:
    orders = broker.vhosts["/"].queues["orders"]

    class Live:
        active = True
        members = [object()]
        held: dict[str, object] = {}

    orders.groups.live["busy"] = Live()  # an AMQP group with members on this topic
    assert commit(h, "busy", {"orders": {0: 1}, "single": {0: 1}}) == {
        ("orders", 0): 25, ("single", 0): 0}
    assert orders.groups.book.get("busy", 0) is None
