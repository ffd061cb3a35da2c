"""Kafka clients on three real nodes on a real etcd: a topic created through node 1 is
produced to through node 2 and consumed (in a group) through node 3 with confluent-kafka
(librdkafka): Metadata on any node lists the three brokers and node 1 as the leader, the
clients find it themselves; a Produce, Fetch or ListOffsets sent to a node that does not
lead the partition is NOT_LEADER_OR_FOLLOWER; the group's coordinator is the topic's
leader, wherever the consumer asks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.protocol import admin as kafka_admin
from kafka.protocol import consumer, metadata

from smartbroker.cluster import definitions_keys as dk
from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.kafka_peers import broker_id
from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.node_group import all_members, cluster_node, poll
from tests.conftest import assert_clean_log
from tests.kafka.raw_client import Raw, batch, fetch, produce

NAMES = ("n1", "n2", "n3")
TIMEOUT = 20.0
NOT_LEADER = 6


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerProcess]]:
    tmp = tmp_path_factory.mktemp("kafka-cluster")
    cluster = f"k-{free_port()}"
    procs = {n: cluster_node(tmp, n, etcd.endpoint, cluster, kafka=True) for n in NAMES}
    try:
        for proc in procs.values():
            proc.start()
        all_members(procs.values())  # a topic's partitions spread over the nodes up
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()
        for proc in procs.values():
            assert_clean_log(proc)


def create_topic(node: BrokerProcess, topic: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": node.kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions)])[topic].result(TIMEOUT)


def raw_metadata(node: BrokerProcess, topic: str) -> Any:
    """Metadata v10 (with topic ids) for ``topic`` asked of ``node`` itself (a client
    library may ask any broker it knows), without creating it."""
    M = metadata.MetadataRequest
    with Raw(node.kafka_port) as raw:
        return raw.call(M, 10, topics=[M.MetadataRequestTopic(name=topic)],
                        allow_auto_topic_creation=False,
                        include_cluster_authorized_operations=False,
                        include_topic_authorized_operations=False)


def described(node: BrokerProcess, topic: str) -> Any:
    """The topic as ``node`` describes it once it names a leader (as librdkafka reads it),
    else None."""
    if raw_metadata(node, topic).topics[0].error_code != 0:
        return None
    admin = AdminClient({"bootstrap.servers": node.kafka_bootstrap})
    meta = admin.list_topics(topic, timeout=TIMEOUT)
    found = meta.topics[topic]
    return meta if found.error is None and found.partitions else None


def test_metadata_on_every_node_names_three_brokers_and_the_leader(
        nodes: dict[str, BrokerProcess]) -> None:
    create_topic(nodes["n1"], "meta-topic", partitions=2)
    expected = {broker_id(n): ("127.0.0.1", nodes[n].kafka_port) for n in NAMES}
    spread = [broker_id("n1"), broker_id("n2")]  # round robin from the leader
    for name in NAMES:  # n2 leads partition 1 once n1 knows n2 holds the topic
        poll(lambda n=name: [p.leader_id for p in raw_metadata(
            nodes[n], "meta-topic").topics[0].partitions] == spread, f"{name} names n1, n2")
        meta = poll(lambda n=name: described(nodes[n], "meta-topic"), f"{name} describes it")
        assert {b.id: (b.host, b.port) for b in meta.brokers.values()} == expected
        parts = meta.topics["meta-topic"].partitions
        assert sorted(parts) == [0, 1]
        # its partitions spread round robin from the leader (test_partition_spread.py)
        assert [parts[i].leader for i in (0, 1)] == [broker_id("n1"), broker_id("n2")]
        own = raw_metadata(nodes[name], "meta-topic")  # what this node itself answers
        assert {(b.node_id, b.host, b.port) for b in own.brokers} == {
            (i, *where) for i, where in expected.items()}
        assert [p.leader_id for p in own.topics[0].partitions] == [broker_id("n1"),
                                                                   broker_id("n2")]
    # the same cluster id from every node, and DescribeCluster lists the same brokers
    ids = {AdminClient({"bootstrap.servers": nodes[n].kafka_bootstrap}).list_topics(
        timeout=TIMEOUT).cluster_id for n in NAMES}
    assert len(ids) == 1
    admin = AdminClient({"bootstrap.servers": nodes["n3"].kafka_bootstrap})
    described_cluster = admin.describe_cluster().result(TIMEOUT)
    assert {n.id: (n.host, n.port) for n in described_cluster.nodes} == expected
    assert {described_cluster.cluster_id} == ids


def test_clients_bootstrapped_on_other_nodes_produce_and_consume(
        nodes: dict[str, BrokerProcess]) -> None:
    create_topic(nodes["n1"], "orders")
    for name in NAMES:  # as in Kafka, a new topic reaches every broker's metadata shortly
        poll(lambda n=name: described(nodes[n], "orders"), f"{name} describes it")
    producer = Producer({"bootstrap.servers": nodes["n2"].kafka_bootstrap, "linger.ms": 5})
    errors: list[Any] = []
    for i in range(50):
        producer.produce("orders", key=b"k", value=f"m{i}".encode(),
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
    assert producer.flush(TIMEOUT) == 0 and errors == []

    consumer = Consumer({"bootstrap.servers": nodes["n3"].kafka_bootstrap, "group.id": "g-orders",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe(["orders"])
        got: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < 50 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
            elif msg is not None and msg.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(msg.error())
        assert got == [f"m{i}".encode() for i in range(50)]
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition("orders", 0)], timeout=TIMEOUT)
        assert committed[0].offset == 50
    finally:
        consumer.close()
    # the group was coordinated by the topic's leader, where its offset lives
    with Raw(nodes["n2"].kafka_port) as raw:
        F = metadata.FindCoordinatorRequest
        answer = raw.call(F, 2, key="g-orders", key_type=0)
        assert (answer.error_code, answer.node_id, answer.port) == (
            0, broker_id("n1"), nodes["n1"].kafka_port)


def test_a_node_that_does_not_lead_answers_not_leader(nodes: dict[str, BrokerProcess]) -> None:
    create_topic(nodes["n1"], "led-by-n1")
    poll(lambda: described(nodes["n2"], "led-by-n1"), "n2 describes it")
    with Raw(nodes["n2"].kafka_port) as raw:
        assert produce(raw, "led-by-n1", batch([b"x"])).error_code == NOT_LEADER
        assert fetch(raw, "led-by-n1", 0).error_code == NOT_LEADER
        F = consumer.FetchRequest  # v13+: the topic named by its id, the same from every node
        tid = raw_metadata(nodes["n1"], "led-by-n1").topics[0].topic_id
        assert tid.int != 0 and raw_metadata(nodes["n2"], "led-by-n1").topics[0].topic_id == tid
        by_id = raw.call(F, 13, replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20,
                         isolation_level=0, session_id=0, session_epoch=-1, topics=[
                             F.FetchTopic(topic_id=tid, partitions=[F.FetchTopic.FetchPartition(
                                 partition=0, current_leader_epoch=-1, fetch_offset=0,
                                 log_start_offset=-1, partition_max_bytes=1 << 20)])],
                         forgotten_topics_data=[], rack_id="")
        assert by_id.responses[0].partitions[0].error_code == NOT_LEADER
        L = consumer.ListOffsetsRequest
        answer = raw.call(L, 4, replica_id=-1, isolation_level=0, topics=[
            L.ListOffsetsTopic(name="led-by-n1", partitions=[L.ListOffsetsTopic.ListOffsetsPartition(
                partition_index=0, current_leader_epoch=-1, timestamp=-1)])])
        assert answer.topics[0].partitions[0].error_code == NOT_LEADER
        # Metadata asked of n2 does not create the topic there: it stays n1's
        M = metadata.MetadataRequest
        meta = raw.call(M, 8, topics=[M.MetadataRequestTopic(name="led-by-n1")],
                        allow_auto_topic_creation=True, include_cluster_authorized_operations=False,
                        include_topic_authorized_operations=False)
        assert meta.topics[0].error_code == 0, meta
        assert meta.topics[0].partitions[0].leader_id == broker_id("n1")
    with pytest.raises(Exception, match="already exists"):  # from any node it asks
        create_topic(nodes["n2"], "led-by-n1")
    with Raw(nodes["n1"].kafka_port) as raw:  # the leader takes it
        assert produce(raw, "led-by-n1", batch([b"x"])).error_code == 0


def test_a_topic_auto_created_through_a_node_is_led_by_it(nodes: dict[str, BrokerProcess]) -> None:
    """Created where the request arrives (client-local), then found by clients anywhere
    (a client library may send its Metadata to any broker it knows: asked raw here)."""
    M = metadata.MetadataRequest
    with Raw(nodes["n3"].kafka_port) as raw:
        created = raw.call(M, 8, topics=[M.MetadataRequestTopic(name="auto-on-n3")],
                           allow_auto_topic_creation=True,
                           include_cluster_authorized_operations=False,
                           include_topic_authorized_operations=False)
    assert created.topics[0].error_code in (0, 5), created  # 5: being created, retry
    meta = poll(lambda: described(nodes["n1"], "auto-on-n3"), "n1 describes it")
    assert meta.topics["auto-on-n3"].partitions[0].leader == broker_id("n3")
    producer = Producer({"bootstrap.servers": nodes["n1"].kafka_bootstrap})
    producer.produce("auto-on-n3", value=b"hello")
    assert producer.flush(TIMEOUT) == 0


def test_a_manual_assignment_names_the_node_itself(nodes: dict[str, BrokerProcess]) -> None:
    admin = AdminClient({"bootstrap.servers": nodes["n2"].kafka_bootstrap})
    wrong = admin.create_topics([NewTopic("assigned-n1", 1, replica_assignment=[[broker_id("n1")]])])
    with pytest.raises(Exception, match="only replica"):
        wrong["assigned-n1"].result(TIMEOUT)
    done = admin.create_topics([NewTopic("assigned", 1, replica_assignment=[[broker_id("n2")]])])
    done["assigned"].result(TIMEOUT)
    meta = poll(lambda: described(nodes["n3"], "assigned"), "n3 describes it")
    assert meta.topics["assigned"].partitions[0].leader == broker_id("n2")


def in_etcd(node: BrokerProcess, topic: str) -> bool:
    """Whether etcd holds the topic's stream definition (what every node applies)."""
    async def get() -> bool:
        assert node.etcd is not None and node.cluster_name is not None
        async with EtcdClient(node.etcd, node.cluster_name) as etcd:
            return await etcd.get(dk.key("queues", "/", topic)) is not None
    return asyncio.run(get())


