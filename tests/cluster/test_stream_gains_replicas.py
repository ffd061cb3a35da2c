"""A stream declared without replicas gains them afterwards (issue 16), as RabbitMQ's
``rabbitmq-streams add_replica`` and Kafka's reassignments allow, on three real nodes:

- AMQP: a stream declared with ``x-initial-cluster-size`` 1 and published to with
  confirms gets two replicas with ``smartbroker streams add-replica``; once all three
  are in sync its leader is killed (kill -9) and a survivor serves every record, old and
  new, at offsets that go on from where they were;
- Kafka: a topic created with ``replication.factor`` 1 goes to three replicas through
  kafka-python's AlterPartitionReassignments; the same kill, every acknowledged record
  read back at its offset;
- refusals: a partition other than 0 first, an unknown node (one line, exit 1); a
  stream spread over the nodes gains a replica of every partition, each led where its
  records are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient
from kafka import TopicPartition as KafkaTopicPartition

from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.kafka_peers import broker_id
from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.node_group import all_members, cluster_node, poll, start_all, stop_all
from tests.cluster.test_stream_replica_ops import Cluster

NAMES = ("n1", "n2", "n3")
TIMEOUT = 30.0


class Nodes(Cluster):
    """test_stream_replica_ops' cluster helpers (``nodes``, ``cli``, ``state``), and
    what these tests wait for."""

    def in_sync(self, stream: str, size: int, partitions: int = 1) -> None:
        """Every partition's log and the group offsets' led, with ``size`` in sync."""
        def done() -> bool:
            state = self.state(stream)
            logs = [state.logs.get(p) for p in [*range(partitions), None]]
            return all(lg is not None and lg.leader and len(lg.isr) == size for lg in logs)
        poll(done, f"{stream}: {size} replicas in sync", timeout=TIMEOUT)

    def replica_keys(self, stream: str) -> list[bytes]:
        async def one() -> list[bytes]:
            async with EtcdClient(self.endpoint, self.name) as etcd:
                found, _ = await etcd.range("replica/")
                return [kv.key for kv in found if f"/%2F/{stream}".encode() in kv.key]
        return asyncio.run(one())

    def restart(self, name: str) -> None:
        self.nodes[name].start()
        all_members(self.nodes.values())


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    tmp = tmp_path_factory.mktemp("gains")
    name = f"gains-{free_port()}"
    procs = {n: cluster_node(tmp, n, etcd.endpoint, name, kafka=True) for n in NAMES}
    try:
        start_all(procs.values())
        all_members(procs.values())
        yield Nodes(procs, etcd.endpoint, name)
    finally:
        stop_all(procs.values())


def publish(node: BrokerProcess, queue: str, bodies: list[bytes]) -> None:
    """Each body confirmed through ``node``, in order; a nack or a lost connection (a
    failover under way) publishes it again."""
    deadline = time.monotonic() + TIMEOUT
    pending = list(bodies)
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} not confirmed through {node.node_name}"
        try:
            conn = pika.BlockingConnection(pika.URLParameters(node.url))
        except pika.exceptions.AMQPError:
            time.sleep(0.2)
            continue
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            while pending:
                try:
                    ch.basic_publish("", queue, pending[0], pika.BasicProperties(delivery_mode=2))
                except pika.exceptions.NackError:
                    time.sleep(0.2)
                    continue
                pending.pop(0)
        except pika.exceptions.AMQPError:
            time.sleep(0.2)
        finally:
            if conn.is_open:
                conn.close()


def read(node: BrokerProcess, queue: str, count: int) -> list[tuple[int, bytes]]:
    """(offset, body) from ``first`` on ``node`` until ``count`` came and 0.5 s of quiet."""
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    got: list[tuple[int, bytes]] = []
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=500)

        def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
            got.append(((props.headers or {}).get("x-stream-offset"), body))
            ch.basic_ack(method.delivery_tag)

        ch.basic_consume(queue, on_message, arguments={"x-stream-offset": "first"})
        poll(lambda: (conn.process_data_events(0.05), len(got) >= count)[1],
             f"{count} messages read on {node.node_name}", TIMEOUT)
        conn.process_data_events(0.5)
    finally:
        conn.close()
    return got


def test_amqp_stream_gains_two_replicas_then_loses_its_leader(nodes: Nodes) -> None:
    queue = "gains-amqp"
    conn = pika.BlockingConnection(pika.URLParameters(nodes.nodes["n1"].url))
    conn.channel().queue_declare(queue, durable=True, arguments={
        "x-queue-type": "stream", "x-initial-cluster-size": 1})
    conn.close()
    bodies = [f"m{i}".encode() for i in range(300)]
    publish(nodes.nodes["n1"], queue, bodies[:100])
    assert nodes.state(queue).partition(0).members == ["n1"]  # no replica yet

    for node in ("n2", "n3"):
        added = nodes.cli("streams", "add-replica", "/", queue, node)
        assert added.returncode == 0, added.output
        assert f"node {node} added" in added.stdout
    nodes.in_sync(queue, 3)
    assert nodes.state(queue).partition(0).leader == "n1"  # its records stayed there
    publish(nodes.nodes["n1"], queue, bodies[100:200])  # confirmed by the replica set

    nodes.nodes["n1"].kill()
    try:
        publish(nodes.nodes["n2"], queue, bodies[200:])  # once a survivor leads
        got = read(nodes.nodes["n3"], queue, len(bodies))
        assert [body for _, body in got] == bodies
        assert [offset for offset, _ in got] == list(range(len(bodies)))
    finally:
        nodes.restart("n1")


def test_kafka_topic_of_factor_one_reassigned_to_three(nodes: Nodes) -> None:
    topic = "gains-kafka"
    admin = AdminClient({"bootstrap.servers": nodes.nodes["n2"].kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]
                        )[topic].result(TIMEOUT)
    leader = poll(lambda: _members(nodes, topic), f"{topic} placed")[0]
    producer = Producer({"bootstrap.servers": nodes.bootstrap, "acks": "all",
                         "enable.idempotence": True})
    acked: dict[bytes, int] = {}

    def produce(values: list[bytes]) -> None:
        def done(err: Any, msg: Any) -> None:
            assert err is None, err
            acked[msg.value()] = msg.offset()
        for value in values:
            producer.produce(topic, value=value, on_delivery=done)
        assert producer.flush(TIMEOUT) == 0

    produce([f"k{i}".encode() for i in range(100)])
    target = [leader, *(n for n in NAMES if n != leader)]
    reassigner = KafkaAdminClient(bootstrap_servers=nodes.bootstrap)
    try:
        tp = KafkaTopicPartition(topic, 0)
        assert reassigner.alter_partition_reassignments(
            {tp: [broker_id(n) for n in target]}) == {tp: None}
        poll(lambda: reassigner.list_partition_reassignments() == {}, "the reassignment done",
             timeout=TIMEOUT)
    finally:
        reassigner.close()
    nodes.in_sync(topic, 3)
    assert nodes.state(topic).partition(0).members == target
    produce([f"l{i}".encode() for i in range(100)])

    nodes.nodes[leader].kill()
    try:
        produce([f"after{i}".encode() for i in range(50)])  # retried until a survivor leads
        got = read_partition(nodes, topic, "gains", len(acked))
        assert got == acked  # every acknowledged record, at the offset it was given
        assert sorted(acked.values()) == list(range(250))
    finally:
        nodes.restart(leader)


def _members(nodes: Nodes, topic: str) -> list[str] | None:
    try:
        return nodes.state(topic).partition(0).members
    except Exception:  # noqa: BLE001 - not placed yet
        return None


def read_partition(nodes: Nodes, topic: str, group: str, count: int) -> dict[bytes, int]:
    """value -> offset of partition 0's records from offset 0, until ``count`` came."""
    consumer = Consumer({"bootstrap.servers": nodes.bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    got: dict[bytes, int] = {}
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        poll(lambda: _drain(consumer, got) >= count, f"{count} records", timeout=TIMEOUT)
    finally:
        consumer.close()
    return got


def _drain(consumer: Any, got: dict[bytes, int]) -> int:
    msg = consumer.poll(0.2)
    if msg is not None and msg.error() is None:
        got[msg.value()] = msg.offset()
    return len(got)


def test_refusals_then_a_spread_stream_gains_a_replica_everywhere(nodes: Nodes) -> None:
    queue = "gains-spread"
    conn = pika.BlockingConnection(pika.URLParameters(nodes.nodes["n1"].url))
    conn.channel().queue_declare(queue, durable=True, arguments={
        "x-queue-type": "stream", "x-partitions": 3})
    conn.close()
    owners = poll(lambda: _owners(nodes, queue), f"{queue} placed")
    cases = [
        (("add-replica", "/", queue, owners[0], "--partition", "2"),
         "has no replicas yet: add one to partition 0 first"),
        (("add-replica", "/", queue, "n9"), "no node 'n9' in the cluster"),
        (("delete-replica", "/", queue, owners[0], "--partition", "0"),
         "the last replica cannot be removed"),
    ]
    for args, text in cases:
        done = nodes.cli("streams", *args)
        assert done.returncode == 1 and text in done.output, (args, done.output)
        assert len(done.output.strip().splitlines()) == 1, done.output

    bodies = [f"s{i}".encode() for i in range(90)]
    publish(nodes.nodes["n1"], queue, bodies)  # spread over the three partitions
    added = nodes.cli("streams", "add-replica", "/", queue, "n2")
    assert added.returncode == 0, added.output
    state = nodes.state(queue)
    assert [state.partition(p).members for p in range(3)] == [
        [o, "n2"] if o != "n2" else ["n2"] for o in owners]
    poll(lambda: all(len(nodes.state(queue).partition(p).isr) == len(m) for p, m in
                     enumerate(nodes.state(queue).partition_members)),
         "every replica in sync", timeout=TIMEOUT)
    got = read(nodes.nodes["n3"], queue, len(bodies))
    assert sorted(body for _, body in got) == sorted(bodies)

    conn = pika.BlockingConnection(pika.URLParameters(nodes.nodes["n2"].url))
    conn.channel().queue_delete(queue)
    conn.close()
    poll(lambda: not nodes.replica_keys(queue), "its replica records deleted with it")


def _owners(nodes: Nodes, queue: str) -> list[str] | None:
    try:
        return nodes.state(queue).placement["partitions"]
    except Exception:  # noqa: BLE001 - not placed yet
        return None


def test_kafka_topic_of_factor_one_moves_to_another_node(nodes: Nodes) -> None:
    """kafka-reassign-partitions' usual move: a topic's only replica goes to another
    broker (copied there first, then the leadership and the old replica leave)."""
    topic = "gains-move"
    admin = AdminClient({"bootstrap.servers": nodes.nodes["n1"].kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]
                        )[topic].result(TIMEOUT)
    owner = poll(lambda: _members(nodes, topic), f"{topic} placed")[0]
    producer = Producer({"bootstrap.servers": nodes.bootstrap, "acks": "all"})
    acked: dict[bytes, int] = {}
    for i in range(100):
        producer.produce(topic, value=f"v{i}".encode(),
                         on_delivery=lambda err, msg: acked.update({msg.value(): msg.offset()}))
    assert producer.flush(TIMEOUT) == 0 and len(acked) == 100
    to = next(n for n in NAMES if n != owner)
    reassigner = KafkaAdminClient(bootstrap_servers=nodes.bootstrap)
    try:
        tp = KafkaTopicPartition(topic, 0)
        assert reassigner.alter_partition_reassignments({tp: [broker_id(to)]}) == {tp: None}
        poll(lambda: reassigner.list_partition_reassignments() == {}, "the move done",
             timeout=TIMEOUT)
    finally:
        reassigner.close()
    state = nodes.state(topic)
    assert state.partition(0).members == [to] and state.partition(0).leader == to
    for i in range(100, 150):
        producer.produce(topic, value=f"v{i}".encode(),
                         on_delivery=lambda err, msg: acked.update({msg.value(): msg.offset()}))
    assert producer.flush(TIMEOUT) == 0 and len(acked) == 150
    got = read_partition(nodes, topic, "gains-move", len(acked))
    assert got == acked and sorted(acked.values()) == list(range(150))
