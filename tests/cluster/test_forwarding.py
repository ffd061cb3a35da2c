"""Queues led by another node, on an in-process cluster (``forwarding_cluster``): publish
on node 1 to a queue led by node 2, consumed on node 3, with confirms, acks, requeue
(redelivered) and prefetch as on one node; basic.get, purge and delete from a node that
does not lead the queue; a leader that is down answers with RabbitMQ's 404; placement
(balanced, stand-ins rehomed with their bindings); the leader's answers to consume;
publishers held back while a leader's link is full.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
import pika
import pytest

from smartbroker.cluster.placement import Placement
from smartbroker.cluster.remote_queue import RemoteQueue
from tests.cluster.forwarding_cluster import TIMEOUT, cluster, declare_on_leader, ignore, run


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing here may reach the broker log as an error or a traceback."""
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def test_publish_on_one_consume_on_another(tmp_path: Path) -> None:
    run(_publish_on_one_consume_on_another(tmp_path))


async def _publish_on_one_consume_on_another(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (n1, n2, n3):
        await declare_on_leader(n2, [n1, n2, n3], "work")
        assert isinstance(n1.broker.vhosts["/"].queues["work"], RemoteQueue)
        assert not isinstance(n2.broker.vhosts["/"].queues["work"], RemoteQueue)

        publisher = await aio_pika.connect(n1.url)
        consumer = await aio_pika.connect(n3.url)
        async with publisher, consumer:
            pch = await publisher.channel(publisher_confirms=True)
            for i in range(10):  # each confirm awaited: it came back from the leader
                await asyncio.wait_for(pch.default_exchange.publish(
                    aio_pika.Message(f"m{i}".encode(), delivery_mode=2), routing_key="work"),
                    TIMEOUT)
            assert n2.broker.vhosts["/"].queues["work"].message_count == 10

            cch = await consumer.channel()
            await cch.set_qos(prefetch_count=3)
            queue = await cch.get_queue("work", ensure=False)
            got: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
            await queue.consume(got.put)
            first = [await asyncio.wait_for(got.get(), TIMEOUT) for _ in range(3)]
            assert [m.body for m in first] == [b"m0", b"m1", b"m2"]
            await asyncio.sleep(0.2)  # prefetch 3: nothing more may come before an ack
            assert got.empty()
            leader_queue = n2.broker.vhosts["/"].queues["work"]
            assert leader_queue.unacked_count == 3

            await first[0].nack(requeue=True)  # back to the queue's head, redelivered
            again = await asyncio.wait_for(got.get(), TIMEOUT)
            assert (again.body, again.redelivered) == (b"m0", True)
            assert not first[1].redelivered
            for m in (again, first[1], first[2]):
                await m.ack()
            rest = []
            for _ in range(7):  # prefetch 3: each ack lets one more come
                rest.append(await asyncio.wait_for(got.get(), TIMEOUT))
                assert leader_queue.unacked_count <= 3
                await rest[-1].ack()
            assert [m.body for m in rest] == [f"m{i}".encode() for i in range(3, 10)]
            for _ in range(50):
                if leader_queue.unacked_count == 0:
                    break
                await asyncio.sleep(0.05)
            assert (leader_queue.message_count, leader_queue.unacked_count) == (0, 0)


def test_get_and_purge_from_a_node_that_does_not_lead(tmp_path: Path) -> None:
    run(_get_and_purge_from_a_node_that_does_not_lead(tmp_path))


async def _get_and_purge_from_a_node_that_does_not_lead(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (n1, n2, n3):
        await declare_on_leader(n2, [n1, n2, n3], "jobs")
        conn = await aio_pika.connect(n1.url)
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            for i in range(5):
                await ch.default_exchange.publish(aio_pika.Message(f"j{i}".encode()),
                                                  routing_key="jobs")
            queue = await ch.get_queue("jobs", ensure=False)
            msg = await queue.get(timeout=TIMEOUT)
            assert (msg.body, msg.redelivered) == (b"j0", False)
            await msg.reject(requeue=True)
            msg = await queue.get(timeout=TIMEOUT)
            assert (msg.body, msg.redelivered) == (b"j0", True)
            await msg.ack()
            assert await queue.get(fail=False, no_ack=True) is not None  # j1, auto-acked
            assert (await queue.purge()).message_count == 3
            assert await queue.get(fail=False) is None
        leader_queue = n2.broker.vhosts["/"].queues["jobs"]
        assert (leader_queue.message_count, leader_queue.unacked_count) == (0, 0)


def test_home_node_down(tmp_path: Path) -> None:
    run(_home_node_down(tmp_path))


async def _home_node_down(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (n1, n2, n3):
        await declare_on_leader(n2, [n1, n2, n3], "orders")
        await declare_on_leader(n1, [n1, n2, n3], "local")
        await n2.link.close()  # node 2 is gone: its link closes
        for _ in range(100):
            if not n3.link.connected("n2"):
                break
            await asyncio.sleep(0.05)
        conn = await aio_pika.connect(n3.url)
        async with conn:
            ch = await conn.channel()
            queue = await ch.get_queue("orders", ensure=False)
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity,
                               match="home node 'n2' of durable queue 'orders' in vhost '/' "
                                     "is down or inaccessible"):
                await queue.consume(ignore)
            ch = await conn.channel(publisher_confirms=True)
            other = await ch.get_queue("local", ensure=False)  # led by n1: unaffected
            await ch.default_exchange.publish(aio_pika.Message(b"x"), routing_key="local")
            msg = await other.get(timeout=TIMEOUT)
            assert msg.body == b"x"
            await msg.ack()


def test_a_queue_follows_its_placement_with_its_bindings(tmp_path: Path) -> None:
    run(_a_queue_follows_its_placement_with_its_bindings(tmp_path))


async def _a_queue_follows_its_placement_with_its_bindings(tmp_path: Path) -> None:
    """Another node's definitions may arrive before its placement: a local stand-in, then
    the RemoteQueue once the placement is known, bindings kept; a publish through the
    binding on node 1 reaches node 2's queue."""
    async with cluster(tmp_path) as (n1, n2, n3):
        await declare_on_leader(n2, [n2], "events")
        vhost = n1.broker.vhosts["/"]
        with n1.forwarding.applying_peers():
            vhost.declare_exchange("ex", "direct", durable=True)
            vhost.declare_queue("events", durable=True)
            vhost.bind("ex", vhost.queues["events"], "k", {})
        assert not isinstance(vhost.queues["events"], RemoteQueue)
        early = await aio_pika.connect(n1.url)
        async with early:  # taken in by the stand-in: forwarded once the placement comes
            ch = await early.channel(publisher_confirms=True)
            await ch.default_exchange.publish(aio_pika.Message(b"e0"), routing_key="events")
        n1.forwarding.placement.queues[("/", "events")] = Placement("n2")
        n1.forwarding.placement_changed("/", "events")
        moved = vhost.queues["events"]
        assert isinstance(moved, RemoteQueue)
        assert [b.destination for b in vhost.exchanges["ex"].bindings.values()] == [moved]
        n2.broker.vhosts["/"].declare_exchange("ex", "direct", durable=True)
        n2.broker.vhosts["/"].bind("ex", n2.broker.vhosts["/"].queues["events"], "k", {})

        conn = await aio_pika.connect(n1.url)
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            ex = await ch.get_exchange("ex", ensure=False)
            await ex.publish(aio_pika.Message(b"e1", delivery_mode=2), routing_key="k")
        leader_queue = n2.broker.vhosts["/"].queues["events"]
        assert leader_queue.message_count == 2
        assert [leader_queue.get(no_ack=True).message.body for _ in range(2)] == [b"e0", b"e1"]


def test_balanced_places_the_queue_on_the_node_leading_fewest(tmp_path: Path) -> None:
    run(_balanced_places_the_queue_on_the_node_leading_fewest(tmp_path))


async def _balanced_places_the_queue_on_the_node_leading_fewest(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (n1, n2, n3):
        table = n1.forwarding.placement
        table.queues.update({("/", "a"): Placement("n1"), ("/", "b"): Placement("n2")})
        conn = await aio_pika.connect(n1.url)
        async with conn:
            ch = await conn.channel()
            await ch.declare_queue("spread", durable=True,
                                   arguments={"x-queue-leader-locator": "balanced"})
            local = await ch.declare_queue("here", durable=True)  # client-local
            assert local.name == "here"
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed,
                               match="invalid arg 'x-max-length'"):
                await ch.declare_queue("bad", durable=True, arguments={
                    "x-queue-leader-locator": "balanced", "x-max-length": -1})
        assert table.leader("/", "spread") == "n3"
        assert isinstance(n1.broker.vhosts["/"].queues["spread"], RemoteQueue)
        assert table.leader("/", "here") == "n1"
        assert not isinstance(n1.broker.vhosts["/"].queues["here"], RemoteQueue)


def test_delete_from_a_node_that_does_not_lead(tmp_path: Path) -> None:
    run(_delete_from_a_node_that_does_not_lead(tmp_path))


async def _delete_from_a_node_that_does_not_lead(tmp_path: Path) -> None:
    """The leader deletes (its if-unused/if-empty checks and count); its consumers on
    other nodes are cancelled; the deleting node's proxy is gone."""
    async with cluster(tmp_path) as (n1, n2, n3):
        await declare_on_leader(n2, [n1, n2, n3], "gone")
        watcher = await aio_pika.connect(n3.url)
        conn = await aio_pika.connect(n1.url)
        async with watcher, conn:
            wch = await watcher.channel()
            cancelled = asyncio.Event()
            wq = await wch.get_queue("gone", ensure=False)
            tag = await wq.consume(ignore)
            ch = await conn.channel(publisher_confirms=True)
            await ch.default_exchange.publish(aio_pika.Message(b"x"), routing_key="gone")
            queue = await ch.get_queue("gone", ensure=False)
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match="in use"):
                await queue.delete(if_unused=True, if_empty=False)
            ch = await conn.channel()
            queue = await ch.get_queue("gone", ensure=False)
            deleted = await queue.delete(if_unused=False, if_empty=False)
            assert deleted.message_count in (0, 1)  # 1 unless node 3's consumer took it
            assert "gone" not in n1.broker.vhosts["/"].queues
            assert "gone" not in n2.broker.vhosts["/"].queues
            for _ in range(100):
                if not n3.forwarding.subscriptions.by_sub:
                    cancelled.set()
                    break
                await asyncio.sleep(0.02)
            assert cancelled.is_set(), tag


def test_the_leader_answers_consume(tmp_path: Path) -> None:
    run(_the_leader_answers_consume(tmp_path))


async def _the_leader_answers_consume(tmp_path: Path) -> None:
    """An exclusive consumer on one node locks the queue for every node (403, RabbitMQ's
    text); a stream's consumer arguments are checked by the leader (406)."""
    async with cluster(tmp_path) as (n1, n2, n3):
        await declare_on_leader(n2, [n1, n2, n3], "solo")
        one = await aio_pika.connect(n1.url)
        three = await aio_pika.connect(n3.url)
        async with one, three:
            ch1 = await one.channel()
            q1 = await ch1.get_queue("solo", ensure=False)
            await q1.consume(ignore, exclusive=True)
            ch3 = await three.channel()
            q3 = await ch3.get_queue("solo", ensure=False)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused,
                               match="queue 'solo' in vhost '/' in exclusive use"):
                await q3.consume(ignore)

            ch = await three.channel()
            await ch.set_qos(prefetch_count=10)
            leader = await aio_pika.connect(n2.url)
            async with leader:
                lch = await leader.channel()
                await lch.declare_queue("log", durable=True,
                                        arguments={"x-queue-type": "stream"})
            for node in (n1, n3):
                node.place("log", "n2", durable=True, arguments={"x-queue-type": "stream"})
            stream = await ch.get_queue("log", ensure=False)
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed,
                               match="x-stream-offset"):
                await stream.consume(ignore, arguments={"x-stream-offset": "nowhere"})

            # and read from node 3 what node 1 appended, with stream offsets
            pch = await one.channel(publisher_confirms=True)
            for i in range(12):
                await pch.default_exchange.publish(aio_pika.Message(b"s%d" % i),
                                                   routing_key="log")
            ch = await three.channel()
            await ch.set_qos(prefetch_count=5)
            stream = await ch.get_queue("log", ensure=False)
            got: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
            await stream.consume(got.put, arguments={"x-stream-offset": "first"})
            for i in range(12):
                record = await asyncio.wait_for(got.get(), TIMEOUT)
                assert (record.body, record.headers["x-stream-offset"]) == (b"s%d" % i, i)
                await record.ack()


