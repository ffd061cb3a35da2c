"""A replicated queue that cannot commit holds back only its own publishers' confirms.

Two real nodes and a real etcd. A quorum queue with two members needs both in sync to
confirm (min-insync is a majority: 2 of 2). With its follower killed, a publish to it
waits for its confirm, as RabbitMQ's quorum queue without a majority does. Another
client of the same node, publishing to a durable classic queue, must get its confirms
meanwhile: before, a node ran one confirm round for every channel at once, so one
stalled log held back every confirm of the node. Once the follower is back, the waiting
publish is confirmed (it waited; it was not lost).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.node_group import all_members, cluster_node, poll, start_all, stop_all


@pytest.fixture
def pair(etcd: Any, tmp_path: Path) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    cluster = f"ci-{free_port()}"
    procs = [cluster_node(tmp_path, name, etcd.endpoint, cluster) for name in ("n1", "n2")]
    try:
        start_all(procs)
        all_members(procs)
        yield procs[0], procs[1]
    finally:
        stop_all(procs)


def test_stalled_replicated_queue_does_not_hold_other_confirms(
        pair: tuple[BrokerProcess, BrokerProcess]) -> None:
    n1, n2 = pair

    async def scenario() -> None:
        stalled_conn = await aio_pika.connect(n1.url)
        other_conn = await aio_pika.connect(n1.url)
        try:
            stalled = await stalled_conn.channel(publisher_confirms=True)
            await stalled.declare_queue("orders-qq", durable=True, arguments={
                "x-queue-type": "quorum", "x-quorum-initial-group-size": 2})
            other = await other_conn.channel(publisher_confirms=True)
            await other.declare_queue("audit", durable=True)
            poll(lambda: sorted(n1.get_json("/api/queues/%2F/orders-qq").get("members") or [])
                 == ["n1", "n2"], "orders-qq has members n1 and n2")
            # replicated and confirmed while both members are up
            await stalled.default_exchange.publish(
                aio_pika.Message(b"first", delivery_mode=2), routing_key="orders-qq")

            n2.kill()
            waiting = asyncio.ensure_future(stalled.default_exchange.publish(
                aio_pika.Message(b"needs n2", delivery_mode=2), routing_key="orders-qq"))
            for i in range(20):  # the other client's confirms come, one after another
                await asyncio.wait_for(other.default_exchange.publish(
                    aio_pika.Message(b"audit %d" % i, delivery_mode=2), routing_key="audit"),
                    10.0)
            assert not waiting.done(), "a 2-member quorum queue confirmed with one member"

            await asyncio.to_thread(n2.start)
            await asyncio.wait_for(waiting, 30.0)  # confirmed once n2 is back in sync
            queue = await other.declare_queue("orders-qq", passive=True)
            assert queue.declaration_result.message_count == 2
        finally:
            await stalled_conn.close()
            await other_conn.close()

    asyncio.run(scenario())
