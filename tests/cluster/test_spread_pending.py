"""A stream of several partitions whose definition reached the nodes before its placement
(written straight to a real etcd here, as the two watches may bring them in either
order): a publish that arrives meanwhile waits for the placement, then lands in the
partition its key names, on that partition's node (its log, its offsets, what Kafka
clients fetch there).

Before, it stayed in the copy of the node it arrived at: the partition's own node never
had it (a reader there of that partition, or a Kafka fetch, missed it).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pika

from smartbroker.cluster import definitions_keys
from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.placement import Placement
from smartbroker.cluster.placement import key as placement_key
from smartbroker.cluster.spread_pending import WAIT
from smartbroker.launcher import BrokerProcess
from smartbroker.queues.partitioner import header_key_partition
from smartbroker.store.definitions import QueueDef
from tests.cluster.http_api import call
from tests.cluster.node_group import poll
from tests.cluster.test_partition_spread import amqp_read, nodes

__all__ = ["nodes"]  # the three nodes of test_partition_spread.py (module fixture)


async def put(endpoint: str, cluster: str, items: dict[Any, bytes]) -> None:
    async with EtcdClient(endpoint, cluster) as etcd:
        for k, value in items.items():
            await etcd.put(k, value)


def key_in(partition: int) -> str:
    return next(k for k in (f"key-{i}" for i in range(1000))
                if header_key_partition(k, 3) == partition)


def test_a_publish_before_the_placement_goes_where_the_placement_says(
        etcd: Any, nodes: dict[str, BrokerProcess]) -> None:
    name, cluster = "pending-s", nodes["n1"].cluster_name
    assert cluster is not None
    entry = definitions_keys.queue(QueueDef("/", name, arguments={
        "x-queue-type": "stream", "x-partitions": 3}, type="stream"))
    asyncio.run(put(etcd.endpoint, cluster, {entry.key: entry.value}))
    poll(lambda: call(nodes["n2"], f"/api/queues/%2F/{name}")[0] == 200,
         "n2 knows the stream from its definition alone")

    conn = pika.BlockingConnection(pika.URLParameters(nodes["n2"].url))
    try:
        ch = conn.channel()
        for partition in range(3):  # one record into each partition, through n2
            ch.basic_publish("", name, f"early-{partition}".encode(), pika.BasicProperties(
                headers={"x-message-key": key_in(partition)}))
        ch.queue_declare(name, passive=True)  # answered after the publishes: n2 took them
    finally:
        conn.close()

    placement = Placement("n1", ("n1", "n2", "n3"))
    asyncio.run(put(etcd.endpoint, cluster, {placement_key("/", name): placement.encode()}))
    for partition, node in enumerate(placement.partitions):
        # read on the partition's own node: its log there, nothing relayed
        got = amqp_read(nodes[node], name, 1, {"x-stream-partition": partition})
        assert [(p, o, body) for p, o, body, _ in got] == \
            [(partition, 0, f"early-{partition}".encode())]
    got = amqp_read(nodes["n1"], name, 3)  # and every partition from one node, once
    assert sorted((p, body) for p, _, body, _ in got) == \
        [(p, f"early-{p}".encode()) for p in range(3)]


def test_a_placement_that_never_comes_keeps_the_publish_here(
        etcd: Any, nodes: dict[str, BrokerProcess]) -> None:
    """No placement within 3 s: the held publish is kept in the copy of the node it
    reached (as before) and confirmed, not lost or nacked."""
    name, cluster = "pending-none", nodes["n1"].cluster_name
    assert cluster is not None
    entry = definitions_keys.queue(QueueDef("/", name, arguments={
        "x-queue-type": "stream", "x-partitions": 3}, type="stream"))
    asyncio.run(put(etcd.endpoint, cluster, {entry.key: entry.value}))
    poll(lambda: call(nodes["n2"], f"/api/queues/%2F/{name}")[0] == 200,
         "n2 knows the stream from its definition alone")
    conn = pika.BlockingConnection(pika.URLParameters(nodes["n2"].url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        started = time.monotonic()
        ch.basic_publish("", name, b"kept", pika.BasicProperties(
            headers={"x-message-key": key_in(0)}))  # returns once confirmed (acked)
        assert time.monotonic() - started >= WAIT - 0.5  # held for the placement first
    finally:
        conn.close()
    got = amqp_read(nodes["n2"], name, 1)
    assert [(p, body) for p, _, body, _ in got] == [(0, b"kept")]
