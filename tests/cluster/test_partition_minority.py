"""A node cut off from the others and from etcd (network namespaces, tests/cluster/netns.py)
is the minority: it confirms nothing, while the majority elects a new leader for its
quorum queue and carries on; healed, it rejoins as a follower and nothing confirmed is
lost (issue 16, "Cut a node off"). The cut leaves the node's clients connected (their
link is not the cluster's), so "no confirm" is the broker's doing, not a dead socket's.
Three real nodes, one real etcd, aiormq and pika over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import aiormq
import pika
import pytest
from pamqp.commands import Basic

from smartbroker.launcher import BrokerProcess
from tests.cluster.netns import Network, netns_cluster
from tests.cluster.node_group import all_members, poll

NAMES = ("pm1", "pm2", "pm3")
PERSISTENT = Basic.Properties(delivery_mode=2)


@pytest.fixture(scope="module")
def cut_cluster(tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[Network, dict[str, BrokerProcess]]]:
    """Three nodes in namespaces of their own and their etcd, every node seeing every
    node up before any test (and again after each: a test heals what it cut)."""
    with netns_cluster(tmp_path_factory.mktemp("partition"), NAMES, "pm") as cluster:
        yield cluster


def running_nodes(proc: BrokerProcess) -> set[str]:
    try:
        return {n["name"] for n in proc.get_json("/api/nodes") if n["running"]}
    except OSError:
        return set()


def test_a_cut_node_is_down_for_the_others_but_keeps_its_clients(
        cut_cluster: tuple[Network, dict[str, BrokerProcess]]) -> None:
    net, nodes = cut_cluster
    net.cut("pm3")
    try:
        poll(lambda: "pm3" not in running_nodes(nodes["pm1"]), "pm1 sees pm3 down")
        poll(lambda: "pm3" not in running_nodes(nodes["pm2"]), "pm2 sees pm3 down")
        assert nodes["pm3"].get_json("/api/overview")  # its API and AMQP still answer
        pika.BlockingConnection(pika.URLParameters(nodes["pm3"].url)).close()
    finally:
        net.heal("pm3")
    all_members(nodes.values())


def queue_info(proc: BrokerProcess, name: str) -> dict[str, Any]:
    try:
        info = proc.get_json(f"/api/queues/%2F/{name}")
    except OSError:
        return {}
    return info if isinstance(info, dict) else {}


def leader_of(proc: BrokerProcess, name: str) -> str | None:
    info = queue_info(proc, name)
    return info.get("leader") or info.get("node")


async def publish(url: str, bodies: list[str], queue: str) -> tuple[aiormq.Connection,
                                                                    list[asyncio.Future]]:
    """A confirming publisher's connection and one future per publish (its confirm)."""
    conn = await aiormq.connect(url)
    ch = await conn.channel(publisher_confirms=True)
    futures = [asyncio.ensure_future(ch.basic_publish(b.encode(), routing_key=queue,
                                                      properties=PERSISTENT))
               for b in bodies]
    return conn, futures


def acked(futures: list[asyncio.Future], bodies: list[str]) -> set[str]:
    return {b for f, b in zip(futures, bodies, strict=True)
            if f.done() and not f.cancelled() and f.exception() is None
            and isinstance(f.result(), Basic.Ack)}


def drain(proc: BrokerProcess, queue: str) -> list[str]:
    """Every message of ``queue`` by basic.get through ``proc``, acked."""
    conn = pika.BlockingConnection(pika.URLParameters(proc.url))
    try:
        ch = conn.channel()
        out = []
        while True:
            method, _, body = ch.basic_get(queue)
            if method is None:
                return out
            out.append(body.decode())
            ch.basic_ack(method.delivery_tag)
    finally:
        conn.close()


def test_the_minority_confirms_nothing_and_the_majority_carries_on(
        cut_cluster: tuple[Network, dict[str, BrokerProcess]]) -> None:
    net, nodes = cut_cluster
    all_members(nodes.values())
    queue = f"pq-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(nodes["pm3"].url))  # pm3 leads it
    conn.channel().queue_declare(queue, durable=True, arguments={
        "x-queue-type": "quorum", "x-quorum-initial-group-size": 3})
    conn.close()
    with contextlib.suppress(AssertionError):  # until issue 16's replication is wired
        poll(lambda: len(queue_info(nodes["pm1"], queue).get("members", [])) > 1,
             "members shown", 10)
    if len(queue_info(nodes["pm1"], queue).get("members", [])) < 2:
        pytest.skip("a quorum queue declared with 3 members has one: replication not wired")
    seen: dict[str, Any] = {}

    def whole() -> bool:
        seen.update(queue_info(nodes["pm1"], queue))
        return seen.get("leader") == "pm3" and len(seen.get("online", [])) == 3
    try:
        poll(whole, "pm1 sees the queue led by pm3 with its three members online")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last seen: {seen}") from None
    asyncio.run(partition_scenario(net, nodes, queue))