def test_publishers_wait_while_the_leaders_link_is_full(tmp_path: Path) -> None:
    run(_publishers_wait_while_the_leaders_link_is_full(tmp_path))


async def _publishers_wait_while_the_leaders_link_is_full(tmp_path: Path) -> None:
    """A leader granting little credit (a 4 KiB window, 5 kB messages: each one uses it
    up) holds the publisher back instead of the first node buffering without bound;
    every message arrives."""
    async with cluster(tmp_path, window=4096) as (n1, n2, n3):
        await declare_on_leader(n2, [n1, n2, n3], "flood")
        def burst() -> None:  # pika in a thread: the publishes reach node 1 in big reads
            conn = pika.BlockingConnection(pika.URLParameters(n1.url))
            ch = conn.channel()
            for _ in range(300):
                ch.basic_publish("", "flood", b"x" * 5000)
            conn.close()

        await asyncio.to_thread(burst)
        leader_queue = n2.broker.vhosts["/"].queues["flood"]
        for _ in range(200):
            if leader_queue.message_count == 300:
                break
            await asyncio.sleep(0.02)
        assert leader_queue.message_count == 300
        assert n1.forwarding.throttles > 0
        assert not n1.forwarding._throttled


def test_a_consumers_node_lost_requeues_what_it_held(tmp_path: Path) -> None:
    run(_a_consumers_node_lost_requeues_what_it_held(tmp_path))


