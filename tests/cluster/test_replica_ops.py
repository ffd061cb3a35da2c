"""Operating replicated quorum queues on three real nodes and a real etcd (issue 16):

- ``queues add-member`` onto the third node: the new member catches up (it joins the
  ISR, shown by ``cluster status``) and its copy has everything, which the leader's
  hand-over proves: ``delete-member`` of the leader, twice, leaves the new member alone
  leading, and every confirmed message is consumed from it;
- ``/api/queues`` on every node names the leader, the members and those online;
- ``cluster rebalance`` moves leaders until each node leads about as many,
  ``queues shrink`` takes a node out of every replica set (its copies deleted) and
  ``queues grow`` puts it back (fresh copies that catch up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from smartbroker.cli.replica_state import read
from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.launcher import BrokerProcess, free_port
from tests.cluster.node_group import all_members, cluster_node, poll, start_all, stop_all
from tests.cluster.test_cluster_cli import smartbroker

NAMES = ("n1", "n2", "n3")
QUORUM = {"x-queue-type": "quorum"}


class Cluster:
    """Three nodes, their etcd, and the CLI bound to them."""

    def __init__(self, nodes: dict[str, BrokerProcess], endpoint: str, name: str) -> None:
        self.nodes, self.endpoint, self.name = nodes, endpoint, name

    def cli(self, *args: str) -> Any:
        return smartbroker(*args, "--etcd", self.endpoint, "--cluster-name", self.name)

    def replicas(self, queue: str) -> Any:
        """The queue's replica set as etcd holds it (None before it is created)."""
        async def one() -> Any:
            async with EtcdClient(self.endpoint, self.name) as etcd:
                return (await read(etcd)).quorum("/", queue)
        return asyncio.run(one())

    def declare(self, via: str, queue: str, **arguments: Any) -> None:
        with contextlib.closing(connect(self.nodes[via])) as conn:
            conn.channel().queue_declare(queue, durable=True,
                                         arguments={**QUORUM, **arguments})

    def shown(self, via: str, queue: str) -> dict[str, Any] | None:
        try:
            return self.nodes[via].get_json(f"/api/queues/%2F/{queue}")
        except Exception:  # noqa: BLE001 - not there yet
            return None

    def agree(self, queue: str, **fields: Any) -> dict[str, Any]:
        """The queue's page once every node shows ``fields``."""
        def agreed() -> dict[str, Any] | None:
            pages = [self.shown(n, queue) for n in NAMES]
            if all(p is not None and all(p.get(k) == v for k, v in fields.items())
                   for p in pages):
                return pages[0]
            return None
        return poll(agreed, f"every node shows {fields} for {queue}", timeout=30)


@pytest.fixture(scope="module")
def cluster(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("replica-ops")
    name = f"ops-{free_port()}"
    procs = {n: cluster_node(tmp, n, etcd.endpoint, name) for n in NAMES}
    try:
        start_all(procs.values())
        all_members(procs.values())  # replica sets are made of the nodes up at the declare
        yield Cluster(procs, etcd.endpoint, name)
    finally:
        stop_all(procs.values())


def connect(node: BrokerProcess) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(node.url))


