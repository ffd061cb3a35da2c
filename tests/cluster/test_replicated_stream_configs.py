"""A replicated stream's loose ends on three real nodes and a real etcd (issue 16):

- a topic config altered on one node (``min.insync.replicas=3``) is described by every
  node and is in force on the new leader after the old one's kill -9 (acks=all refused
  with NOT_ENOUGH_REPLICAS while two replicas are in sync, stored again once the third
  is back), as Kafka's cluster-wide topic configs are;
- ``streams delete-replica`` of a follower deletes its copy's records on that node's
  disk, and ``add-replica`` copies the partition to it again from scratch;
- an AMQP consumer group acking through a node that leads a partition but not the
  group offsets log: its commits reach the replicated offsets log, so a new leader of
  that partition (the first one killed) resumes the group where it acked.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType
from kafka.protocol import producer

from smartbroker.cluster import topic_configs
from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.replication import stream_offsets
from smartbroker.launcher import BrokerProcess, free_port
from smartbroker.queues.offsets import OffsetBook
from smartbroker.store.memory import MemoryLog
from tests.cluster.node_group import all_members, cluster_node, poll, start_all, stop_all
from tests.cluster.test_stream_replica_ops import Cluster
from tests.kafka.raw_client import Raw, batch
from tests.kafka.topic_admin import described, incremental

NAMES = ("n1", "n2", "n3")
TIMEOUT = 30.0
NOT_ENOUGH_REPLICAS = 19


@pytest.fixture(scope="module")
def cluster(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("rs-configs")
    name = f"rscfg-{free_port()}"
    procs = {n: cluster_node(tmp, n, etcd.endpoint, name, kafka=True) for n in NAMES}
    try:
        start_all(procs.values())
        all_members(procs.values())
        yield Cluster(procs, etcd.endpoint, name)
    finally:
        stop_all(procs.values())


def produce_acks(node: BrokerProcess, topic: str, acks: int) -> int:
    """One record produced to partition 0 with ``acks``: the partition's error code."""
    P = producer.ProduceRequest
    with Raw(node.kafka_port) as raw:
        resp = raw.call(P, 7, transactional_id=None, acks=acks, timeout_ms=10000, topic_data=[
            P.TopicProduceData(name=topic, partition_data=[
                P.TopicProduceData.PartitionProduceData(index=0, records=batch([b"x"]))])])
    return resp.responses[0].partition_responses[0].error_code


def min_insync(node: BrokerProcess, topic: str) -> str | None:
    entry = described(AdminClient({"bootstrap.servers": node.kafka_bootstrap}), topic).get(
        "min.insync.replicas")
    return None if entry is None else entry.value


def test_an_altered_min_insync_is_everywhere_and_survives_the_leaders_kill(
        cluster: Cluster) -> None:
    topic = "cfg-isr"
    cluster.create(topic, 3)
    leader = cluster.state(topic).partition(0).leader
    other = next(n for n in NAMES if n != leader)  # altered through a follower's node
    incremental(AdminClient({"bootstrap.servers": cluster.nodes[other].kafka_bootstrap}),
                topic, "min.insync.replicas", "3", AlterConfigOpType.SET)
    assert config_record(cluster, topic) is not None
    for name in NAMES:
        poll(lambda n=name: min_insync(cluster.nodes[n], topic) == "3",
             f"{name} describes min.insync.replicas=3", timeout=TIMEOUT)
    assert produce_acks(cluster.nodes[leader], topic, -1) == 0  # three in sync
    cluster.nodes[leader].kill()
    survivors = [n for n in NAMES if n != leader]
    new = poll(lambda: (found := cluster.state(topic).partition(0).leader) in survivors
               and found, "a survivor leads the partition", timeout=TIMEOUT)
    poll(lambda: leader not in cluster.state(topic).partition(0).isr,
         f"{leader} out of the ISR", timeout=TIMEOUT)
    poll(lambda: produce_acks(cluster.nodes[new], topic, -1) == NOT_ENOUGH_REPLICAS,
         "acks=all refused by the new leader: 2 in sync < min.insync.replicas 3")
    assert min_insync(cluster.nodes[new], topic) == "3"
    assert produce_acks(cluster.nodes[new], topic, 1) == 0
    cluster.nodes[leader].start()
    all_members(cluster.nodes.values())
    poll(lambda: produce_acks(cluster.nodes[new], topic, -1) == 0,
         "acks=all stored once the third replica is in sync again", timeout=TIMEOUT)
    assert min_insync(cluster.nodes[leader], topic) == "3"
    # deleting the topic deletes its configs (a topic of that name created again starts
    # from the defaults)
    admin = AdminClient({"bootstrap.servers": cluster.nodes[new].kafka_bootstrap})
    admin.delete_topics([topic])[topic].result(TIMEOUT)
    poll(lambda: config_record(cluster, topic) is None, "the stream_configs record deleted",
         timeout=TIMEOUT)


