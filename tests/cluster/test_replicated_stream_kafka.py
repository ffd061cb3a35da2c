"""A Kafka topic with replication.factor=3 on three real nodes loses its partition leader
(kill -9) and loses nothing acknowledged: an acks=all idempotent producer keeps
producing through the failover (NOT_LEADER_OR_FOLLOWER, then the new leader from
Metadata), every record it was told is stored is read back at its offset from a
survivor, and a consumer group's committed offsets (in the replicated offsets log) are
where it left them, on the new coordinator. While the killed node is out of the ISR, a
min.insync.replicas of 3 refuses acks=all with NOT_ENOUGH_REPLICAS (acks=1 still
stored); once it is back in sync acks=all is stored again, and the old leader, now a
follower, answers NOT_LEADER_OR_FOLLOWER."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, NewTopic
from kafka.protocol import producer

from smartbroker.cluster.kafka_peers import broker_id
from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.node_group import all_members, cluster_node, poll, start_all, stop_all
from tests.cluster.test_replicated_stream import replica_sets
from tests.kafka.raw_client import Raw, batch
from tests.kafka.topic_admin import incremental

NAMES = ("n1", "n2", "n3")
TIMEOUT = 30.0
TOPIC = "rs-kill"
FAILOVER = 10.0  # seconds: the bound with the default timeouts (here a 3 s lease)
NOT_ENOUGH_REPLICAS, NOT_LEADER = 19, 6


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerProcess]]:
    tmp = tmp_path_factory.mktemp("rs-kafka")
    cluster = f"rk-{free_port()}"
    procs = {n: cluster_node(tmp, n, etcd.endpoint, cluster, kafka=True) for n in NAMES}
    try:
        start_all(procs.values())
        all_members(procs.values())
        yield procs
    finally:
        stop_all(procs.values())


class Produced:
    """An acks=all idempotent producer running in a thread until stopped: what it was
    told is stored (value -> (partition, offset)) and what failed."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                  "enable.idempotence": True, "linger.ms": 5,
                                  "message.timeout.ms": 60000})
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.failed: list[Any] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _done(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed.append(err)
        else:
            self.acked[msg.value()] = (msg.partition(), msg.offset())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.producer.produce(TOPIC, value=f"v{self.sent}".encode(), on_delivery=self._done)
                self.sent += 1
            except BufferError:
                pass
            self.producer.poll(0.002)

    def start(self) -> Produced:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        assert self.producer.flush(TIMEOUT * 2) == 0


def consume(bootstrap: str, group: str | None, count: int, commit: bool) -> list[Any]:
    """``count`` records of the topic, by a member of ``group`` (committing at the end)
    or, without a group, from the start."""
    config = {"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest",
              "enable.auto.commit": False, "group.id": group or f"reader-{free_port()}"}
    consumer = Consumer(config)
    got: list[Any] = []
    try:
        consumer.subscribe([TOPIC])
        deadline = time.monotonic() + TIMEOUT
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg)
            elif msg is not None and msg.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(msg.error())
        if commit and got:
            consumer.commit(offsets=[TopicPartition(TOPIC, 0, got[-1].offset() + 1)],
                            asynchronous=False)
    finally:
        consumer.close()
    return got


def test_kill_the_partition_leader_loses_nothing_acknowledged(
        nodes: dict[str, BrokerProcess]) -> None:
    bootstrap = ",".join(nodes[n].kafka_bootstrap for n in NAMES)
    admin = AdminClient({"bootstrap.servers": nodes["n1"].kafka_bootstrap})
    admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=3)]
                        )[TOPIC].result(TIMEOUT)
    ids = [broker_id(n) for n in NAMES]
    for name in NAMES:  # led by n1 (created there), in sync on all three
        poll(lambda n=name: replica_sets(nodes[n], TOPIC) == [(ids[0], ids, sorted(ids))],
             f"{name} names the replicas and ISR")
    producer = Produced(bootstrap).start()
    poll(lambda: len(producer.acked) >= 300, "300 records acknowledged")
    first = consume(bootstrap, "g-kill", 100, commit=True)
    assert [m.offset() for m in first] == list(range(100))
    nodes["n1"].kill()
    killed = time.monotonic()
    leader = poll(lambda: _led(nodes, TOPIC), "a survivor leads the partition", FAILOVER)
    took = time.monotonic() - killed
    before = len(producer.acked)
    poll(lambda: len(producer.acked) >= before + 300, "300 more acknowledged after failover")
    producer.stop()
    assert took < FAILOVER, f"failover took {took:.1f} s"
    survivors = ",".join(nodes[n].kafka_bootstrap for n in ("n2", "n3"))
    stored = {m.value(): (m.partition(), m.offset())
              for m in consume(survivors, None, producer.sent, commit=False)}
    lost = {v: at for v, at in producer.acked.items() if stored.get(v) != at}
    assert not lost, f"{len(lost)} acknowledged records lost or moved, e.g. {list(lost.items())[:3]}"
    # the group resumes where it committed, on the new leader (its coordinator)
    rest = consume(survivors, "g-kill", 10, commit=False)
    assert rest and rest[0].offset() == 100, (leader, [m.offset() for m in rest[:3]])
    # n1 is out of the ISR: acks=all needs min.insync.replicas in sync, acks=1 the leader
    assert leader is not None  # altered on the leader's copy (configs stay per copy)
    incremental(AdminClient({"bootstrap.servers": nodes[leader].kafka_bootstrap}), TOPIC,
                "min.insync.replicas", "3", AlterConfigOpType.SET)
    poll(lambda: produce_acks(nodes[leader], -1) == NOT_ENOUGH_REPLICAS,
         "acks=all refused with NOT_ENOUGH_REPLICAS")
    assert produce_acks(nodes[leader], 1) == 0
    nodes["n1"].start()  # back as a follower: the cluster as the fixture made it
    all_members(nodes.values())
    poll(lambda: produce_acks(nodes[leader], -1) == 0, "acks=all once n1 is in sync again")
    assert produce_acks(nodes["n1"], -1) == NOT_LEADER  # back as a follower: not served


def produce_acks(node: BrokerProcess, acks: int) -> int:
    """One record produced to the topic with ``acks``: the partition's error code."""
    P = producer.ProduceRequest
    with Raw(node.kafka_port) as raw:
        resp = raw.call(P, 7, transactional_id=None, acks=acks, timeout_ms=10000, topic_data=[
            P.TopicProduceData(name=TOPIC, partition_data=[
                P.TopicProduceData.PartitionProduceData(index=0, records=batch([b"x"]))])])
    return resp.responses[0].partition_responses[0].error_code


def _led(nodes: dict[str, BrokerProcess], topic: str) -> str | None:
    """The survivor leading partition 0, as n2 names it in Metadata."""
    found = replica_sets(nodes["n2"], topic)
    if not found:
        return None
    leader = found[0][0]
    return next((n for n in ("n2", "n3") if broker_id(n) == leader), None)
