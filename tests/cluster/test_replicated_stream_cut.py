"""A replicated stream's leader cut off from the others and from etcd (network
namespaces) while a publisher pipelines confirms through it (benchmarks/chaos.py
--streams lost records confirmed through the cut-off leader): every confirmed record is
in the stream once the node is healed. The chaos mix mattered: the same channel also
publishes to a quorum queue that node leads, which refuses at once when its leader
steps down, while the stream's publishes wait for their commit and fail later; their
nacks must not fall behind the refusals (an ack multiple went past them). A guard: this
test passed before that fix too (the chaos mix's timing; the unit test in
tests/unit/broker/test_channel_confirms.py reproduces the bug). Three real
nodes, one real etcd, aiormq and pika over real sockets; needs root (skips without)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from smartbroker.launcher import BrokerProcess
from tests.cluster.netns import Network, netns_cluster
from tests.cluster.node_group import all_members, poll
from tests.cluster.test_partition_minority import (
    alternate_through_a_cut,
    drain,
    leader_of,
    pipeline_through_a_cut,
)

NAMES = ("sc1", "sc2", "sc3")


@pytest.fixture(scope="module")
def cut_cluster(tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[Network, dict[str, BrokerProcess]]]:
    with netns_cluster(tmp_path_factory.mktemp("stream-cut"), NAMES, "sc") as cluster:
        yield cluster


def read_all(node: BrokerProcess, queue: str, wanted: set[str]) -> set[str]:
    """Bodies read from ``first`` on ``node`` until ``wanted`` are all in, or 3 s of quiet."""
    got: set[str] = set()
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1000)

        def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
            got.add(body.decode())
            ch.basic_ack(method.delivery_tag, multiple=True)

        ch.basic_consume(queue, on_message, arguments={"x-stream-offset": "first"})
        quiet = 0
        while not wanted <= got and quiet < 30:
            before = len(got)
            conn.process_data_events(0.1)
            quiet = 0 if len(got) > before else quiet + 1
    finally:
        conn.close()
    return got


def test_confirmed_through_a_cut_off_stream_leader_are_kept(
        cut_cluster: tuple[Network, dict[str, BrokerProcess]]) -> None:
    net, nodes = cut_cluster
    all_members(nodes.values())
    queue = f"sc-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(nodes["sc1"].url))
    conn.channel().queue_declare(queue, durable=True, arguments={
        "x-queue-type": "stream", "x-initial-cluster-size": 3})
    conn.close()
    poll(lambda: leader_of(nodes["sc3"], queue) == "sc1", "sc3 knows the stream's leader")
    confirmed = asyncio.run(pipeline_through_a_cut(net, nodes["sc1"], queue))
    all_members(nodes.values())
    assert confirmed, "nothing was confirmed before the cut"
    got = read_all(nodes["sc2"], queue, set(confirmed))
    lost = sorted(set(confirmed) - got, key=lambda b: (b.split("-")[0], int(b.split("-")[1])))
    assert not lost, f"{len(lost)} confirmed through the cut-off leader and lost: {lost[:10]}"


def test_a_stream_and_a_quorum_queue_through_their_cut_off_leader(
        cut_cluster: tuple[Network, dict[str, BrokerProcess]]) -> None:
    net, nodes = cut_cluster
    all_members(nodes.values())
    tag = uuid.uuid4().hex[:8]
    stream, quorum = f"scs-{tag}", f"scq-{tag}"
    conn = pika.BlockingConnection(pika.URLParameters(nodes["sc1"].url))  # sc1 leads both
    ch = conn.channel()
    ch.queue_declare(stream, durable=True, arguments={
        "x-queue-type": "stream", "x-initial-cluster-size": 3})
    ch.queue_declare(quorum, durable=True, arguments={
        "x-queue-type": "quorum", "x-quorum-initial-group-size": 3})
    conn.close()
    for name in (stream, quorum):
        poll(lambda n=name: leader_of(nodes["sc3"], n) == "sc1", f"sc3 knows {name}'s leader")
    confirmed = asyncio.run(alternate_through_a_cut(net, nodes["sc1"], (stream, quorum)))
    all_members(nodes.values())
    assert confirmed, "nothing was confirmed before the cut"
    in_stream = {b for q, b in confirmed if q == stream}
    lost = sorted(in_stream - read_all(nodes["sc2"], stream, in_stream))
    in_quorum = {b for q, b in confirmed if q == quorum}
    poll(lambda: leader_of(nodes["sc2"], quorum), "the quorum queue's leader")
    lost += sorted(in_quorum - set(drain(nodes["sc2"], quorum)))
    assert not lost, f"{len(lost)} confirmed through the cut-off leader and lost: {lost[:10]}"
