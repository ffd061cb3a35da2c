"""Operating replicated streams on three real nodes and a real etcd (issue 16):

- ``smartbroker streams add-replica`` puts a replica on the third node: it catches up
  and joins the ISR (Metadata lists it in replicas and isr on every node);
  ``delete-replica`` of the partition leader's replica moves the leadership to a replica
  in sync first, and every acknowledged record is read back from the new leader at its
  offset; refusals are one line with exit code 1;
- Kafka's AlterPartitionReassignments through kafka-python's admin client moves a
  partition to another replica set (a new replica added, caught up, the leader's
  replica removed), ListPartitionReassignments lists it until it is done, and Kafka's
  error codes come back for a bad target, a cancel with nothing under way and an
  unknown topic; a move under way is listed (replicas, adding, removing) and a cancel
  puts the original replicas back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient
from kafka import TopicPartition as KafkaTopicPartition

from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.kafka_peers import broker_id
from smartbroker.cluster.stream_members import read_stream
from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.node_group import all_members, cluster_node, poll, start_all, stop_all
from tests.cluster.test_cluster_cli import smartbroker
from tests.cluster.test_replicated_stream import replica_sets

NAMES = ("n1", "n2", "n3")
TIMEOUT = 30.0
IDS = {n: broker_id(n) for n in NAMES}


class Cluster:
    def __init__(self, nodes: dict[str, BrokerProcess], endpoint: str, name: str) -> None:
        self.nodes, self.endpoint, self.name = nodes, endpoint, name
        self.bootstrap = ",".join(p.kafka_bootstrap for p in nodes.values())

    def cli(self, *args: str) -> Any:
        return smartbroker(*args, "--etcd", self.endpoint, "--cluster-name", self.name)

    def state(self, topic: str) -> Any:
        async def one() -> Any:
            async with EtcdClient(self.endpoint, self.name) as etcd:
                return await read_stream(etcd, "/", topic)
        return asyncio.run(one())

    def put(self, key: str, value: Any) -> None:
        async def one() -> None:
            async with EtcdClient(self.endpoint, self.name) as etcd:
                await etcd.put(key, json.dumps(value).encode())
        asyncio.run(one())

    def create(self, topic: str, factor: int) -> None:
        admin = AdminClient({"bootstrap.servers": self.nodes["n1"].kafka_bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=factor)]
                            )[topic].result(TIMEOUT)
        poll(lambda: self._in_sync(topic, factor), f"{topic}'s {factor} replicas in sync",
             timeout=TIMEOUT)

    def _in_sync(self, topic: str, size: int) -> bool:
        try:
            log = self.state(topic).partition(0)
        except Exception:  # noqa: BLE001 - not written yet
            return False
        return log.leader is not None and len(log.members) == size \
            and sorted(log.isr) == sorted(log.members)

    def listed(self, topic: str, replicas: list[str]) -> None:
        """Every node's Metadata names ``replicas`` (in any order) as replicas and ISR."""
        ids = sorted(IDS[n] for n in replicas)
        for node in NAMES:
            poll(lambda n=node: (found := replica_sets(self.nodes[n], topic)) is not None
                 and sorted(found[0][1]) == ids and found[0][2] == ids,
                 f"{node} lists {topic}'s replicas and ISR as {replicas}", timeout=TIMEOUT)

    def produce(self, topic: str, values: list[bytes]) -> dict[bytes, int]:
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all",
                             "enable.idempotence": True})
        acked: dict[bytes, int] = {}

        def done(err: Any, msg: Any) -> None:
            assert err is None, err
            acked[msg.value()] = msg.offset()
        for value in values:
            producer.produce(topic, value=value, on_delivery=done)
        assert producer.flush(TIMEOUT) == 0
        assert len(acked) == len(values)
        return acked

    def read_all(self, topic: str, count: int) -> dict[bytes, int]:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"r-{free_port()}",
                             "enable.auto.commit": False})
        got: dict[bytes, int] = {}
        try:
            consumer.assign([TopicPartition(topic, 0, 0)])
            poll(lambda: _drain(consumer, got) >= count, f"{count} records of {topic}",
                 timeout=TIMEOUT)
        finally:
            consumer.close()
        return got


def _drain(consumer: Any, got: dict[bytes, int]) -> int:
    msg = consumer.poll(0.2)
    if msg is not None and msg.error() is None:
        got[msg.value()] = msg.offset()
    return len(got)


