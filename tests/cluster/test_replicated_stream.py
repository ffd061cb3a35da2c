"""Replicated streams declared on three real nodes on a real etcd: Kafka's
``replication.factor`` and RabbitMQ's ``x-initial-cluster-size`` give each partition a
replica set, every node names it in Metadata (replicas and ISR), a factor above the
nodes is refused as Kafka refuses it, a replicated stream of one partition is held
on every node, so a publish through one node is read through another, and a deleted
replicated topic leaves no replica record in etcd."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.protocol import metadata

from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.kafka_peers import broker_id
from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.node_group import all_members, cluster_node, poll, start_all, stop_all
from tests.kafka.raw_client import Raw

NAMES = ("n1", "n2", "n3")
TIMEOUT = 20.0
INVALID_REPLICATION_FACTOR = 38


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerProcess]]:
    tmp = tmp_path_factory.mktemp("replicated")
    cluster = f"r-{free_port()}"
    procs = {n: cluster_node(tmp, n, etcd.endpoint, cluster, kafka=True) for n in NAMES}
    try:
        start_all(procs.values())
        all_members(procs.values())  # replicas go to the nodes up at the declare
        yield procs
    finally:
        stop_all(procs.values())


def metadata_of(node: BrokerProcess, topic: str) -> Any:
    """Metadata v10 of ``topic`` as ``node`` answers it (no auto-creation)."""
    M = metadata.MetadataRequest
    with Raw(node.kafka_port) as raw:
        return raw.call(M, 10, topics=[M.MetadataRequestTopic(name=topic)],
                        allow_auto_topic_creation=False,
                        include_cluster_authorized_operations=False,
                        include_topic_authorized_operations=False).topics[0]


def replica_sets(node: BrokerProcess, topic: str) -> list[tuple[int, list[int], list[int]]] | None:
    """(leader, replicas, isr) per partition as ``node`` names them, once it lists it."""
    found = metadata_of(node, topic)
    if found.error_code or any(p.error_code for p in found.partitions):
        return None
    return [(p.leader_id, list(p.replica_nodes), sorted(p.isr_nodes)) for p in found.partitions]


def test_metadata_lists_each_partitions_replicas_and_isr(nodes: dict[str, BrokerProcess]) -> None:
    admin = AdminClient({"bootstrap.servers": nodes["n1"].kafka_bootstrap})
    admin.create_topics([NewTopic("rs-meta", num_partitions=3, replication_factor=2)]
                        )["rs-meta"].result(TIMEOUT)
    ids = [broker_id(n) for n in NAMES]
    # partition i led by node i (spread from n1), copied on the next node round the ring
    expected = [(ids[i], [ids[i], ids[(i + 1) % 3]], sorted([ids[i], ids[(i + 1) % 3]]))
                for i in range(3)]
    for name in NAMES:
        poll(lambda n=name: replica_sets(nodes[n], "rs-meta") == expected,
             f"{name} names every partition's replicas and ISR")


def test_a_factor_above_the_nodes_is_refused(nodes: dict[str, BrokerProcess]) -> None:
    admin = AdminClient({"bootstrap.servers": nodes["n2"].kafka_bootstrap})
    future = admin.create_topics([NewTopic("rs-four", num_partitions=1,
                                           replication_factor=4)])["rs-four"]
    with pytest.raises(Exception) as caught:
        future.result(TIMEOUT)
    error = caught.value.args[0]
    assert error.code() == INVALID_REPLICATION_FACTOR
    assert "only 3 broker(s) are registered" in error.str()


def test_amqp_initial_cluster_size_holds_the_stream_on_every_node(
        nodes: dict[str, BrokerProcess]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n2"].url))
    try:
        ch = conn.channel()
        ch.queue_declare("rs-amqp", durable=True, arguments={
            "x-queue-type": "stream", "x-initial-cluster-size": 3})
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            conn.channel().queue_declare("rs-zero", durable=True, arguments={
                "x-queue-type": "stream", "x-initial-cluster-size": 0})
        assert refused.value.reply_code == 406
        ch.confirm_delivery()
        for i in range(5):
            ch.basic_publish("", "rs-amqp", f"m{i}".encode(),
                             pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()
    for name in NAMES:  # leader n2 (client-local); read through every node
        got = read(nodes[name], "rs-amqp", 5)
        assert [body for _, body in got] == [f"m{i}".encode() for i in range(5)]


def read(node: BrokerProcess, queue: str, count: int) -> list[tuple[int, bytes]]:
    """(offset, body) of ``count`` deliveries from offset ``first`` to a reader on ``node``."""
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    got: list[tuple[int, bytes]] = []
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=50)

        def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
            got.append(((props.headers or {}).get("x-stream-offset"), body))
            ch.basic_ack(method.delivery_tag)

        ch.basic_consume(queue, on_message, arguments={"x-stream-offset": "first"})
        poll(lambda: (conn.process_data_events(0.05), len(got) >= count)[1],
             f"{count} deliveries on {node.node_name}")
        conn.process_data_events(0.2)  # and no more (no duplicate from a copy)
    finally:
        conn.close()
    return got


def test_a_deleted_replicated_topic_leaves_no_replica_records(
        nodes: dict[str, BrokerProcess], etcd: Any) -> None:
    admin = AdminClient({"bootstrap.servers": nodes["n3"].kafka_bootstrap})
    admin.create_topics([NewTopic("rs-gone", num_partitions=2, replication_factor=3)]
                        )["rs-gone"].result(TIMEOUT)
    ids = [broker_id(n) for n in NAMES]
    poll(lambda: (found := replica_sets(nodes["n1"], "rs-gone")) is not None
         and all(sorted(isr) == sorted(ids) for _, _, isr in found),
         "both partitions in sync on three nodes")
    admin.delete_topics(["rs-gone"])["rs-gone"].result(TIMEOUT)
    for name in NAMES:
        poll(lambda n=name: metadata_of(nodes[n], "rs-gone").error_code == 3,
             f"{name} no longer lists the topic")
    poll(lambda: not replica_keys(etcd, nodes["n1"], "rs-gone"), "its replica records deleted")


def replica_keys(etcd: Any, node: BrokerProcess, topic: str) -> list[bytes]:
    """The cluster's replica/ keys naming ``topic`` (read straight from etcd)."""
    async def read() -> list[bytes]:
        async with EtcdClient(etcd.endpoint, node.cluster_name) as client:
            found, _ = await client.range("replica/")
        return [kv.key for kv in found]

    return [k for k in asyncio.run(read()) if f"/{topic}".encode() in k]