def config_record(cluster: Cluster, topic: str) -> bytes | None:
    async def one() -> bytes | None:
        async with EtcdClient(cluster.endpoint, cluster.name) as etcd:
            found = await etcd.get(topic_configs.key("/", topic))
            return None if found is None else found.value
    return asyncio.run(one())


def records_on_disk(node: BrokerProcess, topic: str, partition: int = 0) -> int:
    """Bytes of record segments of ``topic``'s partition in ``node``'s data directory."""
    digest = hashlib.sha1(f"/\x00{topic}".encode()).hexdigest()[:20]
    directory = Path(node.data_dir) / "streams" / digest / f"p{partition}"
    return sum(f.stat().st_size for f in directory.glob("*.log")) if directory.is_dir() else 0


def test_a_removed_replica_is_deleted_and_a_readd_copies_it_again(cluster: Cluster) -> None:
    topic = "cfg-remove"
    cluster.create(topic, 3)
    cluster.produce(topic, [f"r{i}".encode() for i in range(200)])
    follower = next(n for n in NAMES if n != cluster.state(topic).partition(0).leader)
    node = cluster.nodes[follower]
    size = poll(lambda: records_on_disk(node, topic), f"{follower} holds a copy")
    removed = cluster.cli("streams", "delete-replica", "/", topic, follower)
    assert removed.returncode == 0, removed.output
    poll(lambda: records_on_disk(node, topic) == 0, f"{follower}'s copy deleted",
         timeout=TIMEOUT)
    added = cluster.cli("streams", "add-replica", "/", topic, follower)
    assert added.returncode == 0, added.output
    cluster.listed(topic, list(NAMES))
    poll(lambda: records_on_disk(node, topic) >= size, f"{follower} copied it again",
         timeout=TIMEOUT)


def group_read(node: BrokerProcess, stream: str, count: int) -> list[tuple[int, int]]:
    """What a member of AMQP consumer group ``g`` connected to ``node`` gets and acks:
    ``count`` records, then whatever else comes before it is quiet."""
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    got: list[tuple[int, int]] = []

    def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
        got.append((props.headers["x-stream-partition"], props.headers["x-stream-offset"]))
        ch.basic_ack(method.delivery_tag)

    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=20)
        ch.basic_consume(stream, on_message, arguments={"x-stream-offset": "first",
                                                        "x-consumer-group": "g"})
        poll(lambda: (conn.process_data_events(0.02), len(got) >= count)[1],
             f"{count} records delivered to the group", timeout=TIMEOUT)
        seen = -1
        while seen != len(got):  # quiet before closing: every ack sent
            seen = len(got)
            conn.process_data_events(0.3)
    finally:
        conn.close()
    return got


def publish(node: BrokerProcess, stream: str, bodies: list[str]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", stream, body.encode(),
                             pika.BasicProperties(headers={"x-message-key": body}))
    finally:
        conn.close()