def publish(node: BrokerProcess, queue: str, count: int) -> None:
    with contextlib.closing(connect(node)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(count):
            ch.basic_publish("", queue, f"m{i}".encode())  # confirmed, or it raises


def consume_all(node: BrokerProcess, queue: str, count: int) -> list[bytes]:
    """``count`` messages, acked; then the queue must be empty (no duplicates)."""
    with contextlib.closing(connect(node)) as conn:
        ch = conn.channel()
        bodies = []
        for method, _, body in ch.consume(queue, inactivity_timeout=10):
            assert body is not None, f"only {len(bodies)} of {count} messages came"
            bodies.append(body)
            ch.basic_ack(method.delivery_tag)
            if len(bodies) == count:
                break
        ch.cancel()
        assert ch.basic_get(queue, auto_ack=True) == (None, None, None)
        return bodies


def test_a_new_member_catches_up_and_can_lead(cluster: Cluster) -> None:
    cluster.declare("n1", "ops-grow", **{"x-quorum-initial-group-size": 2})
    cluster.agree("ops-grow", leader="n1", members=["n1", "n2"], online=["n1", "n2"])
    publish(cluster.nodes["n2"], "ops-grow", 200)

    added = cluster.cli("queues", "add-member", "/", "ops-grow", "n3")
    assert added.returncode == 0 and "node n3 added" in added.stdout, added.stderr
    poll(lambda: "n3" in cluster.replicas("ops-grow").isr, "n3 joins the ISR", timeout=30)
    page = cluster.agree("ops-grow", members=["n1", "n2", "n3"])
    assert (page["type"], page["node"], page["leader"], page["online"]) == (
        "quorum", "n1", "n1", ["n1", "n2", "n3"])
    status = json.loads(cluster.cli("cluster", "status", "--json").stdout)
    assert not [b for b in status["out_of_sync"] if b["queue"] == "ops-grow"]

    # the old members go, the leader twice: n3 ends up leading alone, from its own copy
    for old in ("n1", "n2"):
        done = cluster.cli("queues", "delete-member", "/", "ops-grow", old)
        assert done.returncode == 0 and f"node {old} removed" in done.stdout, done.stderr
    page = cluster.agree("ops-grow", leader="n3", members=["n3"])
    assert page["node"] == "n3"
    assert consume_all(cluster.nodes["n1"], "ops-grow", 200) == [
        f"m{i}".encode() for i in range(200)]
    poll(lambda: not (cluster.nodes["n1"].data_dir / "quorum" / "%2F%2Fops-grow").exists(),
         "a removed member deletes its copy")


def test_rebalance_and_shrink(cluster: Cluster) -> None:
    queues = [f"ops-rb{i}" for i in range(6)]
    for queue in queues:  # client-local: n1 leads them all
        cluster.declare("n1", queue)
    for queue in queues:
        poll(lambda q=queue: (r := cluster.replicas(q)) is not None and len(r.isr) == 3,
             f"{queue} has 3 members in sync", timeout=30)
    done = cluster.cli("cluster", "rebalance", "quorum", "--queue-pattern", "^ops-rb",
                       "--json")
    assert done.returncode == 0, done.stderr
    leaders = {queue: cluster.replicas(queue).leader for queue in queues}
    assert sorted(list(leaders.values()).count(n) for n in NAMES) == [2, 2, 2], leaders
    assert {n["node"]: n["quorum_leaders"] for n in json.loads(done.stdout)["nodes"]} == {
        "n1": 2, "n2": 2, "n3": 2}
    for queue in queues:  # the API follows
        cluster.agree(queue, leader=leaders[queue])

    shrunk = cluster.cli("queues", "shrink", "n2", "--json")
    assert shrunk.returncode == 0, shrunk.stderr
    rows = {r["name"]: r for r in json.loads(shrunk.stdout)}
    assert all(rows[q]["result"] == "ok" and rows[q]["size"] == 2 for q in queues)
    for queue in queues:
        r = cluster.replicas(queue)
        assert "n2" not in r.members and r.leader in ("n1", "n3")
    cluster.agree(queues[0], members=[m for m in ("n1", "n3")])

    # grown back: n2 starts a fresh copy (its old one was deleted) and catches up
    publish(cluster.nodes["n3"], queues[0], 50)
    grown = cluster.cli("queues", "grow", "n2", "all", "--queue-pattern", "^ops-rb", "--json")
    assert grown.returncode == 0, grown.stderr
    assert sorted(r["name"] for r in json.loads(grown.stdout)) == queues
    for queue in queues:
        poll(lambda q=queue: set(cluster.replicas(q).isr) == set(NAMES),
             f"n2 back in the ISR of {queue}", timeout=30)
    cluster.agree(queues[0], online=list(cluster.replicas(queues[0]).members))


def test_a_replicated_stream_shows_its_members(cluster: Cluster) -> None:
    cluster.declare("n2", "ops-stream", **{"x-queue-type": "stream",
                                           "x-initial-cluster-size": 3})
    page = cluster.agree("ops-stream", members=["n2", "n3", "n1"])
    assert (page["type"], page["leader"], page["online"]) == ("stream", "n2", ["n2", "n3", "n1"])
    assert [(p["members"], p["online"]) for p in page["stream"]["partitions"]] == [
        (["n2", "n3", "n1"], ["n2", "n3", "n1"])]