@pytest.fixture(scope="module")
def cluster(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("stream-ops")
    name = f"sops-{free_port()}"
    procs = {n: cluster_node(tmp, n, etcd.endpoint, name, kafka=True) for n in NAMES}
    try:
        start_all(procs.values())
        all_members(procs.values())
        yield Cluster(procs, etcd.endpoint, name)
    finally:
        stop_all(procs.values())


def test_add_replica_then_delete_the_leaders(cluster: Cluster) -> None:
    topic = "sops-cli"
    cluster.create(topic, 2)
    before = cluster.state(topic).partition(0)
    third = next(n for n in NAMES if n not in before.members)
    acked = cluster.produce(topic, [f"a{i}".encode() for i in range(200)])

    added = cluster.cli("streams", "add-replica", "/", topic, third)
    assert added.returncode == 0, added.output
    assert f"node {third} added" in added.stdout
    cluster.listed(topic, [*before.members, third])  # caught up: in the ISR
    again = cluster.cli("streams", "add-replica", "/", topic, third)
    assert again.returncode == 0 and "already a replica" in again.stdout

    leader = before.leader
    assert leader is not None
    removed = cluster.cli("streams", "delete-replica", "/", topic, leader, "--partition", "0")
    assert removed.returncode == 0, removed.output
    after = cluster.state(topic).partition(0)
    assert leader not in after.members and after.leader not in (None, leader)
    cluster.listed(topic, after.members)
    more = cluster.produce(topic, [f"b{i}".encode() for i in range(50)])
    got = cluster.read_all(topic, len(acked) + len(more))
    assert got == {**acked, **more}  # every acknowledged record, at its offset

    back = cluster.cli("streams", "add-replica", "/", topic, leader)  # its old copy resumes
    assert back.returncode == 0, back.output
    cluster.listed(topic, list(NAMES))


def test_refusals_are_one_line(cluster: Cluster) -> None:
    topic = "sops-refused"
    cluster.create(topic, 2)
    members = cluster.state(topic).partition(0).members
    cases = [
        (("add-replica", "/", "nope", "n1"), "stream 'nope' not found in vhost '/'"),
        (("add-replica", "/", topic, "n9"), "no node 'n9' in the cluster"),
        (("add-replica", "/", topic, "n1", "--partition", "3"), "has no partition 3"),
    ]
    for args, text in cases:
        done = cluster.cli("streams", *args)
        assert done.returncode == 1 and text in done.output, (args, done.output)
        assert len(done.output.strip().splitlines()) == 1, done.output
    one = cluster.cli("streams", "delete-replica", "/", topic, members[1])
    assert one.returncode == 0, one.output
    last = cluster.cli("streams", "delete-replica", "/", topic, members[0])
    assert last.returncode == 1 and "the last replica cannot be removed" in last.output


def test_kafka_partition_reassignment(cluster: Cluster) -> None:
    from kafka.errors import (
        InvalidReplicationAssignmentError,
        NoReassignmentInProgressError,
        UnknownTopicOrPartitionError,
    )

    topic = "sops-kafka"
    cluster.create(topic, 2)
    before = cluster.state(topic).partition(0)
    acked = cluster.produce(topic, [f"k{i}".encode() for i in range(200)])
    third = next(n for n in NAMES if n not in before.members)
    keep = next(n for n in before.members if n != before.leader)
    target = [third, keep]  # the leader's replica goes, a new one comes
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        tp = KafkaTopicPartition(topic, 0)
        assert admin.alter_partition_reassignments(
            {tp: [IDS[n] for n in target]}) == {tp: None}
        poll(lambda: admin.list_partition_reassignments() == {},
             "the reassignment done", timeout=TIMEOUT)
        cluster.listed(topic, target)
        after = cluster.state(topic).partition(0)
        assert after.members == target and after.leader in target
        got = cluster.read_all(topic, len(acked))
        assert got == acked

        errors = admin.alter_partition_reassignments({
            tp: [IDS[third], IDS[third]],
            KafkaTopicPartition(topic, 1): [IDS[third]],
            KafkaTopicPartition("sops-none", 0): [IDS[third]],
        })
        assert errors == {tp: InvalidReplicationAssignmentError,
                          KafkaTopicPartition(topic, 1): UnknownTopicOrPartitionError,
                          KafkaTopicPartition("sops-none", 0): UnknownTopicOrPartitionError}
        assert admin.alter_partition_reassignments({tp: [12345]}) == {
            tp: InvalidReplicationAssignmentError}
        assert admin.alter_partition_reassignments({tp: None}) == {
            tp: NoReassignmentInProgressError}

        # a move under way (its record written as a node writes it): listed, then cancelled
        cluster.put(f"reassign/%2F/{topic}/0", {"target": [*target, before.leader],
                                               "original": target, "node": "n1"})
        assert admin.list_partition_reassignments() == {tp: {
            "replicas": [IDS[n] for n in target], "adding_replicas": [IDS[before.leader]],
            "removing_replicas": []}}
        assert admin.list_partition_reassignments([KafkaTopicPartition(topic, 1)]) == {}
        assert admin.alter_partition_reassignments({tp: None}) == {tp: None}
        assert admin.list_partition_reassignments() == {}
        assert cluster.state(topic).partition(0).members == target
    finally:
        admin.close()


def test_rebalance_moves_stream_partition_leaders(cluster: Cluster) -> None:
    from smartbroker.cluster.stream_members import transfer

    topic = "sops-rebalance"
    admin = AdminClient({"bootstrap.servers": cluster.nodes["n1"].kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)]
                        )[topic].result(TIMEOUT)

    def logs() -> list[Any]:
        state = cluster.state(topic)
        return [state.logs.get(p) for p in range(3)]
    poll(lambda: all(lg is not None and lg.leader and len(lg.isr) == 3 for lg in logs()),
         "every partition led with 3 replicas in sync", timeout=TIMEOUT)

    async def all_to_n1(found: list[Any]) -> None:  # unbalance it: n1 leads every partition
        async with EtcdClient(cluster.endpoint, cluster.name) as etcd:
            for lg in found:
                if lg.leader != "n1":
                    await transfer(etcd, lg.name.id, lg.leader, "n1", TIMEOUT)
    asyncio.run(all_to_n1(logs()))
    assert [lg.leader for lg in logs()] == ["n1"] * 3

    done = cluster.cli("cluster", "rebalance", "streams", "--queue-pattern", "^sops-rebalance$",
                       "--json")
    assert done.returncode == 0, done.output
    assert sorted(lg.leader for lg in logs()) == ["n1", "n2", "n3"]
    assert {n["node"]: n["stream_leaders"] for n in json.loads(done.stdout)["nodes"]} == {
        "n1": 1, "n2": 1, "n3": 1}
    poll(lambda: sorted(p[0] for p in replica_sets(cluster.nodes["n2"], topic) or []) == sorted(
        IDS.values()), "Metadata names the new leaders", timeout=TIMEOUT)