def test_group_commits_on_a_partition_leader_survive_its_kill(cluster: Cluster) -> None:
    stream = "cfg-group"
    conn = pika.BlockingConnection(pika.URLParameters(cluster.nodes["n1"].url))
    try:
        conn.channel().queue_declare(stream, durable=True, arguments={
            "x-queue-type": "stream", "x-initial-cluster-size": 3, "x-partitions": 2})
    finally:
        conn.close()

    def in_sync() -> list[str] | None:
        try:
            logs = [cluster.state(stream).partition(p) for p in (0, 1)]
        except Exception:  # noqa: BLE001 - not written yet
            return None
        ok = all(lg.leader and len(lg.members) == 3 and sorted(lg.isr) == sorted(lg.members)
                 for lg in logs)
        return [lg.leader for lg in logs] if ok else None
    leaders = poll(in_sync, "both partitions in sync on three nodes", timeout=TIMEOUT)
    assert leaders[0] != leaders[1]  # spread: partition 1's leader is not the offsets'
    publish(cluster.nodes[leaders[0]], stream, [f"a{i}" for i in range(60)])
    first = group_read(cluster.nodes[leaders[1]], stream, 60)
    assert len(set(first)) == 60 and {p for p, _ in first} == {0, 1}
    offsets_node = cluster.nodes[leaders[0]]  # the stream's leader holds the group offsets
    end_1 = max(o for p, o in first if p == 1) + 1
    poll(lambda: offsets_node.get_json(f"/api/groups/%2F/{stream}/g")["partitions"][1][
        "committed_offset"] == end_1,
         "the group's commits made on partition 1's leader reached the offsets leader",
         timeout=TIMEOUT)
    cluster.nodes[leaders[1]].kill()
    survivors = [n for n in NAMES if n != leaders[1]]
    poll(lambda: cluster.state(stream).partition(1).leader in survivors,
         "a survivor leads partition 1", timeout=TIMEOUT)
    publish(cluster.nodes[survivors[0]], stream, [f"b{i}" for i in range(10)])
    again = group_read(cluster.nodes[survivors[1]], stream, 10)
    assert not set(again) & set(first), sorted(set(again) & set(first))[:5]
    cluster.nodes[leaders[1]].start()
    all_members(cluster.nodes.values())


# -- the pure parts ------------------------------------------------------------------------

def test_forwarded_records_apply_as_the_offsets_log_replays_them() -> None:
    sent = OffsetBook(MemoryLog())
    sent.commit("g", 0, 5)
    sent.commit("g", 1, 7, "meta", 3)
    sent.commit("h", 0, 2)
    sent.forget("h")
    records = stream_offsets.book_records(sent)
    assert sorted(k for k, _ in records) == [b"g\x000", b"g\x001"]
    leader = OffsetBook(MemoryLog())
    leader.commit("h", 0, 9)  # deleted on the sender: a tombstone goes with the commits
    stream_offsets.apply_records(leader, [*records, (b"h\x000", b"")], write=True)
    assert leader.offsets == {("g", 0): 5, ("g", 1): 7}
    assert leader.extra_of("g", 1) == (3, "meta")
    assert OffsetBook(leader.log).offsets == leader.offsets  # what a new leader replays
    seeded = OffsetBook(MemoryLog())
    stream_offsets.apply_records(seeded, records, write=False)
    assert seeded.offsets == leader.offsets and seeded.log.next_offset == 0


def test_wire_answers_and_config_records() -> None:
    records = [(b"g\x000", b"\x01" * 8)]
    vhost, name, got = stream_offsets.decode_request(
        stream_offsets.encode_request("/", "s", records))
    assert (vhost, name, got) == ("/", "s", records)
    assert stream_offsets.decode_reply(stream_offsets.encode_reply(records)) == records
    with pytest.raises(RuntimeError, match="does not lead"):
        stream_offsets.decode_reply(stream_offsets.NOT_LEADING)
    k = topic_configs.key("/", "a/b")
    assert topic_configs.parse_key(k) == ("/", "a/b")
    assert topic_configs.decode(b'{"overrides": {"x-min-insync-replicas": 3}}') == {
        "x-min-insync-replicas": 3}
    assert topic_configs.decode(b"not json") is None and topic_configs.decode(b"[]") is None
