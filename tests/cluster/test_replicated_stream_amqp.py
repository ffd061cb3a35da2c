"""An AMQP stream with x-initial-cluster-size 3 on three real nodes loses its leader
(kill -9) while a publisher with confirms keeps publishing through another node: every
confirmed message is read back from offset ``first`` on a survivor, in publish order,
and none twice (each is published once: a nacked one is never sent again). Consumers
on both survivors, attached before the kill, carry on through it: no basic.cancel,
every record once and in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from smartbroker.launcher import BrokerProcess
from tests.cluster.node_group import (
    all_members,
    member_nodes,
    poll,
)

NAMES = ("n1", "n2", "n3")
QUEUE = "rs-amqp-kill"
FAILOVER = 10.0


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerProcess]]:
    with member_nodes(tmp_path_factory.mktemp("rs-amqp"), etcd.endpoint, NAMES) as procs:
        yield procs


class Publisher:
    """Publishes ``m<i>`` with confirms through one node, one at a time, reconnecting
    when its connection or channel goes; ``confirmed`` in order."""

    def __init__(self, node: BrokerProcess, queue: str = QUEUE) -> None:
        self.node = node
        self.queue = queue
        self.confirmed: list[bytes] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = pika.BlockingConnection(pika.URLParameters(self.node.url))
            except pika.exceptions.AMQPError:
                time.sleep(0.1)
                continue
            try:
                ch = conn.channel()
                ch.confirm_delivery()
                while not self._stop.is_set():
                    body = f"m{self.sent}".encode()
                    self.sent += 1
                    try:
                        ch.basic_publish("", self.queue, body, pika.BasicProperties(
                            delivery_mode=2, headers={"x-message-key": body}))
                    except pika.exceptions.NackError:
                        continue  # not confirmed: may or may not be stored
                    self.confirmed.append(body)
            except pika.exceptions.AMQPError:
                time.sleep(0.1)
            finally:
                if conn.is_open:
                    conn.close()

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


class Follower:
    """A consumer reading from ``first`` on one node through the whole test, in a thread:
    what it got (offset, body) and whether the broker cancelled it."""

    def __init__(self, node: BrokerProcess, queue: str = QUEUE) -> None:
        self.node = node
        self.queue = queue
        self.got: list[tuple[int, bytes]] = []
        self.partitions: list[int] = []
        self.cancelled = False
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.node.url))
        try:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=100)

            def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
                headers = props.headers or {}
                self.got.append((headers.get("x-stream-offset"), body))
                self.partitions.append(headers.get("x-stream-partition"))
                ch.basic_ack(method.delivery_tag)

            def on_cancel(_frame: Any) -> None:
                self.cancelled = True

            ch.add_on_cancel_callback(on_cancel)
            ch.basic_consume(self.queue, on_message, arguments={"x-stream-offset": "first"})
            self.ready.set()
            while not self._stop.is_set():
                conn.process_data_events(0.05)
        finally:
            conn.close()

    def start(self) -> Follower:
        self._thread.start()
        assert self.ready.wait(20)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def read_all(node: BrokerProcess, count: int) -> list[bytes]:
    """Bodies from offset ``first`` on ``node`` until ``count`` came and 0.5 s of quiet."""
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    got: list[bytes] = []
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=500)

        def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
            got.append(body)
            ch.basic_ack(method.delivery_tag)

        ch.basic_consume(QUEUE, on_message, arguments={"x-stream-offset": "first"})
        poll(lambda: (conn.process_data_events(0.05), len(got) >= count)[1],
             f"{count} messages read on {node.node_name}", 30)
        conn.process_data_events(0.5)
    finally:
        conn.close()
    return got


def test_kill_the_leader_keeps_every_confirmed_message(nodes: dict[str, BrokerProcess]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n1"].url))
    conn.channel().queue_declare(QUEUE, durable=True, arguments={
        "x-queue-type": "stream", "x-initial-cluster-size": 3})
    conn.close()
    # consumers on the two survivors, reading through the failover (one of them becomes
    # the leader and reads on locally; the other reads on through a relay to it)
    followers = [Follower(nodes[n]).start() for n in ("n2", "n3")]
    publisher = Publisher(nodes["n2"]).start()  # forwarded to the leader, n1
    poll(lambda: len(publisher.confirmed) >= 200, "200 confirmed")
    nodes["n1"].kill()
    killed = time.monotonic()
    before = len(publisher.confirmed)
    poll(lambda: len(publisher.confirmed) > before, "confirms again after the failover",
         FAILOVER + 10)
    took = time.monotonic() - killed
    poll(lambda: len(publisher.confirmed) >= before + 200, "200 more confirmed")
    publisher.stop()
    assert took < FAILOVER + 5, f"confirms resumed {took:.1f} s after the kill"
    got = read_all(nodes["n3"], len(publisher.confirmed))
    missing = [b for b in publisher.confirmed if b not in set(got)]
    assert not missing, f"{len(missing)} confirmed messages lost, e.g. {missing[:3]}"
    order = [int(b[1:]) for b in got]
    firsts = {}
    for i, n in enumerate(order):
        firsts.setdefault(n, i)
    confirmed = [int(b[1:]) for b in publisher.confirmed]
    positions = [firsts[n] for n in confirmed]
    assert positions == sorted(positions), "confirmed messages out of publish order"
    assert len(set(order)) == len(order), "a message stored twice (each is published once)"
    for follower in followers:  # they carried on: everything once, in order
        poll(lambda f=follower: len(f.got) >= len(got), f"{follower.node.node_name} reads on")
        follower.stop()
        assert not follower.cancelled
        assert [body for _, body in follower.got] == got
        assert [offset for offset, _ in follower.got] == list(range(len(got)))
    nodes["n1"].start()
    all_members(nodes.values())


def test_consumers_of_a_partitioned_stream_carry_on(nodes: dict[str, BrokerProcess]) -> None:
    """Three partitions led by n1, n2 and n3, each copied on all three: killing n1
    moves p0 to n2 or n3, where a consumer reads it on locally, while the consumer on the
    other survivor reads it on through a new relay; each gets every record of every
    partition once, in order per partition."""
    queue = "rs-amqp-parts"
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n1"].url))
    conn.channel().queue_declare(queue, durable=True, arguments={
        "x-queue-type": "stream", "x-partitions": 3, "x-initial-cluster-size": 3})
    conn.close()
    followers = [Follower(nodes[n], queue).start() for n in ("n2", "n3")]
    publisher = Publisher(nodes["n3"], queue).start()
    poll(lambda: len(publisher.confirmed) >= 60 and all(0 in f.partitions for f in followers),
         "60 confirmed, and partition 0 read on both survivors")
    nodes["n1"].kill()
    # partition 0 read on past where each consumer was: it carried on at the new leader
    seen = [max(o for p, (o, _) in zip(f.partitions, f.got, strict=False) if p == 0)
            for f in followers]
    for follower, last in zip(followers, seen, strict=True):
        poll(lambda f=follower, last=last: any(
            p == 0 and o > last for p, (o, _) in zip(f.partitions, list(f.got), strict=False)),
            f"{follower.node.node_name} reads partition 0 on", FAILOVER + 20)
    publisher.stop()
    confirmed = set(publisher.confirmed)
    for follower in followers:
        poll(lambda f=follower: confirmed <= {b for _, b in f.got},
             f"{follower.node.node_name} reads every confirmed record")
        follower.stop()
        assert not follower.cancelled
        per_partition: dict[int, list[int]] = {}
        for partition, (offset, _) in zip(follower.partitions, follower.got, strict=True):
            per_partition.setdefault(partition, []).append(offset)
        for partition, offsets in per_partition.items():
            assert offsets == sorted(set(offsets)), (follower.node.node_name, partition)
    nodes["n1"].start()
    all_members(nodes.values())