def test_a_deleted_topic_leaves_every_node(nodes: dict[str, BrokerProcess]) -> None:
    create_topic(nodes["n1"], "short-lived")
    assert in_etcd(nodes["n1"], "short-lived")  # answered once etcd took it, as a declare
    for name in NAMES:
        poll(lambda n=name: described(nodes[n], "short-lived"), f"{name} describes it")
    D = kafka_admin.DeleteTopicsRequest
    with Raw(nodes["n2"].kafka_port) as raw:  # not its leader: deleted from the definitions
        answer = raw.call(D, 4, topic_names=["short-lived"], timeout_ms=10000)
    assert answer.responses[0].error_code == 0, answer
    assert not in_etcd(nodes["n1"], "short-lived")
    for name in NAMES:
        poll(lambda n=name: raw_metadata(nodes[n], "short-lived").topics[0].error_code == 3,
             f"{name} no longer knows it")


def test_a_topic_whose_leader_is_down_has_no_leader_until_it_is_back(
        nodes: dict[str, BrokerProcess]) -> None:
    create_topic(nodes["n1"], "home-n1")
    poll(lambda: described(nodes["n2"], "home-n1"), "n2 describes it")
    nodes["n1"].stop()
    poll(lambda: raw_metadata(nodes["n2"], "home-n1").topics[0].error_code == 5,
         "LEADER_NOT_AVAILABLE on n2 while n1 is down")
    assert {b.node_id for b in raw_metadata(nodes["n2"], "home-n1").brokers} == {
        broker_id("n2"), broker_id("n3")}
    nodes["n1"].start()
    meta = poll(lambda: described(nodes["n2"], "home-n1"), "n2 describes it again")
    assert meta.topics["home-n1"].partitions[0].leader == broker_id("n1")
