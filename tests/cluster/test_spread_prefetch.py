"""A spread stream's AMQP consumer on real nodes: its prefetch bounds what it holds over
every node, and a reader attached at ``next`` gets what any node appends after its
consume-ok.

Three nodes on a real etcd, a 3-partition topic with one partition per node (the setup of
``test_partition_spread.py``). A consumer on one node with prefetch N reads every
partition: it never holds more than N unacked deliveries (each node's relay had N of its
own before), and a prefetch of 1, below the three nodes it reads, still reads every
record (the quotas turn). A reader attached with ``x-stream-offset: next`` gets every
record published through the other nodes right after its consume-ok (their relays
subscribed a few ms after it before).
"""

from __future__ import annotations

from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from smartbroker.queues.partitioner import header_key_partition
from tests.cluster.node_group import poll
from tests.cluster.test_partition_spread import nodes, produce_keyed, spread_topic

__all__ = ["nodes"]  # the three nodes of test_partition_spread.py (module fixture)

QUIET = 0.15  # seconds a held window is watched for one delivery too many


def read_in_windows(node: BrokerProcess, queue: str, total: int, prefetch: int,
                    global_qos: bool = False) -> tuple[int, set[tuple[int, int]]]:
    """Read ``total`` records with ``prefetch``, acking a window only once it is full (or
    holds the rest): (the most deliveries ever held unacked, the (partition, offset)s)."""
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    held: list[int] = []
    seen: set[tuple[int, int]] = set()
    most = 0
    try:
        ch = conn.channel()
        if global_qos:  # a stream needs a consumer prefetch: the channel's bounds it here
            ch.basic_qos(prefetch_count=50)
        ch.basic_qos(prefetch_count=prefetch, global_qos=global_qos)

        def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
            held.append(method.delivery_tag)
            seen.add((props.headers["x-stream-partition"], props.headers["x-stream-offset"]))

        ch.basic_consume(queue, on_message, arguments={"x-stream-offset": "first"})
        acked = 0
        while acked < total:
            window = min(prefetch, total - acked)
            poll(lambda w=window: (conn.process_data_events(0.02), len(held) >= w)[1],
                 f"a window of {window} after {acked} acked")
            # a negative check: one more delivery than the prefetch would come within ms
            conn.process_data_events(QUIET)
            most = max(most, len(held))
            ch.basic_ack(held[-1], multiple=True)
            acked += len(held)
            held.clear()
    finally:
        conn.close()
    return most, seen


@pytest.mark.parametrize(("prefetch", "global_qos"), [(4, False), (1, False), (3, True)])
def test_prefetch_bounds_the_consumer_over_every_node(nodes: dict[str, BrokerProcess],
                                                      prefetch: int, global_qos: bool) -> None:
    """A consumer's prefetch (1: below the three nodes), or its channel's global one."""
    topic = f"credit-{prefetch}-{int(global_qos)}"
    spread_topic(nodes, topic)
    total = 36 if prefetch > 1 else 15
    acked = produce_keyed(nodes, topic, total)
    assert len({p for p, _ in acked.values()}) == 3  # records on every node
    most, seen = read_in_windows(nodes["n2"], topic, total, prefetch, global_qos)
    assert most <= prefetch, f"{most} unacked with prefetch {prefetch}"
    assert seen == set(acked.values())


def keys_of(partition: int, count: int) -> list[str]:
    """``count`` ``x-message-key``s whose records land in ``partition`` of three."""
    found = (f"k{i}" for i in range(10_000))
    return [k for k in found if header_key_partition(k, 3) == partition][:count]


def test_next_gets_what_other_nodes_append_after_consume_ok(
        nodes: dict[str, BrokerProcess]) -> None:
    """Each attempt: a reader on n1 attached at ``next``, then at once one record
    published on n2 into its partition and one on n3 into its own (no forwarding hop):
    both are the reader's. Before, the relays subscribed after the consume-ok, racing
    those publishes (several attempts make the race show)."""
    topic = "credit-next"
    spread_topic(nodes, topic)
    attempts = 12
    keys = {1: keys_of(1, attempts), 2: keys_of(2, attempts)}
    publishers = {p: pika.BlockingConnection(pika.URLParameters(nodes[n].url))
                  for p, n in ((1, "n2"), (2, "n3"))}
    reader = pika.BlockingConnection(pika.URLParameters(nodes["n1"].url))
    try:
        channels = {p: conn.channel() for p, conn in publishers.items()}
        for attempt in range(attempts):
            got: list[bytes] = []

            def on_message(ch: Any, method: Any, props: Any, body: bytes,
                           got: list[bytes] = got) -> None:
                got.append(body)
                ch.basic_ack(method.delivery_tag)

            ch = reader.channel()
            ch.basic_qos(prefetch_count=10)
            ch.basic_consume(topic, on_message, arguments={"x-stream-offset": "next"})
            # consume-ok is back: what any node appends from now on is the reader's
            sent = []
            for partition, pub in channels.items():
                body = f"after-{attempt}-{partition}".encode()
                pub.basic_publish("", topic, body, pika.BasicProperties(
                    headers={"x-message-key": keys[partition][attempt]}))
                sent.append(body)
            poll(lambda got=got, sent=sent: (reader.process_data_events(0.02),
                                             len(got) >= len(sent))[1],
                 f"attempt {attempt}: both records appended after consume-ok", timeout=5)
            assert sorted(got) == sorted(sent)
            ch.close()
    finally:
        reader.close()
        for conn in publishers.values():
            conn.close()