async def partition_scenario(net: Network, nodes: dict[str, BrokerProcess],
                             queue: str) -> None:
    before = [f"before-{i}" for i in range(20)]
    cut_off = [f"cut-{i}" for i in range(5)]
    after = [f"after-{i}" for i in range(20)]
    old_conn, futures = await publish(nodes["pm3"].url, before, queue)
    await asyncio.wait_for(asyncio.gather(*futures), 20)
    assert acked(futures, before) == set(before)

    net.cut("pm3")
    healed = False
    try:
        ch = await old_conn.channel(publisher_confirms=True)
        cut_futures = [asyncio.ensure_future(ch.basic_publish(
            b.encode(), routing_key=queue, properties=PERSISTENT)) for b in cut_off]
        new_leader = await asyncio.to_thread(
            poll, lambda: leader_of(nodes["pm1"], queue) in ("pm1", "pm2") and
            leader_of(nodes["pm1"], queue), "the majority elects a new leader", 30)
        t0 = time.monotonic()
        new_conn, after_futures = await publish(nodes["pm1"].url, after, queue)
        await asyncio.wait_for(asyncio.gather(*after_futures), 20)
        assert acked(after_futures, after) == set(after), "the majority confirms"
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))  # pm3 had time to
        assert not acked(cut_futures, cut_off), "the cut-off old leader confirmed"
        net.heal("pm3")
        healed = True
        await asyncio.to_thread(
            poll, lambda: leader_of(nodes["pm3"], queue) == new_leader
            and "pm3" in queue_info(nodes["pm1"], queue).get("online", []),
            "pm3 rejoins as a follower of the new leader", 30)
        await asyncio.wait(cut_futures, timeout=5)  # settled one way or another
        late = acked(cut_futures, cut_off)  # confirmed once healed: must be there too
        await new_conn.close()
    finally:
        if not healed:
            net.heal("pm3")
        if not old_conn.is_closed:
            await old_conn.close()

    consumed = await asyncio.to_thread(drain, nodes["pm2"], queue)
    assert len(consumed) == len(set(consumed)), f"duplicates: {consumed}"
    assert set(consumed) <= {*before, *cut_off, *after}, f"phantoms: {consumed}"
    lost = {*before, *after, *late} - set(consumed)
    assert not lost, f"confirmed and lost: {sorted(lost)}"
    assert [c for c in consumed if c.startswith("before-")] == before, "order of pm3's"
    assert [c for c in consumed if c.startswith("after-")] == after, "order of pm1's"


def test_a_cut_off_follower_confirms_nothing_it_could_not_forward(
        cut_cluster: tuple[Network, dict[str, BrokerProcess]]) -> None:
    """A publisher pipelining through the cut node to a queue the majority leads: every
    publish in flight when the leader is seen gone is nacked, not only the first round's
    (the others were confirmed and lost: benchmarks/chaos.py found it)."""
    net, nodes = cut_cluster
    all_members(nodes.values())
    queue = f"pf-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(nodes["pm1"].url))  # pm1 leads it
    conn.channel().queue_declare(queue, durable=True, arguments={
        "x-queue-type": "quorum", "x-quorum-initial-group-size": 3})
    conn.close()
    poll(lambda: leader_of(nodes["pm3"], queue) == "pm1", "pm3 knows the queue's leader")
    confirmed = asyncio.run(pipeline_through_a_cut(net, nodes["pm3"], queue))
    all_members(nodes.values())
    consumed = drain(nodes["pm1"], queue)
    assert confirmed, "nothing was confirmed before the cut"
    lost = sorted(set(confirmed) - set(consumed))
    assert not lost, f"confirmed through the cut node and lost: {lost[:10]}"


async def pipeline_through_a_cut(net: Network, proc: BrokerProcess, queue: str) -> list[str]:
    """Publish with 20 unconfirmed at a time through ``proc`` before, during and after
    its cut; the bodies acked."""
    return [body for _, body in await alternate_through_a_cut(net, proc, (queue,))]


async def alternate_through_a_cut(net: Network, proc: BrokerProcess,
                                  queues: Sequence[str]) -> list[tuple[str, str]]:
    """Publish to ``queues`` in turn, 20 unconfirmed at a time, through ``proc`` before,
    during and after its cut; the (queue, body) pairs acked."""
    conn = await aiormq.connect(proc.url)
    ch = await conn.channel(publisher_confirms=True)
    window = asyncio.Semaphore(20)
    confirmed: list[tuple[str, str]] = []

    async def one(queue: str, body: str) -> None:
        try:
            if isinstance(await ch.basic_publish(body.encode(), routing_key=queue,
                                                 properties=PERSISTENT), Basic.Ack):
                confirmed.append((queue, body))
        except aiormq.exceptions.AMQPError:
            pass
        finally:
            window.release()

    async def publish_for(seconds: float, tag: str) -> list[asyncio.Task]:
        tasks, end, i = [], time.monotonic() + seconds, 0
        while time.monotonic() < end:
            await window.acquire()
            tasks.append(asyncio.create_task(one(queues[i % len(queues)], f"{tag}-{i}")))
            i += 1
            await asyncio.sleep(0.01)
        return tasks

    tasks = await publish_for(1.0, "before")
    net.cut(proc.node_name or "")
    try:
        tasks += await publish_for(6.0, "cut")  # past the 3 s lease: the leader is gone
    finally:
        net.heal(proc.node_name or "")
    await asyncio.wait(tasks, timeout=20)
    await conn.close()
    return confirmed
