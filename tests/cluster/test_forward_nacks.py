"""A remote leader's reject-publish nacks only the publishes it refused (issue 15): a
publisher on another node, pipelining publishes to a full reject-publish queue led
elsewhere and to a durable queue of its own node, gets nacks for the refused ones and
acks for every other, as on a single node (cluster/forwarding_publish.py claims). Two
real nodes, one real etcd, aiormq over real sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiormq
import pika
import pytest
from pamqp.commands import Basic

from smartbroker.launcher import BrokerProcess
from tests.cluster.node_group import running_cluster


@pytest.fixture(scope="module")
def nodes(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BrokerProcess]]:
    with running_cluster(tmp_path_factory.mktemp("forward-nacks"), etcd.endpoint, ('fn1', 'fn2')) as procs:
        yield procs


async def publish_all(url: str, rounds: int) -> list[tuple[str, str]]:
    """Publish ``rounds`` pairs (to "rp", led elsewhere, and "mine", led here) without
    waiting between them; each publish's confirm kind, in order."""
    conn = await aiormq.connect(url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        persistent = Basic.Properties(delivery_mode=2)
        sends = [(queue, ch.basic_publish(f"{queue}-{i}".encode(), routing_key=queue,
                                          properties=persistent))
                 for i in range(rounds) for queue in ("rp", "mine")]
        answers = await asyncio.gather(*(send for _, send in sends), return_exceptions=True)
        return [(queue, "Nack" if isinstance(answer, aiormq.exceptions.DeliveryError)
                 else type(answer).__name__)
                for (queue, _), answer in zip(sends, answers, strict=True)]
    finally:
        await conn.close()


def test_reject_publish_of_a_remote_leader_nacks_only_the_refused(
        nodes: list[BrokerProcess]) -> None:
    leader, other = nodes
    conn = pika.BlockingConnection(pika.URLParameters(leader.url))
    conn.channel().queue_declare("rp", durable=True, arguments={
        "x-max-length": 2, "x-overflow": "reject-publish"})
    conn.close()
    conn = pika.BlockingConnection(pika.URLParameters(other.url))
    ch = conn.channel()
    ch.queue_declare("mine", durable=True)
    ch.queue_declare("rp", passive=True)  # known on fn2 (the 404 path catches up)
    deadline = time.monotonic() + 10
    while True:  # the link to fn1 is up: a consume of rp is no longer "home node down"
        try:
            tag = ch.basic_consume("rp", lambda *a: None)
            ch.basic_cancel(tag)
            break
        except pika.exceptions.ChannelClosedByBroker:
            assert time.monotonic() < deadline, "the link to fn1 never came up"
            ch = conn.channel()
    conn.close()

    answers = asyncio.run(publish_all(other.url, 6))
    rp = [kind for queue, kind in answers if queue == "rp"]
    mine = [kind for queue, kind in answers if queue == "mine"]
    assert rp == ["Ack", "Ack", "Nack", "Nack", "Nack", "Nack"], answers
    assert mine == ["Ack"] * 6, answers
    conn = pika.BlockingConnection(pika.URLParameters(other.url))
    ch = conn.channel()
    assert ch.queue_declare("mine", passive=True).method.message_count == 6
    conn.close()