async def _a_consumers_node_lost_requeues_what_it_held(tmp_path: Path) -> None:
    """Node 3 holds unacked deliveries of node 2's queue and is lost (its link closes):
    they go back to the queue, redelivered, for a consumer elsewhere, as when a
    connection drops on one node."""
    async with cluster(tmp_path) as (n1, n2, n3):
        await declare_on_leader(n2, [n1, n2, n3], "held")
        consumer = await aio_pika.connect(n3.url)
        conn = await aio_pika.connect(n1.url)
        async with consumer, conn:
            ch = await conn.channel(publisher_confirms=True)
            for i in range(3):
                await ch.default_exchange.publish(aio_pika.Message(b"h%d" % i),
                                                  routing_key="held")
            cch = await consumer.channel()
            await cch.set_qos(prefetch_count=10)
            got: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
            await (await cch.get_queue("held", ensure=False)).consume(got.put)
            for _ in range(3):
                await asyncio.wait_for(got.get(), TIMEOUT)
            leader_queue = n2.broker.vhosts["/"].queues["held"]
            assert (leader_queue.message_count, leader_queue.unacked_count) == (0, 3)
            await n3.link.close()  # node 3 is gone for the others
            for _ in range(250):
                if leader_queue.message_count == 3:
                    break
                await asyncio.sleep(0.02)
            queue = await ch.get_queue("held", ensure=False)
            again = [await queue.get(timeout=TIMEOUT, no_ack=True) for _ in range(3)]
            assert [(m.body, m.redelivered) for m in again] == [
                (b"h0", True), (b"h1", True), (b"h2", True)]


def test_a_leader_lost_cancels_its_remote_consumers(tmp_path: Path) -> None:
    run(_a_leader_lost_cancels_its_remote_consumers(tmp_path))


async def _a_leader_lost_cancels_its_remote_consumers(tmp_path: Path) -> None:
    """Node 2 is lost: node 3's consumer of its queue gets basic.cancel (the client's
    consumer_cancel_notify), as RabbitMQ cancels consumers of a queue whose node is down."""
    async with cluster(tmp_path) as (n1, n2, n3):
        await declare_on_leader(n2, [n1, n2, n3], "far")
        consumer = await aio_pika.connect(n3.url)
        async with consumer:
            cch = await consumer.channel()
            tag = await (await cch.get_queue("far", ensure=False)).consume(ignore)
            (conn,) = [c for c in n3.broker.connections]
            (channel,) = conn.channels.values()
            assert tag in channel.consumers
            await n2.link.close()
            for _ in range(250):
                if tag not in channel.consumers:
                    break
                await asyncio.sleep(0.02)
            assert tag not in channel.consumers
            assert not n3.forwarding.subscriptions.by_sub
